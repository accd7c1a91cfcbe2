"""Issue 12: a hung target costs one timeout per run, not one per check.

Real local servers on 127.0.0.1:19xxx (selftest/hostile.py), no stack needed:

- a *hung* service: accepts every connection and never says a word (a frozen
  container looks exactly like this from the host);
- a *locked* service: its health path and one route answer, another route
  never does (a locked table hangs only the routes that read it);
- a *gateway* whose routed path waits on a hung upstream.

The probe-level tests drive :class:`HttpProbe` directly; the last test runs the
real suite with ``-n 2`` against a hung and a locked service and reads the
gate: many checks, about one timeout in total, every refused check pointing at
the first failure.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from bizosaas_acceptance.probes.breaker import (
    LIVENESS_S,
    ROUTE,
    SERVICE,
    Breaker,
    Topology,
)
from bizosaas_acceptance.probes.http import HttpProbe
from selftest.hostile import HostileHttp, RawServer, app_service, json_reply, write_manifest
from selftest.stackrun import run_suite

TIMEOUT = 1.0


HITS: dict[str, int] = {}


def hang(h: Any) -> None:
    """A route that reads a locked table: the answer never comes (within any test)."""
    HITS[h.path] = HITS.get(h.path, 0) + 1
    time.sleep(30)


@pytest.fixture
def hung() -> Iterator[RawServer]:
    with RawServer("silent") as srv:
        yield srv


@pytest.fixture
def locked() -> Iterator[HostileHttp]:
    HITS.clear()
    ok = json_reply(200, {"status": "ok", "items": [{"id": "x"}]})
    with HostileHttp({"/health": ok, "/api/free": ok, "/api/locked": hang,
                      "/api/item/x": hang}) as srv:
        yield srv


def _topology(**services: int) -> Topology:
    topo = Topology()
    for name, port in services.items():
        topo.names[f"127.0.0.1:{port}"] = name
        topo.health[f"127.0.0.1:{port}"] = "/health"
    return topo


def _timed(probe: HttpProbe, url: str, method: str = "GET") -> tuple[float, Any]:
    t0 = time.monotonic()
    reply = probe.request(method, url)
    return time.monotonic() - t0, reply


def test_locked_route_costs_one_timeout_and_only_that_route(locked: HostileHttp) -> None:
    """The route trips; the service does not: its other routes are still checked."""
    base = f"http://127.0.0.1:{locked.port}"
    probe = HttpProbe(TIMEOUT, Breaker(_topology(locked=locked.port)))
    took, first = _timed(probe, f"{base}/api/locked")
    assert TIMEOUT - 0.1 < took < TIMEOUT + 1.0 and re.match(
        rf"no (complete )?response within {TIMEOUT:g}s", first.error), first.error
    took, again = _timed(probe, f"{base}/api/locked")
    assert took < 0.05 and again.not_attempted, (took, again)
    assert re.match(
        rf"not attempted: locked GET /api/locked did not answer within {TIMEOUT:g} s at "
        r"\d\d:\d\d:\d\d in test_locked_route_costs_one_timeout_and_only_that_route "
        rf"\(first failure: GET {base}/api/locked -> no (complete )?response within "
        rf"{TIMEOUT:g}s", again.error), again.error
    # A route is exact (method, path and query): another spelling is another route,
    # still asked (a slash-less path may be a redirect, a bad query a 400 before any
    # table is read, a CORS preflight is answered without reading it).
    assert probe.request("GET", f"{base}/api/locked/").status == 404
    other_method = probe.request("POST", f"{base}/api/locked")  # the server: 501, at once
    assert other_method.status == 501 and not other_method.not_attempted, other_method
    assert probe.request("GET", f"{base}/api/free").status == 200
    assert probe.request("GET", f"{base}/health").status == 200
    assert [(t.scope, t.route) for t in probe.breaker.trips()] == [(ROUTE, "GET /api/locked")]


def test_hung_service_trips_whole_service(hung: RawServer) -> None:
    """A silent route, then a silent health path: every route of it fails at once."""
    base = f"http://127.0.0.1:{hung.port}"
    probe = HttpProbe(TIMEOUT, Breaker(_topology(hung=hung.port)))
    took, first = _timed(probe, f"{base}/api/a")
    # The route's budget, then at most LIVENESS_S (here: the budget) on the health path.
    assert took < TIMEOUT + min(TIMEOUT, LIVENESS_S) + 1.0, took
    assert {t.scope for t in probe.breaker.trips()} == {ROUTE, SERVICE}
    for path in ("/api/b", "/health", "/"):
        took, reply = _timed(probe, base + path)
        assert took < 0.05 and reply.not_attempted, reply
        assert reply.error.startswith(f"not attempted: hung did not answer within {TIMEOUT:g} s")
        assert "then its health path /health gave no answer" in reply.error


def test_silent_health_path_trips_service_at_once(hung: RawServer) -> None:
    base = f"http://127.0.0.1:{hung.port}"
    probe = HttpProbe(TIMEOUT, Breaker(_topology(hung=hung.port)))
    took, _ = _timed(probe, f"{base}/health")
    assert took < TIMEOUT + 0.5, took  # no liveness probe after the health path itself
    assert _timed(probe, f"{base}/api/x")[1].not_attempted


def test_waiting_requests_are_released_when_the_target_trips(hung: RawServer) -> None:
    """Requests already waiting end when the first failure trips the service, not a
    timeout later each: staggered starts, one end."""
    base = f"http://127.0.0.1:{hung.port}"
    probe = HttpProbe(TIMEOUT, Breaker(_topology(hung=hung.port)))
    t0 = time.monotonic()

    def late(i: int) -> tuple[float, Any]:
        time.sleep(0.1 * i)
        return _timed(probe, f"{base}/health" if i == 0 else f"{base}/api/{i}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(late, range(6)))
    total = time.monotonic() - t0
    assert total < TIMEOUT + 0.6, total  # the last one started 0.5 s late
    for _took, reply in results[1:]:
        assert reply.not_attempted and "given up after" in reply.error, reply.error


def test_single_flight_waits_instead_of_piling_on(tmp_path: Path,
                                                  locked: HostileHttp) -> None:
    """A second request to a route whose first is still (slowly) in flight waits for
    that one's outcome instead of adding a request the server cannot answer."""
    url = f"http://127.0.0.1:{locked.port}/api/locked"
    budget = 2 * TIMEOUT  # room for a busy machine: the marker is written at 0.25 s
    probes = [HttpProbe(budget, Breaker(_topology(locked=locked.port), tmp_path / "b"))
              for _ in range(2)]  # two "workers" on one shared directory

    def second() -> tuple[float, Any]:
        time.sleep(budget / 2)
        return _timed(probes[1], url)

    with ThreadPoolExecutor(max_workers=2) as pool:
        late = pool.submit(second)
        first = _timed(probes[0], url)
        took, reply = late.result()
    assert HITS.get("/api/locked") == 1, HITS  # the server saw one request, not two
    assert re.match(r"no (complete )?response within", first[1].error), first[1].error
    assert reply.not_attempted and "given up after" in reply.error, reply.error
    assert took < budget * 0.75, took  # ended with the first one's timeout, not its own


def test_breaker_is_shared_across_processes(tmp_path: Path, locked: HostileHttp) -> None:
    """Another process (a new Breaker on the same directory) refuses at once."""
    base = f"http://127.0.0.1:{locked.port}"
    first = HttpProbe(TIMEOUT, Breaker(_topology(locked=locked.port), tmp_path / "b"))
    first.request("GET", f"{base}/api/locked")
    files = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert len(files) == 1 and files[0].startswith("route-"), files
    other = HttpProbe(TIMEOUT, Breaker(_topology(locked=locked.port), tmp_path / "b"))
    took, reply = _timed(other, f"{base}/api/locked")
    assert took < 0.05 and reply.not_attempted, reply


def test_gateway_call_is_attributed_to_the_hung_upstream(hung: RawServer) -> None:
    """A call through the gateway waits on the upstream: bounded by our budget and
    blamed on the upstream, whose own routes then fail at once."""
    ok = json_reply(200, {"status": "ok"})
    with HostileHttp({"/health": ok, "/api/status": ok, "/api/up/items": hang}) as gw:
        topo = _topology(gateway=gw.port, upstream=hung.port)
        topo.gateways[f"127.0.0.1:{gw.port}"] = {"/api/up": f"127.0.0.1:{hung.port}"}
        probe = HttpProbe(TIMEOUT, Breaker(topo))
        took, first = _timed(probe, f"http://127.0.0.1:{gw.port}/api/up/items")
        assert took < TIMEOUT + min(TIMEOUT, LIVENESS_S) + 1.0, took
        trips = {(t.scope, t.subject) for t in probe.breaker.trips()}
        assert (ROUTE, "upstream behind gateway GET /api/up/items") in trips, trips
        assert (SERVICE, "upstream (behind gateway)") in trips, trips
        routed = probe.request("GET", f"http://127.0.0.1:{gw.port}/api/up/other")
        direct = probe.request("GET", f"http://127.0.0.1:{hung.port}/anything")
        for reply in (routed, direct):
            assert reply.not_attempted and "upstream (behind gateway) did not answer" in \
                reply.error, reply.error
        # The gateway itself is fine and still checked.
        assert probe.request("GET", f"http://127.0.0.1:{gw.port}/api/status").status == 200


def test_gateway_still_asked_when_upstream_refuses() -> None:
    """An upstream that refuses connections costs nothing to ask about: the gateway
    answers for it at once (502, or its own 401), so that answer is still checked."""
    from selftest.hostile import closed_port

    dead = closed_port()
    bad_gateway = json_reply(502, {"error": {"code": 502}})
    with HostileHttp({"/health": json_reply(200, {"status": "ok"}),
                      "/api/up/items": bad_gateway}) as gw:
        topo = _topology(gateway=gw.port, upstream=dead)
        topo.gateways[f"127.0.0.1:{gw.port}"] = {"/api/up": f"127.0.0.1:{dead}"}
        probe = HttpProbe(TIMEOUT, Breaker(topo))
        direct = probe.request("GET", f"http://127.0.0.1:{dead}/health")
        assert "refused" in direct.error
        again = probe.request("GET", f"http://127.0.0.1:{dead}/api/x")
        assert again.not_attempted and "upstream refused the connection" in again.error
        routed = probe.request("GET", f"http://127.0.0.1:{gw.port}/api/up/items")
        assert routed.status == 502 and not routed.not_attempted, routed


# --------------------------------------------------------------------------- the real suite

RUN_TIMEOUT = 2.0


def _api_file(path: Path) -> Path:
    listing = {"type": "object"}
    doc = {"version": 1, "services": {
        "hung": {"endpoints": [{"path": p, "schema": listing}
                               for p in ("/api/a", "/api/b", "/api/c", "/api/d")]},
        # /api/locked is asked by the run's opening probe; /api/item/{id} needs a
        # value from /api/free first, so only the checks find out that it hangs.
        "locked": {"endpoints": [{"path": "/api/locked", "schema": listing},
                                 {"path": "/api/free", "schema": listing},
                                 {"path": "/api/item/{id}", "schema": listing,
                                  "params": {"id": {"from": "GET /api/free",
                                                    "field": "items.0.id"}}}]},
    }}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_suite_pays_one_timeout_per_hung_target_across_workers(
        tmp_path: Path, hung: RawServer, locked: HostileHttp) -> None:
    manifest = write_manifest(tmp_path / "sick.yaml", {
        "hung": app_service("selftest-hung", hung.port),
        "locked": app_service("selftest-locked", locked.port),
    }, name="sick", api=str(_api_file(tmp_path / "api.yaml")))
    t0 = time.monotonic()
    run = run_suite(tmp_path / "out", f"--stack={manifest}", "-n", "2",
                    "-m", "health or api or endpoints or performance",
                    # The HTTP checks only: memory stability asks the Docker engine,
                    # where these two local servers have no container.
                    "-k", "not memory_stable",
                    f"--http-timeout={RUN_TIMEOUT:g}", timeout=180)
    took = time.monotonic() - t0
    assert "INTERNALERROR" not in run.stdout + run.stderr, run.stdout[-3000:]
    checks = run.gate["checks"]
    # (Checks of what the temporary API does not document, CORS for one, skip.)
    hung_checks = [c for c in checks if c["service"] == "hung" and c["outcome"] != "skipped"]
    assert len(hung_checks) >= 20, run.summary()
    # Every check against the hung service fails (never skips) ...
    assert all(c["outcome"] == "failed" for c in hung_checks), run.summary()
    # ... and all of them together cost about one timeout, not one each: at most
    # one wait per worker, each ended by the first failure (the opening probe).
    spent = sum(float(c["duration"] or 0) for c in hung_checks)
    assert spent < 2 * RUN_TIMEOUT + 1.5, (spent, run.summary())
    pointing = [c for c in hung_checks if re.search(
        rf"(not attempted|given up after [\d.]+ s): hung did not answer within "
        rf"{RUN_TIMEOUT:g} s at \d\d:\d\d:\d\d in ", c["message"] or "")]
    assert len(pointing) == len(hung_checks), [c["message"] for c in hung_checks
                                               if c not in pointing][:3]
    for c in hung_checks:
        assert "cause:" in c["message"] and "next:" in c["message"], c

    # The locked routes: one timeout each (per worker at most), the rest refused at
    # once naming the first failure; the service's other routes still pass.
    locked_checks = [c for c in checks if c["service"] == "locked"]
    bad = [c for c in locked_checks if c["outcome"] == "failed"]
    assert bad and all("/api/locked" in c["message"] or "/api/item/x" in c["message"]
                       for c in bad), run.summary()
    opening = [c for c in bad if "/api/locked" in c["message"]]
    assert opening and all(re.search(
        r"(not attempted|given up after [\d.]+ s): locked GET /api/locked did not answer "
        rf"within {RUN_TIMEOUT:g} s at \d\d:\d\d:\d\d in the run's opening probe",
        c["message"]) for c in opening), [c["message"] for c in opening]
    item = [c for c in bad if "/api/item/x" in c["message"]]
    assert len(item) >= 4, [c["message"] for c in bad]  # api x3, endpoints, performance
    assert any(re.search(r"not attempted: locked GET /api/item/x did not answer within "
                         rf"{RUN_TIMEOUT:g} s at \d\d:\d\d:\d\d in test_\w+\[", c["message"])
               for c in item), [c["message"] for c in item]
    for group in (opening, item):
        spent = sum(float(c["duration"] or 0) for c in group)
        assert spent < 2 * RUN_TIMEOUT + 1.5, (spent, [c["message"] for c in group])
    passed = {c["nodeid"].split("::")[-1] for c in locked_checks if c["outcome"] == "passed"}
    assert "test_health_status_200[locked]" in passed, run.summary()
    assert "test_route_answers[locked-GET-/api/free]" in passed, run.summary()
    # Start-up, the opening probe's one timeout and the locked route's: seconds, not
    # (checks x timeout) / 2 workers.
    assert took < 25, took


def test_concurrent_trips_keep_the_first_failure(tmp_path: Path,
                                                 locked: HostileHttp) -> None:
    """Threads racing to trip one key agree on one first failure (one file)."""
    base = f"http://127.0.0.1:{locked.port}"
    probes = [HttpProbe(TIMEOUT, Breaker(_topology(locked=locked.port), tmp_path / "b"))
              for _ in range(4)]
    barrier = threading.Barrier(4)

    def go(p: HttpProbe) -> None:
        barrier.wait()
        p.request("GET", f"{base}/api/locked")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(go, probes))
    assert len([p for p in (tmp_path / "b").iterdir() if p.suffix == ".json"]) == 1
    seen = {p.breaker.blocking(p.breaker.where(f"{base}/api/locked")).at for p in probes}
    assert len(seen) == 1, seen


def test_slow_mark_never_outlives_its_request(tmp_path: Path) -> None:
    """A request marked slow just as it ends withdraws the mark: otherwise every
    other request to the route waits for the mark's deadline (the whole budget).

    The breaker's marking is slowed down (as a busy runner does) so the answer
    arrives while the clock thread is still writing the mark."""

    class SlowMarking(Breaker):
        def slow(self, where: Any, deadline: float) -> str:
            time.sleep(0.3)  # the answer (0.3 s) arrives meanwhile
            return super().slow(where, deadline)

    def answer_late(h: Any) -> None:
        time.sleep(0.3)
        h._send(200, "application/json", b"{}")

    with HostileHttp({"/api/x": answer_late}) as srv:
        url = f"http://127.0.0.1:{srv.port}/api/x"
        breaker = SlowMarking(directory=tmp_path / "breaker")
        probe = HttpProbe(5.0, breaker)
        assert probe.request("GET", url).status == 200
        time.sleep(0.5)  # a mark still being written lands by now
        other = Breaker(directory=tmp_path / "breaker")  # another worker
        assert breaker.pending(breaker.where(url)) is None
        assert other.pending(other.where(url)) is None
        t0 = time.monotonic()
        assert HttpProbe(5.0, other).request("GET", url).status == 200
        assert time.monotonic() - t0 < 1.0
        probe.close()
