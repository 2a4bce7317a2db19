"""The fault matrix as figures: every fault of tests/integration/faults_harness.py at N recipients.

    python -m bench.faults [--n 3000 --n 20000] [--only KEY ...] [--support-requests M]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_faults]

The --database-url database is DROPPED and created again for each N (and left behind for a
look afterwards). Redis is a private ``redis-server`` per scenario (a port in 16300-16399, no
persistence), PostgreSQL-restart runs on a private cluster (initdb under a temp dir), the
Mailgun and Zendesk stand-ins run as their own processes (``python -m tests.fakes.serve``) and
count every recipient and ticket they take. Nothing is driven by hand: no sweep is run and
no lease aged; the workers recover by themselves or not at all.

For each N it prints a table (scenario, expected, delivered, duplicates, missing, seconds from
the fault until all were sent, and the bound: 60 s plus the provider's own delay) and writes
bench/results/faults.json. It exits 1 if any row shows a loss, a duplicate or a miss of its
bound. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.integration.faults_harness import BY_KEY, LOOPBACK, SCENARIOS, Matrix, Outcome, Settings, table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "faults.json"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_faults"


def recreate_database(url: str) -> None:
    """DROP the bench database and create it empty (each scenario creates the tables afresh)."""
    from bench.mail_fanout import drop_postgres_database, ensure_postgres_database

    drop_postgres_database(url)
    ensure_postgres_database(url)


def run_matrix(n: int, database_url: str, keys: list[str], support_requests: int | None) -> list[Outcome]:
    """Every chosen scenario at ``n`` recipients, on a fresh database; their outcomes."""
    recreate_database(database_url)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-faults-{n}-"))
    requests = support_requests or min(50, max(10, n // 100))
    matrix = Matrix(database_url, None, workdir, n, requests, log=lambda line: print(line, flush=True))
    outcomes = []
    try:
        for key in keys:
            started = time.monotonic()
            print(f"\n== N={n:,}: {key}", flush=True)
            outcomes.append(matrix.run(BY_KEY[key]))
            print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        matrix.close()
    if all(o.passed for o in outcomes):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"worker and stand-in logs kept in {workdir}", flush=True)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", type=int, action="append", help="recipients (repeatable; default 3000 and 20000)"
    )
    parser.add_argument("--only", action="append", choices=sorted(BY_KEY), help="run only these scenarios")
    parser.add_argument("--support-requests", type=int, help="support requests for the Zendesk rows (N/100)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    args = parser.parse_args(argv)
    host = urlsplit(args.database_url.replace("+psycopg", "")).hostname
    if host not in LOOPBACK or not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be PostgreSQL on 127.0.0.1 (it is DROPPED and recreated)")
    keys = args.only or [s.key for s in SCENARIOS]
    sizes = args.n or [3000, 20000]
    settings = Settings()
    print(f"settings: {json.dumps(dataclasses.asdict(settings))}", flush=True)
    report: dict[str, list[dict]] = {}
    tables = []
    for n in sizes:
        outcomes = run_matrix(n, args.database_url, keys, args.support_requests)
        report[str(n)] = [dataclasses.asdict(o) | {"passed": o.passed} for o in outcomes]
        support = next((o.expected for o in outcomes if o.scenario.startswith("zendesk")), 0)
        tables.append(f"N = {n:,} recipients, {support} support requests\n\n{table(outcomes)}")
    print("\n" + "\n\n".join(tables), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"settings": dataclasses.asdict(settings), "runs": report}, indent=2))
    failed = [o["scenario"] for runs in report.values() for o in runs if not o["passed"]]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
