"""Loaded (through PYTHONPATH) only by the .ci/run pass with the clock a year ahead.

libfaketime 0.9.10, Debian bookworm's, breaks ``time.sleep`` on Python 3.11: with the monotonic
clock left real (FAKETIME_DONT_FAKE_MONOTONIC=1, needed or every timed wait on a lock hangs) it
turns the absolute deadline that ``time.sleep`` gives ``clock_nanosleep`` into a negative one,
and the kernel answers EINVAL (wolfcw/libfaketime#426). ``select`` with a relative timeout is
left alone, so sleeping goes through it; the wall clock stays faked.
"""

import select
import time


def _sleep(seconds: float) -> None:
    """time.sleep, by way of select(); Python retries it after a signal (PEP 475)."""
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


time.sleep = _sleep
