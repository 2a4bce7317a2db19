"""On RQ, composing to a large audience returns before any delivery is written; the job writes them."""

from __future__ import annotations

from sqlalchemy import func, select

from app import tenancy
from app.extensions import db
from app.jobs import get_queue
from app.models import MailDelivery, MailMessage, Role
from tests.conftest import sign_in

INLINE = 2


def test_compose_above_the_threshold_queues_the_fan_out(make_redis_app, redis_url, make_school, make_member):
    app = make_redis_app(redis_url, MESSAGE_INLINE_RECIPIENTS=INLINE)
    school = make_school(name="Maple School")
    make_member(school, role=Role.ADMIN, email="admin@maple.org")
    for n in range(INLINE):  # the admin and these: threshold + 1 people
        make_member(school, email=f"parent{n}@maple.org")
    client = app.test_client()
    with app.app_context(), tenancy.unscoped():  # the test reads as an inspector, across schools
        sign_in(client, "admin@maple.org")
        page = client.get("/messages/new?kind=school").get_data(as_text=True)
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        form = {"csrf_token": token, "subject": "Big", "body": "Hello", "send_at": "", "action": "send"}
        response = client.post("/messages/new?kind=school", data=form)
        assert response.status_code == 303
        message_id = db.session.scalar(select(MailMessage.id))
        assert db.session.scalar(select(func.count(MailDelivery.id))) == 0  # nothing written in the request
        (job,) = get_queue("mail").get_jobs()
        assert job.args == (message_id,)
        shown = client.get(response.headers["Location"]).get_data(as_text=True)
        assert f"Preparing {INLINE + 1} recipients…" in shown
        job.perform()  # what the worker does with it
        db.session.expire_all()
        users = db.session.scalars(select(MailDelivery.user_id)).all()
        assert len(users) == INLINE + 1 == len(set(users))
