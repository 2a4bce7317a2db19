"""A large import applied by a real worker.py on Redis, and its progress seen while it runs."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from app import tenancy
from app.extensions import db
from app.imports import services
from app.models import Family, Role, SchoolClass
from app.models.imports import ImportRun, ImportStatus
from tests.conftest import sign_in

# The worker fixtures live with the integration tests; importing them registers them here.
from tests.integration.conftest import (  # noqa: F401
    fresh,
    make_redis_app,
    redis_app,
    redis_app_client,
    redis_conn,
    redis_url,
    start_worker,
    wait_for,
)

HEADER = "family_key,guardian_name,guardian_email,student_first_name,student_last_name,class_name\n"


def _rows(count: int) -> str:
    return "".join(f"F-{n},Parent {n},parent{n}@example.org,Kid{n},Family{n},Rose\n" for n in range(count))


def _school(make_school, make_member):
    school = make_school(name="Worker School")
    with tenancy.bound(school.id):
        db.session.add(SchoolClass(name="Rose", grade="Grade 1", school_year="2026-27"))
        db.session.commit()
    return school, make_member(school, role=Role.ADMIN, email="admin@worker.example")


@pytest.mark.redis
def test_a_large_file_is_applied_by_the_worker(request, make_school, make_member, monkeypatch):
    # Fixtures of tests/integration, asked for by name (as parameters they would shadow the imports).
    web = request.getfixturevalue("redis_app_client")
    launch_worker = request.getfixturevalue("start_worker")
    monkeypatch.setattr(services, "WORKER_THRESHOLD", 10)
    school, _admin = _school(make_school, make_member)
    sign_in(web, "admin@worker.example")
    uploaded = web.form(
        "/import/",
        {"file": (io.BytesIO((HEADER + _rows(40)).encode()), "big.csv")},
        content_type="multipart/form-data",
    )
    run_path = uploaded.headers["Location"]
    applied = web.form(f"{run_path}/apply")
    assert applied.status_code == 303
    # Queued, not done inside the request: the page polls for progress.
    page = web.get(run_path).get_data(as_text=True)
    assert 'data-hx-trigger="every 1s"' in page and "Waiting for its turn" in page

    worker = launch_worker()

    def finished():
        with tenancy.bound(school.id):
            run = fresh(select(ImportRun)).scalar_one()
            return run if run.status.finished else None

    run = wait_for(finished, timeout=60, what="the import to finish", worker=worker)
    assert run.status is ImportStatus.DONE, run.failure
    assert run.processed_rows == 40 and run.summary["families"] == 40
    with tenancy.bound(school.id):
        assert fresh(select(func.count(Family.id))).scalar_one() == 40
    done = web.get(
        f"{run_path}/progress", headers={"HX-Request": "true", "HX-Target": "import-progress"}
    ).get_data(as_text=True)
    assert "Done." in done and "data-hx-trigger" not in done


def test_progress_is_visible_to_other_connections_while_the_import_runs(
    app, make_school, make_member, monkeypatch
):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: there the progress jumps from 0 to done")
    school, admin = _school(make_school, make_member)
    seen: list[int] = []
    report = services._report_progress

    def watch(run_id: int, done: int) -> None:
        report(run_id, done)
        table = ImportRun.__table__
        with db.engine.connect() as other:  # what the polling page would read now
            seen.append(other.execute(select(table.c.processed_rows).where(table.c.id == run_id)).scalar())

    monkeypatch.setattr(services, "_report_progress", watch)
    with tenancy.bound(school.id):
        run = ImportRun(content=HEADER + _rows(30), total_rows=30, status=ImportStatus.QUEUED)
        db.session.add(run)
        db.session.commit()
        services.run_import(run)
        assert run.status is ImportStatus.DONE
        # Committed apart from the import, so seen mid-way; the last report comes before the end.
        assert seen and 0 < seen[0] < 30 and seen == sorted(seen)
        assert db.session.scalar(select(func.count(Family.id))) == 30
