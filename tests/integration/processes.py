"""Real processes on loopback, shared by the integration tests and the benchmarks (bench/).

``python worker.py`` (:class:`WorkerProcess`), ``gunicorn "app:create_app()"``
(:class:`WebInstance`), the environment they start with (:func:`child_env`), a
:class:`Browser` to talk to the web ones, and a process's descendants (:func:`process_tree`),
to kill a worker whole (:func:`kill_worker_tree`) or add up its memory. No pytest here, so a
benchmark can import it: what goes wrong raises :class:`ProcessFailed`, which the tests'
fixtures turn into a failure.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER_SECRET_KEY = "test-secret-key-not-for-production"
WORKER_STOP_TIMEOUT = 15.0
WEB_START_TIMEOUT = 30.0
# Settings a child must not inherit from the shell that started the run (a developer's .env).
INHERITED = ("TEST_", "FLASK_", "RQ_", "MAIL", "REDIS_", "DATABASE_", "PUBLIC_URL", "APP_ENV", "WEB_", "PORT")
NO_PROXY = urllib.request.ProxyHandler({})  # loopback requests must never go through a proxy


class ProcessFailed(RuntimeError):
    """A child process exited, or did not get ready in time; the message carries its log."""


def child_env(
    database_url: str,
    redis_url: str,
    instance: Path,
    *,
    public_url: str,
    secret_key: str = WORKER_SECRET_KEY,
    **extra: str,
) -> dict[str, str]:
    """The environment of a worker or web process: this shell's, less the app's settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    env.update(
        APP_ENV="development",  # plain-HTTP cookies: the processes are reached over http://127.0.0.1
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY=secret_key,
        INSTANCE_PATH=str(instance),
        PUBLIC_URL=public_url,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def wait_until(
    predicate: Callable[[], object], *, timeout: float, what: str, process: WorkerProcess | None = None
):
    """Poll ``predicate`` until it returns something truthy; raise ProcessFailed with the log if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.proc.poll() is not None:
            raise ProcessFailed(
                f"worker exited ({process.proc.returncode}) while waiting for {what}:\n{process.output()}"
            )
        if time.monotonic() > deadline:
            log = process.output()[-6000:] if process is not None else ""
            raise ProcessFailed(
                f"timed out after {timeout:.0f}s waiting for {what}\n--- worker log ---\n{log}"
            )
        time.sleep(0.1)


# -- workers ---------------------------------------------------------------------------------------


class WorkerProcess:
    """A real ``python worker.py`` with its output captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        """Start the worker in its own session, its output going to ``log_path``."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the scheduler and work horse with it
        )

    @property
    def pid(self) -> int:
        """The worker's main process id (the one RQ registers)."""
        return self.proc.pid

    def output(self) -> str:
        """Everything the worker has logged so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = WORKER_STOP_TIMEOUT) -> int:
        """SIGTERM (a warm shutdown), then SIGKILL if it does not leave in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it, ``root`` first (Linux /proc).

    Found by parent pid, not by process group: RQ's work horse calls setpgrp() after the fork,
    so it is not in the worker's group.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def is_zombie(pid: int) -> bool:
    """Whether ``pid`` has died (a zombie waiting to be reaped, or gone altogether)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def signal_each(pids: list[int], signum: int) -> None:
    """Send ``signum`` to each of ``pids``, passing over those that have ended meanwhile."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def kill_worker_tree(worker: WorkerProcess) -> list[int]:
    """SIGKILL the worker as a dying machine would: main process, scheduler and work horse.

    The worker's process group is not enough: RQ's work horse calls setpgrp() after the fork,
    so ``killpg(worker)`` would leave the horse running and finishing the send. Every process
    of the tree is stopped first (so none reacts to another's death), then killed. Returns the
    pids killed, the worker's first; ProcessFailed if one is still alive seconds after SIGKILL.
    """
    tree = process_tree(worker.pid)
    signal_each(tree, signal.SIGSTOP)
    signal_each(tree, signal.SIGKILL)
    try:
        worker.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        raise ProcessFailed("the worker survived SIGKILL") from None
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{pid}") and not is_zombie(pid) for pid in tree[1:]):
        if time.monotonic() > deadline:
            raise ProcessFailed(f"processes of the worker survived SIGKILL: {tree}")
        time.sleep(0.05)
    return tree


def worker_is_idle(redis_client, worker: WorkerProcess) -> bool:
    """The worker registered itself in Redis and waits for work."""
    from rq import Worker

    return any(w.pid == worker.pid and w.get_state() == "idle" for w in Worker.all(connection=redis_client))


def rq_worker_name(redis_client, worker: WorkerProcess) -> str | None:
    """The name RQ knows this worker by (what a job's ``worker_name`` says), once it registered."""
    from rq import Worker

    return next((w.name for w in Worker.all(connection=redis_client) if w.pid == worker.pid), None)


def park_sweeper(redis_client) -> None:
    """Leave the sweeper and the digest already scheduled (an hour away), as another worker would have.

    worker.py then does not run it at start, so a test sees only its own jobs. The sweeper
    itself is exercised in test_worker.py::test_worker_schedules_the_sweeper_which_sends_stale_mail.
    """
    from rq import Queue

    from app.mail.digest import send_digests
    from app.mail.jobs import sweep
    from worker import DIGEST_JOB_ID, SWEEP_JOB_ID

    queue = Queue("default", connection=redis_client)
    queue.enqueue_in(timedelta(hours=1), sweep, job_id=SWEEP_JOB_ID)
    queue.enqueue_in(timedelta(hours=1), send_digests, job_id=DIGEST_JOB_ID)


def sent_per_worker(redis_client, message_id: int) -> dict[str, int]:
    """Which worker ran each finished send job of the message, and how many it sent (the jobs' results)."""
    from rq.job import Job
    from rq.registry import FinishedJobRegistry

    per_worker: Counter = Counter()
    for job_id in FinishedJobRegistry("mail", connection=redis_client).get_job_ids():
        job = Job.fetch(job_id, connection=redis_client)
        if job.func_name.endswith("send_message") and job.args == (message_id,):
            per_worker[job.worker_name] += (job.return_value() or {}).get("sent", 0)
    return dict(per_worker)


# -- web instances ---------------------------------------------------------------------------------


def redis_answers(url: str, timeout: float = 2.0) -> bool:
    """True if the Redis server at ``url`` answers PING within ``timeout`` seconds."""
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebInstance:
    """``gunicorn "app:create_app()"`` on a free loopback port, one worker process."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        """Start gunicorn with the project's gunicorn.conf.py, bound to 127.0.0.1 only."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        self.log_path = log_path
        env = {**env, "PORT": str(self.port), "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4"}
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        self.proc = subprocess.Popen(
            [
                gunicorn,
                "--config",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{self.port}",
                "app:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self) -> bool:
        """Whether /health answers 200; ProcessFailed if gunicorn has exited."""
        if self.proc.poll() is not None:
            raise ProcessFailed(f"gunicorn exited:\n{self.log_path.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.build_opener(NO_PROXY).open(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = WEB_START_TIMEOUT) -> None:
        """Poll /health until it answers; ProcessFailed with the log after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise ProcessFailed(f"gunicorn did not answer /health:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if gunicorn does not leave in time."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


class Browser:
    """One person's cookie jar, used against any instance (cookies name the host, not the port)."""

    def __init__(self) -> None:
        """A cookie-keeping opener that does not follow redirects, so callers see 302/303."""
        self.opener = urllib.request.build_opener(
            NO_PROXY, urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def get(self, url: str) -> tuple[int, str, dict]:
        """GET: status, body, headers."""
        return self._open(urllib.request.Request(url))

    def post(self, url: str, fields: dict[str, str]) -> tuple[int, str, dict]:
        """POST a form: status, body, headers."""
        body = urllib.parse.urlencode(fields).encode()
        return self._open(urllib.request.Request(url, data=body, method="POST"))

    def _open(self, request) -> tuple[int, str, dict]:
        """Send the request; an error status is an answer like any other."""
        try:
            with self.opener.open(request, timeout=15) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode(errors="replace"), dict(error.headers)

    def csrf(self, base: str) -> str:
        """A CSRF token from a public page of the instance at ``base`` (it lives in the session)."""
        _, page, _ = self.get(f"{base}/privacy")
        return re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand redirects back to the caller instead of following them."""

    def redirect_request(self, *args, **kwargs):
        """Never follow: let the caller see the 302/303 itself (None means "do not redirect")."""
