"""Parametrize checks from the manifest, with readable ids.

Checks ask for one of these arguments and are parametrized from the manifest
(``test_health_status[brain-api]``); each parameter carries the
``service(key)`` marker and, for critical services, ``critical``:

- ``service``: every service; ``app``: application services;
  ``http_service``: services with a health path; ``infra``: infrastructure;
- ``secret_ref``: (service, variable) for every required secret;
- ``dependency``: (service, dependency) for every depends_on/upstream edge;
- ``database``: every PostgreSQL database the manifest lists;
- from the API description: ``endpoint``, ``schema_endpoint``, ``route``, ``perf_endpoint``,
  ``protected_endpoint``, ``api_service``, ``bad_request``, ``openapi_service``,
  ``brain_route``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bizosaas_acceptance.model.api import load_api
from bizosaas_acceptance.model.manifest import Service, Stack


def _param(value: Any, svc: Service, ident: str) -> Any:
    marks = [pytest.mark.service(svc.key)]
    if svc.critical:
        marks.append(pytest.mark.critical)
    return pytest.param(value, id=ident, marks=marks)


def _role(stack: Stack, pick: Callable[[Service], bool]) -> list[Any]:
    svc = next((s for s in stack.services.values() if pick(s)), None)
    return [_param(svc, svc, svc.key)] if svc else []


PARAMETERS: dict[str, Callable[[Stack], list[Any]]] = {
    "service": lambda st: [_param(s, s, s.key) for s in st.services.values()],
    "app": lambda st: [_param(s, s, s.key) for s in st.apps],
    "http_service": lambda st: [_param(s, s, s.key) for s in st.http_services],
    "slash_health_service": lambda st: [_param(s, s, s.key) for s in st.http_services
                                        if s.health_path and s.health_path.endswith("/")
                                        and s.health_path != "/"],
    "infra": lambda st: [_param(s, s, s.key) for s in st.services.values() if not s.is_app],
    "secret_ref": lambda st: [_param((s, name), s, f"{s.key}-{name}")
                              for s in st.services.values() for name in s.secrets],
    # A depends_on edge belongs to the service that depends (its config or its
    # network is what breaks); an upstream edge (brain -> app) belongs to the
    # upstream, so one non-critical app being down never fails critical brain.
    "dependency": lambda st: [_param((s, st.services[d]), s, f"{s.key}->{d}")
                              for s in st.apps for d in s.depends_on]
    + [_param((s, st.services[d]), st.services[d], f"{s.key}->{d}")
       for s in st.apps for d in s.upstreams],
    # One parameter per infrastructure role, so a stack without that role
    # simply has no such checks (skipped with a reason), and the checks carry
    # the real service key and critical flag.
    "pg_service": lambda st: _role(st, lambda s: s.protocol == "postgres"),
    "redis_service": lambda st: _role(st, lambda s: s.protocol == "redis"),
    "vault_svc": lambda st: _role(st, lambda s: s.health_path == "/v1/sys/health"),
    "temporal_service": lambda st: _role(st, lambda s: s.protocol == "grpc"),
    "database": lambda st: [pytest.param(db, id=db, marks=[pytest.mark.service(
        st.by_protocol("postgres").key if st.by_protocol("postgres") else "postgres"),
        pytest.mark.critical]) for db in st.postgres.get("databases", [])],
}



def _api_params(st: Stack, pick: Callable[[Any, Any], list[tuple[Any, str]]]) -> list[Any]:
    """Parameters from the stack's API description (model.api); none without one."""
    spec = load_api(st)
    if spec is None:
        return []
    return [_param(value, _owner(st, sapi.key, value), ident)
            for sapi in spec.services.values() for value, ident in pick(spec, sapi)]


def _owner(st: Stack, key: str, value: Any) -> Service:
    """The service a check's failure belongs to.

    A call routed through the gateway (``via``) belongs to the service behind it,
    like an upstream edge: crm being down must not fail critical brain-api.
    """
    via = getattr(value, "via", None)
    if via is None and isinstance(value, tuple) and len(value) == 3:
        via = value[2]  # brain_route: (gateway, prefix, target)
    if via is None and isinstance(value, tuple) and len(value) == 2:
        via = getattr(value[1], "via", None)  # bad_request: (service api, request)
    return st.services.get(via, st.services[key]) if via else st.services[key]


# From the API description (stacks/api/<stack>.yaml): ``endpoint`` every endpoint
# the api suite can send as documented; ``route`` every endpoint that can be
# probed without writing; ``perf_endpoint`` timed GETs; ``protected_endpoint``
# endpoints that need a token; ``schema_endpoint`` those that document a body
# schema (no check exists where there is nothing to compare); ``api_service``
# every described service (``openapi_service`` those documenting an OpenAPI document);
# ``brain_route`` (gateway, prefix, target) of every documented route prefix.
PARAMETERS.update({
    "endpoint": lambda st: _api_params(st, lambda spec, s: [
        (e, e.ident) for e in s.endpoints if e.has_example]),
    "schema_endpoint": lambda st: _api_params(st, lambda spec, s: [
        (e, e.ident) for e in s.endpoints if e.has_example and e.schema]),
    "route": lambda st: _api_params(st, lambda spec, s: [
        (e, e.ident) for e in s.endpoints
        if (e.method == "GET" and e.has_example) or (e.method != "GET" and e.auth)
        or (e.method != "GET" and not e.writes and e.has_example)]),
    "perf_endpoint": lambda st: _api_params(st, lambda spec, s: [
        (e, e.ident) for e in s.endpoints if e.method == "GET" and e.perf and e.has_example]),
    "protected_endpoint": lambda st: _api_params(st, lambda spec, s: [
        (e, e.ident) for e in s.endpoints if e.auth]),
    "api_service": lambda st: _api_params(st, lambda spec, s: [(s, s.key)]),
    "bad_request": lambda st: _api_params(st, lambda spec, s: [
        ((s, s.bad_request), s.key)] if s.bad_request else []),
    "openapi_service": lambda st: _api_params(st, lambda spec, s: [(s, s.key)] if s.openapi
                                              else []),
    "brain_route": lambda st: _api_params(st, lambda spec, s: [
        ((s, prefix, target), f"{s.key}-/api/{prefix}->{target}")
        for prefix, target in s.routes.items()]),
    "startup_service": lambda st: [_param(s, s, s.key) for s in st.services.values()
                                   if s.startup_lines],
})



def parametrize(metafunc: pytest.Metafunc, stack: Stack) -> None:
    """Parametrize every manifest-driven argument ``metafunc``'s check asks for."""
    for name, make in PARAMETERS.items():
        if name in metafunc.fixturenames:
            params = make(stack)
            # An empty list would make pytest skip silently: a manifest with
            # no such services simply has no such checks.
            metafunc.parametrize(name, params or [pytest.param(None, marks=pytest.mark.skip(
                reason=f"the stack has no {name} entries"))], scope="function")
