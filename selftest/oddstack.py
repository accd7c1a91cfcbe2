"""Small local HTTP services that answer oddly on purpose, and the files that describe them.

For the self-tests of checks that must not trust what they should measure
(issue 11 §4): a service that reports a fast ``Server-Timing`` while it is
slow, a gateway whose catch-all answers 401/405 without ever reaching the
service behind it, a preflight that drops the connection, a GraphQL answer
with no product, a health body that names no dependency, a Vault whose token
lookup has no ``ttl``.

Everything listens on 127.0.0.1, ports 19000-19999 (see selftest/hostile.py);
servers run in daemon threads of the test process. Each server records the
requests it received, so a test can tell whether a gateway ever called the
service behind it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from selftest.hostile import free_port


class _Handler(BaseHTTPRequestHandler):
    """Dispatches on ``"METHOD /path"`` (then ``"* /path"``); 404 otherwise."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        server: Any = self.server
        with server.lock:
            server.seen.append((self.command, self.path, dict(self.headers.items()), body))
        route = server.routes.get(f"{self.command} {path}") or server.routes.get(f"* {path}")
        if route is None:
            send(self, 404, {"error": {"code": 404, "message": f"Not found: {path}",
                                       "details": {}, "timestamp": _now()}})
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = _dispatch  # noqa: N815


Route = Callable[[_Handler], None]


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def send(h: _Handler, status: int, body: Any = None, headers: dict[str, str] | None = None,
         ctype: str = "application/json") -> None:
    """One answer: JSON unless ``body`` is bytes; ``None`` sends an empty body."""
    data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    h.send_response(status)
    if data:
        h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data)


def answer(status: int, body: Any = None, *, headers: dict[str, str] | None = None,
           delay: float = 0.0) -> Route:
    """A route that waits ``delay`` seconds, then sends ``status`` and ``body``."""

    def route(h: _Handler) -> None:
        if delay:
            time.sleep(delay)
        send(h, status, body, headers)

    return route


def error(status: int, message: str, details: dict[str, Any] | None = None) -> Route:
    """The documented error format (timestamp fresh on every answer)."""

    def route(h: _Handler) -> None:
        send(h, status, {"error": {"code": status, "message": message,
                                   "details": details or {}, "timestamp": _now()}})

    return route


def hang_up(h: _Handler) -> None:
    """Read the request, then drop the connection without answering."""
    h.close_connection = True
    try:
        h.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class OddHttp:
    """A threaded HTTP server on 127.0.0.1:<port> serving ``routes``."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.server.daemon_threads = True
        self.server.routes = routes  # type: ignore[attr-defined]
        self.server.seen = []  # type: ignore[attr-defined]
        self.server.lock = threading.Lock()  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def seen(self) -> list[tuple[str, str, dict[str, str], bytes]]:
        """(method, path, headers, body) of every request received so far."""
        return list(self.server.seen)  # type: ignore[attr-defined]

    def __enter__(self) -> OddHttp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


HEALTHY = answer(200, {"status": "ok"})

#: A Vault that is up: enough for the suite's Vault client to connect.
VAULT_HEALTH = answer(200, {"initialized": True, "sealed": False, "standby": False,
                            "version": "1.15.0"})


def write_files(tmp: Path, services: dict[str, dict[str, Any]], api: dict[str, Any] | None,
                thresholds: dict[str, Any] | None = None) -> Path:
    """A manifest (and its API description, if any) in ``tmp``; returns the manifest."""
    doc: dict[str, Any] = {"version": 1, "name": "oddstack", "services": services,
                           "thresholds": {"response_ms_by_class": {"default": 500},
                                          **(thresholds or {})}}
    if api is not None:
        (tmp / "oddstack-api.yaml").write_text(yaml.safe_dump({"version": 1, **api},
                                                               sort_keys=False))
        doc["api"] = "oddstack-api.yaml"
    path = tmp / "oddstack.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def app(container: str, server: OddHttp, **extra: Any) -> dict[str, Any]:
    """A manifest entry for an application service answering on ``server``."""
    return {"container": container, "port": server.port, "health_path": "/health",
            "critical": False, "healthcheck": False, **extra}


def vault(server: OddHttp) -> dict[str, Any]:
    """A manifest entry for the (odd) Vault on ``server``."""
    return {"kind": "infra", "container": "odd-vault", "port": server.port,
            "health_path": "/v1/sys/health", "critical": False, "healthcheck": False}
