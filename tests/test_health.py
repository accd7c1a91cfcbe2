"""Suite 2: health endpoints. 200 without redirects, JSON, status, dependencies, latency.

One GET per service is shared by all the checks of that service.
"""

from __future__ import annotations

from typing import Any

import pytest

from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import Cause, check, fail, logs_cmd, require_answer
from bizosaas_acceptance.probes.http import Reply

pytestmark = [pytest.mark.health]

GOOD_STATUS = {"ok", "healthy"}
GOOD_DEP = {"connected", "ok", "healthy", "up"}
# Which troubleshooting category a dependency's failure points to.
DEP_CAUSE = {
    "postgres": Cause.DATABASE, "database": Cause.DATABASE, "db": Cause.DATABASE,
    "redis": Cause.REDIS, "cache": Cause.REDIS,
    "vault": Cause.VAULT, "temporal": Cause.TEMPORAL,
    "stripe": Cause.API_KEY, "paypal": Cause.API_KEY, "amazon_api": Cause.API_KEY,
    "ai_providers": Cause.API_KEY,
}


def _get(http, target: Target, svc: Service) -> Reply:
    __tracebackhide__ = True
    url = target.url(svc, svc.health_path or "/")
    reply = http.get(url)
    refused = "refused" in (reply.error or "")
    require_answer(reply, f"{svc.key}: GET {url}",
                   cause=Cause.PORTS if refused else Cause.HEALTH,
                   why="nothing listens on the published port" if refused
                   else "the service does not answer in time",
                   next_cmd=[f"docker port {svc.container}", logs_cmd(svc.container)])
    return reply


def _body(http, target: Target, svc: Service) -> dict[str, Any]:
    __tracebackhide__ = True
    reply = _get(http, target, svc)
    try:
        body = reply.json()
    except ValueError:
        fail(f"[BODY] {svc.key}: health body is not JSON", expected="a JSON object",
             seen=f"{reply.content_type or 'no content type'}: {reply.describe()}",
             cause=Cause.HEALTH, next_cmd=f"curl -s {reply.url}")
    if not isinstance(body, dict):
        fail(f"[BODY] {svc.key}: health body is not an object", expected="a JSON object",
             seen=reply.describe(), cause=Cause.HEALTH, next_cmd=f"curl -s {reply.url}")
    return body


def _why_unhealthy(svc: Service, body: Any) -> tuple[str, str]:
    """Name the first bad dependency in a health body, with its category."""
    if isinstance(body, dict):
        for path in _dependency_paths(svc, body):
            value = _lookup(body, path)
            if isinstance(value, str) and value.lower() not in GOOD_DEP:
                leaf = path.split(".")[-1]
                return DEP_CAUSE.get(leaf, Cause.HEALTH), f"dependency {leaf} reports {value!r}"
    return Cause.HEALTH, "the service reports itself unhealthy"


def _dependency_paths(svc: Service, body: dict[str, Any]) -> list[str]:
    paths = list(svc.health_dependencies)
    # Whatever else the body reports as a dependency is judged too.
    for key, value in body.items():
        if isinstance(value, dict) and key in ("services", "dependencies", "checks"):
            paths += [f"{key}.{k}" for k in value if f"{key}.{k}" not in paths]
        elif key in DEP_CAUSE and key not in paths:
            paths.append(key)
    return paths


def _lookup(body: dict[str, Any], path: str) -> Any:
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def test_health_status_200(http_service: Service, http, target: Target) -> None:
    reply = _get(http, target, http_service)
    body: Any = None
    try:
        body = reply.json()
    except ValueError:
        pass
    cause, why = _why_unhealthy(http_service, body)
    redirect = reply.status in (301, 302, 303, 307, 308)
    check(reply.status == 200, f"[STATUS] ({reply.status}) == 200: {http_service.key} GET "
          f"{reply.url}", expected="200 without following redirects", seen=reply.describe(),
          cause=Cause.HEALTH if redirect else cause,
          why=("answers with a redirect; curl -f would pass it, clients may not — "
               "fix the health path") if redirect else why,
          next_cmd=[f"curl -si {reply.url}", logs_cmd(http_service.container)])


def test_health_json(http_service: Service, http, target: Target) -> None:
    reply = _get(http, target, http_service)
    check(reply.content_type == "application/json",
          f"[CONTENT-TYPE] ({reply.content_type or '-'}) == application/json: "
          f"{http_service.key}", expected="Content-Type application/json",
          seen=f"{reply.content_type or 'none'}; {reply.describe(120)}", cause=Cause.HEALTH,
          why="the health route is not the service's JSON health view",
          next_cmd=f"curl -si {reply.url}")
    _body(http, target, http_service)


def test_health_reports_ok(app: Service, http, target: Target) -> None:
    http_service = app
    body = _body(http, target, http_service)
    status = body.get("status")
    cause, why = _why_unhealthy(http_service, body)
    check(isinstance(status, str) and status.lower() in GOOD_STATUS,
          f"[BODY] status ({status!r}) in ok|healthy: {http_service.key}",
          expected='"status": "ok" or "healthy"', seen=f"status {status!r}", cause=cause,
          why=why, next_cmd=[f"curl -s {target.url(http_service, http_service.health_path)}",
                             logs_cmd(http_service.container)])


def test_health_dependencies(app: Service, http, target: Target) -> None:
    http_service = app
    body = _body(http, target, http_service)
    paths = _dependency_paths(http_service, body)
    missing = [p for p in http_service.health_dependencies if _lookup(body, p) is None]
    bad = {p: _lookup(body, p) for p in paths
           if _lookup(body, p) is not None
           and str(_lookup(body, p)).lower() not in GOOD_DEP}
    # A body that names no dependency at all, of a service the manifest says
    # depends on something, cannot show that anything is connected.
    silent = not paths and bool(http_service.depends_on)
    cause, why = _why_unhealthy(http_service, body)
    check(not missing and not bad and not silent,
          f"[DEPENDENCIES] {http_service.key}: "
          + ", ".join([f"{p}={v!r}" for p, v in bad.items()] + [f"{p} missing" for p in missing]
                      + ([f"none reported (depends on {', '.join(http_service.depends_on)})"]
                         if silent else [])),
          expected="every reported dependency connected/ok"
                   + (f" (including {', '.join(http_service.health_dependencies)})"
                      if http_service.health_dependencies else "")
                   + (f"; the dependencies the manifest names "
                      f"({', '.join(http_service.depends_on)}) reported"
                      if http_service.depends_on and not http_service.health_dependencies
                      else ""),
          seen=", ".join(f"{p}={_lookup(body, p)!r}" for p in paths) or "no dependencies",
          cause=cause if bad else Cause.HEALTH,
          why=why if bad else "the health body does not report a dependency it should",
          next_cmd=[logs_cmd(http_service.container),
                    f"curl -s {target.url(http_service, http_service.health_path)}"])


def test_health_latency(http_service: Service, http, target: Target, stack: Stack) -> None:
    reply = _get(http, target, http_service)
    limit = float(stack.threshold("health_ms"))
    check(reply.elapsed_ms <= limit, f"[RESPONSE_TIME] ({reply.elapsed_ms:.0f}ms) <= "
          f"{limit:.0f}ms: {http_service.key}", expected=f"health answer within {limit:.0f} ms",
          seen=f"{reply.elapsed_ms:.0f} ms", cause=Cause.SLOW,
          why="the service or one of its dependencies is slow",
          next_cmd=[f"curl -o /dev/null -s -w '%{{time_total}}\\n' {reply.url}",
                    f"docker stats --no-stream {http_service.container}"])


def test_health_no_redirect_without_slash(slash_health_service: Service, http,
                                          target: Target) -> None:
    """The Django pitfall: the documented path must itself answer, not redirect.

    For a path documented with a trailing slash, the slash-less variant may
    redirect (that is Django's APPEND_SLASH), but only to the documented path.
    """
    http_service = slash_health_service
    path = http_service.health_path or "/"
    url = target.url(http_service, path.rstrip("/"))
    reply = http.get(url)
    require_answer(reply, f"{http_service.key}: GET {url}", cause=Cause.HEALTH,
                   next_cmd=f"curl -si {url}")
    location = reply.headers.get("location", "")
    check(reply.status == 200 or location.endswith(path),
          f"[REDIRECT] {http_service.key}: {path.rstrip('/')} -> {location or reply.status}",
          expected=f"200, or a redirect to {path}", seen=reply.describe(), cause=Cause.HEALTH,
          why="the slash-less health path goes somewhere else", next_cmd=f"curl -si {url}")
