"""Sending the documented API's requests: placeholders, run tags, tokens, cleanup.

:class:`ApiCaller` turns an :class:`~bizosaas_acceptance.model.api.Endpoint`
into a real request: it fills ``{placeholders}`` from other endpoints' answers,
puts the run's tag into bodies and adds the Bearer token where needed.
"""

from __future__ import annotations

import threading
from typing import Any

from bizosaas_acceptance.model.api import PLACEHOLDER, TAG_PREFIX, ApiSpec, Endpoint
from bizosaas_acceptance.model.manifest import Stack
from bizosaas_acceptance.probes.http import HttpProbe, Reply


def run_tag(run_id: str) -> str:
    """The tag every record of this run carries."""
    return f"{TAG_PREFIX}{run_id}"


def fill(value: Any, tag: str) -> Any:
    """Replace ``{tag}`` in every string of a JSON value."""
    if isinstance(value, str):
        return value.replace("{tag}", tag)
    if isinstance(value, list):
        return [fill(v, tag) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, tag) for k, v in value.items()}
    return value


def dig(data: Any, dotted: str) -> Any:
    """``products.0.id`` into parsed JSON; KeyError naming the missing part."""
    node = data
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(part)
    return node


class ResolveError(Exception):
    """A ``{from: ..., field: ...}`` reference could not be resolved."""


class ApiCaller:
    """Sends documented requests for the checks (one HttpProbe, shared answers)."""

    def __init__(self, spec: ApiSpec, stack: Stack, target: Any, http: HttpProbe,
                 token: str | None, tag: str) -> None:
        self.spec, self.stack, self.target, self.http = spec, stack, target, http
        self.token, self.tag = token, tag
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

    def body(self, endpoint: Endpoint) -> Any:
        if endpoint.graphql is not None:
            variables = {k: self._ref(endpoint.service, v)
                         for k, v in (endpoint.variables or {}).items()}
            doc: dict[str, Any] = {"query": endpoint.graphql}
            if variables:
                doc["variables"] = variables
            return doc
        return fill(endpoint.body, self.tag)

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

        Writes are sent once, their cleanup request right after (see
        :meth:`cleanup`), so that nothing created lingers while other checks run.
        """
        key = (endpoint.service, endpoint.name)
        with self._lock:
            hit = self._answers.get(key)
        if hit is not None:
            return hit
        if endpoint.method == "GET":
            reply = self.http.get(self.url(endpoint.service, self.path(endpoint)),
                                  headers=self.headers(endpoint))
        else:
            reply = self.send(endpoint)
            if endpoint.cleanup:
                self.cleanup(endpoint, reply)
        with self._lock:
            self._answers.setdefault(key, reply)
        return reply

    def cleanup(self, endpoint: Endpoint, reply: Reply) -> Reply | None:
        """Remove what ``reply`` created (by the endpoint's cleanup template)."""
        if not endpoint.cleanup or reply.status is None or reply.status >= 400:
            return None
        try:
            data = reply.json()
            path = PLACEHOLDER.sub(lambda m: str(dig(data, m.group(1))), endpoint.cleanup["path"])
        except (ValueError, KeyError):
            return None
        return self.http.request(endpoint.cleanup.get("method", "DELETE"),
                                 self.url(endpoint.service, path),
                                 headers=self.headers(auth=True))
