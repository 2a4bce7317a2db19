"""Worker jobs of the consent feature."""

from __future__ import annotations

from app import jobs
from app.consent import policy
from app.extensions import db


@jobs.job
@jobs.repeating
def refresh_policy_dispatches() -> dict:
    """Record when a policy notice email finished going out, whether or not anyone opens a page.

    The effective date of an email-only change counts from that moment, so it must not wait
    for a visitor; pages still check too, so the record is never later than the first reader.
    """
    recorded = policy.refresh_all_dispatches()
    db.session.commit()
    return {"recorded": recorded}
