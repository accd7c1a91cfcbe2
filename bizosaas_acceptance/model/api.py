"""The documented API as data: load, validate, cross-check against the manifest.

:func:`load_api` reads the API description of a stack: the manifest's ``api:``
key (relative to the manifest), else ``api/<stack name>.yaml`` beside the
manifest, else ``stacks/api/<stack name>.yaml``. The file is validated against
``stacks/api.schema.yaml`` and cross-checked against the manifest; every
problem is a :class:`~bizosaas_acceptance.model.manifest.ManifestError` naming
file, field and fix::

    stacks/api/x.yaml: services.brain-api.endpoints.0.status: 'ok' is not of type
    'integer' (expected an HTTP status such as 200)

Calling the API is :mod:`bizosaas_acceptance.probes.api`'s job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bizosaas_acceptance.model.manifest import (
    STACKS_DIR,
    ManifestError,
    Service,
    Stack,
    load_yaml,
    read_yaml,
)
from bizosaas_acceptance.secrets import clip

API_SCHEMA_FILE = STACKS_DIR / "api.schema.yaml"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TAG_PREFIX = "bizosaas-acceptance-"
PLACEHOLDER = re.compile(r"\{(\w+)\}")




@dataclass(frozen=True)
class Endpoint:
    """One documented endpoint of one service."""

    service: str
    name: str
    method: str
    path: str
    status: int = 200
    content_type: str = "application/json"
    schema: dict[str, Any] | None = None
    auth: bool = False
    writes: bool = False
    body: Any = None
    graphql: str | None = None
    variables: dict[str, Any] | None = None
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    cleanup: dict[str, str] | None = None
    perf_class: str = "default"
    perf: bool = False
    via: str | None = None
    direct: str | None = None

    @property
    def ident(self) -> str:
        """Test id: ``brain-api-GET-/api/status`` (named GraphQL operations by name)."""
        if self.name != f"{self.method} {self.path}":
            return f"{self.service}-{self.method}-{self.path}-{self.name}"
        return f"{self.service}-{self.method}-{self.path}"

    @property
    def has_example(self) -> bool:
        """Whether the api suite can send it as documented (GET, or a body/query given)."""
        unresolved = set(PLACEHOLDER.findall(self.path)) - set(self.params)
        if unresolved:
            return False
        return self.method == "GET" or self.body is not None or self.graphql is not None

    @property
    def is_graphql(self) -> bool:
        return self.graphql is not None


@dataclass(frozen=True)
class Request:
    """A request description without a schema of its own (bad_request)."""

    method: str
    path: str
    body: Any = None
    status: int = 400
    schema: dict[str, Any] | None = None
    via: str | None = None  # answered by the service behind the gateway


@dataclass(frozen=True)
class ServiceApi:
    """Everything the API file says about one service."""

    key: str
    endpoints: tuple[Endpoint, ...]
    trailing_slash: str = "strict"
    openapi: str | None = None
    not_found: str | None = None
    bad_request: Request | None = None
    routes: dict[str, str] = field(default_factory=dict)

    def endpoint(self, name: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.name == name), None)


@dataclass(frozen=True)
class ApiSpec:
    """The whole API description."""

    source: str
    services: dict[str, ServiceApi]
    schemas: dict[str, Any]
    cors_allowed: tuple[str, ...]
    cors_refused: tuple[str, ...]

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for s in self.services.values() for e in s.endpoints]

    def validator(self, schema: dict[str, Any]) -> Any:
        """A Draft 2020-12 validator; ``#/schemas/<name>`` refs reach the shared schemas."""
        import jsonschema

        return jsonschema.Draft202012Validator({**schema, "schemas": self.schemas})

    def problems(self, schema: dict[str, Any] | None, data: Any, limit: int = 3) -> list[str]:
        """Schema violations of ``data`` as 'path: message' lines (at most ``limit``)."""
        if not schema:
            return []
        errors = sorted(self.validator(schema).iter_errors(data),
                        key=lambda e: (len(list(e.absolute_path)), str(e.message)))
        out = []
        for err in errors[:limit]:
            where = "/".join(str(p) for p in err.absolute_path) or "(body)"
            msg = clip(err.message, 160)  # it may quote the body: masked, then cut
            out.append(f"{where}: {msg}")
        return out


# --------------------------------------------------------------------------- loading


@lru_cache(maxsize=1)
def _file_validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(load_yaml(API_SCHEMA_FILE.read_text()))


def _where(err: Any) -> str:
    parts = [str(p) for p in err.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _validate_file(data: Any, source: str) -> None:
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: (top level): expected a mapping with version and "
                            f"services, got {type(data).__name__}")
    errors = sorted(_file_validator().iter_errors(data),
                    key=lambda e: (-len(e.absolute_path), _where(e)))
    if errors:
        err = errors[0]
        hint = err.schema.get("description") if isinstance(err.schema, dict) else None
        if not hint and err.validator in ("additionalProperties", "required"):
            hint = "see stacks/api.schema.yaml for the allowed fields"
        msg = clip(err.message, 160)
        raise ManifestError(f"{source}: {_where(err)}: {msg}" + (f" (expected {hint})"
                                                                 if hint else ""))


def api_path(stack: Stack) -> Path | None:
    """Where the stack's API description lives (None: the stack has none)."""
    manifest_dir = Path(stack.source).parent
    if stack.api:
        p = Path(stack.api)
        return p if p.is_absolute() else manifest_dir / p
    for candidate in (manifest_dir / "api" / f"{stack.name}.yaml",
                      STACKS_DIR / "api" / f"{stack.name}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def build_api(data: Any, source: str, stack: Stack, strict: bool = True) -> ApiSpec:
    """Validate the file's data and cross-check it with the stack.

    ``strict=False`` (a file found by convention, e.g. for a compose-derived
    stack of the same name) leaves out services the stack does not have
    instead of refusing the file.
    """
    import jsonschema

    _validate_file(data, source)
    schemas = data.get("schemas") or {}
    services: dict[str, ServiceApi] = {}
    classes = stack.threshold("response_ms_by_class") or {}
    for key, raw in data["services"].items():
        where = f"{source}: services.{key}"
        svc = stack.services.get(key)
        if svc is None and not strict:
            continue
        if svc is None:
            raise ManifestError(f"{where}: unknown service (expected a service key of "
                                f"{stack.source}: {', '.join(sorted(stack.services))})")
        endpoints: list[Endpoint] = []
        for n, ep in enumerate(raw["endpoints"]):
            if not strict and ep.get("via") and ep["via"] not in stack.services:
                continue  # a route to a service this stack does not have
            endpoints.append(_endpoint(ep, svc, f"{where}.endpoints.{n}", classes))
        names = [e.name for e in endpoints]
        for n, e in enumerate(endpoints):
            if names.count(e.name) > 1:
                raise ManifestError(f"{where}.endpoints.{n}.name: {e.name!r} is used twice "
                                    "(expected a unique name per endpoint; add name: ...)")
            for attr in ("params", "variables"):
                for pname, ref in (getattr(e, attr) or {}).items():
                    if isinstance(ref, dict) and "from" in ref and ref["from"] not in names:
                        raise ManifestError(
                            f"{where}.endpoints.{n}.{attr}.{pname}.from: unknown endpoint "
                            f"{ref['from']!r} (expected one of: {', '.join(names)})")
            if e.via is not None and e.via not in stack.services and strict:
                raise ManifestError(f"{where}.endpoints.{n}.via: unknown service {e.via!r} "
                                    "(expected a service key of the manifest)")
            for sname, schema in (("schema", e.schema),):
                if schema is None:
                    continue
                try:
                    jsonschema.Draft202012Validator.check_schema(schema)
                    refs = re.findall(r"#/schemas/([\w-]+)", json.dumps(schema))
                except jsonschema.SchemaError as exc:
                    raise ManifestError(f"{where}.endpoints.{n}.{sname}: not a valid JSON "
                                        f"Schema: {clip(exc.message, 160)}") from None
                missing = [r for r in refs if r not in schemas]
                if missing:
                    raise ManifestError(f"{where}.endpoints.{n}.{sname}: $ref to unknown "
                                        f"schema {missing[0]!r} (expected one of: "
                                        f"{', '.join(sorted(schemas))})")
        routes = {p: t for p, t in (raw.get("routes") or {}).items()
                  if strict or t in stack.services}
        for target in routes.values():
            if target not in stack.services:
                raise ManifestError(f"{where}.routes: unknown target {target!r} (expected a "
                                    "service key of the manifest)")
        bad = raw.get("bad_request")
        services[key] = ServiceApi(
            key=key, endpoints=tuple(endpoints),
            trailing_slash=raw.get("trailing_slash", "strict"),
            openapi=raw.get("openapi"), not_found=raw.get("not_found"),
            bad_request=Request(method=bad.get("method", "GET"), path=bad["path"],
                                body=bad.get("body"), status=bad.get("status", 400),
                                schema=bad.get("schema"), via=bad.get("via")) if bad else None,
            routes=routes,
        )
    cors = data.get("cors") or {}
    return ApiSpec(source=source, services=services, schemas=schemas,
                   cors_allowed=tuple(cors.get("allowed") or ()),
                   cors_refused=tuple(cors.get("refused") or ()))


def _endpoint(raw: dict[str, Any], svc: Service, where: str,
              classes: dict[str, Any]) -> Endpoint:
    method = raw.get("method", "GET")
    path = raw["path"]
    perf_class = raw.get("class", svc.perf_class)
    if perf_class not in classes and "default" not in classes:
        raise ManifestError(f"{where}.class: {perf_class!r} has no budget (expected a key "
                            "of thresholds.response_ms_by_class in the manifest)")
    if "graphql" in raw and method != "POST":
        raise ManifestError(f"{where}.method: GraphQL operations are sent with POST "
                            "(expected method: POST)")
    if raw.get("cleanup") and method == "GET":
        raise ManifestError(f"{where}.cleanup: a GET creates nothing (remove cleanup)")
    writes = raw.get("writes", method in WRITE_METHODS)
    return Endpoint(
        service=svc.key, name=raw.get("name", f"{method} {path}"), method=method, path=path,
        status=raw.get("status", 200), content_type=raw.get("content_type", "application/json"),
        schema=raw.get("schema"),
        auth=raw.get("auth", method in WRITE_METHODS and path.startswith("/api/")),
        writes=writes, body=raw.get("body"), graphql=raw.get("graphql"),
        variables=raw.get("variables"), params=dict(raw.get("params") or {}),
        cleanup=raw.get("cleanup"), perf_class=perf_class,
        perf=raw.get("perf", method == "GET"), via=raw.get("via"), direct=raw.get("direct"),
    )


_LOADED: dict[tuple[str, str], ApiSpec | None] = {}


def load_api(stack: Stack) -> ApiSpec | None:
    """The stack's API description (cached), or None when it has none."""
    key = (stack.source, stack.name)
    if key not in _LOADED:
        path = api_path(stack)
        if path is None:
            _LOADED[key] = None
        else:
            source = _display(path)
            _LOADED[key] = build_api(read_yaml(path), source, stack, strict=bool(stack.api))
    return _LOADED[key]
