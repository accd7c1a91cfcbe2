"""Sending the documented API's requests: placeholders, run tags, tokens, records.

:class:`ApiCaller` turns an :class:`~bizosaas_acceptance.model.api.Endpoint`
into a real request: it fills ``{placeholders}`` from other endpoints' answers,
puts a tag into bodies and adds the Bearer token where needed. Every request
that may create something goes through :attr:`ApiCaller.records`
(:mod:`bizosaas_acceptance.probes.records`): registered before it is sent,
removed and verified gone when the check ends.
"""

from __future__ import annotations

import threading
from typing import Any

from bizosaas_acceptance.model.api import (
    PLACEHOLDER,
    TAG_PREFIX,
    WRITE_METHODS,
    ApiSpec,
    Endpoint,
    ServiceApi,
)
from bizosaas_acceptance.model.manifest import Stack
from bizosaas_acceptance.probes.http import HttpProbe, Reply
from bizosaas_acceptance.probes.records import BULK_BY_TAG, Record, Records, dig


def run_tag(run_id: str) -> str:
    """The tag every record of this run carries."""
    return f"{TAG_PREFIX}{run_id}"


def writing_endpoint(sapi: ServiceApi, method: str, path: str) -> Endpoint | None:
    """The documented endpoint a ``method path`` request reaches, if it writes."""
    if method not in WRITE_METHODS:
        return None
    bare = path.split("?")[0].rstrip("/")
    return next((e for e in sapi.endpoints if e.writes and e.method == method
                 and e.path.split("?")[0].rstrip("/") == bare), None)


def fill(value: Any, tag: str) -> Any:
    """Replace ``{tag}`` in every string of a JSON value."""
    if isinstance(value, str):
        return value.replace("{tag}", tag)
    if isinstance(value, list):
        return [fill(v, tag) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, tag) for k, v in value.items()}
    return value


class ResolveError(Exception):
    """A ``{from: ..., field: ...}`` reference could not be resolved."""


class ApiCaller:
    """Sends documented requests for the checks (one HttpProbe, shared answers)."""

    def __init__(self, spec: ApiSpec, stack: Stack, target: Any, http: HttpProbe,
                 token: str | None, tag: str) -> None:
        self.spec, self.stack, self.target, self.http = spec, stack, target, http
        self.token, self.tag = token, tag
        #: Where writes register what they create (set by the ``api`` fixture).
        self.records: Records | None = None
        self._answers: dict[tuple[str, str], Reply] = {}
        self._lock = threading.Lock()

    def url(self, service: str, path: str) -> str:
        return self.target.url(self.stack.services[service], path)

    def headers(self, endpoint: Endpoint | None = None, *, auth: bool | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
        want = auth if auth is not None else bool(endpoint and endpoint.auth)
        h = {"Accept": "application/json"}
        if want and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(extra or {})
        return h

    def _ref(self, service: str, ref: Any) -> Any:
        if not (isinstance(ref, dict) and "from" in ref):
            return ref
        source = self.spec.services[service].endpoint(ref["from"])
        if source is None:
            raise ResolveError(f"no endpoint named {ref['from']!r}")
        reply = self.answer(source)
        if reply.error or reply.status != source.status:
            raise ResolveError(f"{source.name} ({reply.url}) answered {reply.describe(120)}")
        try:
            return dig(reply.json(), ref["field"])
        except (ValueError, KeyError) as exc:
            raise ResolveError(f"{source.name} has no field {ref['field']!r} "
                               f"(missing {exc})") from None

    def path(self, endpoint: Endpoint) -> str:
        """The endpoint's path with placeholders filled (ResolveError if impossible)."""
        values = {name: self._ref(endpoint.service, ref) for name, ref in endpoint.params.items()}
        try:
            return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), endpoint.path)
        except KeyError as exc:
            raise ResolveError(f"no value for {{{exc.args[0]}}} (add params)") from None

    def body(self, endpoint: Endpoint, tag: str | None = None) -> Any:
        """The documented body, ``{tag}`` filled with ``tag`` (default: the run's tag)."""
        if endpoint.graphql is not None:
            variables = {k: self._ref(endpoint.service, v)
                         for k, v in (endpoint.variables or {}).items()}
            doc: dict[str, Any] = {"query": endpoint.graphql}
            if variables:
                doc["variables"] = variables
            return doc
        return fill(endpoint.body, tag or self.tag)

    def send(self, endpoint: Endpoint, *, auth: bool | None = None,
             headers: dict[str, str] | None = None, body: Any = ...) -> Reply:
        """One request as documented (uncached)."""
        url = self.url(endpoint.service, self.path(endpoint))
        payload = self.body(endpoint) if body is ... else body
        return self.http.request(endpoint.method, url,
                                 headers=self.headers(endpoint, auth=auth, extra=headers),
                                 json_body=payload)

    def answer(self, endpoint: Endpoint) -> Reply:
        """The documented request's answer, shared within the process.

        A write is sent once, registered first (see :meth:`write`); what it
        created is removed when the check that sent it ends.
        """
        key = (endpoint.service, endpoint.name)
        with self._lock:
            hit = self._answers.get(key)
        if hit is not None:
            return hit
        if endpoint.method == "GET":
            reply = self.http.get(self.url(endpoint.service, self.path(endpoint)),
                                  headers=self.headers(endpoint))
        elif endpoint.writes:
            reply = self.write(endpoint)
        else:
            reply = self.send(endpoint)
        with self._lock:
            self._answers.setdefault(key, reply)
        return reply

    # ----------------------------------------------------------------- records

    def _register(self, service: str, method: str, path: str, what: str,
                  tag: str | None) -> Record:
        if self.records is None:
            raise RuntimeError(f"{method} {path}: a write without a records registry")
        bulk = BULK_BY_TAG.get((service, path.split("?")[0]))
        find = (self.url(bulk[0], bulk[1]) + f"?tag={tag}") if bulk and tag else None
        return self.records.register(service, what, tag=tag, find=find)

    def write(self, endpoint: Endpoint) -> Reply:
        """Send a documented write: registered (with a tag unique to it) before it
        is sent, identified from its answer by the endpoint's ``cleanup``."""
        path = self.path(endpoint)
        tag = self.records.new_tag() if self.records is not None else None
        rec = self._register(endpoint.service, endpoint.method, path,
                             f"{endpoint.service}: what {endpoint.method} {path} created "
                             f"(tag {tag})", tag)
        assert self.records is not None
        return self.records.create(rec, lambda: self.send(endpoint, body=self.body(endpoint, tag)),
                                   endpoint.cleanup, lambda p: self.url(endpoint.service, p))

    def try_write(self, endpoint: Endpoint, url: str, *, headers: dict[str, str],
                  json_body: Any = None, method: str | None = None) -> Reply:
        """A request to a writing endpoint that should be refused (no token, bad body).

        Registered all the same: if the deployment accepts it, what it created
        is removed (by the endpoint's ``cleanup``) or reported.
        """
        method = method or endpoint.method
        rec = self._register(endpoint.service, method, endpoint.path,
                             f"{endpoint.service}: what {method} {url} created (sent to be "
                             "refused)", None)
        assert self.records is not None
        return self.records.create(
            rec, lambda: self.http.request(method, url, headers=headers, json_body=json_body),
            endpoint.cleanup, lambda p: self.url(endpoint.service, p), refusal=True)
