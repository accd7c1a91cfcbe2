"""Suite 5: endpoint availability. Every documented route answers (not 404, not 5xx);
brain's route table lists every documented target and each target answers
through brain; OpenAPI documents load and parse.

GETs are sent as documented, read-only POSTs (GraphQL queries) with their
example; protected writes are probed without a token (a 401 proves the route
exists; validation would refuse the empty body anyway). A broken deployment
could accept such a probe, so it counts as a write: skipped where writes are
not allowed, registered with ``records`` where they are (fixtures/api.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from bizosaas_acceptance.model.api import Endpoint, ServiceApi
from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.outcome import Cause, check, curl_cmd, fail, logs_cmd, require_answer
from bizosaas_acceptance.probes.api import ApiCaller, ResolveError
from bizosaas_acceptance.probes.http import Reply

pytestmark = [pytest.mark.endpoints]


def _reached(reply: Reply, svc: Service, what: str) -> None:
    __tracebackhide__ = True
    require_answer(reply, f"{svc.key}: {what}",
                   next_cmd=[f"docker port {svc.container}", logs_cmd(svc.container)])


def test_route_answers(route: Endpoint, api: ApiCaller, stack: Stack) -> None:
    svc = stack.services[route.service]
    if route.method == "GET" or not route.auth:
        try:
            reply = api.answer(route)
        except ResolveError as exc:
            fail(f"[ROUTE] {route.service} {route.method} {route.path}: cannot fill the path",
                 expected="sample ids from the documented listing", seen=str(exc),
                 cause=Cause.CONFIG, next_cmd=logs_cmd(svc.container))
        body = None if route.method == "GET" else api.body(route)
    else:
        url = api.url(route.service, route.path.replace("{", "").replace("}", ""))
        headers = {"Accept": "application/json"}
        reply = (api.try_write(route, url, headers=headers, json_body={}) if route.writes
                 else api.http.request(route.method, url, headers=headers, json_body={}))
        body = {}
    _reached(reply, svc, f"{route.method} {reply.url}")
    status = reply.status or 0
    if status == 404:
        cause, why = Cause.CONFIG, ("the route does not exist: wrong image version, or a "
                                    "gateway/proxy path not configured")
    elif status in (502, 504):
        cause, why = Cause.NETWORK, "the gateway cannot reach the service behind the route"
    elif status == 503:
        cause, why = Cause.HEALTH, "a dependency of the route is unavailable"
    else:
        cause, why = Cause.APP, "the service fails handling the route"
    check(status != 404 and status < 500,
          f"[ROUTE] ({status}) not 404/5xx: {route.service} {route.method} {reply.url}",
          expected="an answer that is neither 404 nor 5xx", seen=reply.describe(), cause=cause,
          why=why, next_cmd=[curl_cmd(route.method, reply.url, body), logs_cmd(svc.container)])


def _route_table(api: ApiCaller, gateway: ServiceApi, stack: Stack) -> dict[str, str]:
    __tracebackhide__ = True
    svc = stack.services[gateway.key]
    url = api.url(gateway.key, "/api/routes")
    reply = api.http.get(url)
    _reached(reply, svc, f"GET {url}")
    try:
        routes = reply.json()["routes"]
        return {str(r["path"]).rstrip("/"): str(r["target"]) for r in routes}
    except (ValueError, KeyError, TypeError):
        fail(f"[ROUTES] {gateway.key}: GET {url} has no route table",
             expected='{"routes": [{"path", "target"}, ...]}', seen=reply.describe(),
             cause=Cause.APP, next_cmd=[f"curl -s {url}", logs_cmd(svc.container)])


def test_route_table_lists_target(brain_route: tuple[ServiceApi, str, str], api: ApiCaller,
                                  stack: Stack) -> None:
    gateway, prefix, target = brain_route
    table = _route_table(api, gateway, stack)
    path = f"/api/{prefix}"
    check(table.get(path) == target, f"[ROUTES] {gateway.key}: {path} -> "
          f"{table.get(path, '(missing)')}", expected=f"{path} routed to {target}",
          seen=", ".join(f"{p}->{t}" for p, t in sorted(table.items())) or "no routes",
          cause=Cause.CONFIG, why="the gateway's route table differs from the documented one",
          next_cmd=[f"curl -s {api.url(gateway.key, '/api/routes')}",
                    logs_cmd(stack.services[gateway.key].container)])


def test_target_answers_through_gateway(brain_route: tuple[ServiceApi, str, str],
                                        api: ApiCaller, stack: Stack) -> None:
    gateway, prefix, target = brain_route
    routed = [e for e in gateway.endpoints if e.method == "GET" and e.via == target
              and e.has_example]
    if not routed:
        pytest.skip(f"no GET through /api/{prefix} documented")
    ep = routed[0]
    reply = api.answer(ep)
    _reached(reply, stack.services[gateway.key], f"GET {reply.url}")
    upstream = reply.headers.get("x-upstream")
    status = reply.status or 0
    check(status == ep.status and upstream in (None, target),
          f"[ROUTE] ({status}) == {ep.status}: {gateway.key} GET {reply.url} -> {target}",
          expected=f"{ep.status} from {target} through /api/{prefix}",
          seen=f"{reply.describe()}" + (f" (X-Upstream: {upstream})" if upstream else ""),
          cause=Cause.NETWORK if status in (502, 503, 504) else Cause.CONFIG,
          why=f"the gateway cannot reach {target}" if status in (502, 503, 504)
          else "the gateway answers differently than the service",
          next_cmd=[f"curl -si '{reply.url}'", logs_cmd(stack.services[gateway.key].container),
                    logs_cmd(stack.services[target].container)])


# --------------------------------------------------------------------------- OpenAPI


def _openapi(api: ApiCaller, sapi: ServiceApi, stack: Stack) -> tuple[dict[str, Any], str]:
    __tracebackhide__ = True
    if not sapi.openapi:
        pytest.skip(f"{sapi.key} documents no OpenAPI document")
    svc = stack.services[sapi.key]
    url = api.url(sapi.key, sapi.openapi)
    reply = api.http.get(url)
    _reached(reply, svc, f"GET {url}")
    try:
        doc = reply.json()
    except ValueError:
        fail(f"[OPENAPI] {sapi.key}: {url} is not JSON", expected="an OpenAPI 3 document",
             seen=reply.describe(), cause=Cause.APP, next_cmd=f"curl -si {url}")
    return doc, url


def test_openapi_document(openapi_service: ServiceApi, api: ApiCaller, stack: Stack) -> None:
    api_service = openapi_service
    doc, url = _openapi(api, api_service, stack)
    problems = api.spec.problems({"$ref": "#/schemas/openapi"}, doc) if "openapi" in \
        api.spec.schemas else []
    if not problems:
        version = str(doc.get("openapi", ""))
        if not version.startswith("3."):
            problems.append(f"openapi: {version!r} is not 3.x")
        if not isinstance(doc.get("paths"), dict) or not doc["paths"]:
            problems.append("paths: empty")
    check(not problems, f"[OPENAPI] {api_service.key}: {url}",
          expected="openapi 3.x, info{title, version}, non-empty paths",
          seen="; ".join(problems) or "?", cause=Cause.APP,
          why="the OpenAPI document does not parse as OpenAPI 3",
          next_cmd=f"curl -s {url} | python3 -m json.tool | head -30")


def _matches(template: str, path: str) -> bool:
    pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template.rstrip("/"))) + "/?$"
    return re.match(pattern, path.rstrip("/") or "/") is not None


def test_openapi_lists_documented_endpoints(openapi_service: ServiceApi, api: ApiCaller,
                                            stack: Stack) -> None:
    api_service = openapi_service
    doc, url = _openapi(api, api_service, stack)
    paths = doc.get("paths") or {}
    missing = []
    for ep in api_service.endpoints:
        concrete = re.sub(r"\{[^}]+\}", "x", ep.path.split("?")[0])
        ops = [ops for tpl, ops in paths.items() if _matches(tpl, concrete)]
        if not any(isinstance(o, dict) and ep.method.lower() in o for o in ops):
            missing.append(f"{ep.method} {ep.path}")
    check(not missing, f"[OPENAPI] {api_service.key}: {len(missing)} documented endpoint(s) "
          f"missing from {url}", expected="every documented endpoint in the OpenAPI paths",
          seen="missing: " + ", ".join(missing[:8]), cause=Cause.CONFIG,
          why="the deployed service and its documentation disagree (version drift)",
          next_cmd=f"curl -s {url} | python3 -c 'import json,sys; "
                   f"print(*json.load(sys.stdin)[\"paths\"], sep=chr(10))'")
