"""``--soak DURATION``: run the soak on the controller before the checks, share the result.

The soak runs once per run, on the controller (or the single process), at
session start: before xdist starts its workers, so Ctrl-C reaches only the
controller and ends the soak early with what was measured; the run then goes
on and the soak checks (tests/test_soak.py, marker ``soak``) judge the series
from the run's shared directory.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from bizosaas_acceptance.model.api import load_api
from bizosaas_acceptance.model.manifest import Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.probes.snapshot import shared_dir, shared_if_present
from bizosaas_acceptance.probes.soak import DEFAULT_SOAK, Soak, SoakResult, Traffic
from bizosaas_acceptance.probes.soak import Target as Get
from bizosaas_acceptance.secrets import clip
from bizosaas_acceptance.state import RUN_ID, SETTINGS, STACK, TARGET

#: Name of the soak's result in the run's shared directory.
SHARED_NAME = "soak"


def soak_settings(stack: Stack) -> dict[str, Any]:
    """The manifest's ``soak:`` section over the defaults."""
    return {**DEFAULT_SOAK, **(stack.soak or {})}


def _targets(stack: Stack, target: Target, http: Any) -> list[Get]:
    """Every documented GET that can be sent as is (placeholders filled once)."""
    from bizosaas_acceptance.probes.api import ApiCaller, ResolveError

    spec = load_api(stack)
    if spec is None:
        return [Get(s.key, target.url(s, s.health_path)) for s in stack.http_services]
    caller = ApiCaller(spec, stack, target, http, None, "bizosaas-soak")
    out = []
    for sapi in spec.services.values():
        for ep in sapi.endpoints:
            if ep.method != "GET" or not ep.has_example or ep.auth or ep.is_graphql:
                continue
            try:
                out.append(Get(ep.service, caller.url(ep.service, caller.path(ep))))
            except ResolveError:
                continue  # the api suite reports an unresolvable path
    return out


def _memory_sampler(stack: Stack, target: Target) -> Any:
    """{service: (memory MB, CPU %)} from one-shot Docker stats, CPU from successive totals."""
    from concurrent.futures import ThreadPoolExecutor

    from bizosaas_acceptance.probes.docker import connect_docker
    from bizosaas_acceptance.probes.snapshot import _cpu_seconds, _mem_used

    client = connect_docker(target)
    previous: dict[str, tuple[float, float]] = {}

    def one(svc_key: str) -> tuple[str, float | None, float | None]:
        svc = stack.services[svc_key]
        stats = client.api.stats(svc.container, stream=False, one_shot=True)
        used = _mem_used(stats)
        cpu = _cpu_seconds(stats)
        pct = None
        if cpu and svc_key in previous and cpu[1] > previous[svc_key][1]:
            online = int((stats.get("cpu_stats") or {}).get("online_cpus") or os.cpu_count()
                         or 1)
            pct = (cpu[0] - previous[svc_key][0]) / (cpu[1] - previous[svc_key][1]) \
                * online * 100.0
        if cpu:
            previous[svc_key] = cpu
        mb = None if used is None else round(used / 2**20, 3)
        return svc_key, mb, None if pct is None else round(pct, 2)

    def sample() -> dict[str, tuple[float | None, float | None]]:
        with ThreadPoolExecutor(max(1, len(stack.services))) as pool:
            rows = list(pool.map(one, list(stack.services)))
        return {k: (mb, cpu) for k, mb, cpu in rows}

    return sample


def _pg_counter(stack: Stack, target: Target) -> Any:
    svc = stack.by_protocol("postgres")
    if svc is None:
        return None
    db = stack.postgres.get("database", "postgres")

    def count() -> int:
        import psycopg

        timeout = max(1, int(target.connect_timeout))
        with psycopg.connect(target.postgres_dsn(svc, db), password=target.postgres_password,
                             connect_timeout=timeout, autocommit=True,
                             options=f"-c statement_timeout={timeout * 1000}") as conn:
            # Our own sampling connection is not the service's: leave it out.
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                               "'client backend' AND pid <> pg_backend_pid()").fetchone()
            return int(row[0]) if row else 0

    return count


def _redis_meter(stack: Stack, target: Target) -> Any:
    svc = stack.by_protocol("redis")
    if svc is None:
        return None
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(host=target.host, port=svc.host_port,
                         password=target.redis_password or None,
                         socket_timeout=target.connect_timeout,
                         socket_connect_timeout=target.connect_timeout,
                         retry=Retry(NoBackoff(), 0))

    def used_mb() -> float:
        return float(client.info("memory")["used_memory"]) / 2**20

    return used_mb


def run_soak(config: pytest.Config, duration_s: float) -> SoakResult:
    """Run the soak now (blocking, with a progress line) and share its result."""
    import json

    from bizosaas_acceptance.probes.http import HttpProbe

    stack: Stack = config.stash[STACK]
    target: Target = config.stash[TARGET]
    cfg = soak_settings(stack)
    http = HttpProbe(timeout=target.http_timeout)
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def progress(line: str) -> None:
        if reporter is not None:
            reporter.rewrite(line, erase=True)

    try:
        memory = _memory_sampler(stack, target)
    except Exception as exc:  # noqa: BLE001 - the soak checks report it
        err = clip(f"Docker engine unreachable: {type(exc).__name__}: {exc}", 200)

        def memory() -> dict[str, tuple[float | None, float | None]]:
            raise RuntimeError(err)

    soak = Soak(duration_s=duration_s, interval_s=float(cfg["interval_s"]),
                traffic=Traffic(_targets(stack, target, http), lambda u: http.request("GET", u),
                                float(cfg["rate_rps"])),
                memory=memory, pg=_pg_counter(stack, target), redis=_redis_meter(stack, target),
                progress=progress)
    try:
        result = soak.run()
    finally:
        http.close()
    if reporter is not None:
        reporter.write_line("")
    path = shared_dir(config.stash[RUN_ID]) / f"{SHARED_NAME}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_json()))
    os.replace(tmp, path)
    return result


def shared_result(run_id: str) -> SoakResult | None:
    """The soak's result, as any process of the run reads it (None: no soak ran)."""
    raw = shared_if_present(run_id, SHARED_NAME)
    return None if raw is None else SoakResult.from_json(raw)


def maybe_run(config: pytest.Config) -> None:
    """At session start on the controller: soak when ``--soak`` was given."""
    duration = config.stash[SETTINGS].get("soak")
    if duration:
        run_soak(config, float(duration))
