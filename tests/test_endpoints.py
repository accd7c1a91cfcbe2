"""Suite 5: endpoint availability. Every documented route answers (not 404, not 405,
not 5xx); brain's route table lists every documented target and each target
answers through brain; OpenAPI documents load and parse.

Nothing here writes: GETs are sent as documented, protected writes of a
service are probed without a token (the service routes before it
authenticates, so its 401 proves the route exists there), read-only POSTs
(GraphQL queries) with their example.

A call through the gateway (``via``) is different: a gateway's catch-all route
answers 401 (its own authentication) or 405 without ever calling the service
behind it, so such an answer proves nothing. A routed call must show that it
reached its target: it is sent as documented, a protected write with the token
and an empty body (which the target's validation refuses: nothing is written),
and its answer must be the target's own: the same status and the same JSON as
the same request sent to the target directly (``direct`` in the API
description; an error's ``timestamp`` aside), and never 401/403/404/405/5xx.

Protected writes probed without a token (a 401 proves the route
exists; validation would refuse the empty body anyway). A broken deployment
could accept such a probe, so it counts as a write: skipped where writes are
not allowed, registered with ``records`` where they are (fixtures/api.py).
"""

from __future__ import annotations

import re
import time
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


#: Statuses that say a route did not take the request: 404 no route, 405 not this
#: method. Through a gateway also 401/403: its own authentication refused even a
#: valid token, so the service behind it never saw the request.
NOT_SERVED = (404, 405)
NOT_ROUTED = (401, 403, 404, 405)


def _route_cause(status: int) -> tuple[str, str]:
    if status == 404:
        return Cause.CONFIG, ("the route does not exist: wrong image version, or a "
                              "gateway/proxy path not configured")
    if status == 405:
        return Cause.CONFIG, "the documented method is not served on this path"
    if status in (502, 504):
        return Cause.NETWORK, "the gateway cannot reach the service behind the route"
    if status == 503:
        return Cause.HEALTH, "a dependency of the route is unavailable"
    if status in (401, 403):
        return Cause.CONFIG, ("the gateway refused the request itself (its own "
                              "authentication or a catch-all route): the service behind it "
                              "never saw it")
    return Cause.APP, "the service fails handling the route"


def _comparable(data: Any) -> Any:
    """JSON without ``timestamp`` fields: two answers to one request differ only there."""
    if isinstance(data, dict):
        return {k: _comparable(v) for k, v in data.items() if k != "timestamp"}
    if isinstance(data, list):
        return [_comparable(v) for v in data]
    return data


def _same_answer(a: Reply, b: Reply) -> tuple[bool, str]:
    """Whether two replies are the same answer: status, then JSON (or bytes)."""
    if a.status != b.status:
        return False, f"status {a.status} vs {b.status}"
    try:
        same = _comparable(a.json()) == _comparable(b.json())
    except ValueError:
        same = a.body == b.body
    return same, "" if same else "different bodies"


def _claim(reply: Reply) -> str:
    """The gateway's own claim about where it sent the request (shown, not trusted)."""
    upstream = reply.headers.get("x-upstream")
    return f" (X-Upstream: {upstream}, the gateway's own claim)" if upstream else ""


def _routed_pair(route: Endpoint, api: ApiCaller, caller: ApiCaller,
                 fresh: bool) -> tuple[Reply, Reply | None, Any]:
    """(through the gateway, directly at the target or None, the body sent)."""
    direct_url = api.url(route.via, route.direct) if route.via and route.direct else None
    if route.method == "GET":
        headers = caller.headers(route)
        through = (caller.http.request("GET", caller.url(route.service, caller.path(route)),
                                       headers=headers) if fresh else caller.answer(route))
        direct = (None if direct_url is None else caller.http.request(
            "GET", direct_url, headers=headers) if fresh else caller.http.get(
            direct_url, headers=headers))
        return through, direct, None
    # A write: authenticated, with an empty body that validation refuses (no write);
    # a read-only POST (a GraphQL query): as documented.
    body = {} if route.writes else caller.body(route)
    headers = caller.headers(auth=route.auth)
    through = caller.http.request(route.method, caller.url(route.service, caller.path(route)),
                                  headers=headers, json_body=body)
    direct = (None if direct_url is None else
              caller.http.request(route.method, direct_url, headers=headers, json_body=body))
    return through, direct, body


def _test_routed(route: Endpoint, api: ApiCaller, stack: Stack,
                 request: pytest.FixtureRequest) -> None:
    """A call through the gateway: it must reach its target (see the module doc)."""
    __tracebackhide__ = True
    gateway, target = stack.services[route.service], stack.services[route.via or route.service]
    caller = request.getfixturevalue("api_auth") if route.auth else api
    try:
        through, direct, body = _routed_pair(route, api, caller, fresh=False)
    except ResolveError as exc:
        fail(f"[ROUTE] {route.service} {route.method} {route.path}: cannot fill the path",
             expected="sample ids from the documented listing", seen=str(exc),
             cause=Cause.CONFIG, next_cmd=logs_cmd(gateway.container))
    _reached(through, gateway, f"{route.method} {through.url}")
    status = through.status or 0
    nxt = [curl_cmd(route.method, through.url, body, route.auth)]
    if direct is not None:
        nxt.append(curl_cmd(route.method, direct.url, body, route.auth))
    nxt += [logs_cmd(gateway.container), logs_cmd(target.container)]
    cause, why = _route_cause(status)
    wanted = route.status if route.method == "GET" or not route.writes else None
    check(status not in NOT_ROUTED and status < 500 and (wanted is None or status == wanted),
          f"[ROUTE] ({status}) {'== ' + str(wanted) if wanted else 'not 401/403/404/405/5xx'}: "
          f"{route.service} {route.method} {through.url} -> {route.via}",
          expected=(f"HTTP {wanted} from {route.via} through {route.service}" if wanted else
                    f"{route.via}'s own answer to an authenticated empty {route.method} (its "
                    "validation error), not the gateway's 401/403/404/405 or a 5xx"),
          seen=through.describe() + _claim(through), cause=cause, why=why, next_cmd=nxt)
    if direct is None:
        return
    _reached(direct, target, f"{route.method} {direct.url}")
    same, how = _same_answer(through, direct)
    if not same:
        # Data may change between two requests (another check wrote): ask both again.
        time.sleep(0.05)
        through, direct, _ = _routed_pair(route, api, caller, fresh=True)
        same, how = _same_answer(through, direct)
    check(same, f"[ROUTE] {route.service} {route.method} {route.path} answers differently "
          f"than {route.via} {route.direct} ({how})",
          expected=f"the answer {route.via} gives directly ({route.direct}), unchanged",
          seen=f"through: {through.describe(140)}{_claim(through)} | direct: "
               f"{direct.describe(140)}",
          cause=Cause.CONFIG, why="the gateway answers on its own or routes the prefix to "
          "another service", next_cmd=nxt)


def test_route_answers(route: Endpoint, api: ApiCaller, stack: Stack,
                       request: pytest.FixtureRequest) -> None:
    svc = stack.services[route.service]
    if route.via is not None:
        _test_routed(route, api, stack, request)
        return
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
    cause, why = _route_cause(status)
    check(status not in NOT_SERVED and status < 500,
          f"[ROUTE] ({status}) not 404/405/5xx: {route.service} {route.method} {reply.url}",
          expected="an answer that is neither 404, 405 nor 5xx", seen=reply.describe(),
          cause=cause, why=why,
          next_cmd=[curl_cmd(route.method, reply.url, body), logs_cmd(svc.container)])


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
                                        api: ApiCaller, stack: Stack,
                                        request: pytest.FixtureRequest) -> None:
    """The prefix reaches its target: the documented status, and (where the direct
    path is documented) the target's own answer. An ``X-Upstream`` header is the
    gateway's claim about itself, so it is shown, never taken as proof."""
    gateway, prefix, target = brain_route
    routed = [e for e in gateway.endpoints if e.method == "GET" and e.via == target
              and e.has_example]
    if not routed:
        pytest.skip(f"no GET through /api/{prefix} documented")
    ep = next((e for e in routed if e.direct), routed[0])
    _test_routed(ep, api, stack, request)


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
