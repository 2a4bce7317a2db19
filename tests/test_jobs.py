"""Jobs: a repeating job that fails is logged and runs again at its next interval."""

from __future__ import annotations

from app import jobs


def test_repeating_jobs_survive_a_failure(app, caplog):
    calls = []

    @jobs.repeating
    def flaky():
        calls.append(1)
        raise RuntimeError("database restarting")

    assert flaky() == {"error": True}
    assert calls == [1]
    assert "runs again at its next interval" in caplog.text
