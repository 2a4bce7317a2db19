"""The school data export at 2,000 and 20,000 families: memory stays flat, the first byte comes at once.

    python -m bench.school_export [--sizes 2000 20000] [--server postgresql+psycopg://postgres@127.0.0.1:5432]
        [--reuse]

Builds one throwaway PostgreSQL database per size, ``bench_zip_<families>`` (DROPPED and rebuilt,
or kept with ``--reuse``), with the reference school of ``bench/district.py`` (``app/reference_data.py``
plus a year of history), then measures, for the reference school:

- the worker's job (``build_school_export``: the ZIP written from batched reads into a temporary
  file and stored in ~1 MB pieces): wall time (untraced) and, in a second run, tracemalloc's
  peak of Python allocations;
- the old in-memory build, kept here only to compare (every table as a list of dicts, school.json
  dumped whole, the ZIP in a BytesIO), measured the same way in the same run;
- the download as an admin through the test client, read piece by piece: time to first byte,
  in all, and its peak memory.

Only 127.0.0.1. Writes bench/results/school_export.json.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import platform
import secrets
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.district import DEFAULT_SERVER, build, csrf_of, make_app

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "school_export.json"
REDIS = "redis://127.0.0.1:6379/13"  # named by the app's config; nothing is enqueued here


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``work`` untraced: its result and wall seconds (tracemalloc slows allocation a lot)."""
    gc.collect()
    started = time.perf_counter()
    return work(), time.perf_counter() - started


def traced(work: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``work`` under tracemalloc: its result, wall seconds and peak MB of Python allocations."""
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = work()
        return result, time.perf_counter() - started, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def legacy_zip(school_id: int) -> bytes:
    """The export as it was built before it streamed: every table in memory, then the ZIP."""
    from app.consent.export import _safe_cell, school_tables

    tables = school_tables(school_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("school.json", json.dumps(tables, indent=2, ensure_ascii=False))
        for name, rows in tables.items():
            out = io.StringIO()
            if rows:
                writer = csv.DictWriter(out, fieldnames=list(rows[0]))
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: _safe_cell(v) for k, v in row.items()})
            archive.writestr(f"{name}.csv", out.getvalue())
    return buffer.getvalue()


def new_export(school_id: int, admin_email: str) -> tuple[int, str]:
    """A queued export of the school requested by its admin; its id and the raw link token."""
    from sqlalchemy import select

    from app import tenancy
    from app.consent.export import EXPORT_LIFETIME, hash_token
    from app.extensions import db
    from app.models import User
    from app.models.base import utcnow
    from app.models.consent import DataExport, ExportStatus

    raw = secrets.token_urlsafe(32)
    with tenancy.unscoped():
        admin_id = db.session.scalar(select(User.id).where(User.email == admin_email))
    with tenancy.bound(school_id):
        export = DataExport(
            requested_by_id=admin_id,
            token_hash=hash_token(raw),
            status=ExportStatus.QUEUED,
            expires_at=utcnow() + EXPORT_LIFETIME,
        )
        db.session.add(export)
        db.session.commit()
        return export.id, raw


def download(app, email: str, password: str, raw: str) -> tuple[float, float, int, float]:
    """The ZIP through the download route, read a piece at a time: first byte, total, bytes, peak MB."""
    client = app.test_client()
    token = csrf_of(client.get("/sign-in").get_data(as_text=True))
    signed = client.post("/sign-in", data={"csrf_token": token, "email": email, "password": password})
    assert signed.status_code in (302, 303), signed.status_code

    def read() -> tuple[float, int]:
        started = time.perf_counter()
        response = client.get(f"/school/export/{raw}/download", buffered=False)
        assert response.status_code == 200, response.status_code
        pieces = iter(response.response)
        size = len(next(pieces, b""))
        first = time.perf_counter() - started
        size += sum(len(piece) for piece in pieces)
        response.close()
        return first, size

    read()  # warm: the first request pays for templates and connections
    (first, size), total = timed(read)
    _, _, peak = traced(read)
    return first, total, size, peak


def measure(database_url: str, families: int, reuse: bool) -> dict:
    """Build (or reuse) the database of one size and measure the job, the old build, the download."""
    from sqlalchemy import select

    from app import tenancy
    from app.consent.export import build_school_export
    from app.extensions import db
    from app.models import Membership, Role, School, User
    from app.reference_data import PASSWORD

    if not reuse:
        build(database_url, REDIS, 1, families)
    app = make_app(database_url, REDIS)
    with app.app_context():
        school_id = db.session.scalar(select(School.id).order_by(School.id))
        with tenancy.bound(school_id):
            admin_email = db.session.scalar(
                select(User.email)
                .join(Membership, Membership.user_id == User.id)
                .where(Membership.role == Role.SUPERADMIN)
                .order_by(Membership.id)
            )
        timed_id, _ = new_export(school_id, admin_email)
        export_id, raw = new_export(school_id, admin_email)
        db.session.remove()
        outcome, job_s = timed(lambda: build_school_export(timed_id, school_id))
        db.session.remove()
        outcome, _, job_mb = traced(lambda: build_school_export(export_id, school_id))
        assert outcome == "ready", outcome
        db.session.remove()
        with tenancy.bound(school_id):
            legacy, legacy_s = timed(lambda: legacy_zip(school_id))
            _, _, legacy_mb = traced(lambda: legacy_zip(school_id))
        db.session.remove()
    first_s, total_s, size, download_mb = download(app, admin_email, PASSWORD, raw)
    with app.app_context():
        db.engine.dispose()
    return {
        "families": families,
        "zip_mb": size / 2**20,
        "legacy_zip_mb": len(legacy) / 2**20,
        "job_s": job_s,
        "job_peak_mb": job_mb,
        "legacy_build_s": legacy_s,
        "legacy_build_peak_mb": legacy_mb,
        "download_first_byte_s": first_s,
        "download_total_s": total_s,
        "download_peak_mb": download_mb,
    }


def report(rows: list[dict]) -> str:
    """A table of the figures, one line per size."""
    lines = [
        "families  zip MB  job s  job peak MB | old build s  old peak MB  (old/new peak) | "
        "download first byte s  total s  peak MB"
    ]
    for r in rows:
        lines.append(
            f"{r['families']:>8}  {r['zip_mb']:6.1f}  {r['job_s']:5.1f}  {r['job_peak_mb']:11.1f} | "
            f"{r['legacy_build_s']:11.1f}  {r['legacy_build_peak_mb']:11.1f}  "
            f"({r['legacy_build_peak_mb'] / r['job_peak_mb']:5.1f}x)        | "
            f"{r['download_first_byte_s']:21.3f}  {r['download_total_s']:7.2f}  {r['download_peak_mb']:7.1f}"
        )
    if len(rows) > 1:
        small, big = rows[0], rows[-1]
        lines.append(
            f"peak memory growth {small['families']} -> {big['families']} families: job "
            f"{big['job_peak_mb'] - small['job_peak_mb']:+.1f} MB, old build "
            f"{big['legacy_build_peak_mb'] - small['legacy_build_peak_mb']:+.1f} MB, download "
            f"{big['download_peak_mb'] - small['download_peak_mb']:+.1f} MB"
        )
    return "\n".join(lines)


def main() -> int:
    """Measure each size and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--reuse", action="store_true", help="keep the databases of an earlier run")
    args = parser.parse_args()
    if "@127.0.0.1" not in args.server and "@localhost" not in args.server:
        raise SystemExit("bench.school_export drops its databases: give a PostgreSQL server on 127.0.0.1")
    rows = []
    for families in args.sizes:
        url = f"{args.server.rstrip('/')}/bench_zip_{families}"
        rows.append(measure(url, families, args.reuse))
        print(report(rows[-1:]), flush=True)
    text = report(rows)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "rows": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
