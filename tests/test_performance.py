"""Suite 6: response times per documented GET, the error rate under light load,
and whether memory and database connections stay stable across that load.

How it is measured (and how the runner's own overhead is kept out):

- Requests reuse the session's keep-alive connections (one ``requests.Session``),
  so no sample pays for a TCP handshake; one untimed warm-up request per
  endpoint fills caches and the connection pool first.
- Each sample is timed with ``time.perf_counter()`` around the request only
  (send, wait, read the whole body): no parsing, no assertion, no logging.
- The suite's own measurement decides. A service that reports its own timing
  (``Server-Timing``, ``X-Response-Time``, ``X-Process-Time``, ``X-Runtime``)
  gets that shown beside the measurement, verbatim, never used instead of it:
  it is the service's account of itself (``Server-Timing: db;dur=2,
  app;dur=850`` names two metrics, and ``X-Process-Time`` is seconds in some
  frameworks and milliseconds in others), which is what this suite verifies.
- The runner's overhead is measured and subtracted, without asking the target
  anything: the fastest of a few requests, through the same client session,
  to an instant canned responder inside the test process is the cost of the
  client and the HTTP stack; the fastest of a few TCP connects to the
  service's port is the network round trip. Every sample minus their sum is
  what the service itself spent. (A trivial endpoint *of the target*, such as
  ``/version``, would not do: a slow service is slow there too, and
  subtracting it would hide exactly what this suite must find.)
- p50 and p95 (nearest rank) and the mean of ``--perf-samples`` (default 20)
  sequential samples are judged: mean <= the class budget of the endpoint's
  route class (``thresholds.response_ms_by_class``) and <= ``response_ms_mean``,
  p95 <= class budget x ``response_ms_p95_factor``.
- Error rate: ``--perf-concurrency`` threads (default 4) send a bounded number
  of requests (40 per service, at most 2.5 s) round-robin over the service's
  documented GETs; transport errors, 5xx and undocumented statuses count as
  errors; the rate must stay below ``error_rate_pct``. This is the run's load
  phase (see below).
- Both stop as soon as the verdict is decided: sampling once the mean cannot
  come under budget even if the remaining samples took 0 ms, or once a sample
  failed (the check fails on any; after 5 samples, or at once when the failed
  one was itself slower than the budget); the load once its errors alone reach
  the limit over all of its requests. A sick service costs seconds, not minutes
  (a slow one still costs perf-samples x budget per endpoint: that much of its
  time is what decides a mean).
- Stability across the load phase ("no memory leaks", "database connections
  stable"): each application service's memory at the start of the run (the
  Docker snapshot the controller takes at configure time, before any check
  sends traffic) against its memory right after the load phase, growth at most
  ``memory_growth_pct`` of its memory limit; PostgreSQL client connections
  (the suite's own excluded) right before the first service's load against
  right after the last one, growth at most ``pg_connections_growth``.

The figures are in every check's message, in the report's user properties
(``user_properties`` "perf" and "load") and in the HTML report (a small chart per
endpoint and per service).
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlsplit

import pytest

from bizosaas_acceptance.model.api import Endpoint, ServiceApi
from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import Cause, check, fail, logs_cmd, short, transport_cause
from bizosaas_acceptance.probes.api import ApiCaller, ResolveError
from bizosaas_acceptance.probes.http import Reply
from bizosaas_acceptance.probes.infra import postgres_options
from bizosaas_acceptance.probes.snapshot import _mem_used, shared, shared_if_present
from bizosaas_acceptance.state import SETTINGS

pytestmark = [pytest.mark.performance]

BASELINE_SAMPLES = 5
LOAD_REQUESTS = 40
#: The load's time bound: 40 requests take about 0.1 s on a healthy service; a
#: slow one (every answer 400 ms) sends what fits in this time, enough to judge
#: its error rate, instead of holding up the whole load phase for 4 s and more.
LOAD_DEADLINE_S = 2.5
#: How long a process waits for another one running a load (or the after-load
#: sample): one load's deadline, its last requests' timeouts, and the sampling.
LOAD_WAIT_S = 50.0


@dataclass
class Figures:
    """What the samples of one endpoint came to (milliseconds)."""

    samples: list[float]
    raw: list[float]
    baseline_ms: float
    errors: int
    #: The service's own timing headers, verbatim (shown beside, never judged).
    reported: str | None = None

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else math.inf

    def as_dict(self) -> dict[str, Any]:
        return {"n": len(self.samples), "p50_ms": round(self.p50, 2),
                "p95_ms": round(self.p95, 2), "mean_ms": round(self.mean, 2),
                "raw_mean_ms": round(statistics.fmean(self.raw), 2) if self.raw else None,
                "baseline_ms": round(self.baseline_ms, 2), "timing": "client-baseline",
                "reported": self.reported, "errors": self.errors}

    def line(self) -> str:
        measured = (f"p50 {self.p50:.1f} ms, p95 {self.p95:.1f} ms, mean {self.mean:.1f} ms "
                    f"over {len(self.samples)} samples (measured by the suite; runner "
                    f"baseline {self.baseline_ms:.1f} ms subtracted)")
        if self.reported:
            measured += f"; the service reports {self.reported} (shown, not judged)"
        return measured


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.inf
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


#: Headers in which services report their own processing time (display names).
#: Shown beside the suite's measurement, verbatim: their meaning and units are
#: the service's own (Server-Timing lists several metrics; X-Process-Time is
#: seconds in Starlette's examples and milliseconds elsewhere), and a service's
#: account of itself is exactly what this suite exists to check.
SELF_REPORTED = {"server-timing": "Server-Timing", "x-response-time": "X-Response-Time",
                 "x-process-time": "X-Process-Time", "x-runtime": "X-Runtime"}


def reported_timing(replies: list[Reply]) -> str | None:
    """The service's self-reported timing headers of its last good answer, as sent."""
    for reply in reversed(replies):
        parts = [f"{name}: {' '.join(reply.headers[h].split())[:120]}"
                 for h, name in SELF_REPORTED.items() if reply.headers.get(h, "").strip()]
        if parts:
            return "; ".join(parts)
    return None


_BASELINES: dict[str, float] = {}
_BASELINE_LOCK = threading.Lock()


_CANNED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
           b"Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}")


def _serve_canned(listener: socket.socket) -> None:
    """Answer every request on one keep-alive connection with a canned 200, at once.

    Deliberately not http.server: its parsing costs more than a fast target's
    whole answer, and the baseline must be the client's share only.
    """
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    with conn:
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                conn.sendall(_CANNED)


def runner_overhead_ms(api: ApiCaller) -> float:
    """Client + HTTP stack cost: fastest request to an instant local responder."""
    with _BASELINE_LOCK:
        if "__runner__" in _BASELINES:
            return _BASELINES["__runner__"]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        thread = threading.Thread(target=_serve_canned, args=(listener,), daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        api.http.request("GET", url)  # warm-up: connection
        times = [r.elapsed_ms for r in (api.http.request("GET", url)
                                        for _ in range(BASELINE_SAMPLES)) if r.ok]
    value = min(times) if times else 0.0
    with _BASELINE_LOCK:
        _BASELINES.setdefault("__runner__", value)
    return value


def network_rtt_ms(host: str, port: int) -> float:
    """Fastest TCP connect to the service's port: the network's share of a request."""
    best = math.inf
    for _ in range(BASELINE_SAMPLES):
        t0 = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=2):
                best = min(best, (time.perf_counter() - t0) * 1000)
        except OSError:
            return 0.0
    return best


def baseline_ms(api: ApiCaller, service: str) -> float:
    """What a sample costs before the service does any work: runner + network."""
    with _BASELINE_LOCK:
        if service in _BASELINES:
            return _BASELINES[service]
    host, port = urlsplit(api.url(service, "/")).hostname, urlsplit(api.url(service, "/")).port
    value = runner_overhead_ms(api) + network_rtt_ms(host or "127.0.0.1", port or 80)
    with _BASELINE_LOCK:
        _BASELINES.setdefault(service, value)
    return value


#: Stop sampling early once the verdict cannot change (a slow or failing
#: endpoint must not cost samples x its latency); without a decided mean, a
#: failure is judged on at least this many samples.
MIN_SAMPLES = 5
#: A route whose every one of this many answers (the warm-up's included, though
#: it is never in the figures) is over the mean budget is judged slow on them:
#: a uniformly slow service (every answer 400 ms against 200) would otherwise
#: cost most of --perf-samples x its latency per route for a verdict these
#: answers already show. The figures reported are those of the samples taken,
#: and the message says how many.
SLOW_DECIDED_AFTER = 3


def measure(api: ApiCaller, endpoint: Endpoint, url: str, samples: int,
            mean_limit_ms: float | None = None) -> tuple[Figures, list[Reply]]:
    headers = api.headers(endpoint)
    # Warm-up first (the service's caches): the run's shared answer to this very
    # request when another check already asked for it (the api checks usually
    # have), so a slow route does not pay its latency once more for a request
    # that is never in the figures. A target known to hang or refuse fails it
    # at once (the run's breaker), and then the network baseline's connects
    # are not worth their time either.
    warm = api.http.get(url, headers=headers)
    base = baseline_ms(api, endpoint.service) if warm.ok else runner_overhead_ms(api)
    # A warm-up over budget counts as evidence of slowness (never in the figures).
    warm_slow = int(mean_limit_ms is not None and warm.ok
                    and warm.elapsed_ms - base > mean_limit_ms)
    replies: list[Reply] = []
    spent = 0.0
    for _ in range(samples):
        reply = api.http.request("GET", url, headers=headers)
        replies.append(reply)
        spent += max(0.0, reply.elapsed_ms - base)
        failed = not (reply.ok and reply.status == endpoint.status)
        if failed and mean_limit_ms is not None and reply.elapsed_ms > mean_limit_ms:
            break  # a failed sample fails the check; a slow one is not worth repeating
        if (mean_limit_ms is not None and len(replies) + warm_slow >= SLOW_DECIDED_AFTER
                and all(r.ok and r.elapsed_ms - base > mean_limit_ms for r in replies)):
            break  # every answer over the budget: slow, whatever more samples show
        # Even if every remaining sample took 0 ms, the mean would stay above
        # the limit: the figures so far already decide (however few they are).
        if mean_limit_ms is not None and spent / samples > mean_limit_ms:
            break
        if len(replies) < MIN_SAMPLES:
            continue
        if all(not r.ok for r in replies):
            break  # unreachable: more samples would only repeat the error
        if any(not (r.ok and r.status == endpoint.status) for r in replies):
            break  # a failed sample fails the check whatever the others show
    good = [r for r in replies if r.ok and r.status == endpoint.status]
    # Our own clock decides; what the service says about itself is only shown.
    values = [max(0.0, r.elapsed_ms - base) for r in good]
    return Figures(values, [r.elapsed_ms for r in good], base, len(replies) - len(good),
                   reported_timing(good)), replies


# --------------------------------------------------------------------------- report


def bar_chart(title: str, rows: list[tuple[str, float, float]], budget: float | None) -> str:
    """A small inline SVG: per row a p50 and a p95 bar, and the budget as a line."""
    width, label_w, row_h = 420, 150, 16
    top = max([p95 for _, _, p95 in rows if math.isfinite(p95)] + [budget or 0, 1.0])
    scale = (width - label_w - 10) / top
    height = row_h * len(rows) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="10" role="img" aria-label="{escape(title)}">',
             f'<text x="0" y="10" font-weight="bold">{escape(title)}</text>']
    for i, (label, p50, p95) in enumerate(rows):
        y = 16 + i * row_h
        p95w = (p95 if math.isfinite(p95) else top) * scale
        parts += [f'<text x="0" y="{y + 10}">{escape(label[:28])}</text>',
                  f'<rect x="{label_w}" y="{y + 2}" width="{p95w:.1f}" height="10" '
                  'fill="#f4b183"><title>p95</title></rect>',
                  f'<rect x="{label_w}" y="{y + 4}" width="{max(0.0, p50) * scale:.1f}" '
                  'height="6" fill="#2e75b6"><title>p50</title></rect>',
                  f'<text x="{label_w + p95w + 3:.1f}" y="{y + 10}">{p50:.1f}/{p95:.1f} ms'
                  '</text>']
    if budget:
        x = label_w + budget * scale
        parts.append(f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height}" stroke="#c00" '
                     f'stroke-dasharray="3,2"><title>budget {budget:g} ms</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def attach(request: pytest.FixtureRequest, name: str, data: dict[str, Any], html: str) -> None:
    """Figures into the report's user properties, and (with pytest-html) a chart."""
    # user_properties travel to the controller under xdist (record_property would
    # warn under junit_family xunit2, which keeps no per-testcase properties).
    request.node.user_properties.append((name, json.dumps(data, sort_keys=True)))
    try:
        extras = request.getfixturevalue("extras")
        import pytest_html
    except (pytest.FixtureLookupError, ImportError):
        return
    extras.append(pytest_html.extras.html(f"<div>{html}</div>"))


def _samples(request: pytest.FixtureRequest) -> int:
    return int(request.config.stash[SETTINGS].get("perf_samples") or 20)


# --------------------------------------------------------------------------- checks


@pytest.mark.timed
def test_response_time(perf_endpoint: Endpoint, api: ApiCaller, stack: Stack,
                       request: pytest.FixtureRequest) -> None:
    ep = perf_endpoint
    svc = stack.services[ep.service]
    try:
        url = api.url(ep.service, api.path(ep))
    except ResolveError as exc:
        fail(f"[RESPONSE_TIME] {ep.service} GET {ep.path}: cannot fill the path",
             expected="sample ids from the documented listing", seen=str(exc),
             cause=Cause.CONFIG, next_cmd=logs_cmd(svc.container))
    budget = stack.response_budget_ms(svc) if ep.perf_class == svc.perf_class else float(
        (stack.threshold("response_ms_by_class") or {}).get(ep.perf_class)
        or stack.response_budget_ms(svc))
    mean_limit = min(budget, float(stack.threshold("response_ms_mean")))
    figures, replies = measure(api, ep, url, _samples(request), mean_limit)
    p95_limit = budget * float(stack.threshold("response_ms_p95_factor"))
    data = {"service": ep.service, "endpoint": f"GET {ep.path}", "class": ep.perf_class,
            "budget_mean_ms": mean_limit, "budget_p95_ms": p95_limit, **figures.as_dict()}
    attach(request, "perf", data, bar_chart(
        f"{ep.service} GET {ep.path}", [("p50 / p95", figures.p50, figures.p95),
                                        ("mean", figures.mean, figures.mean)], mean_limit))
    if figures.errors:
        bad = next(r for r in replies if not (r.ok and r.status == ep.status))
        cause, why = transport_cause(bad) if not bad.ok else (Cause.APP, "errors while timing")
        fail(f"[RESPONSE_TIME] {ep.service} GET {url}: {figures.errors} of {len(replies)} "
             "samples failed", expected=f"every sample {ep.status}",
             seen=f"{bad.describe(160)}; {figures.line()}", cause=cause, why=why,
             next_cmd=[f"curl -si '{url}'", logs_cmd(svc.container)])
    next_cmd = [f"curl -o /dev/null -s -w '%{{time_total}}\\n' '{url}'",
                f"docker stats --no-stream {svc.container}", logs_cmd(svc.container)]
    check(figures.mean <= mean_limit,
          f"[RESPONSE_TIME] mean ({figures.mean:.1f}ms) <= {mean_limit:g}ms: {ep.service} "
          f"GET {url}", expected=f"mean <= {mean_limit:g} ms (class {ep.perf_class}), "
          f"p95 <= {p95_limit:g} ms", seen=figures.line(), cause=Cause.SLOW,
          why="the service or one of its dependencies is slow (database, cache, upstream)",
          next_cmd=next_cmd)
    check(figures.p95 <= p95_limit,
          f"[RESPONSE_TIME] p95 ({figures.p95:.1f}ms) <= {p95_limit:g}ms: {ep.service} "
          f"GET {url}", expected=f"p95 <= {p95_limit:g} ms ({budget:g} ms x "
          f"{stack.threshold('response_ms_p95_factor')})", seen=figures.line(),
          cause=Cause.SLOW, why="occasional slow answers (stalls, lock waits, GC)",
          next_cmd=next_cmd)


# --------------------------------------------------------------------------- load phase
#
# The load (the error-rate requests of every service) is the run's "load
# phase", and the stability checks compare the stack before it with the stack
# after it. Under xdist the checks run on several workers in no fixed order,
# so the ordering is made by the shared, file-locked results
# (fixtures.snapshot.shared) rather than by scheduling:
#
# - each service's load runs once per run ("load-<service>"), on whichever
#   worker asks first; its error-rate check, on any worker, reads the result;
# - before any load starts, its producer first takes (or waits for) the
#   "load-before" figures: PostgreSQL connections right before the first load;
# - "after-load" first obtains every service's load (waiting for loads in
#   progress on other workers, running those nobody started yet), and only
#   then samples memory and connections. So "after" is after the whole load
#   phase whichever worker gets there first, and no lock is ever taken in the
#   opposite order (after-load -> load-<service> -> load-before), so nothing
#   can deadlock;
# - memory "before" is the controller's Docker snapshot, taken at configure
#   time, before any worker has started (probes/docker.py, prefetch_snapshot).


def _load_endpoints(sapi: ServiceApi) -> list[Endpoint]:
    """The service's own timed GETs. Calls routed through a gateway load the
    service behind it, whose own error-rate check covers them."""
    return [e for e in sapi.endpoints
            if e.method == "GET" and e.perf and e.has_example and e.via is None]


def _workers(config: pytest.Config) -> int:
    return int(config.stash[SETTINGS].get("perf_concurrency") or 4)


def _run_load(api: ApiCaller, sapi: ServiceApi, workers: int, limit: float) -> dict[str, Any]:
    """LOAD_REQUESTS requests round-robin over the service's GETs from ``workers``
    threads; stopped early once the errors alone reach ``limit`` percent."""
    urls = []
    for ep in _load_endpoints(sapi):
        try:
            urls.append((ep, api.url(ep.service, api.path(ep))))
        except ResolveError:
            urls.append((ep, api.url(ep.service, ep.path)))
    deadline = time.monotonic() + LOAD_DEADLINE_S
    # Errors that fail the check even if every other request of the LOAD_REQUESTS
    # succeeded: once seen, the verdict is decided and no more requests are sent.
    deciding = max(1, math.ceil(limit * LOAD_REQUESTS / 100)) if limit > 0 else 1
    failed = [0]
    decided = threading.Event()
    lock = threading.Lock()

    def one(i: int) -> dict[str, Any] | None:
        ep, url = urls[i % len(urls)]
        if time.monotonic() > deadline or decided.is_set():
            return None
        r = api.http.request("GET", url, headers=api.headers(ep))
        if not r.ok or r.status != ep.status:
            with lock:
                failed[0] += 1
                if failed[0] >= deciding:
                    decided.set()
        return {"path": ep.path, "expected": ep.status, "method": r.method, "url": r.url,
                "status": r.status, "error": r.error, "elapsed_ms": r.elapsed_ms,
                "describe": r.describe(120)}

    started = time.time()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(LOAD_REQUESTS)))
    return {"started": started, "ended": time.time(), "workers": workers,
            "decided": decided.is_set(), "requests": [r for r in results if r is not None]}


def pg_connections(stack: Stack, target: Target) -> dict[str, Any]:
    """PostgreSQL client connections by client address, the suite's own excluded.

    Every connection of this suite comes from the runner's address (as the
    server sees it: ``inet_client_addr()``), so connections from that address
    are left out: the figure is the services' own.
    """
    import psycopg

    svc = stack.by_protocol("postgres")
    if svc is None:
        return {"error": "the manifest has no PostgreSQL service"}
    db = stack.postgres.get("database", "postgres")
    try:
        # Bounded like the suite's own PostgreSQL client (fixtures/clients.py): the
        # connect by libpq, the statement on the server.
        with psycopg.connect(target.postgres_dsn(svc, db), password=target.postgres_password,
                             connect_timeout=max(1, int(target.connect_timeout)),
                             options=postgres_options(target.connect_timeout),
                             tcp_user_timeout=int(target.connect_timeout * 1000),
                             autocommit=True) as conn:
            rows = conn.execute(
                "select coalesce(host(client_addr), '(local or hidden)'), count(*) "
                "from pg_stat_activity where backend_type = 'client backend' "
                "and pid <> pg_backend_pid() "
                "and client_addr is distinct from inet_client_addr() group by 1").fetchall()
    except Exception as exc:  # noqa: BLE001 - reported by the check that needs the figure
        return {"error": f"{type(exc).__name__}: {short(exc, 200)}"}
    by_addr = {str(addr): int(n) for addr, n in rows}
    return {"at": time.time(), "total": sum(by_addr.values()), "by_addr": by_addr}


def service_load(api: ApiCaller, stack: Stack, target: Target, sapi: ServiceApi, workers: int,
                 run_id: str) -> dict[str, Any]:
    """The service's load, run once per run (whichever process asks first)."""

    def produce() -> dict[str, Any]:
        # Before any service's load starts: the connection figure it is compared with.
        shared(run_id, "load-before", lambda: pg_connections(stack, target), wait=LOAD_WAIT_S)
        return _run_load(api, sapi, workers, float(stack.threshold("error_rate_pct")))

    return shared(run_id, f"load-{sapi.key}", produce, wait=LOAD_WAIT_S)


#: run id -> service key -> that service's load, started in this process.
_PHASES: dict[str, dict[str, Future[dict[str, Any]]]] = {}
_PHASES_LOCK = threading.Lock()


def load_phase(api: ApiCaller, stack: Stack, target: Target, workers: int,
               run_id: str) -> dict[str, Future[dict[str, Any]]]:
    """Every service's load, asked for together the first time any is needed.

    Side by side, the phase lasts as long as its slowest load (a slow service's
    is bounded by LOAD_DEADLINE_S) instead of the sum of all of them, and the
    check that asked first waits only for its own service's load. Each load
    still runs once per run (``service_load``): another process's threads
    read it, or wait for it, rather than send it again.
    """
    with _PHASES_LOCK:
        phase = _PHASES.get(run_id)
        if phase is None:
            services = [sapi for sapi in api.spec.services.values()
                        if sapi.key in stack.services and _load_endpoints(sapi)]
            pool = ThreadPoolExecutor(max_workers=max(1, len(services)),
                                      thread_name_prefix="bizosaas-load")
            phase = _PHASES[run_id] = {
                sapi.key: pool.submit(service_load, api, stack, target, sapi, workers, run_id)
                for sapi in services}
            pool.shutdown(wait=False)  # the threads end with their loads
    return phase


def _sample_container(client: Any, name: str) -> dict[str, Any]:
    """Memory now (one stats sample) and when the container last started."""
    try:
        attrs = client.api.inspect_container(name)
        stats = client.api.stats(name, stream=False, one_shot=True)
    except Exception as exc:  # noqa: BLE001 - absent, stopped: reported by the check
        return {"error": f"{type(exc).__name__}: {short(exc, 160)}"}
    return {"mem_used": _mem_used(stats),
            "started_at": (attrs.get("State") or {}).get("StartedAt"),
            "running": bool((attrs.get("State") or {}).get("Running"))}


def after_load(request: pytest.FixtureRequest, api: ApiCaller, stack: Stack,
               target: Target, run_id: str) -> dict[str, Any]:
    """Memory of every application container and PostgreSQL connections, once the
    whole load phase is over (see the comment above)."""

    def produce() -> dict[str, Any]:
        # Every load: those done are read, those in progress elsewhere waited for,
        # those nobody started yet run here, side by side (bounded: one load's time).
        phase = load_phase(api, stack, target, _workers(request.config), run_id)
        loads = [future.result() for future in phase.values()]
        requests = sum(len(load["requests"]) for load in loads)
        client = request.getfixturevalue("docker_client")
        names = [s.container for s in stack.apps]
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            memory = dict(zip(names, pool.map(lambda n: _sample_container(client, n), names),
                              strict=True))
        return {"taken_at": time.time(), "requests": requests, "memory": memory,
                "pg": pg_connections(stack, target)}

    return shared(run_id, "after-load", produce, wait=LOAD_WAIT_S)


@pytest.mark.load_phase
def test_error_rate_under_load(api_service: ServiceApi, api: ApiCaller, stack: Stack,
                               target: Target, run_id: str,
                               request: pytest.FixtureRequest) -> None:
    svc = stack.services[api_service.key]
    if not _load_endpoints(api_service):
        pytest.skip(f"{api_service.key} documents no timed GET")
    workers = _workers(request.config)
    limit = float(stack.threshold("error_rate_pct"))
    load = load_phase(api, stack, target, workers, run_id)[api_service.key].result()
    sent = load["requests"]
    errors = [r for r in sent if r["error"] is not None or r["status"] != r["expected"]]
    rate = len(errors) / len(sent) * 100 if sent else 100.0
    per_ep: dict[str, list[float]] = {}
    for r in sent:
        if r["error"] is None:
            per_ep.setdefault(r["path"], []).append(r["elapsed_ms"])
    rows = [(p, percentile(v, 50), percentile(v, 95)) for p, v in per_ep.items()]
    data = {"service": api_service.key, "requests": len(sent), "errors": len(errors),
            "error_rate_pct": round(rate, 2), "limit_pct": limit, "concurrency": workers,
            "latency_ms": {p: {"p50": round(a, 2), "p95": round(b, 2)} for p, a, b in rows}}
    attach(request, "load", data, bar_chart(
        f"{api_service.key}: {len(sent)} requests x{workers} (round trip, ms)", rows,
        stack.response_budget_ms(svc)))
    first = errors[0] if errors else None
    cause, why = (transport_cause(Reply(url=first["url"], method=first["method"],
                                        error=first["error"]))
                  if first is not None and first["error"] is not None else
                  (Cause.APP, "requests fail under concurrent load"))
    ok = bool(sent) and (rate < limit if limit > 0 else not errors)
    check(ok,
          f"[ERROR_RATE] ({rate:.1f}%) < {limit:g}%: {api_service.key} under "
          f"{workers} concurrent clients",
          expected=f"error rate < {limit:g}% over {LOAD_REQUESTS} requests "
                   f"({workers} concurrent, at most {LOAD_DEADLINE_S:g} s)",
          seen=f"{len(errors)} errors in {len(sent)} requests"
               + (f" (stopped there: {len(errors)} errors already reach {limit:g}% of "
                  f"{LOAD_REQUESTS})" if load.get("decided") and len(sent) < LOAD_REQUESTS
                  else "")
               + (f"; first: {first['method']} {first['url']} -> {first['describe']}"
                  if first is not None else ""),
          cause=cause, why=why,
          next_cmd=[logs_cmd(svc.container), f"docker stats --no-stream {svc.container}"])


# --------------------------------------------------------------------------- stability


def _mib(n: float | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def _memory_limit(svc: Service, attrs: dict[str, Any] | None, usage: dict[str, Any]) -> int:
    """The container's real limit; the manifest's when none is set; else what stats says."""
    real = int(((attrs or {}).get("HostConfig") or {}).get("Memory") or 0)
    return real or svc.memory or int(usage.get("mem_limit") or 0)


# Swarm: a task's container lives on the engine of its node, under another name;
# not sampled there yet (the PostgreSQL check below needs no engine).
@pytest.mark.after_load
@pytest.mark.compose_only
def test_memory_stable_under_load(app: Service, api: ApiCaller, stack: Stack, target: Target,
                                  run_id: str, docker_state,
                                  request: pytest.FixtureRequest) -> None:
    """No memory leak: memory after the load phase against the start of the run."""
    svc = app
    attrs = docker_state.container(svc)
    usage = docker_state.usage.get(svc.container) or {}
    before = usage.get("mem_used")
    stats_cmd = f"docker stats --no-stream {svc.container}"
    if attrs is None or not before:
        fail(f"[LEAK] {svc.key}: no memory figure at the start of the run",
             expected=f"{svc.container} running when the run started, with stats",
             seen="container absent" if attrs is None else
             f"container {(attrs.get('State') or {}).get('Status')}, no memory figure",
             cause=Cause.WONT_START, next_cmd=[stats_cmd, logs_cmd(svc.container)])
    after = after_load(request, api, stack, target, run_id)
    now = after["memory"].get(svc.container) or {"error": "not sampled"}
    if now.get("error") or not now.get("mem_used"):
        fail(f"[LEAK] {svc.key}: no memory figure after the load phase",
             expected=f"{svc.container} running after the load phase, with stats",
             seen=now.get("error") or "container not running", cause=Cause.WONT_START,
             next_cmd=[stats_cmd, logs_cmd(svc.container)])
    started = (attrs.get("State") or {}).get("StartedAt")
    if now.get("started_at") != started:
        fail(f"[LEAK] {svc.key}: restarted during the run, memory not comparable",
             expected="the same container process from the start of the run to after the load",
             seen=f"started {started} at the start, {now.get('started_at')} after the load",
             cause=Cause.MEMORY, why="the process died during the run (crash or OOM kill)",
             next_cmd=[f"docker inspect --format '{{{{.State.OOMKilled}}}} "
                       f"{{{{.RestartCount}}}}' {svc.container}", logs_cmd(svc.container, 100)])
    limit = _memory_limit(svc, attrs, usage)
    max_pct = float(stack.threshold("memory_growth_pct"))
    allowed = limit * max_pct / 100
    growth = int(now["mem_used"]) - int(before)
    check(growth <= allowed,
          f"[LEAK] {svc.key} memory +{_mib(growth)} <= {_mib(allowed)} across the load phase",
          expected=f"memory growth from the start of the run to after the load phase at most "
                   f"{max_pct:g}% of its {_mib(limit)} limit ({_mib(allowed)})",
          seen=f"{_mib(before)} at {_clock(docker_state.taken_at)} (start of the run), "
               f"{_mib(now['mem_used'])} at {_clock(after['taken_at'])} (after the load "
               f"phase, {after['requests']} requests): {growth / 2**20:+.1f} MiB",
          cause=Cause.MEMORY, why="memory leak: memory taken while serving requests is not "
                                  "given back",
          next_cmd=[stats_cmd, f"docker exec {svc.container} ps aux --sort=-rss"])


def _addresses(docker_state: Any, stack: Stack) -> dict[str, str]:
    """Container IP address -> container name (to attribute connections)."""
    out = {}
    for svc in stack.services.values():
        attrs = docker_state.container(svc) or {}
        for net in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).values():
            if (net or {}).get("IPAddress"):
                out[net["IPAddress"]] = svc.container
    return out


@pytest.mark.after_load
def test_db_connections_stable_under_load(pg_service: Service, api: ApiCaller, stack: Stack,
                                          target: Target, run_id: str, docker_state,
                                          request: pytest.FixtureRequest) -> None:
    """PostgreSQL client connections right after the load phase against right before it."""
    psql = ("psql -c 'select client_addr, usename, application_name, state, count(*) from "
            "pg_stat_activity group by 1,2,3,4 order by 5 desc'")
    after = after_load(request, api, stack, target, run_id)
    before = shared_if_present(run_id, "load-before")
    if before is None:
        fail("[LEAK] PostgreSQL connections: no load phase ran",
             expected="documented GETs to load (stacks/api), connections counted around them",
             seen="no service has a timed GET", cause=Cause.CONFIG, next_cmd=psql)
    for when, fig in (("before", before), ("after", after["pg"])):
        if fig.get("error"):
            fail(f"[LEAK] PostgreSQL connections {when} the load phase not counted",
                 expected="pg_stat_activity readable with the suite's credentials",
                 seen=fig["error"], cause=Cause.DATABASE, next_cmd=psql)
    names = _addresses(docker_state, stack)
    a, b = before["by_addr"], after["pg"]["by_addr"]
    changed = []
    for addr in sorted(set(a) | set(b), key=lambda x: b.get(x, 0) - a.get(x, 0), reverse=True):
        if a.get(addr, 0) != b.get(addr, 0):
            changed.append(f"{names.get(addr, addr)} {a.get(addr, 0)} -> {b.get(addr, 0)}")
    growth = after["pg"]["total"] - before["total"]
    limit = int(stack.threshold("pg_connections_growth"))
    check(growth <= limit,
          f"[LEAK] PostgreSQL connections ({before['total']} -> {after['pg']['total']}, "
          f"{growth:+d}) <= +{limit} across the load phase",
          expected=f"at most {limit} more client connections right after the load phase than "
                   "right before it (the suite's own connections not counted)",
          seen=f"{before['total']} at {_clock(before['at'])}, {after['pg']['total']} at "
               f"{_clock(after['pg']['at'])} ({after['requests']} requests); changed: "
               + (", ".join(changed[:8]) or "none"),
          cause=Cause.DATABASE, why="connections are opened and never given back (a "
                                    "connection leak), or pools grow without bound",
          next_cmd=psql)
