"""brain-api stand-in: the gateway. Status, route table, and routed calls."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import psycopg
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError
from yarl import URL

from .. import temporal
from ..cache import HITS, MISSES
from ..config import ROUTE_TARGETS, SERVICES, parse_upstreams
from ..keys import combined_status
from ..web import ApiError, Runtime, cached_json, json_response, rt_of

HEALTH_NESTED = True
FORWARD_HEADERS = ("Authorization", "Content-Type", "Accept", "X-Request-ID")
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=2)

DDL = """
CREATE SCHEMA IF NOT EXISTS brain;
CREATE TABLE IF NOT EXISTS brain.routes (
    prefix TEXT PRIMARY KEY, target TEXT NOT NULL, upstream TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""


def upstream_path(prefix: str, rest: str) -> str:
    """Map ``/api/<prefix>/<rest>`` to the upstream's own path (see README)."""
    rest = rest.strip("/")
    if prefix == "cms":
        return f"/api/v2/{rest}/" if rest else "/api/v2/"
    if prefix == "crm":
        return f"/api/{rest}/" if rest else "/api/"
    if prefix == "saleor":
        return "/graphql/"
    return f"/api/{rest}" if rest else "/api"


def route_table(upstreams: dict[str, str]) -> list[dict[str, str]]:
    """The seven routes as served by ``GET /api/routes``."""
    return [
        {"path": f"/api/{p}", "target": t, "upstream": upstreams[p]}
        for p, t in ROUTE_TARGETS.items()
    ]


async def setup_db(conn: psycopg.AsyncConnection[Any]) -> None:
    """Record the route table (informational; routing uses the env)."""
    await conn.execute(DDL)
    for route in route_table(parse_upstreams(os.environ.get("UPSTREAMS"))):
        await conn.execute(
            "INSERT INTO brain.routes (prefix, target, upstream) VALUES (%s,%s,%s)"
            " ON CONFLICT (prefix) DO UPDATE SET target = EXCLUDED.target,"
            " upstream = EXCLUDED.upstream, updated_at = now()",
            (route["path"].rsplit("/", 1)[-1], route["target"], route["upstream"]),
        )


async def start(rt: Runtime) -> None:
    """Shared HTTP client for proxying, then connect to Temporal."""
    rt.http = aiohttp.ClientSession(timeout=UPSTREAM_TIMEOUT, auto_decompress=False)
    await temporal.connect_loop(rt.settings.temporal_address, rt.extra)
    rt.module_ready.set()


async def stop(rt: Runtime) -> None:
    """Close the HTTP client."""
    if rt.http is not None:
        await rt.http.close()


def _session(rt: Runtime) -> aiohttp.ClientSession:
    if rt.http is None:
        rt.http = aiohttp.ClientSession(timeout=UPSTREAM_TIMEOUT, auto_decompress=False)
    return rt.http


async def health_extra(rt: Runtime) -> dict[str, Any]:
    """Vault, Temporal and AI keys, next to postgres/redis from the core."""
    vault, temp = await asyncio.gather(
        rt.vault.health(_session(rt)), temporal.ping(rt.extra.get("temporal"))
    )
    return {"vault": vault, "temporal": temp, "ai_providers": combined_status(rt.key_statuses())}


async def _upstream_ok(session: aiohttp.ClientSession, prefix: str, base: str) -> bool:
    path = SERVICES[ROUTE_TARGETS[prefix]].health_path
    try:
        async with session.get(
            base + path, timeout=aiohttp.ClientTimeout(total=1), allow_redirects=False
        ) as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


#: /api/status reports upstream health from a snapshot at most this old,
#: refreshed in the background: a gateway must not make every status call
#: wait for its slowest (or vanished) upstream.
STATUS_MAX_AGE_S = 5.0


async def upstream_states(rt: Runtime, session: aiohttp.ClientSession) -> list[bool]:
    """Upstream health, from a snapshot refreshed in the background."""
    state: dict[str, Any] = rt.extra.setdefault("upstream_state", {"at": 0.0, "oks": None})
    ups = rt.settings.upstreams

    async def refresh() -> None:
        oks = await asyncio.gather(*(_upstream_ok(session, p, u) for p, u in ups.items()))
        state["oks"], state["at"] = list(oks), time.monotonic()

    if state["oks"] is None:
        await refresh()
    elif time.monotonic() - state["at"] > STATUS_MAX_AGE_S:
        task = state.get("task")
        if task is None or task.done():
            state["task"] = asyncio.create_task(refresh())
    return state["oks"]


async def stack_hit_rate(rt: Runtime) -> float:
    """Cache hit rate over every stand-in's Redis DB (1-8): the gateway's view of the stack.

    Each service counts ``stats:cache_hits``/``stats:cache_misses`` in its own DB;
    brain itself caches little, so its own DB alone would say nothing.
    """
    if not rt.settings.redis_url:
        return 0.0
    clients: dict[int, aioredis.Redis] = rt.extra.setdefault("stat_clients", {})
    hits = misses = 0
    for spec in SERVICES.values():
        client = clients.get(spec.redis_db)
        if client is None:
            url = str(URL(rt.settings.redis_url).with_path(f"/{spec.redis_db}"))
            client = aioredis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            clients[spec.redis_db] = client
        try:
            h, m = await client.mget(HITS, MISSES)
        except (RedisError, OSError, TimeoutError):
            continue
        hits, misses = hits + int(h or 0), misses + int(m or 0)
    return round(hits / (hits + misses), 4) if hits + misses else 0.0


async def status(request: web.Request) -> web.Response:
    """Gateway status: upstreams answering health right now, load, cache hit rate."""
    rt = rt_of(request)
    session = _session(rt)
    ups = rt.settings.upstreams
    oks, rate = await asyncio.gather(upstream_states(rt, session), stack_hit_rate(rt))
    return json_response(
        {
            "brain_api": "healthy",
            "connected_services": sum(oks),
            "total_services": len(ups),
            "services": {
                ROUTE_TARGETS[p]: ("connected" if ok else "disconnected")
                for p, ok in zip(ups, oks, strict=True)
            },
            "active_requests": rt.active_requests,
            "cache_hit_rate": rate,
        }
    )


async def routes_handler(request: web.Request) -> web.Response:
    """The routing table."""
    rt = rt_of(request)

    async def build() -> dict[str, Any]:
        return {"routes": route_table(rt.settings.upstreams)}

    return await cached_json(request, "routes", build)


async def proxy(request: web.Request) -> web.StreamResponse:
    """Forward ``/api/<prefix>/<rest>`` to its upstream, answer unchanged."""
    rt = rt_of(request)
    prefix = request.match_info["prefix"]
    target = ROUTE_TARGETS[prefix]
    base = rt.settings.upstreams[prefix]
    path = upstream_path(prefix, request.match_info.get("rest", ""))
    headers = {h: request.headers[h] for h in FORWARD_HEADERS if h in request.headers}
    headers["X-Forwarded-For"] = request.remote or ""
    body = await request.read()
    url = URL(
        base
        + path
        + (f"?{request.rel_url.raw_query_string}" if request.rel_url.raw_query_string else ""),
        encoded=True,
    )
    try:
        async with _session(rt).request(
            request.method, url, data=body or None, headers=headers, allow_redirects=False
        ) as resp:
            payload = await resp.read()
            out = web.Response(status=resp.status, body=payload if resp.status != 204 else None)
            if resp.status != 204 and "Content-Type" in resp.headers:
                out.headers["Content-Type"] = resp.headers["Content-Type"]
            if "Location" in resp.headers:
                out.headers["Location"] = resp.headers["Location"]
            out.headers["X-Upstream"] = target
            return out
    except TimeoutError as exc:
        raise ApiError(
            503, f"Upstream {target} timed out", {"target": target, "upstream": base}
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ApiError(
            502,
            f"Upstream {target} is unreachable",
            {"target": target, "upstream": base, "reason": type(exc).__name__},
        ) from exc


def openapi_paths() -> dict[str, Any]:
    """The routed prefixes, documented one by one (the catch-all route is not)."""
    paths: dict[str, Any] = {}
    for prefix, target in ROUTE_TARGETS.items():
        op = {
            "summary": f"Routed to {target}",
            "parameters": [
                {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": f"{target}'s answer, unchanged"},
                "502": {"description": f"{target} unreachable"},
            },
        }
        write = {**op, "security": [{"bearerAuth": []}]}
        paths[f"/api/{prefix}/{{path}}"] = {"get": op, "post": write, "delete": write}
    return paths


def routes() -> list[web.RouteDef]:
    """Own endpoints first, then the routed prefixes."""
    prefixes = "|".join(ROUTE_TARGETS)
    return [
        web.get("/api/status", status),
        web.get("/api/routes", routes_handler),
        web.route("*", "/api/{prefix:(" + prefixes + ")}{rest:(/.*)?}", proxy),
    ]
