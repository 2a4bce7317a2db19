"""Mailgun webhooks: the cost of one event as the outbox grows, with and without its index.

    python -m bench.webhooks [--deliveries 20000] [--events 400] [--database-url URL]

Each event names a message id (one per batch of up to 1,000 deliveries) and a recipient; the
webhook finds the deliveries it is about through ``ix_mail_delivery_provider_id``. One run,
on a database of its own (an SQLite file in a temporary directory, or --database-url for
PostgreSQL: its tables are dropped and created again), posts signed events through the whole
request pipeline (the Flask test client: signature, freshness, token, matching, suppression,
commit) against an outbox of N/10 and of N deliveries, first with the index and then without
it (the baseline: the same code scanning the table), and a retry of every event (a token
already taken). It prints milliseconds per event and the ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import delete, insert, text

BATCH = 1000
DOMAIN = "mg.bench.example"
KEY = "bench-webhook-signing-key"


def _app(database_url: str):
    os.environ["TEST_DATABASE_URL"] = database_url
    from app import create_app
    from config import TestConfig

    config = TestConfig()
    config.MAILGUN_WEBHOOK_SIGNING_KEY = KEY
    config.SERVER_NAME = None
    return create_app(config)


def _outbox(size: int) -> list[tuple[str, str]]:
    """A sent school announcement to ``size`` addresses; (message id, address) of each delivery."""
    from app import tenancy
    from app.extensions import db
    from app.models import Category, DeliveryStatus, MailDelivery, MailMessage, School

    db.session.remove()
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())
    school = School(name="Bench School", slug="bench", invite_code="BENCH-1")
    db.session.add(school)
    db.session.flush()
    with tenancy.bound(school.id):
        message = MailMessage(
            school_id=school.id, category=Category.SCHOOL_ANNOUNCEMENTS, template="t", subject="Bench"
        )
        db.session.add(message)
        db.session.flush()
        sent = [(f"bench.{n // BATCH}.{size}@{DOMAIN}", f"p{n:06d}@example.org") for n in range(size)]
        rows = [
            {
                "message_id": message.id,
                "to_email": email,
                "provider_id": f"<{mid}>",
                "status": DeliveryStatus.SENT,
            }
            for mid, email in sent
        ]
        for start in range(0, len(rows), 5000):
            db.session.execute(insert(MailDelivery), rows[start : start + 5000])
    db.session.commit()
    return sent


def _post_all(client, bodies: list[dict]) -> float:
    """Milliseconds per POST, every answer checked."""
    started = time.perf_counter()
    for body in bodies:
        response = client.post("/webhooks/mailgun", json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
    return (time.perf_counter() - started) * 1000 / len(bodies)


def _events(sent: list[tuple[str, str]], count: int, rng: random.Random) -> list[dict]:
    from tests.fakes.mailgun import event_data, webhook_body

    chosen = rng.sample(sent, count)
    outcomes = ("bounce", "complaint", "suppress-bounce", "old")  # each one looked up and kept
    return [
        webhook_body(event_data(outcomes[n % 4], email, mid, domain=DOMAIN), KEY)
        for n, (mid, email) in enumerate(chosen)
    ]


def _forget_events() -> None:
    from app.extensions import db
    from app.models import DeliveryEvent, Suppression, WebhookToken

    for model in (DeliveryEvent, Suppression, WebhookToken):
        db.session.execute(delete(model))
    db.session.commit()


def measure(database_url: str, deliveries: int, events: int) -> dict[str, float]:
    from app.extensions import db

    app = _app(database_url)
    rng = random.Random(7)
    results: dict[str, float] = {}
    with app.app_context():
        db.drop_all()
        db.create_all()
        client = app.test_client()
        for size in (deliveries // 10, deliveries):
            sent = _outbox(size)
            bodies = _events(sent, events, rng)
            _post_all(client, bodies[:20])  # warm-up: first requests fill caches
            _forget_events()
            results[f"indexed {size}"] = _post_all(client, bodies)
            results[f"retry {size}"] = _post_all(client, bodies)
            _forget_events()
            db.session.execute(text("DROP INDEX ix_mail_delivery_provider_id"))
            db.session.commit()
            results[f"scan {size}"] = _post_all(client, bodies)
            _forget_events()
            db.session.execute(
                text("CREATE INDEX ix_mail_delivery_provider_id ON mail_delivery (provider_id)")
            )
            db.session.commit()
        db.session.remove()
        db.drop_all()
        db.engine.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{Path(folder) / 'bench.db'}"
        results = measure(url, args.deliveries, args.events)
    small, large = args.deliveries // 10, args.deliveries
    print(f"{'outbox':>10}  {'indexed':>9}  {'retry':>9}  {'scan':>9}  (ms per event, {args.events} events)")
    for size in (small, large):
        row = [results[f"{kind} {size}"] for kind in ("indexed", "retry", "scan")]
        print(f"{size:>10,}  {row[0]:>9.2f}  {row[1]:>9.2f}  {row[2]:>9.2f}")
    ratio = results[f"indexed {large}"] / results[f"indexed {small}"]
    print(f"indexed, {large:,} against {small:,} deliveries: {ratio:.2f}x")
    ratio = results[f"scan {large}"] / results[f"indexed {large}"]
    print(f"without the index, at {large:,} deliveries: {ratio:.1f}x slower per event")
    ratio = results[f"retry {large}"] / results[f"indexed {large}"]
    print(f"a retry (token already taken) against a first delivery: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
