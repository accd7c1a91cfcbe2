"""Shared HTTP behaviour: error format, CORS, rate limit, auth, access log, health."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from .cache import Cache
from .config import ALLOWED_ORIGINS, VERSION, Settings
from .db import Database, DatabaseUnavailable
from .keys import CONNECTED, key_status
from .logs import log, now_iso
from .vault import Vault

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Runtime:
    """Process-wide state shared by the core and the service module."""

    settings: Settings
    db: Database
    cache: Cache
    vault: Vault
    http: aiohttp.ClientSession | None = None
    active_requests: int = 0
    # Since the last "request stats" line: answers, and those logged as failed.
    window_requests: int = 0
    window_failed: int = 0
    # Set by a service module's start() once its own dependency is connected.
    module_ready: asyncio.Event = field(default_factory=asyncio.Event)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return self.settings.spec.key

    def key_value(self, name: str) -> str | None:
        """Env wins when the variable is present (even empty); else Vault's value."""
        import os

        if name in os.environ:
            return os.environ[name]
        return self.vault.service_secrets.get(name)

    def key_statuses(self) -> dict[str, str]:
        """name -> status word for this service's API keys."""
        return {n: key_status(n, self.key_value(n)) for n in self.settings.spec.api_keys}


RT_KEY = "rt"
OPENAPI_EXTRA_KEY = "openapi_extra"  # paths a module documents by hand


def rt_of(request: web.Request) -> Runtime:
    """The :class:`Runtime` of the app serving ``request``."""
    return request.app[RT_KEY]


class ApiError(Exception):
    """Raised by handlers; rendered in the common error format."""

    def __init__(
        self,
        code: int,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(data: Any) -> str:
    """JSON text, with Decimal and datetime support."""
    return json.dumps(data, default=_default)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response using :func:`dumps`."""
    return web.Response(
        text=dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    code: int,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """``{"error": {code, message, details, timestamp}}``."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "timestamp": now_iso(),
        }
    }
    return json_response(body, status=code, headers=headers)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, else a 400 ApiError."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "Request body must be a JSON object", {"body": "empty"})
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "Malformed JSON body", {"body": str(exc)[:200]}) from exc
    if not isinstance(data, dict):
        raise ApiError(400, "Request body must be a JSON object", {"body": type(data).__name__})
    return data


def int_param(request: web.Request, name: str, default: int, lo: int = 1, hi: int = 1000) -> int:
    """A bounded integer query parameter, else a 400 ApiError."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, f"Query parameter '{name}' must be an integer", {name: raw}) from exc
    if not lo <= value <= hi:
        raise ApiError(400, f"Query parameter '{name}' must be between {lo} and {hi}", {name: raw})
    return value


async def cached_json(
    request: web.Request, namespace: str, build: Callable[[], Awaitable[Any]]
) -> web.Response:
    """Serve a GET from the Redis cache, or build, store and serve it."""
    rt = rt_of(request)
    key = f"cache:{namespace}:{request.path_qs}"
    hit = await rt.cache.get_cached(key)
    if hit is not None:
        return web.Response(text=hit, content_type="application/json", headers={"X-Cache": "HIT"})
    body = dumps(await build())
    await rt.cache.set_cached(key, body)
    return web.Response(text=body, content_type="application/json", headers={"X-Cache": "MISS"})


def is_health_path(request: web.Request) -> bool:
    """Both spellings of the health path."""
    return request.path.rstrip("/") == "/health"


# ---------------------------------------------------------------- middlewares


@web.middleware
async def access_log_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: counts in-flight requests and writes one access line each."""
    rt = rt_of(request)
    rt.active_requests += 1
    start = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    finally:
        rt.active_requests -= 1
        ms = round((time.perf_counter() - start) * 1000, 2)
        rt.window_requests += 1
        if status >= 500 and status not in (502, 503, 504):
            level, msg = "error", "request failed"
            rt.window_failed += 1
        elif status >= 400:
            level, msg = "warning", "request rejected"
        else:
            level, msg = "info", "request"
        log(
            level,
            msg,
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=ms,
            client=request.remote,
        )


@web.middleware
async def rate_limit_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Per client IP per minute, counted in Redis; headers on every /api/ answer."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    rt = rt_of(request)
    limit = rt.settings.rate_limit
    counted = await rt.cache.rate_count(request.remote or "unknown")
    # Redis away: fail open, still advertise the limit.
    count, reset = counted if counted else (0, (int(time.time()) // 60 + 1) * 60)
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, limit - count)),
        "X-RateLimit-Reset": str(reset),
    }
    if count > limit:
        headers["Retry-After"] = str(max(1, reset - int(time.time())))
        return error_response(429, "Rate limit exceeded", {"limit_per_minute": limit}, headers)
    resp = await handler(request)
    resp.headers.update(headers)
    return resp


@web.middleware
async def cors_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Allow-list CORS; preflight handled here."""
    origin = request.headers.get("Origin")
    allowed = origin in ALLOWED_ORIGINS
    if (
        request.method == "OPTIONS"
        and origin
        and "Access-Control-Request-Method" in request.headers
    ):
        if not allowed:
            return error_response(403, "CORS origin not allowed", {"origin": origin})
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin or "",
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Requested-With",
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    if request.method == "OPTIONS":
        resp: web.StreamResponse = web.Response(
            status=204, headers={"Allow": "GET, POST, PUT, PATCH, DELETE, OPTIONS"}
        )
    else:
        resp = await handler(request)
    if allowed and origin:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        resp.headers["Vary"] = "Origin"
    return resp


@web.middleware
async def slash_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Django APPEND_SLASH: /health and /api/... without a slash get a 301."""
    rt = rt_of(request)
    path = request.path
    if (
        rt.settings.spec.django
        and not path.endswith("/")
        and (path == "/health" or path.startswith("/api/") or path == "/graphql")
    ):
        location = path + "/" + (f"?{request.query_string}" if request.query_string else "")
        return web.Response(status=301, headers={"Location": location})
    return await handler(request)


@web.middleware
async def slow_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    """FAULT_SLOW_MS: delay everything but health."""
    delay = rt_of(request).settings.fault_slow_ms
    if delay and not is_health_path(request):
        await asyncio.sleep(delay / 1000)
    return await handler(request)


@web.middleware
async def auth_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes under /api/ need ``Authorization: Bearer <api_token from Vault>``."""
    # Unmatched paths/methods fall through to their 404/405 first.
    routed = request.match_info.http_exception is None
    if routed and request.method in WRITE_METHODS and request.path.startswith("/api/"):
        rt = rt_of(request)
        expected = rt.vault.api_token
        if expected is None:
            return error_response(
                503,
                "Authentication backend unavailable (secrets not loaded from Vault)",
                {"vault": "not_loaded"},
            )
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return error_response(
                401,
                "Authentication required",
                {"authorization": "missing bearer token"},
                {"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(token.strip().encode(), expected.encode()):
            return error_response(
                401,
                "Invalid bearer token",
                {"authorization": "invalid token"},
                {"WWW-Authenticate": "Bearer"},
            )
    return await handler(request)


@web.middleware
async def errors_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Innermost: every failure becomes the common error format."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        messages = {
            404: f"Not found: {request.path}",
            405: f"Method {request.method} not allowed on {request.path}",
        }
        details: dict[str, Any] = {"path": request.path}
        if exc.status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
            details["allowed_methods"] = sorted(exc.allowed_methods)
        return error_response(exc.status, messages.get(exc.status, exc.reason), details)
    except DatabaseUnavailable as exc:
        return error_response(503, "Database unavailable", {"database": str(exc)[:200]})
    except (RedisError, OSError) as exc:
        return error_response(503, "Cache unavailable", {"cache": type(exc).__name__})
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence, logged in full
        log(
            "error",
            "Unhandled exception in request handler",
            path=request.path,
            detail="".join(traceback.format_exception(exc))[-2000:],
        )
        return error_response(500, "Internal server error", {})


MIDDLEWARES = [access_log_mw, rate_limit_mw, cors_mw, slash_mw, slow_mw, auth_mw, errors_mw]


# ---------------------------------------------------------------- common routes

HealthExtra = Callable[[Runtime], Awaitable[dict[str, Any]]]


def health_handler(extra: HealthExtra | None, nested: bool) -> Handler:
    """Build the health endpoint: live checks, concurrently, ≤1 s each."""

    async def handle(request: web.Request) -> web.Response:
        rt = rt_of(request)
        base = {"service": rt.service, "version": VERSION, "timestamp": now_iso()}
        if rt.settings.fault_health_fail:
            return json_response({"status": "unhealthy", "reason": "forced", **base}, 503)
        pg, rd, more = await asyncio.gather(
            rt.db.ping(),
            rt.cache.ping(),
            extra(rt) if extra else asyncio.sleep(0, result={}),
        )
        deps = {
            "database": CONNECTED if pg else "disconnected",
            "cache": CONNECTED if rd else "disconnected",
        }
        if nested:
            fields = {"services": {"postgres": deps["database"], "redis": deps["cache"], **more}}
            words = list(fields["services"].values())
        else:
            fields = {**deps, **more}
            words = [v for v in fields.values() if isinstance(v, str)]
        ok = all(w == CONNECTED for w in words)
        status = rt.settings.spec.ok_word if ok else "unhealthy"
        return json_response({"status": status, **base, **fields}, 200 if ok else 503)

    return handle


async def version_handler(request: web.Request) -> web.Response:
    """``GET /version``."""
    rt = rt_of(request)
    return json_response(
        {
            "service": rt.service,
            "version": VERSION,
            "build": rt.settings.build,
            "environment": "staging",
        }
    )


def openapi_document(app: web.Application, title: str) -> dict[str, Any]:
    """An OpenAPI 3 document listing the app's real routes."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        info = route.resource.get_info()
        raw = info.get("path") or info.get("formatter")
        if not raw:
            continue
        # aiohttp's {name:regex} -> OpenAPI's {name}
        import re

        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", raw)
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in re.findall(r"\{(\w+)\}", path)
        ]
        op: dict[str, Any] = {
            "summary": (route.handler.__doc__ or route.handler.__name__).strip().splitlines()[0],
            "responses": {
                "200": {"description": "Success"},
                "default": {
                    "description": "Error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
        if params:
            op["parameters"] = params
        if route.method in WRITE_METHODS and path.startswith("/api/"):
            op["security"] = [{"bearerAuth": []}]
        paths.setdefault(path, {})[route.method.lower()] = op
    extra = app.get(OPENAPI_EXTRA_KEY) or {}
    paths.update(extra)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": VERSION},
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": {"type": "integer"},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                                "timestamp": {"type": "string", "format": "date-time"},
                            },
                        }
                    },
                }
            },
        },
    }


async def openapi_handler(request: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    return json_response(openapi_document(request.app, f"BizOSaaS {rt_of(request).service}"))
