"""Issue 7: hostile HTTP answers are bounded and reported as failures of the check.

Real local servers (selftest/hostile.py) on 127.0.0.1:19xxx: a huge body, a
wrong content type, invalid JSON, a body dripped a byte a second, headers
dripped a byte a second, and a redirect to another host. Each misbehaviour
gets its own port, so every failure is attributable to its server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bizosaas_acceptance.probes.http import MAX_BODY, HttpProbe
from selftest.hostile import (
    HostileHttp,
    Route,
    app_service,
    drip_headers_reply,
    drip_reply,
    huge_reply,
    json_reply,
    raw_reply,
    redirect_reply,
    write_manifest,
)
from selftest.stackrun import run_suite

TIMEOUT = 2.0


class Counter:
    """A route that counts how often it was asked (the redirect's other host)."""

    def __init__(self) -> None:
        self.hits = 0
        self._lock = threading.Lock()

    def __call__(self, h) -> None:  # noqa: ANN001 - the stdlib handler
        with self._lock:
            self.hits += 1
        json_reply(200, {"status": "ok"})(h)


@pytest.fixture(scope="module")
def other_host() -> Iterator[tuple[HostileHttp, Counter]]:
    counter = Counter()
    with HostileHttp({"/health": counter}) as srv:
        yield srv, counter


@pytest.fixture(scope="module")
def servers(other_host: tuple[HostileHttp, Counter]) -> Iterator[dict[str, HostileHttp]]:
    """One server per misbehaviour, each answering /health that way."""
    other, _ = other_host
    routes: dict[str, Route] = {
        "huge": huge_reply,
        "html": raw_reply(200, "text/html", b"<html><body>fine</body></html>"),
        "badjson": raw_reply(200, "application/json", b'{"status": "ok",'),
        "drip": drip_reply,
        "dripheaders": drip_headers_reply,
        # "localhost" is another host name than the 127.0.0.1 the suite targets.
        "redirect": redirect_reply(f"http://localhost:{other.port}/health"),
    }
    with ExitStack() as stack:
        yield {name: stack.enter_context(HostileHttp({"/health": route}))
               for name, route in routes.items()}


@pytest.mark.parametrize("path", ["drip", "dripheaders"])
def test_probe_bounds_total_time_of_slow_drip(servers: dict[str, HostileHttp],
                                               path: str) -> None:
    """requests' timeout restarts with every byte; HttpProbe's budget does not."""
    probe = HttpProbe(timeout=TIMEOUT)
    t0 = time.monotonic()
    reply = probe.get(f"http://127.0.0.1:{servers[path].port}/health", cached=False)
    took = time.monotonic() - t0
    assert took < TIMEOUT + 1.0, took
    assert reply.error and f"no complete response within {TIMEOUT:g}s" in reply.error


def test_probe_bounds_body_size(servers: dict[str, HostileHttp]) -> None:
    reply = HttpProbe(timeout=10).get(f"http://127.0.0.1:{servers['huge'].port}/health")
    assert reply.truncated and len(reply.body) == MAX_BODY
    with pytest.raises(ValueError, match="larger than"):
        reply.json()


def test_hostile_health_endpoints_fail_their_checks(
        tmp_path: Path, servers: dict[str, HostileHttp],
        other_host: tuple[HostileHttp, Counter]) -> None:
    manifest = write_manifest(tmp_path / "hostile.yaml", {
        name: app_service(f"hostile-{name}", srv.port) for name, srv in servers.items()})
    t0 = time.monotonic()
    run = run_suite(tmp_path / "out", f"--stack={manifest}", "-m", "health", "-n", "2",
                    f"--http-timeout={TIMEOUT:g}", timeout=120)
    took = time.monotonic() - t0
    assert run.ret == 1 and "INTERNALERROR" not in run.stdout + run.stderr, run.summary()
    # Two workers, each waits at most one budget per dripping server, plus start-up.
    assert took < 30, took
    msgs = {c["nodeid"].split("::")[-1]: c["message"] for c in run.failed()}

    def msg(test: str, name: str) -> str:
        return msgs.get(f"{test}[{name}]", "")

    assert "body over 2 MB" in msg("test_health_json", "huge"), run.summary()
    assert "text/html" in msg("test_health_json", "html"), run.summary()
    assert "not JSON" in msg("test_health_json", "badjson"), run.summary()
    for name in ("drip", "dripheaders"):
        text = msg("test_health_status_200", name)
        assert f"no complete response within {TIMEOUT:g}s" in text, run.summary()
        assert f"127.0.0.1:{servers[name].port}" in text
    redirect = msg("test_health_status_200", "redirect")
    assert "(302) == 200" in redirect and f"localhost:{other_host[0].port}" in redirect
    # The redirect was reported, never followed to the other host.
    assert other_host[1].hits == 0
    for check in run.gate["checks"]:
        assert check["duration"] < TIMEOUT + 2, check
