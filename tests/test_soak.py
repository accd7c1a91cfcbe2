"""Soak: problems that only time shows (only with ``--soak DURATION``).

The soak itself runs once, on the controller, before the checks (see
bizosaas_acceptance/soakmode.py): bounded read-only traffic on every documented
GET, a sample every few seconds. These checks judge its series as trends, with
the manifest's ``soak:`` thresholds:

- memory per container: least-squares slope (MB/min) and growth over the soak
  ("no memory leaks detected");
- PostgreSQL connections: growth from the first to the last third ("database
  connections stable");
- Redis memory: slope;
- per service: error rate and p95 latency drift, last third against the first.

Each failure shows the figures, and the HTML report a small chart per series.
"""

from __future__ import annotations

from html import escape
from typing import Any

import pytest

from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.outcome import Cause, check, fail, logs_cmd
from bizosaas_acceptance.probes.soak import SoakResult, p95, slope, thirds
from bizosaas_acceptance.secrets import clip
from bizosaas_acceptance.soakmode import shared_result, soak_settings

pytestmark = [pytest.mark.soak]


@pytest.fixture(scope="session")
def soak(run_id: str) -> SoakResult:
    """The soak's series; a soak that did not run or sampled too little fails the check."""
    result = shared_result(run_id)
    if result is None:
        fail("[SOAK] no soak result in this run", expected="a soak before the checks (--soak)",
             seen="nothing measured", cause=Cause.CONFIG,
             why="the soak did not run on the controller",
             next_cmd="pytest -m soak --soak 10m")
    if len(result.samples) < 3:
        fail(f"[SOAK] {len(result.samples)} sample(s): too few to judge a trend",
             expected="at least 3 samples", seen=result.describe(), cause=Cause.CONFIG,
             why="the soak was shorter than three sampling intervals",
             next_cmd="pytest -m soak --soak 60s")
    return result


@pytest.fixture(scope="session")
def cfg(stack: Stack) -> dict[str, Any]:
    return soak_settings(stack)


def sparkline(title: str, points: list[tuple[float, float]], unit: str) -> str:
    """A small inline SVG of a series over the soak."""
    width, height, pad = 320, 70, 14
    if not points:
        return f"<div>{escape(title)}: no data</div>"
    ts = [t for t, _ in points]
    ys = [y for _, y in points]
    t0, t1 = min(ts), max(ts) or 1.0
    lo, hi = min(ys), max(ys)
    span_t = (t1 - t0) or 1.0
    span_y = (hi - lo) or 1.0

    def xy(t: float, y: float) -> str:
        x = pad + (t - t0) / span_t * (width - 2 * pad)
        yy = height - pad - (y - lo) / span_y * (height - 2 * pad)
        return f"{x:.1f},{yy:.1f}"

    path = " ".join(xy(t, y) for t, y in points)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="10" role="img" aria-label="{escape(title)}">'
            f'<text x="0" y="10" font-weight="bold">{escape(title)}</text>'
            f'<polyline points="{path}" fill="none" stroke="#2e75b6" stroke-width="1.5"/>'
            f'<text x="0" y="{height - 2}">{lo:.1f}</text>'
            f'<text x="{width - 60}" y="22">max {hi:.1f} {escape(unit)}</text></svg>')


def attach(request: pytest.FixtureRequest, html: str) -> None:
    try:
        extras = request.getfixturevalue("extras")
        import pytest_html
    except (pytest.FixtureLookupError, ImportError):
        return
    extras.append(pytest_html.extras.html(f"<div>{html}</div>"))


def _series(samples: list[Any], pick: Any) -> list[tuple[float, float]]:
    out = []
    for s in samples:
        value = pick(s)
        if value is not None:
            out.append((s.t, float(value)))
    return out


def test_soak_memory_trend(app: Service, soak: SoakResult, cfg: dict[str, Any],
                           request: pytest.FixtureRequest) -> None:
    """No memory leak: memory's slope and growth over the soak stay within the manifest's.

    Application services only: PostgreSQL and Redis fill their caches under
    traffic by design; their trends are connections and used memory below.
    """
    samples = soak.judged(float(cfg["warmup_s"]))
    points = _series(samples, lambda s: s.memory_mb.get(app.key))
    attach(request, sparkline(f"{app.key} memory (MB)", points, "MB"))
    problems = sorted({p for s in soak.samples for p in s.problems if p.startswith("docker")})
    check(len(points) >= 3, f"[SOAK] {app.key}: memory not sampled",
          expected="memory samples of the container through the soak",
          seen=f"{len(points)} of {len(samples)} samples" + (f"; {problems[0]}" if problems
                                                               else ""),
          cause=Cause.WONT_START, why="the container is not running or stats are unavailable",
          next_cmd=f"docker stats --no-stream {app.container}")
    per_min = (slope(points) or 0.0) * 60
    growth = points[-1][1] - points[0][1]
    limit_slope = float(cfg["memory_slope_mb_per_min"])
    limit_growth = float(cfg["memory_growth_mb"])
    check(not (per_min > limit_slope and growth > limit_growth),
          f"[SOAK] {app.key}: memory grows {per_min:.1f} MB/min",
          expected=f"slope <= {limit_slope:g} MB/min or growth <= {limit_growth:g} MB",
          seen=f"{points[0][1]:.1f} MB -> {points[-1][1]:.1f} MB (+{growth:.1f} MB) over "
               f"{points[-1][0] - points[0][0]:.0f} s; slope {per_min:.1f} MB/min; "
               f"{soak.describe()}",
          cause=Cause.MEMORY, why="memory grows steadily under constant traffic (a leak)",
          next_cmd=[f"docker stats {app.container}", logs_cmd(app.container)])


_PG_BY_CLIENT = ("SELECT application_name, client_addr, state, count(*) FROM pg_stat_activity "
                 "GROUP BY 1, 2, 3 ORDER BY 4 DESC")


def test_soak_connections_stable(pg_service: Service, soak: SoakResult, cfg: dict[str, Any],
                                 request: pytest.FixtureRequest) -> None:
    """Database connections stable: no creep from the first third to the last."""
    points = _series(soak.judged(float(cfg["warmup_s"])), lambda s: s.pg_connections)
    attach(request, sparkline("PostgreSQL connections", points, ""))
    check(len(points) >= 3, f"[SOAK] {pg_service.key}: connections not sampled",
          expected="pg_stat_activity counts through the soak",
          seen=f"{len(points)} samples; "
               + clip("; ".join(sorted({p for s in soak.samples for p in s.problems
                                       if p.startswith("postgres")})), 200),
          cause=Cause.DATABASE, next_cmd=logs_cmd(pg_service.container))
    first, last = thirds([y for _, y in points])
    growth = min(last) - max(first)
    allowed = int(cfg["connection_growth"])
    check(growth <= allowed, f"[SOAK] {pg_service.key}: connections grow by {growth:.0f}",
          expected=f"at most {allowed} more connections at the end than at the start",
          seen=f"first third {min(first):.0f}-{max(first):.0f}, last third "
               f"{min(last):.0f}-{max(last):.0f}; {soak.describe()}",
          cause=Cause.DATABASE, why="a connection pool leaks connections under steady traffic",
          next_cmd=f"docker exec {pg_service.container} psql -U bizosaas -c "
                   f"\"{_PG_BY_CLIENT}\"")


def test_soak_redis_memory_stable(redis_service: Service, soak: SoakResult,
                                  cfg: dict[str, Any], request: pytest.FixtureRequest) -> None:
    points = _series(soak.judged(float(cfg["warmup_s"])), lambda s: s.redis_mb)
    attach(request, sparkline("Redis used memory (MB)", points, "MB"))
    check(len(points) >= 3, f"[SOAK] {redis_service.key}: memory not sampled",
          expected="INFO memory through the soak", seen=f"{len(points)} samples",
          cause=Cause.REDIS, next_cmd=logs_cmd(redis_service.container))
    per_min = (slope(points) or 0.0) * 60
    limit = float(cfg["redis_memory_slope_mb_per_min"])
    check(per_min <= limit, f"[SOAK] {redis_service.key}: used memory grows {per_min:.2f} MB/min",
          expected=f"slope <= {limit:g} MB/min",
          seen=f"{points[0][1]:.2f} MB -> {points[-1][1]:.2f} MB; {soak.describe()}",
          cause=Cause.MEMORY, why="keys accumulate without expiry",
          next_cmd=f"docker exec {redis_service.container} redis-cli --bigkeys")


def _window(samples: list[Any], key: str) -> tuple[int, int, list[float]]:
    reqs = sum(s.requests.get(key, 0) for s in samples)
    errs = sum(s.errors.get(key, 0) for s in samples)
    lat = [v for s in samples for v in s.latencies_ms.get(key, [])]
    return reqs, errs, lat


def test_soak_error_rate_drift(api_service: Any, soak: SoakResult, cfg: dict[str, Any],
                               stack: Stack, request: pytest.FixtureRequest) -> None:
    """The error rate does not drift up (last third against the first) nor exceed the budget."""
    key = api_service.key
    svc = stack.services[key]
    samples = soak.judged(float(cfg["warmup_s"]))
    first, last = thirds(samples)
    r_all, e_all, _ = _window(samples, key)
    check(r_all > 0, f"[SOAK] {key}: no traffic measured",
          expected="requests to the service's documented GETs through the soak",
          seen=f"0 requests; {soak.describe()}", cause=Cause.CONFIG,
          why="the API description documents no GET that can be sent as is",
          next_cmd=f"grep -n 'method: GET' stacks/api/{stack.name}.yaml")
    rf, ef, _ = _window(first, key)
    rl, el, _ = _window(last, key)
    rate_first = ef / rf * 100 if rf else 0.0
    rate_last = el / rl * 100 if rl else 0.0
    series = [(s.t, (s.errors.get(key, 0) / s.requests[key] * 100) if s.requests.get(key)
               else 0.0) for s in samples]
    attach(request, sparkline(f"{key} error rate (%)", series, "%"))
    drift = rate_last - rate_first
    budget = float(stack.threshold("error_rate_pct"))
    allowed = float(cfg["error_rate_drift_pct"])
    overall = e_all / r_all * 100
    check(drift <= allowed and overall < budget,
          f"[SOAK] {key}: error rate {rate_first:.2f}% -> {rate_last:.2f}%",
          expected=f"drift <= {allowed:g} points and overall < {budget:g}%",
          seen=f"{e_all} errors of {r_all} requests ({overall:.2f}%); first third "
               f"{rate_first:.2f}%, last third {rate_last:.2f}%; {soak.describe()}",
          cause=Cause.APP, why="errors appear or grow under steady traffic",
          next_cmd=[logs_cmd(svc.container), f"docker stats --no-stream {svc.container}"])


def test_soak_latency_drift(api_service: Any, soak: SoakResult, cfg: dict[str, Any],
                            stack: Stack, request: pytest.FixtureRequest) -> None:
    """p95 latency does not drift up: the last third against the first."""
    key = api_service.key
    svc = stack.services[key]
    samples = soak.judged(float(cfg["warmup_s"]))
    first, last = thirds(samples)
    _, _, lat_first = _window(first, key)
    _, _, lat_last = _window(last, key)
    series = [(s.t, p95(s.latencies_ms.get(key, [])) or 0.0) for s in samples
              if s.latencies_ms.get(key)]
    attach(request, sparkline(f"{key} p95 (ms)", series, "ms"))
    check(bool(lat_first and lat_last), f"[SOAK] {key}: latency not measured",
          expected="answered requests in the first and last third of the soak",
          seen=f"{len(lat_first)} and {len(lat_last)} answers; {soak.describe()}",
          cause=Cause.SLOW, next_cmd=logs_cmd(svc.container))
    a, b = p95(lat_first) or 0.0, p95(lat_last) or 0.0
    factor, floor = float(cfg["p95_drift_factor"]), float(cfg["p95_drift_min_ms"])
    check(not (b > a * factor and b - a > floor),
          f"[SOAK] {key}: p95 {a:.0f} ms -> {b:.0f} ms",
          expected=f"last-third p95 <= {factor:g} x first-third p95 (or within {floor:g} ms)",
          seen=f"first third p95 {a:.1f} ms ({len(lat_first)} answers), last third "
               f"{b:.1f} ms ({len(lat_last)}); {soak.describe()}",
          cause=Cause.SLOW, why="responses slow down over time (resource exhaustion?)",
          next_cmd=[f"docker stats --no-stream {svc.container}", logs_cmd(svc.container)])
