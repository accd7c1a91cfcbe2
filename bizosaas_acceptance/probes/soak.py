"""Soak mode: bounded read-only traffic for a while, sampled every few seconds.

:class:`Soak` keeps a steady, bounded stream of GETs on every documented
read-only endpoint (the error-rate mix: round robin over all of them), and
every ``interval`` seconds takes one :class:`Sample`: memory and CPU per
container (Docker stats), PostgreSQL connections, Redis memory, and per
service the requests, errors and p95 latency of the interval. The series is
what the soak checks (tests/test_soak.py) judge as trends; :func:`slope`,
:func:`thirds` and :func:`p95` are the arithmetic they use.

Every call is bounded (the HTTP client's own budget, Docker's API timeout,
PostgreSQL/Redis socket timeouts); Ctrl-C ends the soak early and keeps what
was measured.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from bizosaas_acceptance.secrets import clip

#: Defaults of the manifest's ``soak:`` section.
DEFAULT_SOAK: dict[str, Any] = {
    "interval_s": 5,                   # one sample every this many seconds
    "rate_rps": 10,                    # total request rate of the traffic, all services
    "warmup_s": 10,                    # samples before this are not judged for trends
    "memory_slope_mb_per_min": 5,      # a container growing faster than this leaks
    "memory_growth_mb": 10,            # ... and by more than this over the soak
    "connection_growth": 5,            # PostgreSQL connections may not creep up more
    "redis_memory_slope_mb_per_min": 5,
    "error_rate_drift_pct": 1,         # error rate, last third minus first third
    "p95_drift_factor": 1.5,           # p95 of the last third vs the first third
    "p95_drift_min_ms": 100,           # ... and by at least this much
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$", re.I)


def parse_duration(raw: str) -> float:
    """``90``, ``90s``, ``10m``, ``1.5h`` → seconds (> 0)."""
    m = _DURATION.match(str(raw))
    if not m:
        raise ValueError("must be a duration such as 60s, 10m or 1h")
    value = float(m.group(1)) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[
        (m.group(2) or "s").lower()]
    if value <= 0:
        raise ValueError("must be longer than 0 s")
    return value


parse_duration.__name__ = "duration (60s, 10m, 1h)"


def fmt_clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


# -- arithmetic ------------------------------------------------------------------------


def slope(points: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, y) points, in y per unit of t; None below 3 points."""
    pts = [(t, y) for t, y in points if y is not None and math.isfinite(y)]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    my = sum(y for _, y in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        return None
    return sum((t - mt) * (y - my) for t, y in pts) / var


def thirds(values: list[Any]) -> tuple[list[Any], list[Any]]:
    """The first and the last third of a series (at least one element each)."""
    k = max(1, len(values) // 3)
    return values[:k], values[-k:]


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


# -- the data ----------------------------------------------------------------------------


@dataclass
class Sample:
    """One sampling instant (``t`` seconds since the soak started)."""

    t: float
    memory_mb: dict[str, float | None] = field(default_factory=dict)  # by service key
    cpu_pct: dict[str, float | None] = field(default_factory=dict)
    pg_connections: int | None = None
    redis_mb: float | None = None
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what could not be sampled


@dataclass
class SoakResult:
    """The whole soak, as the checks read it (JSON-serializable)."""

    duration_s: float
    planned_s: float
    ended_early: str | None
    interval_s: float
    samples: list[Sample]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SoakResult:
        return cls(data["duration_s"], data["planned_s"], data["ended_early"],
                   data["interval_s"], [Sample(**s) for s in data["samples"]])

    def judged(self, warmup_s: float) -> list[Sample]:
        """Samples past the warm-up (all of them when the soak was too short for one)."""
        later = [s for s in self.samples if s.t >= warmup_s]
        return later if len(later) >= 3 else self.samples

    def describe(self) -> str:
        """``60 s soak, 12 samples every 5 s`` (+ how it ended early)."""
        text = (f"{self.duration_s:.0f} s soak, {len(self.samples)} samples every "
                f"{self.interval_s:g} s")
        if self.ended_early:
            text += (f" (ended early after {fmt_clock(self.duration_s)} of "
                     f"{fmt_clock(self.planned_s)}: {self.ended_early})")
        return text


# -- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One documented GET: the service it belongs to and its URL."""

    service: str
    url: str


class Traffic:
    """Round-robin GETs over the targets at a bounded total rate, from two threads."""

    def __init__(self, targets: list[Target], get: Callable[[str], Any], rate_rps: float,
                 threads: int = 2) -> None:
        self.targets, self.get = targets, get
        self.gap = threads / max(0.1, rate_rps)  # seconds between requests per thread
        self.threads = threads
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self._requests: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._latency: dict[str, list[float]] = {}
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.threads if self.targets else 0):
            t = threading.Thread(target=self._loop, daemon=True, name=f"bizosaas-soak-{i}")
            t.start()
            self._workers.append(t)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                target = self.targets[self._next % len(self.targets)]
                self._next += 1
            started = time.monotonic()
            reply = self.get(target.url)
            failed = reply.status is None or reply.status >= 500
            with self._lock:
                svc = target.service
                self._requests[svc] = self._requests.get(svc, 0) + 1
                if failed:
                    self._errors[svc] = self._errors.get(svc, 0) + 1
                else:
                    self._latency.setdefault(svc, []).append(reply.elapsed_ms)
            self._stop.wait(max(0.0, self.gap - (time.monotonic() - started)))

    def take(self) -> tuple[dict[str, int], dict[str, int], dict[str, list[float]]]:
        """Counts since the last take."""
        with self._lock:
            out = self._requests, self._errors, self._latency
            self._requests, self._errors, self._latency = {}, {}, {}
        return out

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(10)


class Soak:
    """Runs traffic and takes a sample every ``interval_s`` until ``duration_s`` passes.

    ``memory`` returns {service: (memory MB, CPU %)} for the containers; ``pg``
    the number of PostgreSQL connections; ``redis`` Redis's used memory in MB.
    Each is called from the sampling thread and may raise: the failure is
    recorded on the sample, not fatal.
    """

    def __init__(self, *, duration_s: float, interval_s: float, traffic: Traffic,
                 memory: Callable[[], dict[str, tuple[float | None, float | None]]],
                 pg: Callable[[], int] | None, redis: Callable[[], float] | None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.duration_s, self.interval_s = duration_s, interval_s
        self.traffic, self.memory, self.pg, self.redis = traffic, memory, pg, redis
        self.progress = progress or (lambda _line: None)

    def _sample(self, t: float) -> Sample:
        sample = Sample(t=round(t, 2))
        with ThreadPoolExecutor(3) as pool:
            mem = pool.submit(self.memory)
            pg = pool.submit(self.pg) if self.pg else None
            rd = pool.submit(self.redis) if self.redis else None
            try:
                for svc, (mb, cpu) in mem.result().items():
                    sample.memory_mb[svc], sample.cpu_pct[svc] = mb, cpu
            except Exception as exc:  # noqa: BLE001 - recorded, judged by the checks
                sample.problems.append(clip(f"docker stats: {type(exc).__name__}: {exc}", 200))
            for name, fut in (("postgres", pg), ("redis", rd)):
                if fut is None:
                    continue
                try:
                    value = fut.result()
                    if name == "postgres":
                        sample.pg_connections = int(value)
                    else:
                        sample.redis_mb = round(float(value), 3)
                except Exception as exc:  # noqa: BLE001
                    sample.problems.append(clip(f"{name}: {type(exc).__name__}: {exc}", 200))
        sample.requests, sample.errors, sample.latencies_ms = self.traffic.take()
        return sample

    def run(self) -> SoakResult:
        """Soak until the duration passes or Ctrl-C; always returns what was measured."""
        samples: list[Sample] = []
        t0 = time.monotonic()
        ended_early: str | None = None
        self.traffic.start()
        try:
            next_at = self.interval_s
            while True:
                now = time.monotonic() - t0
                if now >= self.duration_s:
                    break
                wait = min(next_at, self.duration_s) - now
                # Short sleeps keep Ctrl-C and the progress line responsive.
                while wait > 0:
                    time.sleep(min(wait, 1.0))
                    now = time.monotonic() - t0
                    wait = min(next_at, self.duration_s) - now
                    self.progress(self._line(now, samples))
                samples.append(self._sample(time.monotonic() - t0))
                next_at += self.interval_s
        except KeyboardInterrupt:
            ended_early = "interrupted (Ctrl-C)"
        finally:
            self.traffic.stop()
        took = time.monotonic() - t0
        self.progress(self._line(took, samples, done=True))
        return SoakResult(round(took, 2), self.duration_s, ended_early, self.interval_s, samples)

    def _line(self, now: float, samples: list[Sample], done: bool = False) -> str:
        reqs = sum(sum(s.requests.values()) for s in samples)
        errs = sum(sum(s.errors.values()) for s in samples)
        left = max(0.0, self.duration_s - now)
        state = "done" if done else f"{fmt_clock(left)} left"
        return (f"bizosaas soak: {fmt_clock(now)} elapsed, {state}, {len(samples)} samples, "
                f"{reqs} requests, {errs} errors")
