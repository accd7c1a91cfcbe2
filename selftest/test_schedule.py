"""Issue 12: a slow service costs its latency once per request, and waits overlap.

- GET answers are shared by every process of a run (single flight): two
  probes that share a directory (two xdist workers) send one request; timed
  requests never share.
- The run's order: the load phase first, the checks that compare before and
  after it next to last, timed checks last (see plugin._schedule_rank).
- ``-n auto`` starts at least four workers (the checks mostly wait), and
  ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set.

Local servers only (selftest/hostile.py); no stack needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bizosaas_acceptance import plugin
from bizosaas_acceptance.probes.http import HttpProbe, SharedAnswers
from selftest.hostile import HostileHttp

ROOT = Path(__file__).resolve().parent.parent
SLOW_S = 0.4


class Counting:
    """A route that answers after SLOW_S and counts what it was asked."""

    def __init__(self) -> None:
        self.hits: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, h: Any) -> None:
        with self.lock:
            self.hits.append({k.lower(): v for k, v in h.headers.items()})
        time.sleep(SLOW_S)
        h._send(200, "application/json", b'{"items": [1, 2, 3]}')


def test_shared_get_is_sent_once_per_run(tmp_path: Path) -> None:
    """Four probes (four workers) ask the same GET at once: one request, one answer,
    judged by all; another header set is another request; a timed request is sent."""
    route = Counting()
    with HostileHttp({"/api/items": route}) as srv:
        url = f"http://127.0.0.1:{srv.port}/api/items"
        probes = [HttpProbe(5.0, answers=SharedAnswers(tmp_path / "answers")) for _ in range(4)]
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda p: p.get(url), probes))
        took = time.monotonic() - t0
        assert len(route.hits) == 1, route.hits
        assert took < 2 * SLOW_S + 0.5, f"took {took:.2f}s: the waiters queued"
        assert {(r.status, r.body, r.content_type) for r in replies} == {
            (200, b'{"items": [1, 2, 3]}', "application/json")}
        # A fresh probe (a worker started later) reads the same answer from the files.
        late = HttpProbe(5.0, answers=SharedAnswers(tmp_path / "answers"))
        assert late.get(url).json() == {"items": [1, 2, 3]} and len(route.hits) == 1
        # Other headers (a token, an Origin) are another request.
        late.get(url, headers={"Origin": "https://example.test"})
        assert len(route.hits) == 2 and route.hits[1]["origin"] == "https://example.test"
        # Timed requests (response time, load) are never shared.
        late.request("GET", url)
        late.get(url, cached=False)
        assert len(route.hits) == 4
        for p in [*probes, late]:
            p.close()


def test_shared_answer_keeps_errors_and_secrets_private(tmp_path: Path) -> None:
    """An error is shared like an answer (the breaker decides what is retried), and
    the directory holding bodies is private to the user."""
    probe = HttpProbe(1.0, answers=SharedAnswers(tmp_path / "answers"))
    from selftest.hostile import closed_port

    reply = probe.get(f"http://127.0.0.1:{closed_port()}/x")
    assert reply.error and "refused" in reply.error
    other = HttpProbe(1.0, answers=SharedAnswers(tmp_path / "answers"))
    assert other.get(reply.url).error == reply.error
    assert (tmp_path / "answers").stat().st_mode & 0o077 == 0


def _collected() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:html",
                          "-o", "addopts=", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return [line for line in out.stdout.splitlines() if line.startswith("tests/")]


def test_run_order_load_first_timed_last() -> None:
    """The load phase opens the run, so a slow service's load overlaps everything
    else; the before/after comparisons follow every other HTTP check; timed checks
    close the run, on a stack no longer under load."""
    ids = _collected()
    names = [re.sub(r"\[.*", "", i.split("::", 1)[1]) for i in ids]
    loads = [k for k, n in enumerate(names) if n == "test_error_rate_under_load"]
    after = [k for k, n in enumerate(names)
             if n in ("test_memory_stable_under_load", "test_db_connections_stable_under_load")]
    timed = [k for k, n in enumerate(names) if n == "test_response_time"]
    assert loads and after and timed
    assert loads == list(range(len(loads))), "the load phase does not open the run"
    assert timed == list(range(len(ids) - len(timed), len(ids))), "timed checks are not last"
    http_rest = [k for k, i in enumerate(ids)
                 if i.startswith(("tests/test_api.py", "tests/test_endpoints.py",
                                  "tests/test_integration.py", "tests/test_health.py"))]
    assert max(http_rest) < min(after) and max(after) < min(timed)


@pytest.mark.parametrize(("cpus", "markexpr", "workers"), [
    (1, "", 4), (2, "", 4), (4, "", 4), (12, "", 12), (2, "performance", 4),
    (2, "verify", 2), (12, " verify ", 12)])
def test_auto_workers(monkeypatch: pytest.MonkeyPatch, cpus: int, markexpr: str,
                      workers: int) -> None:
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr(plugin.os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    config = SimpleNamespace(option=SimpleNamespace(markexpr=markexpr))
    assert plugin.pytest_xdist_auto_num_workers(config) == workers  # type: ignore[arg-type]


@pytest.mark.parametrize("env", [None, "3"])
def test_auto_workers_through_xdist(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                    env: str | None) -> None:
    """The hook as xdist calls it for ``-n auto`` (every installed plugin loaded, ours
    before xdist's own): at least four workers, or what the variable says."""
    if env is None:
        monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
        n = max(plugin.MIN_AUTO_WORKERS, len(plugin.os.sched_getaffinity(0)))
    else:
        monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", env)
        n = int(env)
    config = pytester.parseconfig("-n", "auto")
    assert config.hook.pytest_xdist_auto_num_workers(config=config) == n
