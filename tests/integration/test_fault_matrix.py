"""The fault matrix: every fault of issue 12's proof, each against one announcement (or support requests).

Real PostgreSQL (TEST_DATABASE_URL), real Redis (TEST_REDIS_URL; a private ``redis-server``
for the scenario that kills it), real ``python worker.py`` processes under a supervisor that
restarts one that exits, and the Mailgun and Zendesk stand-ins as their own processes, which
count every recipient and every ticket they take. The scenarios and their orchestration live
in tests/integration/faults_harness.py, which bench/faults.py runs at N = 3,000 and 20,000.

Each test asserts what the issue asks of every row: nobody missing, nobody served twice, and
everything sent within 60 s of the fault plus the provider's own delay. Nothing is driven by
hand (no sweep is run, no lease aged): the workers recover by themselves.

PostgreSQL is required (several processes write at once): the tests skip on the SQLite run,
which CI follows with a PostgreSQL run (as tests/integration/test_scale_out.py does).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import require_service
from tests.integration.faults_harness import SCENARIOS, Matrix, Scenario, postgres_bindir
from tests.integration.processes import ProcessFailed

pytestmark = pytest.mark.redis

RECIPIENTS = 1_500  # two provider calls: the fault lands on the first while the second waits
SUPPORT_REQUESTS = 10
PG_HOW = "set TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/<database of its own>"


@pytest.fixture
def matrix(app, database_url, redis_url, tmp_path) -> Iterator[Matrix]:
    """The harness on the suite's PostgreSQL database and Redis (``app``: its tables are emptied after)."""
    if not database_url.startswith("postgresql"):
        pytest.skip(f"the fault matrix runs on PostgreSQL: {PG_HOW}; CI's PostgreSQL run has it")
    runner = Matrix(database_url, redis_url, tmp_path, RECIPIENTS, SUPPORT_REQUESTS, log=print)
    yield runner
    runner.close()


def _require_private_services(scenario: Scenario) -> None:
    """The binaries a scenario starts its own Redis or PostgreSQL from."""
    if scenario.private_redis:
        require_service("redis-server", shutil.which("redis-server") is not None, "install redis-server")
    if scenario.private_postgres:
        require_service(
            "PostgreSQL binaries", postgres_bindir() is not None, "set PG_BINDIR to initdb's folder"
        )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.key)
def test_fault_loses_nothing_doubles_nothing_and_recovers_in_time(matrix, scenario):
    _require_private_services(scenario)
    try:
        outcome = matrix.run(scenario)
    except ProcessFailed as failure:
        pytest.fail(f"{scenario.key}: {failure}")

    assert outcome.expected == (SUPPORT_REQUESTS if scenario.kind == "support" else RECIPIENTS)
    assert outcome.problems() == [], outcome.describe()
