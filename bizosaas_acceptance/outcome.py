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

import errno
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from _pytest.outcomes import Failed, OutcomeException

from bizosaas_acceptance.secrets import MASKER, clip

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
    # Not the target's fault: the suite itself misbehaved (a bug to report).
    SUITE_BUG = "Suite Bug"


def short(value: object, limit: int = 300) -> str:
    """``value`` on one line, at most ``limit`` characters: masked first, then cut."""
    return clip(" ".join(MASKER.mask(str(value)).split()), limit)


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


#: The model's names that are Docker Swarm services (``--swarm-stack``, set at
#: configure): their logs are service logs, their containers found by label.
SWARM_SERVICES: set[str] = set()


def logs_cmd(container: str, tail: int = 50) -> str:
    if container in SWARM_SERVICES:
        return f"docker service logs --tail {tail} {container}"
    return f"docker logs --tail {tail} {container}"


def health_cmd(container: str) -> str:
    if container in SWARM_SERVICES:
        container = f"$(docker ps -q --filter label=com.docker.swarm.service.name={container})"
    return f"docker inspect --format '{{{{json .State.Health}}}}' {container}"


def curl_cmd(method: str, url: str, body: Any = None, auth: bool = False) -> str:
    """The curl line that repeats a request (the token stays a variable)."""
    parts = ["curl -si"]
    if method != "GET":
        parts.append(f"-X {method}")
    if auth:
        parts.append("-H 'Authorization: Bearer $BIZOSAAS_API_TOKEN'")
    if body is not None:
        text = clip(json.dumps(body), 160)
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


# --------------------------------------------------------------------------- waiting on


#: The requests each thread is waiting on right now: thread ident -> [(what, since, budget)].
#: Read by the last-resort timeout guard (:mod:`bizosaas_acceptance.guard`) to name
#: what a check hung on.
_INFLIGHT: dict[int, list[tuple[str, float, float | None]]] = {}
_INFLIGHT_LOCK = threading.Lock()

#: errno values that say the network (not the suite) failed.
_NET_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EPIPE,
    errno.ENOTCONN,
})


def in_flight(ident: int | None = None) -> list[tuple[str, float, float | None]]:
    """What thread ``ident`` (default: this one) is waiting on, innermost last."""
    with _INFLIGHT_LOCK:
        return list(_INFLIGHT.get(threading.get_ident() if ident is None else ident, ()))


def _mro_names(exc: BaseException) -> set[str]:
    return {f"{k.__module__}.{k.__qualname__}" for k in type(exc).__mro__}


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` says a deadline passed (any client library's way of saying it)."""
    if isinstance(exc, TimeoutError):  # socket.timeout, asyncio and futures timeouts too
        return True
    names = _mro_names(exc)
    if names & {"requests.exceptions.Timeout", "urllib3.exceptions.TimeoutError",
                "redis.exceptions.TimeoutError", "psycopg.errors.QueryCanceled",
                "psycopg.errors.LockNotAvailable"}:
        return True
    status = getattr(exc, "status", None)
    if "temporalio.service.RPCError" in names and getattr(status, "name", "") in (
            "DEADLINE_EXCEEDED", "CANCELLED"):
        return True
    text = str(exc).lower()
    return "timed out" in text or "timeout" in text


def is_transport(exc: BaseException) -> bool:
    """Whether ``exc`` is the target not answering (network, timeout, connection lost)
    rather than an answer (an HTTP error status) or a bug in the suite."""
    if isinstance(exc, OutcomeException):
        return False
    if isinstance(exc, NoAnswer):
        return True
    names = _mro_names(exc)
    if "requests.exceptions.HTTPError" in names:
        return False  # an answer: docker.errors.APIError and friends
    if is_timeout(exc) or isinstance(exc, ConnectionError):
        return True
    if names & {"requests.exceptions.RequestException", "urllib3.exceptions.HTTPError",
                "redis.exceptions.ConnectionError", "psycopg.OperationalError",
                "paramiko.ssh_exception.SSHException", "hvac.exceptions.VaultDown"}:
        return True
    if "temporalio.service.RPCError" in names:
        return getattr(getattr(exc, "status", None), "name", "") in ("UNAVAILABLE",)
    return isinstance(exc, OSError) and exc.errno in _NET_ERRNOS


def describe_error(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, masked, without any object repr."""
    return f"{type(exc).__name__}: {short(exc, limit)}"


class NoAnswer(Exception):  # noqa: N818 - it is what happened, not an "error" of ours
    """A request that got no answer (timed out, refused, lost), with its diagnosis.

    An ordinary exception, so that code handling errors itself (``except
    Exception``: a background sampler, a check with its own message) still can;
    when nobody does, the report shows :attr:`diagnosed` (see
    :func:`bizosaas_acceptance.guard.diagnose`), and an enclosing
    :func:`waiting_on` passes it on as is: the innermost request is the one named.
    """

    def __init__(self, diagnosed: Diagnosed) -> None:
        super().__init__(diagnosed.msg.splitlines()[0])
        self.diagnosed = diagnosed


@contextmanager
def waiting_on(request: str, *, cause: str, next_cmd: str | list[str],
               budget: float | None = None, expected: str | None = None,
               as_exception: bool = False) -> Iterator[None]:
    """Name the request a block waits on; a transport failure inside it is diagnosed.

    ``request`` says what goes out and where (``GET http://host:port/path``,
    ``PostgreSQL select ... at host:port``). While the block runs, the request
    is registered for this thread, so the last-resort timeout guard can name
    it. When the block raises a transport error (timeout, refused, reset,
    lost connection; see :func:`is_transport`), it becomes a :class:`Diagnosed`
    failure in the usual shape::

        [TIMEOUT] no answer within 5s: GET http://127.0.0.1:8003/api/leads/
          expected: an answer within 5 s
          seen:     ReadTimeout: ... Read timed out. (read timeout=5)
          cause:    Database Connection Issues — the request got no answer in time ...
          next:     ...

    Other exceptions (answers such as HTTP error statuses, and bugs) pass unchanged.
    With ``as_exception`` the failure is raised as :class:`NoAnswer` (an
    ``Exception``) instead, for code used outside checks too (the Docker client).
    """
    __tracebackhide__ = True
    entry = (request, time.monotonic(), budget)
    ident = threading.get_ident()
    with _INFLIGHT_LOCK:
        _INFLIGHT.setdefault(ident, []).append(entry)
    try:
        yield
    except Exception as exc:
        if isinstance(exc, NoAnswer):
            if as_exception:
                raise
            raise exc.diagnosed from None
        if not is_transport(exc):
            raise
        diagnosed = transport_failure(exc, request, cause=cause, next_cmd=next_cmd,
                                      budget=budget, expected=expected,
                                      took=time.monotonic() - entry[1])
        if as_exception:
            raise NoAnswer(diagnosed) from None
        raise diagnosed from None
    finally:
        with _INFLIGHT_LOCK:
            stack = _INFLIGHT.get(ident, [])
            if entry in stack:
                stack.remove(entry)
            if not stack:
                _INFLIGHT.pop(ident, None)


def transport_failure(exc: BaseException, request: str, *, cause: str,
                      next_cmd: str | list[str], budget: float | None = None,
                      expected: str | None = None, took: float | None = None) -> Diagnosed:
    """The :class:`Diagnosed` failure for ``request`` that ended in transport error ``exc``."""
    within = f"{budget:g}s" if budget else None
    if is_timeout(exc):
        summary = f"[TIMEOUT] no answer{f' within {within}' if within else ''}: {request}"
        why = ("the request got no answer in time: the service hangs (a locked table, "
               "an overloaded or stuck process) or the network drops packets")
    else:
        summary = f"[CONNECT] {request}"
        why = "the connection failed or was lost before an answer came"
    seen = describe_error(exc)
    if took is not None:
        seen += f" (after {took:.1f}s)"
    return Diagnosed(message(
        summary, expected=expected or (f"an answer within {within}" if within else "an answer"),
        seen=seen, cause=cause, why=why, next_cmd=next_cmd), cause)
