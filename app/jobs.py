"""enqueue(): RQ when REDIS_URL is set, in-process after the commit otherwise.

Jobs are plain functions that take ids, never objects. A job enqueued inside a
transaction waits for the commit (and is dropped by a rollback), so the worker never
looks for rows that are not there yet. If Redis is unreachable the job is not lost: its
work is recorded in the database (the outbox) and the sweeper enqueues it again later.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.extensions import db

log = logging.getLogger(__name__)

_worker_app: Flask | None = None
_engine_pid: int | None = None


@dataclass
class PendingJob:
    """A job waiting for its transaction to commit."""

    func: Callable
    args: tuple
    queue: str
    job_id: str | None = None
    options: dict = field(default_factory=dict)


def enqueue(func: Callable, *args, queue: str = "default", job_id: str | None = None, **options):
    """Run ``func(*args)`` after the current transaction commits (in RQ or in-process)."""
    db.session.info.setdefault("pending_jobs", []).append(PendingJob(func, args, queue, job_id, options))


SCHEDULER_GRANULARITY_SECONDS = 1


def enqueue_in(seconds: float, func: Callable, *args, queue: str = "default") -> None:
    """Run ``func(*args)`` after a delay (RQ's scheduler); in-process, the sweeper picks it up.

    RQ's scheduler keeps whole seconds (it truncates), so the job is scheduled a second late:
    otherwise it could wake just before the row's next_attempt_at, find nothing due, and leave
    the retry to the sweeper minutes later.
    """
    if not current_app.config.get("REDIS_URL"):
        return
    from datetime import timedelta

    from redis.exceptions import RedisError

    try:
        delay = timedelta(seconds=seconds + SCHEDULER_GRANULARITY_SECONDS)
        get_queue(queue).enqueue_in(delay, func, *args, **_rq_options({}))
    except RedisError as error:
        log.warning("redis unavailable, delayed %s left for the sweeper: %s", func.__name__, error)


def _after_commit(session: Session) -> None:
    pending = session.info.pop("pending_jobs", [])
    if not pending:
        return
    if current_app.config.get("REDIS_URL"):
        for job in pending:
            push_to_redis(job)
    else:
        session.info.setdefault("ready_jobs", []).extend(pending)


def _after_rollback(session: Session) -> None:
    if session.in_transaction():
        return  # only a savepoint rolled back; the enclosing transaction may still commit
    session.info.pop("pending_jobs", None)


def push_to_redis(job: PendingJob) -> bool:
    """Put one job on its RQ queue; on a Redis outage log it and leave it to the sweeper."""
    from redis.exceptions import RedisError

    try:
        get_queue(job.queue).enqueue(job.func, *job.args, job_id=job.job_id, **_rq_options(job.options))
        return True
    except RedisError as error:
        log.warning("redis unavailable, %s left for the sweeper: %s", job.func.__name__, error)
        return False


def _rq_options(options: dict) -> dict:
    # RQ kills a job after 180 s by default; a large send or import legitimately runs longer,
    # and a killed send only waits for the sweeper, so allow 30 minutes before that happens.
    defaults = {"retry": None, "result_ttl": 3600, "failure_ttl": 7 * 24 * 3600, "job_timeout": 1800}
    return {**defaults, **options}


def run_ready_jobs() -> None:
    """In-process mode: run jobs whose transaction committed (after the request, or a command)."""
    ready = db.session.info.pop("ready_jobs", [])
    for job in ready:
        try:
            job.func(*job.args)
        except Exception:  # a failed job must not fail the request that caused it
            db.session.rollback()
            log.exception("in-process job %s failed; the sweeper will retry", job.func.__name__)
        ready.extend(db.session.info.pop("ready_jobs", []))


def redis_connection():
    """A Redis client for REDIS_URL (TLS without verification for Heroku's self-signed certs)."""
    from redis import Redis

    config = current_app.config
    return Redis.from_url(
        config["REDIS_URL"], socket_timeout=5, socket_connect_timeout=3, **config["REDIS_OPTIONS"]
    )


def get_queue(name: str = "default"):
    """The RQ queue of this name on the configured Redis."""
    from rq import Queue

    return Queue(name, connection=redis_connection())


def install() -> None:
    """Hook job dispatch to commits (app/pipeline.py runs in-process jobs after each request)."""
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", lambda s, t: _after_rollback(s))


def run_jobs_after_request(response):
    """after_request: in-process mode runs the jobs the request's commit released."""
    run_ready_jobs()
    return response


def set_worker_app(app: Flask) -> None:
    """worker.py hands its app here so job functions can push a context of it."""
    global _worker_app
    _worker_app = app


def job(func: Callable) -> Callable:
    """Make a function runnable by the worker: it gets an app context and a fork-safe engine."""

    @functools.wraps(func)
    def run(*args, **kwargs):
        if has_app_context():
            return func(*args, **kwargs)
        app = _worker_app
        if app is None:
            from app import create_app

            app = create_app()
            set_worker_app(app)
        with app.app_context():
            _forget_inherited_connections()
            try:
                return func(*args, **kwargs)
            except Exception as error:
                failure = _scrubbed(func, error)
            finally:
                db.session.remove()
        raise failure  # outside the except block: the original is not even kept as its context

    return run


class JobFailed(Exception):
    """A job's failure as RQ logs and stores it: where it failed, never the original message."""


def _scrubbed(func: Callable, error: Exception) -> JobFailed:
    """RQ writes a failed job's exception, message and all, to the log and to Redis; a database
    error's message holds parameters and PostgreSQL's DETAIL line (an email address)."""
    from app.logging_setup import scrubbed_traceback

    return JobFailed(f"{func.__name__} failed with {type(error).__name__}\n{scrubbed_traceback(error)}")


def repeating(func: Callable) -> Callable:
    """For jobs the worker repeats: RQ repeats only a job that succeeded, so never fail.

    A transient error (the database restarting) is logged and the next run tries again.
    """

    @functools.wraps(func)
    def run(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception:  # any failure would stop the repetition for good
            db.session.rollback()
            log.exception("repeating job %s failed; it runs again at its next interval", func.__name__)
            return {"error": True}

    return run


def _forget_inherited_connections() -> None:
    """RQ forks a work horse per job; pooled connections from the parent must not be shared."""
    global _engine_pid
    if _engine_pid != os.getpid():
        db.engine.dispose(close=False)
        _engine_pid = os.getpid()
