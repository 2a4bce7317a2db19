"""The RQ worker: builds the app from config and works the named queues until SIGTERM.

Warm shutdown. Heroku (and most platforms) send SIGTERM and SIGKILL 30 s later. The job in
hand gets WORKER_SHUTDOWN_GRACE_SECONDS (25) to finish; one still running then is cancelled
and put back at the front of its queue, never failed, so the next worker runs it again (the
mail claims make a re-run send nothing twice). RQ's HerokuWorker cancelled it after 6 s.

The schedule survives. The repeating jobs (sweepers, digest, policy dispatch) have fixed ids
and are registered again on every worker heartbeat if they are missing: one pipelined read
when all is well, and a short Redis lock so that N workers racing register each job once. A
Redis flush or a restart without persistence is repaired within one heartbeat
(WORKER_HEARTBEAT_SECONDS, 20 s). The sweepers run every SWEEP_EVERY_SECONDS.

The scheduler comes back. RQ runs its scheduler in one worker, holding the lock
``rq:scheduler-lock:<queue>`` (61 s TTL, refreshed every second by the scheduler). A worker
SIGKILLed leaves that lock behind, and RQ retries only every 10 minutes. Here each heartbeat
of a worker without a running scheduler checks the holder: a holder whose heartbeat hash is
gone, or has not moved for SCHEDULER_STALE_SECONDS of this worker's own clock (no clock
comparison between machines), is dead; its lock is released (only if still its) and taken.
A worker restarted right after a crash runs the scheduler within about two heartbeats.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from redis.exceptions import RedisError
from rq.worker import HerokuWorker

from app import create_app, jobs
from config import Config

SWEEP_EVERY_SECONDS = Config.SWEEP_EVERY_SECONDS  # the default; main() passes the app's setting
SWEEP_JOB_ID = "sweep-outbox"
DIGEST_EVERY_SECONDS = 24 * 3600
DIGEST_JOB_ID = "daily-digest"
SUPPORT_SWEEP_JOB_ID = "sweep-support"
POLICY_DISPATCH_JOB_ID = "policy-dispatch"
RESET_SWEEP_JOB_ID = "sweep-reset-requests"
SUPPRESSION_SWEEP_JOB_ID = "sweep-suppressions"
JOIN_DIGEST_JOB_ID = "join-request-digests"
REPEATING_QUEUE = "default"
# A job in one of these states will run again by itself; any other (or none) means it was lost.
LIVE_STATUSES = {b"queued", b"scheduled", b"started", b"deferred"}
# Held (never deleted) for this long by the worker that registers missing jobs: a worker that
# read "missing" at the same moment finds it taken, and reads again at its next heartbeat.
REGISTRATION_LOCK = "joc:repeating-registration"
REGISTRATION_LOCK_SECONDS = 10
# RQ calls heartbeat() several times per job; the checks need not run more often than this.
CHECK_AT_MOST_EVERY_SECONDS = 2.0
# RQ's scheduler writes its heartbeat every second: one unchanged for this long has died.
SCHEDULER_STALE_SECONDS = 10.0
log = logging.getLogger("worker")


class Worker(HerokuWorker):
    """HerokuWorker with a full shutdown grace, a self-repairing schedule and scheduler."""

    def __init__(
        self,
        *args,
        sweep_every: int = SWEEP_EVERY_SECONDS,
        shutdown_grace: int = Config.WORKER_SHUTDOWN_GRACE_SECONDS,
        heartbeat_seconds: int = Config.WORKER_HEARTBEAT_SECONDS,
        **kwargs,
    ) -> None:
        """RQ's worker, heartbeating every ``heartbeat_seconds`` idle or busy."""
        # RQ blocks on the queues for worker_ttl - 15 s between heartbeats, and heartbeats
        # every job_monitoring_interval while a job runs.
        kwargs.setdefault("worker_ttl", heartbeat_seconds + 15)
        kwargs.setdefault("job_monitoring_interval", heartbeat_seconds)
        super().__init__(*args, **kwargs)
        self.imminent_shutdown_delay = shutdown_grace
        self.sweep_every = sweep_every
        self._next_check = 0.0
        self._shutdown_imminent = False
        self._scheduler_beats: dict[str, tuple[bytes, float]] = {}

    def _shutdown(self) -> None:
        """Keep the stop request even if RQ's StopRequested is lost."""
        # RQ raises StopRequested from the signal handler when no job is in hand. A SIGTERM
        # landing inside a log call (between dequeue and fork) has that exception swallowed by
        # logging's error handler, and the worker ran on, ignoring the stop. The flag survives
        # that: the work loop checks it before taking the next job.
        self._stop_requested = True
        super()._shutdown()

    # -- heartbeat: the schedule and the scheduler ----------------------------------------------

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        """RQ's heartbeat, then (in the worker, not its work horse) repair the schedule."""
        super().heartbeat(timeout, pipeline)
        if self._is_horse or self._stop_requested or time.monotonic() < self._next_check:
            return  # a stopping worker must not start the scheduler RQ just stopped
        self._next_check = time.monotonic() + CHECK_AT_MOST_EVERY_SECONDS
        try:
            registered = schedule_repeating(self.connection, self.sweep_every)
            if registered:
                log.warning("repeating jobs were missing from Redis, registered again: %s", registered)
            self._revive_scheduler()
        except RedisError as error:  # Redis is down: RQ's own loop waits for it; try next time
            log.warning("could not check the schedule: %s", error)

    def _revive_scheduler(self) -> None:
        """Take the scheduler over from a dead holder, or start it where nobody holds it."""
        scheduler = self.scheduler
        if scheduler is None or (scheduler._process is not None and scheduler._process.is_alive()):
            return
        from rq.scripts import release_lock

        for name in sorted(scheduler._queue_names):
            key = scheduler.get_locking_key(name)
            raw = self.connection.get(key)
            holder = raw.decode() if isinstance(raw, bytes) else str(raw or "")
            dead = bool(holder) and self._holder_is_dead(holder, own=scheduler.name)
            if dead and release_lock(self.connection, key, holder):
                log.warning("scheduler lock for %s was held by a dead scheduler; released", name)
        if scheduler.acquire_locks(auto_start=True):
            log.info("scheduler started for %s", ", ".join(sorted(scheduler.acquired_locks)))

    def _holder_is_dead(self, holder: str, *, own: str) -> bool:
        """Whether the scheduler named ``holder`` has stopped heartbeating."""
        if holder == own:
            return True  # our own scheduler process is not running (checked by the caller)
        return scheduler_is_dead(self.connection, holder, self._scheduler_beats, time.monotonic())

    # -- warm shutdown: requeue what the grace could not finish ---------------------------------

    def request_force_stop_sigrtmin(self, signum, frame):
        """In the work horse, when the grace is over: remember why the job is cancelled."""
        self._shutdown_imminent = True
        super().request_force_stop_sigrtmin(signum, frame)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        """A job cancelled by the shutdown goes back to the front of its queue; others fail."""
        if not self._shutdown_imminent:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        with self.connection.pipeline() as pipeline:
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            queue._enqueue_job(job, pipeline=pipeline, at_front=True)
            pipeline.execute()
        log.warning("job %s outlived the %ss shutdown grace; requeued", job.id, self.imminent_shutdown_delay)


def scheduler_is_dead(connection, holder: str, seen: dict[str, tuple[bytes, float]], now: float) -> bool:
    """Whether RQ scheduler ``holder`` is dead: its hash is gone, or its heartbeat stood still.

    ``seen`` remembers each holder's last heartbeat value and when (``now``, a monotonic clock)
    it was first seen: only this process's own clock is compared, never another machine's.
    """
    from rq.scheduler import SCHEDULER_KEY_TEMPLATE

    beat = connection.hget(SCHEDULER_KEY_TEMPLATE % holder, "last_heartbeat")
    if beat is None:
        seen.pop(holder, None)
        return True
    previous = seen.get(holder)
    if previous is None or previous[0] != beat:
        seen[holder] = (beat, now)
        return False
    return now - previous[1] >= SCHEDULER_STALE_SECONDS


def main(argv: list[str]) -> int:
    """Run one worker on the queues named in argv (default: every queue the app uses)."""
    app = create_app()
    jobs.set_worker_app(app)
    if not app.config.get("REDIS_URL"):
        log.error("REDIS_URL is not set: without Redis, jobs run inside the web process.")
        return 2
    config = app.config
    with app.app_context():
        connection = jobs.redis_connection()
        schedule_repeating(connection, int(config["SWEEP_EVERY_SECONDS"]))
    # No app context around work(): each job pushes its own, after the fork.
    worker = Worker(
        argv or list(config["JOB_QUEUES"]),
        connection=connection,
        sweep_every=int(config["SWEEP_EVERY_SECONDS"]),
        shutdown_grace=int(config["WORKER_SHUTDOWN_GRACE_SECONDS"]),
        heartbeat_seconds=int(config["WORKER_HEARTBEAT_SECONDS"]),
    )
    worker.work(with_scheduler=True)
    return 0


def repeating_jobs(sweep_every: int) -> list[tuple[str, Callable, int]]:
    """Every repeating job: its fixed id, its function, its interval in seconds."""
    from app.auth.jobs import sweep_reset_requests
    from app.consent.jobs import refresh_policy_dispatches
    from app.mail.digest import send_digests
    from app.mail.jobs import sweep
    from app.mail.suppressions import sweep_suppressions
    from app.members.notices import DIGEST_EVERY_SECONDS as JOIN_DIGEST_EVERY_SECONDS
    from app.members.notices import send_join_digests
    from app.support.jobs import sweep_support

    return [
        (SWEEP_JOB_ID, sweep, sweep_every),
        (DIGEST_JOB_ID, send_digests, DIGEST_EVERY_SECONDS),
        (SUPPORT_SWEEP_JOB_ID, sweep_support, sweep_every),
        (POLICY_DISPATCH_JOB_ID, refresh_policy_dispatches, sweep_every),
        (RESET_SWEEP_JOB_ID, sweep_reset_requests, sweep_every),
        (SUPPRESSION_SWEEP_JOB_ID, sweep_suppressions, sweep_every),
        (JOIN_DIGEST_JOB_ID, send_join_digests, JOIN_DIGEST_EVERY_SECONDS),
    ]


def schedule_repeating(connection, sweep_every: int = SWEEP_EVERY_SECONDS) -> list[str]:
    """Register the repeating jobs Redis does not have (once, whatever the number of workers).

    Returns the ids registered: none when all are there (one pipelined read), or when another
    worker holds the registration lock (it registers them; this one checks again next time).
    """
    wanted = repeating_jobs(sweep_every)
    missing = _missing(connection, wanted)
    if not missing:
        return []
    if not connection.set(REGISTRATION_LOCK, b"1", nx=True, ex=REGISTRATION_LOCK_SECONDS):
        return []
    missing = _missing(connection, missing)  # read again under the lock: another may have just done it
    for job_id, func, interval in missing:
        _repeat(connection, job_id, func, interval)
    return [job_id for job_id, _, _ in missing]


def _missing(connection, wanted: list[tuple[str, Callable, int]]) -> list[tuple[str, Callable, int]]:
    """Those of ``wanted`` whose job is absent from Redis or will not run again."""
    from rq.job import Job

    with connection.pipeline(transaction=False) as pipeline:
        for job_id, _, _ in wanted:
            pipeline.hget(Job.key_for(job_id), "status")
        statuses = pipeline.execute()
    return [entry for entry, status in zip(wanted, statuses, strict=True) if status not in LIVE_STATUSES]


def _repeat(connection, job_id: str, func, interval: int) -> None:
    """Enqueue ``func`` now under its fixed id, repeating every ``interval`` seconds."""
    from rq import Queue, Repeat

    Queue(REPEATING_QUEUE, connection=connection).enqueue(
        func, job_id=job_id, repeat=Repeat(times=10**6, interval=interval), result_ttl=600
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
