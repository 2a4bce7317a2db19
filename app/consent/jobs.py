"""Worker jobs of the consent feature."""

from __future__ import annotations

from app import jobs
from app.consent import policy
from app.extensions import db


@jobs.job
@jobs.repeating
def refresh_policy_dispatches() -> dict:
    """Record when a policy notice email finished going out, whether or not anyone opens a page.

    The effective date of an email-only change counts from that moment. The send job queues
    this as soon as a policy email settles; the repeating run catches a follow-up that Redis
    lost. Pages only read (a GET writes nothing), so neither waits for a visitor.
    """
    recorded = policy.refresh_all_dispatches()
    db.session.commit()
    return {"recorded": recorded}
