"""Failure messages that tell an operator what to do next.

Every failed check says what was expected, what was seen, the likely cause in
the vocabulary of the deployment package's troubleshooting guide (SPEC §5),
and the next command to run::

    [STATUS] (503) == 200: brain-api GET http://127.0.0.1:8001/health
      expected: 200 without redirect
      seen:     503 {"status": "unhealthy", "services": {"vault": "sealed"}}
      cause:    Health Check Failing — dependency vault reports 'sealed'
      next:     docker logs --tail 50 bizosaas-brain-staging

Secret values are masked before the message leaves this module.

The cause also travels as data: :func:`fail` raises :class:`Diagnosed`, which
carries the category; the plugin copies it onto the report (``user_properties``,
so it crosses xdist) and the gate reads it from there, never from the text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

from _pytest.outcomes import Failed

from bizosaas_acceptance.secrets import MASKER

if TYPE_CHECKING:
    from bizosaas_acceptance.probes.http import Reply

#: The report property that carries a failure's category.
CAUSE_PROPERTY = "bizosaas_cause"


class Cause:
    """The troubleshooting categories (shared/SPEC.md §5), verbatim."""

    WONT_START = "Container Won't Start"
    HEALTH = "Health Check Failing"
    DATABASE = "Database Connection Issues"
    REDIS = "Redis Connection Timeout"
    API_KEY = "API Key Not Working"
    MEMORY = "High Memory Usage"
    SLOW = "Slow Response Times"
    PORTS = "Port Conflicts"
    NETWORK = "Network Issues"
    BUILD = "Build Failures"
    # Not one of the ten, but named the same way.
    APP = "Application Errors"
    VAULT = "Vault Unavailable"
    TEMPORAL = "Temporal Unavailable"
    CONFIG = "Configuration Drift"


def short(value: object, limit: int = 300) -> str:
    text = MASKER.mask(str(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def message(summary: str, *, expected: str, seen: str, cause: str, why: str = "",
            next_cmd: str | list[str]) -> str:
    """Build the five-line failure message (masked)."""
    nexts = [next_cmd] if isinstance(next_cmd, str) else list(next_cmd)
    lines = [
        summary,
        f"  expected: {expected}",
        f"  seen:     {seen}",
        f"  cause:    {cause}" + (f" — {why}" if why else ""),
    ]
    lines += [f"  next:     {cmd}" for cmd in nexts]
    return MASKER.mask("\n".join(lines))


class Diagnosed(Failed):
    """A check's failure with its diagnosis: the message and the category as data."""

    def __init__(self, msg: str, cause: str) -> None:
        super().__init__(msg=msg, pytrace=False)
        self.cause = cause


# Shown exactly like pytest.fail's own failures ("Failed: [STATUS] ...").
Diagnosed.__module__ = "builtins"
Diagnosed.__qualname__ = Diagnosed.__name__ = "Failed"


def fail(summary: str, *, expected: str, seen: str, cause: str, why: str = "",
         next_cmd: str | list[str]) -> NoReturn:
    """Fail the current check with a diagnostic message and no traceback."""
    __tracebackhide__ = True
    raise Diagnosed(message(summary, expected=expected, seen=seen, cause=cause, why=why,
                            next_cmd=next_cmd), cause)


def check(condition: bool, summary: str, *, expected: str, seen: str, cause: str,
          why: str = "", next_cmd: str | list[str]) -> None:
    """Gatus-style assertion: fail with the diagnostic message unless ``condition``."""
    __tracebackhide__ = True
    if not condition:
        fail(summary, expected=expected, seen=seen, cause=cause, why=why, next_cmd=next_cmd)


def logs_cmd(container: str, tail: int = 50) -> str:
    return f"docker logs --tail {tail} {container}"


def health_cmd(container: str) -> str:
    return f"docker inspect --format '{{{{json .State.Health}}}}' {container}"


def curl_cmd(method: str, url: str, body: Any = None, auth: bool = False) -> str:
    """The curl line that repeats a request (the token stays a variable)."""
    parts = ["curl -si"]
    if method != "GET":
        parts.append(f"-X {method}")
    if auth:
        parts.append("-H 'Authorization: Bearer $BIZOSAAS_API_TOKEN'")
    if body is not None:
        text = json.dumps(body)
        if len(text) > 160:
            text = text[:157] + "..."
        parts.append(f"-H 'Content-Type: application/json' -d '{text}'")
    parts.append(f"'{url}'")
    return " ".join(parts)


def transport_cause(reply: Reply) -> tuple[str, str]:
    """(category, why) for a request that got no HTTP answer."""
    err = reply.error or ""
    if "refused" in err:
        return Cause.PORTS, "nothing listens on the published port (container down or wrong port)"
    if "timeout" in err or "within" in err or "still arriving" in err:
        return Cause.SLOW, "the service does not answer in time"
    return Cause.NETWORK, "the connection failed"


def status_cause(status: int | None) -> tuple[str, str]:
    """(category, why) for an unexpected HTTP status."""
    if status in (502, 504):
        return Cause.NETWORK, "a gateway could not reach its upstream"
    if status == 503:
        return Cause.HEALTH, "the service reports a dependency unavailable"
    if status is not None and status >= 500:
        return Cause.APP, "the service failed handling the request"
    if status in (401, 403):
        return Cause.API_KEY, "the request was not authorized (token from Vault?)"
    if status == 404:
        return Cause.CONFIG, "the route does not exist: the deployed version differs from the docs"
    if status == 429:
        return Cause.SLOW, "rate limited"
    return Cause.CONFIG, "the deployed service does not behave as documented"


_TRANSPORT = object()  # "derive cause and why from the transport error"


def require_answer(reply: Reply, summary: str, *, next_cmd: str | list[str],
                   cause: Any = _TRANSPORT, why: str | None = None) -> None:
    """Fail with ``[CONNECT] <summary>`` unless ``reply`` is an HTTP answer.

    The one shape of "no answer": expected an HTTP answer, seen the transport
    error; cause and why from :func:`transport_cause` unless given.
    """
    __tracebackhide__ = True
    if reply.ok:
        return
    if cause is _TRANSPORT:
        cause, derived = transport_cause(reply)
        why = derived if why is None else why
    fail(f"[CONNECT] {summary}", expected="an HTTP answer", seen=reply.error or "?",
         cause=cause, why=why or "", next_cmd=next_cmd)
