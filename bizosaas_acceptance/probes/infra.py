"""The infrastructure services' roles in a stack, and bounded ways to talk to them.

- :func:`postgres_options` and :class:`BoundedPostgres`: every statement ends
  within ``--connect-timeout`` (server side ``statement_timeout`` and
  ``lock_timeout``; client side a watchdog that shuts the socket down, for a
  server that stops answering altogether);
- :class:`AsyncRunner`: a private event loop for temporalio's async client;
  a call that runs out of time is cancelled, not left running;
- :func:`rpc_timeout`: the deadline every Temporal RPC carries.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.outcome import Cause, fail, waiting_on

T = TypeVar("T")

#: Seconds the client-side watchdog allows past the server-side statement timeout.
WATCHDOG_SLACK_S = 1.0


def _infra(stack: Stack, protocol: str, what: str) -> Service:
    svc = stack.by_protocol(protocol)
    if svc is None:
        fail(f"[CONFIG] {stack.source}: no service with protocol {protocol!r}",
             expected=f"a service with protocol {protocol!r} ({what} checks need one)",
             seen="none in the manifest", cause=Cause.CONFIG,
             next_cmd=f"grep -n 'protocol:' {stack.source}")
    return svc


def vault_service(stack: Stack) -> Service:
    """The Vault service: the one whose health path is Vault's /v1/sys/health."""
    svc = next((s for s in stack.services.values() if s.health_path == "/v1/sys/health"), None)
    if svc is None:
        fail(f"[CONFIG] {stack.source}: no Vault service",
             expected="a service with health_path /v1/sys/health", seen="none in the manifest",
             cause=Cause.CONFIG, next_cmd=f"grep -n 'health_path' {stack.source}")
    return svc


# --------------------------------------------------------------------------- sockets


class _Watch:
    """What a :func:`socket_watchdog` did: ``fired`` once it shut the socket down."""

    fired = False


@contextmanager
def socket_watchdog(fileno: int, budget: float) -> Iterator[_Watch]:
    """Shut the socket ``fileno`` down if the block is still running after ``budget`` s.

    For clients that block in C with no deadline of their own (libpq waiting
    for a result): the shutdown wakes the blocked read, which then fails; the
    block raises :class:`TimeoutError` instead of the client's error.
    """
    done = threading.Event()
    watch = _Watch()

    def expire() -> None:
        if done.is_set():
            return
        watch.fired = True
        try:
            sock = socket.socket(fileno=fileno)
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.detach()  # the fd stays the client's

    timer = threading.Timer(budget, expire)
    timer.daemon = True
    timer.start()
    try:
        yield watch
    except Exception as exc:
        if watch.fired:
            raise TimeoutError(f"no result within {budget:g}s: the suite closed the "
                               f"connection ({type(exc).__name__})") from None
        raise
    finally:
        done.set()
        timer.cancel()


# --------------------------------------------------------------------------- postgres


def postgres_options(timeout: float) -> str:
    """libpq ``options``: no statement and no lock wait past ``timeout`` (server side)."""
    ms = max(1, int(timeout * 1000))
    return (f"-c statement_timeout={ms} -c lock_timeout={ms} "
            f"-c idle_in_transaction_session_timeout={max(ms, 60000)}")


class BoundedPostgres:
    """A psycopg connection whose every statement is bounded and, failing, diagnosed.

    ``execute`` returns psycopg's cursor (results are fetched with it, from
    memory). A statement that does not finish within the connect timeout
    (``statement_timeout`` on the server, a socket watchdog on the client)
    fails as ``[TIMEOUT] no answer within Ns: PostgreSQL <statement> at <where>``.
    """

    def __init__(self, conn: Any, where: str, timeout: float, next_cmd: list[str]) -> None:
        self.conn = conn
        self.where = where
        self.timeout = timeout
        self.next_cmd = next_cmd

    def __repr__(self) -> str:
        return f"<BoundedPostgres {self.where}>"

    def execute(self, sql: str, params: Any = None) -> Any:
        __tracebackhide__ = True
        what = f"PostgreSQL `{' '.join(sql.split())[:80]}` at {self.where}"
        with waiting_on(what, cause=Cause.DATABASE, next_cmd=self.next_cmd,
                        budget=self.timeout), \
                socket_watchdog(self.conn.fileno(), self.timeout + WATCHDOG_SLACK_S):
            return self.conn.execute(sql, params)

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- temporal


def rpc_timeout(seconds: float) -> timedelta:
    """The deadline a Temporal RPC carries (``timeout=`` / ``rpc_timeout=``)."""
    return timedelta(seconds=seconds)


class AsyncRunner:
    """A private event loop in a thread, so sync checks can await temporalio calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="bizosaas-async")
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float) -> T:
        """The coroutine's result within ``timeout`` s; past that it is cancelled and
        :class:`TimeoutError` raised (nothing keeps running in the background)."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise TimeoutError(f"no result within {timeout:g}s") from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def temporal_call(runner: AsyncRunner, coro: Awaitable[T], what: str, timeout: float,
                  next_cmd: str | list[str]) -> T:
    """Run a Temporal call within ``timeout`` s; a timeout or an unreachable server is
    diagnosed naming ``what``."""
    __tracebackhide__ = True
    with waiting_on(what, cause=Cause.TEMPORAL, next_cmd=next_cmd, budget=timeout):
        return runner.run(coro, timeout)
