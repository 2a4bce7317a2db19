"""worker.py keeps its schedule and its scheduler, and uses the platform's shutdown grace.

Real worker.py processes on the test Redis: a flushed Redis gets its repeating jobs back
within one heartbeat; a worker started right after a SIGKILLed one runs the scheduler (RQ's
lock outlives its holder) within a minute; SIGTERM lets a slow job finish, and requeues one
that outlives the grace.
"""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import timedelta

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler

import worker as worker_module
from config import Config
from tests.integration.conftest import wait_for
from tests.integration.processes import kill_worker_tree, process_tree
from tests.integration.slow_jobs import lines, slow_job

pytestmark = pytest.mark.redis

REPEATING_IDS = [job_id for job_id, _, _ in worker_module.repeating_jobs(10)]
LOCK = RQScheduler.get_locking_key("default")


def status(redis_conn, job_id: str) -> JobStatus | None:
    """The job's status, None if Redis does not have it."""
    raw = redis_conn.hget(Job.key_for(job_id), "status")
    return JobStatus(raw.decode()) if raw else None


def live_repeating(redis_conn) -> bool:
    """Every repeating job is in Redis and will run again."""
    return all(status(redis_conn, job_id) in worker_module_live() for job_id in REPEATING_IDS)


def worker_module_live() -> set[JobStatus]:
    return {JobStatus(s.decode()) for s in worker_module.LIVE_STATUSES}


def exit_code(process, timeout: float) -> int:
    """Wait for the worker process to leave; fail with its log if it does not."""
    try:
        return process.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still running {timeout}s after SIGTERM:\n{process.output()[-4000:]}")


# -- registration, without a worker process --------------------------------------------------------


def test_registration_adds_only_the_missing_jobs_and_is_idempotent(redis_conn):
    registered = worker_module.schedule_repeating(redis_conn, 7)
    assert sorted(registered) == sorted(REPEATING_IDS)
    queued = Queue("default", connection=redis_conn).job_ids
    assert sorted(queued) == sorted(REPEATING_IDS)  # each once
    sweep = Job.fetch(worker_module.SWEEP_JOB_ID, connection=redis_conn)
    assert sweep.repeat_intervals == [7]  # the interval comes from the caller (the app's config)

    redis_conn.delete(worker_module.REGISTRATION_LOCK)
    assert worker_module.schedule_repeating(redis_conn, 7) == []
    assert sorted(Queue("default", connection=redis_conn).job_ids) == sorted(REPEATING_IDS)

    # One is lost (finished for good, say): only it comes back.
    redis_conn.hset(Job.key_for(worker_module.DIGEST_JOB_ID), "status", JobStatus.FINISHED.value)
    assert worker_module.schedule_repeating(redis_conn, 7) == [worker_module.DIGEST_JOB_ID]


def test_a_worker_racing_another_registers_nothing_while_it_holds_the_lock(redis_conn):
    redis_conn.set(worker_module.REGISTRATION_LOCK, b"1", ex=worker_module.REGISTRATION_LOCK_SECONDS)
    assert worker_module.schedule_repeating(redis_conn, 10) == []
    assert Queue("default", connection=redis_conn).job_ids == []
    # The lock expires by itself (never deleted, so a late racer cannot register a second time).
    assert 0 < redis_conn.ttl(worker_module.REGISTRATION_LOCK) <= worker_module.REGISTRATION_LOCK_SECONDS


def test_a_scheduler_is_dead_when_its_hash_is_gone_or_its_heartbeat_stands_still(redis_conn):
    seen: dict = {}
    assert worker_module.scheduler_is_dead(redis_conn, "gone", seen, now=100.0)

    key = SCHEDULER_KEY_TEMPLATE % "holder"
    redis_conn.hset(key, "last_heartbeat", "2030-01-01T00:00:00Z")
    assert not worker_module.scheduler_is_dead(redis_conn, "holder", seen, now=100.0)
    assert not worker_module.scheduler_is_dead(redis_conn, "holder", seen, now=109.0)
    redis_conn.hset(key, "last_heartbeat", "2030-01-01T00:00:01Z")  # it beat: alive, watch again
    assert not worker_module.scheduler_is_dead(redis_conn, "holder", seen, now=115.0)
    assert not worker_module.scheduler_is_dead(redis_conn, "holder", seen, now=124.0)
    assert worker_module.scheduler_is_dead(redis_conn, "holder", seen, now=125.0)


def test_the_worker_heartbeats_every_twenty_seconds_and_gives_a_job_25(redis_conn):
    assert Config.WORKER_HEARTBEAT_SECONDS == 20
    assert Config.WORKER_SHUTDOWN_GRACE_SECONDS == 25
    rq_worker = worker_module.Worker(["default"], connection=redis_conn)
    assert rq_worker.dequeue_timeout == 20  # RQ blocks on the queues this long between heartbeats
    assert rq_worker.job_monitoring_interval == 20  # and heartbeats this often while a job runs
    assert rq_worker.imminent_shutdown_delay == 25


# -- real worker processes --------------------------------------------------------------------------


def test_a_flushed_redis_gets_its_repeating_jobs_back_within_a_heartbeat(redis_conn, start_worker):
    process = start_worker(WORKER_HEARTBEAT_SECONDS="4")
    wait_for(lambda: live_repeating(redis_conn), timeout=10, what="the repeating jobs", worker=process)

    redis_conn.flushdb()  # a Redis restarted without persistence
    flushed = time.monotonic()
    wait_for(lambda: live_repeating(redis_conn), timeout=12, what="them to come back", worker=process)
    assert time.monotonic() - flushed < 4 + worker_module.CHECK_AT_MOST_EVERY_SECONDS + 2
    assert "registered again" in process.output()
    # Each came back once: none is queued twice.
    queued = Queue("default", connection=redis_conn).job_ids
    assert len(queued) == len(set(queued))


def test_a_worker_started_right_after_a_crash_runs_the_scheduler_within_a_minute(
    redis_conn, start_worker, tmp_path
):
    first = start_worker()
    wait_for(lambda: redis_conn.get(LOCK), timeout=10, what="the scheduler lock", worker=first)
    holder = redis_conn.get(LOCK).decode()
    holder_pid = int(redis_conn.hget(SCHEDULER_KEY_TEMPLATE % holder, "pid"))
    assert holder_pid in process_tree(first.pid)

    kill_worker_tree(first)
    crashed = time.monotonic()
    assert redis_conn.ttl(LOCK) > 40  # RQ's lock outlives its holder by up to 61 s
    second = start_worker()
    log = str(tmp_path / "scheduled.log")
    Queue("default", connection=redis_conn).enqueue_in(timedelta(seconds=1), slow_job, log, 0)

    wait_for(lambda: lines(log) == ["started", "done"], timeout=58, what="the scheduled job", worker=second)
    recovered = time.monotonic() - crashed
    assert recovered < 60
    assert redis_conn.get(LOCK).decode() != holder
    assert "held by a dead scheduler; released" in second.output()
    print(f"scheduled job ran {recovered:.1f}s after the crash")


def test_sigterm_lets_a_slow_job_finish_and_the_worker_exit_cleanly(redis_conn, start_worker, tmp_path):
    process = start_worker()
    log = str(tmp_path / "slow.log")
    job = Queue("default", connection=redis_conn).enqueue(slow_job, log, 9)  # beyond RQ's 6 s
    wait_for(lambda: lines(log) == ["started"], timeout=10, what="the job to start", worker=process)

    process.proc.send_signal(signal.SIGTERM)
    assert exit_code(process, timeout=20) == 0, process.output()[-4000:]
    assert lines(log) == ["started", "done"]
    assert status(redis_conn, job.id) == JobStatus.FINISHED
    assert FailedJobRegistry("default", connection=redis_conn).get_job_ids() == []


def test_a_job_outliving_the_grace_is_requeued_and_finished_by_the_next_worker(
    redis_conn, start_worker, tmp_path
):
    process = start_worker(WORKER_SHUTDOWN_GRACE_SECONDS="2")
    log = str(tmp_path / "long.log")
    job = Queue("default", connection=redis_conn).enqueue(slow_job, log, 6)
    wait_for(lambda: lines(log) == ["started"], timeout=10, what="the job to start", worker=process)

    process.proc.send_signal(signal.SIGTERM)
    assert exit_code(process, timeout=10) == 0, process.output()[-4000:]
    assert lines(log) == ["started"]  # cancelled after the grace, not finished
    assert status(redis_conn, job.id) == JobStatus.QUEUED
    assert job.id in Queue("default", connection=redis_conn).job_ids
    assert FailedJobRegistry("default", connection=redis_conn).get_job_ids() == []
    assert "requeued" in process.output()

    second = start_worker()
    rerun = ["started", "started", "done"]
    wait_for(lambda: lines(log) == rerun, timeout=15, what="the re-run", worker=second)
    finished = JobStatus.FINISHED
    wait_for(lambda: status(redis_conn, job.id) == finished, timeout=5, what="it to finish", worker=second)
    assert FailedJobRegistry("default", connection=redis_conn).get_job_ids() == []
