"""Suite 4: infrastructure connectivity. PostgreSQL, Redis, Vault, Temporal.

Read-only toward the target, except the Temporal round trip, which runs a
workflow tagged with the run id on a task queue of its own (nothing persists
beyond Temporal's retention). The cache hit rate sends its own bounded,
read-only traffic (documented GETs) and judges only the window around it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bizosaas_acceptance.model.manifest import PLACEHOLDER, Service, Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import Cause, check, fail, logs_cmd, short, waiting_on
from bizosaas_acceptance.probes.infra import rpc_timeout, temporal_call

pytestmark = [pytest.mark.infra]


def _pg(stack: Stack) -> Service:
    return stack.by_protocol("postgres")  # type: ignore[return-value]


# --------------------------------------------------------------------------- postgres


def test_postgres_connect(pg_service: Service, postgres: Any, stack: Stack) -> None:
    row = postgres.execute("select current_setting('server_version_num')::int").fetchone()
    check(row and row[0] >= 150000, f"[VERSION] PostgreSQL ({row and row[0]}) >= 150000",
          expected="PostgreSQL 15 or newer", seen=f"server_version_num {row and row[0]}",
          cause=Cause.DATABASE, next_cmd="psql -c 'select version()'")


def test_postgres_database_exists(database: str, postgres: Any, stack: Stack) -> None:
    names = {r[0] for r in postgres.execute("select datname from pg_database").fetchall()}
    check(database in names, f"[DATABASE] {database} exists",
          expected=f"database {database}", seen=f"databases: {', '.join(sorted(names))}",
          cause=Cause.DATABASE, why="the database was never created (init script not run)",
          next_cmd=f"docker exec {_pg(stack).container} psql -U <user> -lqt")


def test_postgres_connections(pg_service: Service, postgres: Any, stack: Stack) -> None:
    used, limit = postgres.execute(
        "select (select count(*) from pg_stat_activity), "
        "current_setting('max_connections')::int").fetchone()
    pct = used / limit * 100
    max_pct = float(stack.threshold("pg_connections_pct"))
    check(pct < max_pct, f"[CONNECTIONS] ({used}/{limit} = {pct:.0f}%) < {max_pct:.0f}%",
          expected=f"fewer than {max_pct:.0f}% of max_connections in use",
          seen=f"{used} of {limit} connections in use", cause=Cause.DATABASE,
          why="connection pool exhaustion (a service leaks connections or pools too large)",
          next_cmd="psql -c 'select usename, application_name, client_addr, state, count(*) "
                   "from pg_stat_activity group by 1,2,3,4 order by 5 desc'")


# --------------------------------------------------------------------------- redis


def _redis(redis_service: Service, target: Target, command: str) -> Any:
    """``waiting_on`` for one Redis command (the client's socket timeout bounds it)."""
    return waiting_on(f"Redis {command} at redis://{target.address(redis_service)}",
                      cause=Cause.REDIS, budget=target.connect_timeout,
                      next_cmd=[f"redis-cli -h {target.host} -p {redis_service.host_port} "
                                f"--latency", logs_cmd(redis_service.container)])


def test_redis_ping(redis_service: Service, redis_client: Any, target: Target) -> None:
    with _redis(redis_service, target, "PING"):
        pong = redis_client.ping()
    check(pong is True, "[PING] Redis", expected="PONG", seen="no PONG",
          cause=Cause.REDIS, next_cmd="redis-cli ping")


def test_redis_memory(redis_service: Service, redis_client: Any, stack: Stack,
                      target: Target) -> None:
    with _redis(redis_service, target, "INFO memory"):
        info = redis_client.info("memory")
    used, maxmem = int(info["used_memory"]), int(info.get("maxmemory", 0))
    limit_pct = float(stack.threshold("memory_pct"))
    if maxmem == 0:
        fail("[MAXMEMORY] Redis has no maxmemory", expected="maxmemory set (with an eviction "
             "policy) so Redis cannot grow past its container limit", seen="maxmemory 0",
             cause=Cause.MEMORY, why="no memory limit set",
             next_cmd="redis-cli config get maxmemory*")
    pct = used / maxmem * 100
    check(pct < limit_pct, f"[MEMORY] Redis ({pct:.0f}%) < {limit_pct:.0f}% of maxmemory",
          expected=f"used_memory below {limit_pct:.0f}% of maxmemory",
          seen=f"{used / 2**20:.1f} MiB of {maxmem / 2**20:.0f} MiB",
          cause=Cause.REDIS, why="memory limit reached: evictions and timeouts follow",
          next_cmd="redis-cli info memory")


#: The hit-rate probe: every documented GET (read-only, no token) asked this many
#: times in a row. A working cache may miss the first (a cold entry) and must hit
#: the rest; a cache that is off looks nothing up, one that expires too fast misses.
PROBE_ROUNDS = 5
PROBE_THREADS = 8
PROBE_DEADLINE_S = 5.0
#: A URL's repeats stop once they took this long: a slow service adds fewer
#: lookups instead of holding the window open (the fast ones give the count).
CHAIN_BUDGET_S = 1.0


def _probe_urls(stack: Stack, request: pytest.FixtureRequest) -> list[tuple[str, dict[str, str]]]:
    """URLs of the documented GETs the probe asks (none without an API description):
    the timed, public ones whose path needs no value found at run time."""
    from bizosaas_acceptance.model.api import load_api
    from bizosaas_acceptance.probes.api import ResolveError

    spec = load_api(stack)
    if spec is None:
        return []
    api = request.getfixturevalue("api")
    urls = []
    for ep in spec.endpoints:
        # Paths without run-time values only: filling one asks a listing first
        # (with the suite's full timeout), which a hung route would hold up.
        if ep.method != "GET" or not ep.perf or not ep.has_example or ep.auth or ep.params:
            continue
        try:
            urls.append((api.url(ep.service, api.path(ep)), api.headers(ep)))
        except ResolveError:
            continue  # its own checks report the listing it needs
    return urls


# It asks every documented GET: run with the HTTP checks, once the opening probe
# has found any hang (a hung route is then refused at once, not waited for).
@pytest.mark.asks_http
def test_redis_hit_rate(redis_service: Service, redis_client: Any, stack: Stack,
                        target: Target, request: pytest.FixtureRequest) -> None:
    """The cache hit rate over this check's own window, with the traffic it needs.

    Redis's counters cover everything since it started (earlier runs of this
    suite included, whose repeated GETs are nearly all hits) and a fresh stack
    has none. So the window is this check's: INFO stats right before and right
    after a bounded, read-only probe (every documented GET asked PROBE_ROUNDS
    times); only lookups inside it count. Other checks running at the same time
    on other workers may add a few lookups of their own.
    """
    urls = _probe_urls(stack, request)
    http = request.getfixturevalue("http")
    want, min_ops = float(stack.threshold("cache_hit_rate")), int(stack.threshold("cache_min_ops"))
    with _redis(redis_service, target, "INFO stats"):
        before = redis_client.info("stats")
    t0 = time.monotonic()

    def chain(u: tuple[str, dict[str, str]]) -> list[Any]:
        # One URL asked up to PROBE_ROUNDS times in a row (a repeat comes after
        # its first), independently of the others: one slow URL holds up no other.
        out: list[Any] = []
        started = time.monotonic()
        for _ in range(PROBE_ROUNDS):
            now = time.monotonic()
            if now - t0 > PROBE_DEADLINE_S or now - started > CHAIN_BUDGET_S:
                break
            out.append(http.request("GET", u[0], headers=u[1]))
        return out

    replies = []
    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        for got in pool.map(chain, urls):
            replies += got
    with _redis(redis_service, target, "INFO stats"):
        after = redis_client.info("stats")
    sent = len(replies)
    failed = sum(1 for r in replies if not r.ok or r.status is None or r.status >= 400)
    took = time.monotonic() - t0
    hits = int(after["keyspace_hits"]) - int(before["keyspace_hits"])
    misses = int(after["keyspace_misses"]) - int(before["keyspace_misses"])
    ops = hits + misses
    window = (f"{hits} hits, {misses} misses while {sent} GETs of {len(urls)} documented "
              f"endpoints ran (up to {PROBE_ROUNDS} each, {took:.1f} s"
              + (f", {failed} answered with an error" if failed else "") + ")")
    nxt = ["redis-cli info stats | grep keyspace",
           "redis-cli --stat  # lookups per second while you repeat a GET"]
    check(ops >= min_ops, f"[CACHE] lookups ({ops}) >= {min_ops} in the hit-rate window",
          expected=f"at least {min_ops} cache lookups while documented GETs are repeated",
          seen=window if urls else "no documented GET to exercise the cache (no API "
          f"description); {hits} hits, {misses} misses", cause=Cause.SLOW,
          why="caching not enabled: the services look nothing up in Redis", next_cmd=nxt)
    rate = hits / ops
    check(rate > want, f"[CACHE] hit rate ({rate:.0%}) > {want:.0%}",
          expected=f"cache hit rate above {want:.0%} over the check's window (every "
                   f"documented GET asked {PROBE_ROUNDS} times in a row)",
          seen=window, cause=Cause.SLOW, why="caching not enabled or keys expire too fast",
          next_cmd=nxt)


# --------------------------------------------------------------------------- vault


def _vault(vault: Any, target: Target, request: str) -> Any:
    """``waiting_on`` for one Vault request (hvac's request timeout bounds it)."""
    return waiting_on(f"Vault {request} at {vault.url}", cause=Cause.VAULT,
                      budget=target.connect_timeout,
                      next_cmd=[f"time curl -s {vault.url}/v1/sys/health", "bao status"])


@pytest.fixture(scope="module")
def vault_health(vault: Any, target: Target) -> dict[str, Any]:
    with _vault(vault, target, "GET /v1/sys/health"):
        resp = vault.adapter.get("/v1/sys/health", raise_exception=False,
                                 params={"standbyok": "true", "sealedcode": "200",
                                         "uninitcode": "200"})
    return resp.json() if hasattr(resp, "json") else resp


def test_vault_initialized(vault_svc: Service, vault_health: dict[str, Any], stack: Stack) -> None:
    check(vault_health.get("initialized") is True, "[VAULT] initialized",
          expected="initialized true", seen=f"initialized {vault_health.get('initialized')}",
          cause=Cause.VAULT, why="Vault was never initialized",
          next_cmd="bao status  # or: vault status")


def test_vault_unsealed(vault_svc: Service, vault_health: dict[str, Any], stack: Stack) -> None:
    check(vault_health.get("sealed") is False, "[VAULT] unsealed",
          expected="sealed false", seen=f"sealed {vault_health.get('sealed')}",
          cause=Cause.VAULT, why="Vault is sealed: services cannot read secrets",
          next_cmd=["bao status", "bao operator unseal  # with the unseal key(s)"])


def test_vault_token_valid(vault_svc: Service, vault: Any, stack: Stack,
                           target: Target) -> None:
    try:
        with _vault(vault, target, "GET /v1/auth/token/lookup-self"):
            info = vault.auth.token.lookup_self()["data"]
    except Exception as exc:  # noqa: BLE001
        fail("[VAULT] token lookup failed", expected="the suite's token is valid",
             seen=f"{type(exc).__name__}: {short(exc, 160)}", cause=Cause.VAULT,
             why="token expired, revoked or wrong (check $BIZOSAAS_VAULT_TOKEN)",
             next_cmd="bao token lookup")
    # No ttl in the answer is not "no expiry" (that is ttl 0): it is no answer.
    ttl = info.get("ttl") if isinstance(info, dict) else None
    check(isinstance(ttl, int) and (ttl == 0 or ttl > 60), f"[VAULT] token ttl ({ttl}s)",
          expected="no expiry (ttl 0) or > 60 s", seen=f"ttl {ttl}s" if ttl is not None
          else "no ttl in the token lookup", cause=Cause.VAULT, next_cmd="bao token lookup")


def test_vault_service_secrets(secret_ref: tuple[Service, str], stack: Stack,
                               request: pytest.FixtureRequest) -> None:
    svc, name = secret_ref
    if not any(s.health_path == "/v1/sys/health" for s in stack.services.values()):
        pytest.skip("the stack has no Vault; the containers suite checks the secrets")
    vault = request.getfixturevalue("vault")
    target = request.getfixturevalue("target")
    cfg = stack.vault
    mount, prefix = cfg.get("kv_mount", "secret"), cfg.get("secrets_prefix", "bizosaas")
    path = f"{prefix}/{svc.key}"
    try:
        with _vault(vault, target, f"read {mount}/{path}"):
            data = vault.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True)["data"]["data"]
    except Exception as exc:  # noqa: BLE001
        fail(f"[VAULT] {mount}/{path} readable: {svc.key}",
             expected=f"KV v2 secret {mount}/{path}", seen=f"{type(exc).__name__}: "
             f"{short(exc, 160)}", cause=Cause.VAULT,
             why="secret not written, wrong path, or the token lacks read access",
             next_cmd=f"bao kv get -mount={mount} {path}")
    value = data.get(name)
    from bizosaas_acceptance.secrets import MASKER

    MASKER.add(value if isinstance(value, str) else None)
    ok = isinstance(value, str) and value.strip() and not PLACEHOLDER.match(value.strip())
    check(bool(ok), f"[VAULT] {mount}/{path}#{name} present: {svc.key}",
          expected=f"field {name} with a real value",
          seen="missing" if value is None else "empty or a placeholder",
          cause=Cause.API_KEY, why="the secret was never stored in Vault",
          next_cmd=f"bao kv get -mount={mount} -field={name} {path} >/dev/null && echo present")


# --------------------------------------------------------------------------- temporal


def test_temporal_system_info(temporal_service: Service, temporal: Any, async_runner,
                              target: Target) -> None:
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    t = target.connect_timeout
    info = temporal_call(async_runner, temporal.workflow_service.get_system_info(
        GetSystemInfoRequest(), timeout=rpc_timeout(t)), f"Temporal GetSystemInfo at "
        f"{target.address(temporal_service)}", t + 1,
        next_cmd=f"temporal operator cluster health --address {target.address(temporal_service)}")
    check(bool(info.server_version), f"[TEMPORAL] server version ({info.server_version!r})",
          expected="a server version", seen=repr(info.server_version), cause=Cause.TEMPORAL,
          next_cmd="temporal operator cluster describe")


def test_temporal_namespace(temporal_service: Service, temporal: Any, async_runner, stack: Stack,
                            target: Target) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    ns = stack.temporal.get("namespace", "default")
    t = target.connect_timeout
    try:
        resp = temporal_call(async_runner, temporal.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=ns), timeout=rpc_timeout(t)),
            f"Temporal DescribeNamespace {ns} at {target.address(temporal_service)}", t + 1,
            next_cmd=f"temporal operator namespace describe {ns}")
    except Exception as exc:  # noqa: BLE001
        fail(f"[TEMPORAL] namespace {ns}", expected=f"namespace {ns} registered",
             seen=f"{type(exc).__name__}: {short(exc, 160)}", cause=Cause.TEMPORAL,
             why="the namespace was never created",
             next_cmd=f"temporal operator namespace describe {ns}")
    check(resp.namespace_info.name == ns, f"[TEMPORAL] namespace {ns}",
          expected=ns, seen=resp.namespace_info.name, cause=Cause.TEMPORAL,
          next_cmd="temporal operator namespace list")


def test_temporal_workflow_round_trip(writes: None, temporal_service: Service, temporal: Any,
                                      async_runner, run_id: str,
                                      target: Target, stack: Stack) -> None:
    """A real workflow: started here, run by an in-process worker on a queue of this run.

    It leaves a workflow execution in the target's Temporal: a write (skipped
    where writes are not allowed, see fixtures/api.py)."""
    from temporalio.worker import Worker

    from bizosaas_acceptance.probes.temporal_workflow import ProbeWorkflow, echo

    queue = f"bizosaas-acceptance-{run_id}-{uuid.uuid4().hex[:6]}"
    wf_id = f"bizosaas-acceptance-{run_id}-{uuid.uuid4().hex[:8]}"

    budget = max(15.0, target.connect_timeout * 3)

    async def round_trip() -> str:
        async with Worker(temporal, task_queue=queue, workflows=[ProbeWorkflow],
                          activities=[echo]):
            handle = await temporal.start_workflow(
                ProbeWorkflow.run, run_id, id=wf_id, task_queue=queue,
                rpc_timeout=rpc_timeout(target.connect_timeout))
            return await handle.result(rpc_timeout=rpc_timeout(budget))

    try:
        result = async_runner.run(asyncio.wait_for(round_trip(), budget), budget + 2)
    except Exception as exc:  # noqa: BLE001
        svc = stack.by_protocol("grpc")
        fail("[TEMPORAL] workflow round trip", expected=f"workflow {wf_id} completes on "
             f"queue {queue} within {budget:.0f}s", seen=f"{type(exc).__name__}: "
             f"{short(exc, 200)}", cause=Cause.TEMPORAL,
             why="the server does not dispatch tasks (history/matching service unhealthy)",
             next_cmd=[f"temporal workflow describe -w {wf_id}",
                       logs_cmd(svc.container if svc else "temporal")])
    check(result == f"echo:{run_id}", "[TEMPORAL] workflow result",
          expected=f"echo:{run_id}", seen=repr(result), cause=Cause.TEMPORAL,
          next_cmd=f"temporal workflow show -w {wf_id}")

