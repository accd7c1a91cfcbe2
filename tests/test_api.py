"""Suite 3: API response validation against the documented API (stacks/api/<stack>.yaml).

Per endpoint: the documented status, content type and JSON shape (validated
with ``jsonschema`` against the schema data, never field by field here). Per
service: the error format on a bad request and on a 404, CORS for allowed and
refused origins (simple requests and preflight), rate-limit headers, the
documented trailing-slash behaviour. Per protected endpoint: 401 in the error
format without a token and with a wrong one.

A check that writes (a documented POST with its example body; a request to a
writing endpoint meant to be refused) runs only where writes are allowed
(``fixtures/api.py``); each request is registered with the ``records``
fixture before it is sent, carries a tag unique to its record, and what it
created is removed and verified gone when the check ends (the endpoint's
``cleanup``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from bizosaas_acceptance.model.api import Endpoint, ServiceApi
from bizosaas_acceptance.model.manifest import Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import (
    Cause,
    check,
    curl_cmd,
    fail,
    logs_cmd,
    require_answer,
    status_cause,
)
from bizosaas_acceptance.probes.api import ApiCaller, ResolveError, writing_endpoint
from bizosaas_acceptance.probes.http import Reply

pytestmark = [pytest.mark.api]



def _caller(endpoint: Endpoint, request: pytest.FixtureRequest, target: Target) -> ApiCaller:
    __tracebackhide__ = True
    if endpoint.writes and not target.allow_writes:
        pytest.skip(target.writes_skip_reason)  # (fixtures/api.py skips it first)
    return request.getfixturevalue("api_auth" if endpoint.auth else "api")


def _answer(api: ApiCaller, endpoint: Endpoint, stack: Stack) -> Reply:
    """The documented request's answer; fails on no HTTP answer or an unresolvable id."""
    __tracebackhide__ = True
    container = stack.services[endpoint.service].container
    try:
        reply = api.answer(endpoint)
    except ResolveError as exc:
        fail(f"[REQUEST] {endpoint.service} {endpoint.method} {endpoint.path}: cannot fill "
             "the path", expected="sample ids taken from the documented listing",
             seen=str(exc), cause=Cause.CONFIG,
             why="the listing an id comes from does not answer as documented",
             next_cmd=[f"curl -si {api.url(endpoint.service, '/')}", logs_cmd(container)])
    require_answer(reply, f"{endpoint.service}: {endpoint.method} {reply.url}",
                   next_cmd=[f"docker port {container}", logs_cmd(container)])
    return reply


def _json(reply: Reply, endpoint: Endpoint) -> Any:
    __tracebackhide__ = True
    try:
        return reply.json()
    except ValueError:
        fail(f"[BODY] {endpoint.service} {endpoint.method} {reply.url}: not JSON",
             expected=f"a JSON body ({endpoint.content_type})",
             seen=f"{reply.content_type or 'no content type'}: {reply.describe()}",
             cause=Cause.APP, why="the route is served by something else than the API",
             next_cmd=curl_cmd(endpoint.method, reply.url))


def _next(api: ApiCaller, endpoint: Endpoint, reply: Reply, stack: Stack) -> list[str]:
    body = None if endpoint.method == "GET" else api.body(endpoint)
    return [curl_cmd(endpoint.method, reply.url, body, endpoint.auth),
            logs_cmd(stack.services[endpoint.service].container)]


# --------------------------------------------------------------------------- per endpoint


def test_status(endpoint: Endpoint, request: pytest.FixtureRequest, target: Target,
                stack: Stack) -> None:
    api = _caller(endpoint, request, target)
    reply = _answer(api, endpoint, stack)
    cause, why = status_cause(reply.status)
    check(reply.status == endpoint.status,
          f"[STATUS] ({reply.status}) == {endpoint.status}: {endpoint.service} "
          f"{endpoint.method} {reply.url}", expected=f"HTTP {endpoint.status} as documented",
          seen=reply.describe(), cause=cause, why=why,
          next_cmd=_next(api, endpoint, reply, stack))


def test_content_type(endpoint: Endpoint, request: pytest.FixtureRequest, target: Target,
                      stack: Stack) -> None:
    api = _caller(endpoint, request, target)
    reply = _answer(api, endpoint, stack)
    check(reply.content_type == endpoint.content_type,
          f"[CONTENT-TYPE] ({reply.content_type or '-'}) == {endpoint.content_type}: "
          f"{endpoint.service} {endpoint.method} {reply.url}",
          expected=f"Content-Type {endpoint.content_type}",
          seen=f"{reply.content_type or 'none'}; {reply.describe(120)}", cause=Cause.APP,
          why="the route answers with another media type than documented",
          next_cmd=_next(api, endpoint, reply, stack))


def test_schema(schema_endpoint: Endpoint, request: pytest.FixtureRequest, target: Target,
                stack: Stack, api_spec) -> None:
    endpoint = schema_endpoint
    api = _caller(endpoint, request, target)
    reply = _answer(api, endpoint, stack)
    data = _json(reply, endpoint)
    problems = api_spec.problems(endpoint.schema, data)
    check(not problems, f"[SCHEMA] {endpoint.service} {endpoint.method} {reply.url}: "
          f"{problems[0] if problems else ''}",
          expected=f"a body matching the documented schema ({api_spec.source}, "
                   f"services.{endpoint.service}, {endpoint.name})",
          seen="; ".join(problems) + f" — body: {reply.describe(160)}", cause=Cause.CONFIG,
          why="the response shape differs from the documented API (version drift)",
          next_cmd=_next(api, endpoint, reply, stack))


# --------------------------------------------------------------------------- error format


def _error_check(api: ApiCaller, sapi: ServiceApi, stack: Stack, reply: Reply, status: int,
                 schema: dict[str, Any], what: str, body: Any = None) -> None:
    __tracebackhide__ = True
    container = stack.services[sapi.key].container
    require_answer(reply, f"{sapi.key}: {reply.method} {reply.url}",
                   next_cmd=logs_cmd(container))
    nxt = [curl_cmd(reply.method, reply.url, body, reply.method != "GET"), logs_cmd(container)]
    check(reply.status == status, f"[STATUS] ({reply.status}) == {status}: {sapi.key} "
          f"{what} {reply.method} {reply.url}", expected=f"HTTP {status} for {what}",
          seen=reply.describe(), cause=status_cause(reply.status)[0],
          why=f"{what} is not answered with {status}", next_cmd=nxt)
    try:
        data = reply.json()
    except ValueError:
        data = None
    problems = api.spec.problems(schema, data) if data is not None else ["body is not JSON"]
    check(not problems, f"[ERROR-FORMAT] {sapi.key} {what}: {problems[0] if problems else ''}",
          expected='{"error": {"code", "message", "details", "timestamp"}}'
          if schema.get("$ref") == "#/schemas/error" else "the documented error shape",
          seen=f"{'; '.join(problems)} — body: {reply.describe(160)}", cause=Cause.APP,
          why="errors do not come in the documented format; clients cannot parse them",
          next_cmd=nxt)


def test_error_format_bad_request(bad_request: tuple[ServiceApi, Any],
                                  request: pytest.FixtureRequest, stack: Stack) -> None:
    api_service, bad = bad_request
    api = request.getfixturevalue("api_auth" if bad.method != "GET" else "api")
    url, headers = api.url(api_service.key, bad.path), api.headers(auth=bad.method != "GET")
    writing = writing_endpoint(api_service, bad.method, bad.path)
    reply = (api.try_write(writing, url, headers=headers, json_body=bad.body) if writing
             else api.http.request(bad.method, url, headers=headers, json_body=bad.body))
    _error_check(api, api_service, stack, reply, bad.status,
                 bad.schema or {"$ref": "#/schemas/error"}, "a bad request", bad.body)


def test_error_format_not_found(api_service: ServiceApi, api: ApiCaller, stack: Stack) -> None:
    if not api_service.not_found:
        pytest.skip(f"no not_found path documented for {api_service.key}")
    reply = api.http.get(api.url(api_service.key, api_service.not_found))
    _error_check(api, api_service, stack, reply, 404, {"$ref": "#/schemas/error"},
                 "an unknown resource")


# --------------------------------------------------------------------------- CORS, rate limit


def _probe_endpoint(sapi: ServiceApi) -> Endpoint:
    """A GET the service answers without parameters (preferably under /api/)."""
    gets = [e for e in sapi.endpoints if e.method == "GET" and not e.params
            and "{" not in e.path]
    return next((e for e in gets if e.path.startswith("/api/")), gets[0] if gets else
                sapi.endpoints[0])


def _origin_get(api: ApiCaller, sapi: ServiceApi, origin: str, stack: Stack) -> Reply:
    __tracebackhide__ = True
    ep = _probe_endpoint(sapi)
    reply = api.http.request("GET", api.url(sapi.key, ep.path),
                             headers=api.headers(extra={"Origin": origin}))
    require_answer(reply, f"{sapi.key}: GET {reply.url}",
                   next_cmd=logs_cmd(stack.services[sapi.key].container))
    return reply


def test_cors_allowed_origin(api_service: ServiceApi, api: ApiCaller, stack: Stack) -> None:
    if not api.spec.cors_allowed:
        pytest.skip("no CORS origins documented")
    for origin in api.spec.cors_allowed:
        reply = _origin_get(api, api_service, origin, stack)
        got = reply.headers.get("access-control-allow-origin")
        check(got == origin, f"[CORS] {api_service.key}: Access-Control-Allow-Origin "
              f"({got or '-'}) == {origin}", expected=f"the allowed origin {origin} echoed",
              seen=f"Access-Control-Allow-Origin: {got or '(absent)'}", cause=Cause.CONFIG,
              why="the CORS allow-list does not include a documented origin; browsers "
                  "on that site cannot call the API",
              next_cmd=f"curl -si -H 'Origin: {origin}' '{reply.url}'")


def test_cors_refused_origin(api_service: ServiceApi, api: ApiCaller, stack: Stack) -> None:
    if not api.spec.cors_refused:
        pytest.skip("no refused CORS origin documented")
    for origin in api.spec.cors_refused:
        reply = _origin_get(api, api_service, origin, stack)
        pre = api.http.request("OPTIONS", reply.url, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        # No answer is no evidence: the refusal must be seen, not assumed.
        require_answer(pre, f"{api_service.key}: OPTIONS {pre.url} (preflight from {origin})",
                       next_cmd=[f"curl -si -X OPTIONS -H 'Origin: {origin}' "
                                 f"-H 'Access-Control-Request-Method: POST' '{pre.url}'",
                                 logs_cmd(stack.services[api_service.key].container)])
        got = [r.headers.get("access-control-allow-origin") for r in (reply, pre)]
        check(not any(got), f"[CORS] {api_service.key}: refused origin {origin} allowed",
              expected=f"no Access-Control-Allow-Origin for {origin} (request or preflight)",
              seen=f"request: {got[0] or '(absent)'}; preflight {pre.status}: "
                   f"{got[1] or '(absent)'}", cause=Cause.CONFIG,
              why="CORS allows any origin (wildcard or echo): other sites can call the API "
                  "with the user's credentials",
              next_cmd=f"curl -si -X OPTIONS -H 'Origin: {origin}' "
                       f"-H 'Access-Control-Request-Method: POST' '{reply.url}'")


def test_cors_preflight(api_service: ServiceApi, api: ApiCaller, stack: Stack) -> None:
    if not api.spec.cors_allowed:
        pytest.skip("no CORS origins documented")
    origin = api.spec.cors_allowed[0]
    url = api.url(api_service.key, _probe_endpoint(api_service).path)
    reply = api.http.request("OPTIONS", url, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    methods = reply.headers.get("access-control-allow-methods", "")
    allowed_headers = reply.headers.get("access-control-allow-headers", "").lower()
    ok = (reply.ok and reply.status is not None and 200 <= reply.status < 300
          and reply.headers.get("access-control-allow-origin") == origin
          and "POST" in methods and "authorization" in allowed_headers)
    check(ok, f"[CORS] {api_service.key}: preflight from {origin} ({reply.status})",
          expected=f"2xx with Access-Control-Allow-Origin {origin}, POST allowed, "
                   "Authorization header allowed",
          seen=reply.error or f"{reply.status}, allow-origin "
          f"{reply.headers.get('access-control-allow-origin') or '(absent)'}, methods "
          f"{methods or '(absent)'}, headers {allowed_headers or '(absent)'}",
          cause=Cause.CONFIG, why="browsers will refuse authenticated calls from the site",
          next_cmd=f"curl -si -X OPTIONS -H 'Origin: {origin}' "
                   f"-H 'Access-Control-Request-Method: POST' '{url}'")


def test_rate_limit_headers(api_service: ServiceApi, api: ApiCaller, stack: Stack) -> None:
    ep = _probe_endpoint(api_service)
    path = ep.path if ep.path.startswith("/api/") else (api_service.not_found or ep.path)
    url = api.url(api_service.key, path)
    reply = api.http.request("GET", url, headers=api.headers())
    now = time.time()
    names = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
    raw = {n: reply.headers.get(n) for n in names}
    try:
        limit, remaining, reset = (int(raw[n]) for n in names)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        limit = remaining = reset = None
    # Reset may be an epoch (seconds) or a delta; either must lie within the hour.
    sane = (limit is not None and remaining is not None and reset is not None
            and limit > 0 and 0 <= remaining <= limit
            and (0 <= reset <= 3600 or now - 5 <= reset <= now + 3600))
    check(sane, f"[RATE-LIMIT] {api_service.key}: GET {url}",
          expected="X-RateLimit-Limit > 0, 0 <= Remaining <= Limit, Reset within the hour",
          seen=reply.error or ", ".join(f"{n}: {v if v is not None else '(absent)'}"
                                        for n, v in raw.items()),
          cause=Cause.CONFIG, why="the rate limiter is off or misconfigured",
          next_cmd=f"curl -si '{url}' | grep -i ratelimit")


# --------------------------------------------------------------------------- auth


def _auth_check(endpoint: Endpoint, api: ApiCaller, stack: Stack, token: str | None) -> None:
    __tracebackhide__ = True
    url = api.url(endpoint.service, endpoint.path.replace("{", "").replace("}", ""))
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    # An empty body: if authentication were off, validation still refuses to write.
    reply = (api.try_write(endpoint, url, headers=headers, json_body={}) if endpoint.writes
             else api.http.request(endpoint.method, url, headers=headers, json_body={}))
    what = "without a token" if token is None else "with a wrong token"
    require_answer(reply, f"{endpoint.service}: {endpoint.method} {url}",
                   next_cmd=logs_cmd(stack.services[endpoint.service].container))
    try:
        problems = api.spec.problems({"$ref": "#/schemas/error"}, reply.json())
    except ValueError:
        problems = ["body is not JSON"]
    check(reply.status == 401 and not problems,
          f"[AUTH] ({reply.status}) == 401: {endpoint.service} {endpoint.method} {url} {what}",
          expected="401 in the error format", seen=reply.describe(), cause=Cause.API_KEY,
          why="a protected endpoint accepts requests " + what if reply.status != 401
          else "the 401 is not in the documented error format",
          next_cmd=[curl_cmd(endpoint.method, url, {}),
                    logs_cmd(stack.services[endpoint.service].container)])


def test_auth_required(protected_endpoint: Endpoint, api: ApiCaller, stack: Stack) -> None:
    _auth_check(protected_endpoint, api, stack, None)


def test_auth_rejects_wrong_token(protected_endpoint: Endpoint, api: ApiCaller,
                                  stack: Stack) -> None:
    _auth_check(protected_endpoint, api, stack, "bizosaas-acceptance-not-a-valid-token")


# --------------------------------------------------------------------------- Django slashes


def test_trailing_slash(api_service: ServiceApi, api: ApiCaller, stack: Stack) -> None:
    """append: the slash-less path redirects to the documented one (Django APPEND_SLASH);
    strict: the other spelling does not exist (404), and is never served twice."""
    gets = [e for e in api_service.endpoints if e.method == "GET" and "{" not in e.path
            and e.path not in ("/openapi.json", "/version")]
    gets.sort(key=lambda e: not e.path.startswith("/api/"))
    if not gets:
        pytest.skip(f"{api_service.key} documents no plain GET")
    documented, _, query = gets[0].path.partition("?")
    query = f"?{query}" if query else ""
    if api_service.trailing_slash == "append":
        probe = documented.rstrip("/") + query
        reply = api.http.request("GET", api.url(api_service.key, probe))
        location = reply.headers.get("location", "")
        ok = reply.status in (301, 308) and location.split("?")[0].endswith(documented)
        expected = f"301 to {documented} (APPEND_SLASH)"
    else:
        probe = documented + "/" + query
        reply = api.http.request("GET", api.url(api_service.key, probe))
        ok = reply.status == 404 or (reply.status in (301, 307, 308) and reply.headers.get(
            "location", "").split("?")[0].endswith(documented))
        expected = f"404 (or a redirect to {documented})"
    check(ok, f"[SLASH] {api_service.key}: GET {probe} ({reply.status})", expected=expected,
          seen=reply.describe(120), cause=Cause.CONFIG,
          why=f"the service does not follow its documented trailing-slash convention "
              f"({api_service.trailing_slash})",
          next_cmd=f"curl -si '{api.url(api_service.key, probe)}'")


# --------------------------------------------------------------------------- GraphQL


@pytest.mark.service("saleor-api")
def test_graphql_product_by_id(api: ApiCaller, api_spec, stack: Stack) -> None:
    """Saleor: product(id) answers the product whose id was asked for."""
    sapi = next((s for s in api_spec.services.values() if s.endpoint("product")
                 and s.endpoint("product").is_graphql), None)
    if sapi is None:
        pytest.skip("no GraphQL product query documented")
    ep = sapi.endpoint("product")
    reply = _answer(api, ep, stack)
    asked = (api.body(ep).get("variables") or {}).get("id")
    try:
        got = (reply.json().get("data") or {}).get("product") or {}
    except (ValueError, AttributeError):
        got = {}
    # Both sides must exist: a query without an id answered by no product is
    # None == None, which proves nothing.
    check(reply.status == ep.status and asked is not None and got.get("id") == asked,
          f"[GRAPHQL] {sapi.key}: product(id: {asked}) -> {got.get('id')}",
          expected=f"HTTP {ep.status} and the product with the id asked for"
                   + ("" if asked is not None else " (the documented query asks for none: "
                      f"add variables.id to {api_spec.source}, {sapi.key}, product)"),
          seen=reply.describe(200), cause=Cause.APP if asked is not None else Cause.CONFIG,
          why="the GraphQL resolver returns another or no product" if asked is not None
          else "the documented query has no id to check the answer against",
          next_cmd=curl_cmd("POST", reply.url, api.body(ep)))
