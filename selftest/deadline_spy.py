"""A pytest plugin for inner runs: records every network call the suite makes, and its deadline.

Loaded with ``-p selftest.deadline_spy`` (xdist workers load it too); writes
one JSON line per observation to ``$BIZOSAAS_SPY_DIR/<pid>.jsonl``. It wraps
the client constructors and the calls underneath every client the suite uses:

================  ==========================================================
kind              what is wrapped, and what counts as a deadline
================  ==========================================================
``socket``        ``socket.socket.connect``/``connect_ex``: the socket has a
                  timeout (``gettimeout()`` not None) when it connects; every
                  later read on it (``recv``, ``recv_into``) too
``http``          ``urllib3.HTTPConnectionPool.urlopen`` (requests, hvac,
                  docker-py, our HttpProbe): finite connect *and* read timeout
``requests``      ``requests.Session.request``: ``timeout=`` given
``docker``        ``docker.APIClient.__init__``: ``timeout=`` given
``psycopg``       ``psycopg.connect``: ``connect_timeout`` and a server-side
                  ``statement_timeout`` (``options``), checked on the live
                  session with ``SHOW statement_timeout``
``redis``         ``redis.Redis.__init__`` and every connection's ``connect``:
                  ``socket_timeout`` and ``socket_connect_timeout`` set
``hvac``          ``hvac.Client.__init__``: ``timeout=`` given
``temporal``      ``Client.connect``: ``connect_timeout=``; every RPC
                  (``ServiceClient._rpc_call``): ``timeout=`` given
================  ==========================================================

A deadline longer than ``MAX_DEADLINE_S`` counts as none (half of
pytest-timeout's 60 s guard). Nothing here changes what the calls do.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import socket
import threading
import traceback
import weakref
from pathlib import Path
from typing import Any

MAX_DEADLINE_S = 30.0
_LOCK = threading.Lock()
_OUTGOING: weakref.WeakSet[socket.socket] = weakref.WeakSet()
_OWN = ("/bizosaas_acceptance/", "/fixtures/", "/tests/")


def _origin() -> str:
    """The innermost frame of the suite's own code that led here."""
    for f in reversed(traceback.extract_stack()[:-2]):
        if any(p in f.filename for p in _OWN) and "/selftest/" not in f.filename:
            return f"{Path(f.filename).name}:{f.lineno} in {f.name}"
    return "?"


def _record(kind: str, detail: str, timeout: Any, ok: bool) -> None:
    out = os.environ.get("BIZOSAAS_SPY_DIR")
    if not out:
        return
    line = json.dumps({"kind": kind, "detail": detail[:200], "timeout": str(timeout),
                       "ok": ok, "origin": _origin(), "pid": os.getpid()})
    with _LOCK, open(Path(out) / f"{os.getpid()}.jsonl", "a") as fh:
        fh.write(line + "\n")


def _finite(value: Any) -> bool:
    try:
        number = float(value.total_seconds() if hasattr(value, "total_seconds") else value)
    except (TypeError, ValueError):
        return False
    return 0 <= number <= MAX_DEADLINE_S and not math.isnan(number)


# --------------------------------------------------------------------------- sockets


def _wrap_socket() -> None:
    cls = socket.socket
    connect, connect_ex = cls.connect, cls.connect_ex
    recv, recv_into = cls.recv, cls.recv_into
    reads_seen: set[int] = set()

    def spy_connect(self: socket.socket, address: Any) -> Any:
        t = self.gettimeout()
        ok = t is not None and (t == 0.0 or _finite(t))
        _record("socket", f"connect {address}", t, ok)
        _OUTGOING.add(self)
        return connect(self, address)

    def spy_connect_ex(self: socket.socket, address: Any) -> Any:
        t = self.gettimeout()
        _record("socket", f"connect_ex {address}", t, t is not None and (t == 0.0 or _finite(t)))
        _OUTGOING.add(self)
        return connect_ex(self, address)

    def check_read(self: socket.socket) -> None:
        if self in _OUTGOING:
            t = self.gettimeout()
            if t is None or not (t == 0.0 or _finite(t)):
                _record("socket", f"read from {_peer(self)}", t, False)
            elif id(self) not in reads_seen:
                reads_seen.add(id(self))
                _record("socket", f"read from {_peer(self)}", t, True)

    def spy_recv(self: socket.socket, *args: Any) -> Any:
        check_read(self)
        return recv(self, *args)

    def spy_recv_into(self: socket.socket, *args: Any) -> Any:
        check_read(self)
        return recv_into(self, *args)

    cls.connect, cls.connect_ex = spy_connect, spy_connect_ex  # type: ignore[method-assign]
    cls.recv, cls.recv_into = spy_recv, spy_recv_into  # type: ignore[method-assign]


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername())
    except OSError:
        return "?"


# --------------------------------------------------------------------------- HTTP


def _timeout_ok(timeout: Any) -> bool:
    from urllib3.util.timeout import Timeout

    if isinstance(timeout, Timeout):
        return _finite(timeout.connect_timeout) and _finite(timeout.read_timeout)
    return _finite(timeout)


def _wrap_http() -> None:
    import requests
    from urllib3.connectionpool import HTTPConnectionPool

    urlopen = HTTPConnectionPool.urlopen
    sig = inspect.signature(urlopen)

    @functools.wraps(urlopen)
    def spy_urlopen(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(self, *args, **kwargs)
        given = bound.arguments.get("timeout", sig.parameters["timeout"].default)
        effective = self.timeout if given is sig.parameters["timeout"].default else given
        method, url = bound.arguments.get("method"), bound.arguments.get("url")
        _record("http", f"{method} {self.host}:{self.port}{url}", effective,
                _timeout_ok(effective))
        return urlopen(self, *args, **kwargs)

    HTTPConnectionPool.urlopen = spy_urlopen  # type: ignore[method-assign]

    request = requests.Session.request

    @functools.wraps(request)
    def spy_request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        t = kwargs.get("timeout")
        ok = t is not None and (all(_finite(x) for x in t) if isinstance(t, tuple)
                                else _finite(t))
        _record("requests", f"{method} {url}", t, ok)
        return request(self, method, url, *args, **kwargs)

    requests.Session.request = spy_request  # type: ignore[method-assign]


# --------------------------------------------------------------------------- clients


def _wrap_init(cls: Any, kind: str, *names: str) -> None:
    """Record whether ``cls(...)`` was given each of ``names`` (finite)."""
    init = cls.__init__
    sig = inspect.signature(init)

    @functools.wraps(init)
    def spy_init(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(self, *args, **kwargs)
        values = {n: bound.arguments.get(n) for n in names}
        _record(kind, f"{cls.__name__}({', '.join(f'{k}={v}' for k, v in values.items())})",
                values, all(_finite(v) for v in values.values()))
        init(self, *args, **kwargs)

    cls.__init__ = spy_init


def _wrap_psycopg() -> None:
    import psycopg

    connect = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]

    def spy_connect(cls: Any, conninfo: str = "", **kwargs: Any) -> Any:
        t, options = kwargs.get("connect_timeout"), str(kwargs.get("options") or "")
        ok = _finite(t) and "statement_timeout=" in options
        conn = connect(cls, conninfo, **kwargs)
        try:
            live = conn.execute("SHOW statement_timeout").fetchone()[0]
        except Exception as exc:  # noqa: BLE001
            live = f"unknown ({type(exc).__name__})"
        ok = ok and live not in ("0", "0ms") and not live.startswith("unknown")
        _record("psycopg", f"connect {conninfo} options={options!r}",
                {"connect_timeout": t, "statement_timeout": live}, ok)
        return conn

    psycopg.Connection.connect = classmethod(spy_connect)  # type: ignore[assignment]
    psycopg.connect = psycopg.Connection.connect  # type: ignore[attr-defined]


def _wrap_redis() -> None:
    import redis
    import redis.connection as rc

    _wrap_init(redis.Redis, "redis", "socket_timeout", "socket_connect_timeout")
    connect = rc.AbstractConnection.connect

    @functools.wraps(connect)
    def spy_connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        values = {"socket_timeout": getattr(self, "socket_timeout", None),
                  "socket_connect_timeout": getattr(self, "socket_connect_timeout", None)}
        _record("redis", f"connect {getattr(self, 'host', '?')}:{getattr(self, 'port', '?')}",
                values, all(_finite(v) for v in values.values()))
        return connect(self, *args, **kwargs)

    rc.AbstractConnection.connect = spy_connect  # type: ignore[method-assign]


def _wrap_temporal() -> None:
    import temporalio.service as ts
    from temporalio.client import Client

    connect = Client.connect.__func__  # type: ignore[attr-defined]

    async def spy_connect(cls: Any, target_host: str, **kwargs: Any) -> Any:
        t = kwargs.get("connect_timeout")
        _record("temporal", f"Client.connect {target_host}", t, _finite(t))
        return await connect(cls, target_host, **kwargs)

    Client.connect = classmethod(spy_connect)  # type: ignore[assignment]
    rpc = ts._BridgeServiceClient._rpc_call

    async def spy_rpc(self: Any, *args: Any, **kwargs: Any) -> Any:
        t = kwargs.get("timeout")
        name = kwargs.get("rpc") or (args[0] if args else "?")
        _record("temporal", f"rpc {name}", t, _finite(t))
        return await rpc(self, *args, **kwargs)

    ts._BridgeServiceClient._rpc_call = spy_rpc  # type: ignore[method-assign]


def _install() -> None:
    _wrap_socket()
    _wrap_http()
    import docker
    import hvac

    _wrap_init(docker.APIClient, "docker", "timeout")
    _wrap_init(hvac.Client, "hvac", "timeout")
    _wrap_psycopg()
    _wrap_redis()
    _wrap_temporal()


_install()
