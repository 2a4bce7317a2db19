"""Jobs for the worker tests, importable by a real worker.py (cwd is the project root).

Each appends what it did to a file the test reads: a work horse cannot report otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path


def slow_job(path: str, seconds: float) -> str:
    """Write "started", take ``seconds`` (a slow provider call), write "done"."""
    log = Path(path)
    with log.open("a") as out:
        out.write("started\n")
    time.sleep(seconds)  # the job's own duration, not a wait for something to happen
    with log.open("a") as out:
        out.write("done\n")
    return "done"


def lines(path: str) -> list[str]:
    """What the jobs wrote so far."""
    log = Path(path)
    return log.read_text().split() if log.exists() else []
