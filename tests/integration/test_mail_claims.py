"""Two workers on one message: a delivery claimed by one is never sent by the other."""

from __future__ import annotations

from sqlalchemy import event, select, update

from app.extensions import db
from app.mail.jobs import send_message
from app.models import Category, DeliveryStatus, MailDelivery, MailMessage


def test_send_message_leaves_deliveries_another_worker_claimed_meanwhile(app, sent_mail):
    message = MailMessage(category=Category.ADMINISTRATIVE, template="t", subject="Hello", text_body="Hi")
    db.session.add(message)
    for n in range(2):
        db.session.add(MailDelivery(message=message, to_email=f"person{n}@example.org"))
    db.session.commit()
    message_id = message.id
    session = db.session()

    def other_worker_claims_first(state):
        """Between this worker's read of pending ids and its claim, another worker claims them."""
        if state.is_update and not session.info.get("raced"):
            session.info["raced"] = True
            with db.engine.begin() as conn:
                conn.execute(
                    update(MailDelivery)
                    .where(
                        MailDelivery.message_id == message_id, MailDelivery.status == DeliveryStatus.PENDING
                    )
                    .values(status=DeliveryStatus.SENDING)
                )

    event.listen(session, "do_orm_execute", other_worker_claims_first)
    try:
        counts = send_message(message_id)
    finally:
        event.remove(session, "do_orm_execute", other_worker_claims_first)

    assert session.info.get("raced"), "the claim did not run an UPDATE"
    assert sent_mail == []  # the other worker is sending these
    assert counts["sent"] == 0


def test_losing_a_whole_batch_moves_on_to_the_next(app, sent_mail, monkeypatch):
    """Another worker takes the first batch; this one still sends the rest, not waiting for the sweeper."""
    monkeypatch.setattr(app.extensions["mail_backend"], "max_batch", 2)
    message = MailMessage(category=Category.ADMINISTRATIVE, template="t", subject="Hello", text_body="Hi")
    db.session.add(message)
    for n in range(5):
        db.session.add(MailDelivery(message=message, to_email=f"person{n}@example.org"))
    db.session.commit()
    message_id = message.id
    session = db.session()

    def other_worker_takes_the_first_batch(state):
        if state.is_update and not session.info.get("raced"):
            session.info["raced"] = True
            with db.engine.begin() as conn:
                first_two = [
                    row.id
                    for row in conn.execute(
                        select(MailDelivery.id)
                        .where(MailDelivery.message_id == message_id)
                        .order_by(MailDelivery.id)
                        .limit(2)
                    )
                ]
                conn.execute(
                    update(MailDelivery)
                    .where(MailDelivery.id.in_(first_two))
                    .values(status=DeliveryStatus.SENDING)
                )

    event.listen(session, "do_orm_execute", other_worker_takes_the_first_batch)
    try:
        counts = send_message(message_id)
    finally:
        event.remove(session, "do_orm_execute", other_worker_takes_the_first_batch)

    assert counts["sent"] == 3
    assert sorted(m.to for m in sent_mail) == [f"person{n}@example.org" for n in (2, 3, 4)]
