"""Suite 6: response times per documented GET and the error rate under light load.

How it is measured (and how the runner's own overhead is kept out):

- Requests reuse the session's keep-alive connections (one ``requests.Session``),
  so no sample pays for a TCP handshake; one untimed warm-up request per
  endpoint fills caches and the connection pool first.
- Each sample is timed with ``time.perf_counter()`` around the request only
  (send, wait, read the whole body): no parsing, no assertion, no logging.
- When a service reports its own processing time (``Server-Timing: ...;dur=``,
  ``X-Response-Time`` or ``X-Process-Time``), that server-side figure is used.
- Otherwise the runner's overhead is measured and subtracted, without asking
  the target anything: the fastest of a few requests, through the same client
  session, to an instant canned responder inside the test process is the cost
  of the client and the HTTP stack; the fastest of a few TCP connects to the
  service's port is the network round trip. Every sample minus their sum is
  what the service itself spent. (A trivial endpoint *of the target*, such as
  ``/version``, would not do: a slow service is slow there too, and
  subtracting it would hide exactly what this suite must find.)
- p50 and p95 (nearest rank) and the mean of ``--perf-samples`` (default 20)
  sequential samples are judged: mean <= the class budget of the endpoint's
  route class (``thresholds.response_ms_by_class``) and <= ``response_ms_mean``,
  p95 <= class budget x ``response_ms_p95_factor``.
- Error rate: ``--perf-concurrency`` threads (default 4) send a bounded number
  of requests (40 per service, at most 10 s) round-robin over the service's
  documented GETs; transport errors, 5xx and undocumented statuses count as
  errors; the rate must stay below ``error_rate_pct``.
- Both stop as soon as the verdict is decided: sampling once the mean cannot
  come under budget even if the remaining samples took 0 ms, or once a sample
  failed (the check fails on any; after 5 samples, or at once when the failed
  one was itself slower than the budget); the load once its errors alone reach
  the limit over all of its requests. A sick service costs seconds, not minutes
  (a slow one still costs perf-samples x budget per endpoint: that much of its
  time is what decides a mean).

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlsplit

import pytest

from bizosaas_acceptance.model.api import Endpoint, ServiceApi
from bizosaas_acceptance.model.manifest import Stack
from bizosaas_acceptance.outcome import Cause, check, fail, logs_cmd, transport_cause
from bizosaas_acceptance.probes.api import ApiCaller, ResolveError
from bizosaas_acceptance.probes.http import Reply
from bizosaas_acceptance.state import SETTINGS

pytestmark = [pytest.mark.performance]

BASELINE_SAMPLES = 5
LOAD_REQUESTS = 40
LOAD_DEADLINE_S = 10.0


@dataclass
class Figures:
    """What the samples of one endpoint came to (milliseconds)."""

    samples: list[float]
    raw: list[float]
    baseline_ms: float
    source: str  # "server" or "client-baseline"
    errors: int

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
                "baseline_ms": round(self.baseline_ms, 2), "timing": self.source,
                "errors": self.errors}

    def line(self) -> str:
        return (f"p50 {self.p50:.1f} ms, p95 {self.p95:.1f} ms, mean {self.mean:.1f} ms "
                f"over {len(self.samples)} samples ({self.source}; runner baseline "
                f"{self.baseline_ms:.1f} ms subtracted)" if self.source != "server" else
                f"p50 {self.p50:.1f} ms, p95 {self.p95:.1f} ms, mean {self.mean:.1f} ms over "
                f"{len(self.samples)} samples (server-side timing)")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.inf
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def server_ms(reply: Reply) -> float | None:
    """The service's own processing time, when it reports one."""
    timing = reply.headers.get("server-timing", "")
    for part in timing.split(","):
        for attr in part.split(";"):
            name, _, value = attr.strip().partition("=")
            if name == "dur":
                try:
                    return float(value)
                except ValueError:
                    pass
    for header in ("x-response-time", "x-process-time"):
        raw = reply.headers.get(header, "").strip().lower().removesuffix("ms").strip()
        if raw:
            try:
                value = float(raw)
            except ValueError:
                continue
            # X-Process-Time is seconds by convention (Starlette examples).
            return value * 1000 if header == "x-process-time" and value < 10 else value
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


def measure(api: ApiCaller, endpoint: Endpoint, url: str, samples: int,
            mean_limit_ms: float | None = None) -> tuple[Figures, list[Reply]]:
    headers = api.headers(endpoint)
    # Warm-up first (caches, connection pool): a target known to hang or refuse
    # fails it at once (the run's breaker), and then the network baseline's
    # connects are not worth their time either.
    warm = api.http.request("GET", url, headers=headers)
    base = baseline_ms(api, endpoint.service) if warm.ok else runner_overhead_ms(api)
    replies: list[Reply] = []
    spent = 0.0
    for _ in range(samples):
        reply = api.http.request("GET", url, headers=headers)
        replies.append(reply)
        spent += max(0.0, reply.elapsed_ms - base)
        failed = not (reply.ok and reply.status == endpoint.status)
        if failed and mean_limit_ms is not None and reply.elapsed_ms > mean_limit_ms:
            break  # a failed sample fails the check; a slow one is not worth repeating
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
    server = [server_ms(r) for r in good]
    if good and all(s is not None for s in server):
        values, source = [float(s) for s in server if s is not None], "server"
    else:
        values, source = [max(0.0, r.elapsed_ms - base) for r in good], "client-baseline"
    return Figures(values, [r.elapsed_ms for r in good], base, source,
                   len(replies) - len(good)), replies


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


def test_error_rate_under_load(api_service: ServiceApi, api: ApiCaller, stack: Stack,
                               request: pytest.FixtureRequest) -> None:
    svc = stack.services[api_service.key]
    # The service's own endpoints only: calls routed through a gateway load the
    # service behind it, whose own error-rate check covers them.
    eps = [e for e in api_service.endpoints
           if e.method == "GET" and e.perf and e.has_example and e.via is None]
    if not eps:
        pytest.skip(f"{api_service.key} documents no timed GET")
    urls = []
    for ep in eps:
        try:
            urls.append((ep, api.url(ep.service, api.path(ep))))
        except ResolveError:
            urls.append((ep, api.url(ep.service, ep.path)))
    workers = int(request.config.stash[SETTINGS].get("perf_concurrency") or 4)
    deadline = time.monotonic() + LOAD_DEADLINE_S
    limit = float(stack.threshold("error_rate_pct"))
    # Errors that fail the check even if every other request of the LOAD_REQUESTS
    # succeeded: once seen, the verdict is decided and no more requests are sent.
    deciding = max(1, math.ceil(limit * LOAD_REQUESTS / 100)) if limit > 0 else 1
    failed = [0]
    decided = threading.Event()
    lock = threading.Lock()

    def one(i: int) -> tuple[Endpoint, Reply | None]:
        ep, url = urls[i % len(urls)]
        if time.monotonic() > deadline or decided.is_set():
            return ep, None
        reply = api.http.request("GET", url, headers=api.headers(ep))
        if not reply.ok or reply.status != ep.status:
            with lock:
                failed[0] += 1
                if failed[0] >= deciding:
                    decided.set()
        return ep, reply

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(LOAD_REQUESTS)))
    sent = [(ep, r) for ep, r in results if r is not None]
    errors = [(ep, r) for ep, r in sent if not r.ok or r.status != ep.status]
    rate = len(errors) / len(sent) * 100 if sent else 100.0
    per_ep: dict[str, list[float]] = {}
    for ep, r in sent:
        if r.ok:
            per_ep.setdefault(ep.path, []).append(r.elapsed_ms)
    rows = [(p, percentile(v, 50), percentile(v, 95)) for p, v in per_ep.items()]
    data = {"service": api_service.key, "requests": len(sent), "errors": len(errors),
            "error_rate_pct": round(rate, 2), "limit_pct": limit, "concurrency": workers,
            "latency_ms": {p: {"p50": round(a, 2), "p95": round(b, 2)} for p, a, b in rows}}
    attach(request, "load", data, bar_chart(
        f"{api_service.key}: {len(sent)} requests x{workers} (round trip, ms)", rows,
        stack.response_budget_ms(svc)))
    first = errors[0][1] if errors else None
    cause, why = (transport_cause(first) if first is not None and not first.ok else
                  (Cause.APP, "requests fail under concurrent load"))
    ok = bool(sent) and (rate < limit if limit > 0 else not errors)
    check(ok,
          f"[ERROR_RATE] ({rate:.1f}%) < {limit:g}%: {api_service.key} under "
          f"{workers} concurrent clients",
          expected=f"error rate < {limit:g}% over {LOAD_REQUESTS} requests "
                   f"({workers} concurrent, at most {LOAD_DEADLINE_S:g} s)",
          seen=f"{len(errors)} errors in {len(sent)} requests"
               + (f" (stopped there: {len(errors)} errors already reach {limit:g}% of "
                  f"{LOAD_REQUESTS})" if decided.is_set() and len(sent) < LOAD_REQUESTS else "")
               + (f"; first: {first.method} {first.url} -> {first.describe(120)}"
                  if first is not None else ""),
          cause=cause, why=why,
          next_cmd=[logs_cmd(svc.container), f"docker stats --no-stream {svc.container}"])
