"""Waiting for readiness within a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry(fn: Callable[[], T], timeout: float, interval: float = 0.25) -> T:
    """Call ``fn`` until it succeeds or ``timeout`` passes; re-raise the last error.

    No attempt starts that could not finish in time (judged by the last one's
    duration), so a target that hangs each attempt costs ``timeout``, not double.
    """
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        try:
            return fn()
        except Exception:
            took = time.monotonic() - started
            if time.monotonic() + interval + took >= deadline:
                raise
            time.sleep(interval)
