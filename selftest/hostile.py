"""Small local servers that misbehave on purpose, and temp manifests pointing at them.

Everything listens on 127.0.0.1, ports 19000-19999 only (the range the project
reserves for self-test targets). Servers run in daemon threads of the test
process and are stopped by the fixtures that start them.

- :class:`HostileHttp`: an HTTP server whose paths misbehave in one way each
  (huge body, wrong content type, invalid JSON, slow drip, redirect to another
  host, a body quoting secrets).
- :class:`RawServer`: a TCP server that either answers garbage bytes or accepts
  and never says anything.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

PORT_RANGE = range(19000, 20000)
HUGE_BYTES = 64 * 1024 * 1024  # far past bizosaas_acceptance.probes.http.MAX_BODY
DRIP_SECONDS = 120  # the drip outlasts any sane timeout


def _bound_in_range() -> socket.socket:
    """A socket bound to a free port of 19000-19999 (random start, so parallel
    self-tests rarely collide), not listening."""
    start = int.from_bytes(os.urandom(2), "big") % len(PORT_RANGE)
    for i in range(len(PORT_RANGE)):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", PORT_RANGE[(start + i) % len(PORT_RANGE)]))
        except OSError:
            s.close()
            continue
        return s
    raise RuntimeError("no free port in 19000-19999")


def free_port() -> int:
    """A port in 19000-19999 nothing listens on right now."""
    with _bound_in_range() as s:
        return s.getsockname()[1]


#: Sockets that hold the "closed" ports: bound, never listening. Linux refuses
#: a connection to such a port (RST) exactly as if nothing were bound, and
#: holding it stops any other self-test (or a RawServer in the same test)
#: from picking the same number and answering where a dead port was promised.
_HELD: list[socket.socket] = []


def closed_port() -> int:
    """A port in the range that refuses connections, reserved for this process."""
    s = _bound_in_range()
    _HELD.append(s)
    return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    """Dispatches on the path; ``server.routes`` maps path → behaviour."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # keep the self-test output quiet

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        route = self.server.routes.get(self.path.split("?")[0])  # type: ignore[attr-defined]
        if route is None:
            self._send(404, "application/json", b'{"error": {"code": 404}}')
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    do_HEAD = do_GET  # noqa: N815

    def _send(self, status: int, ctype: str, body: bytes,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


Route = Callable[[_Handler], None]


def json_reply(status: int, body: Any, ctype: str = "application/json") -> Route:
    data = json.dumps(body).encode()
    return lambda h: h._send(status, ctype, data)


def raw_reply(status: int, ctype: str, body: bytes) -> Route:
    return lambda h: h._send(status, ctype, body)


def huge_reply(h: _Handler) -> None:
    """A JSON-typed body of HUGE_BYTES, streamed; a bounded reader stops early."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(HUGE_BYTES))
    h.end_headers()
    chunk = b'{"status": "ok", "pad": "' + b"x" * 65000
    sent = 0
    while sent < HUGE_BYTES:
        h.wfile.write(chunk)
        sent += len(chunk)


def drip_reply(h: _Handler) -> None:
    """Headers at once, then one byte per second: each read succeeds, the whole never ends."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(DRIP_SECONDS + 100))
    h.end_headers()
    for _ in range(DRIP_SECONDS):
        h.wfile.write(b" ")
        h.wfile.flush()
        time.sleep(1)


def drip_headers_reply(h: _Handler) -> None:
    """The status line and headers themselves, a byte per second."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"x" * 200
    for byte in head:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        time.sleep(1)


def redirect_reply(location: str) -> Route:
    return lambda h: h._send(302, "text/html", b"moved", {"Location": location})


class HostileHttp:
    """A threaded HTTP server on 127.0.0.1:<port> serving ``routes``."""

    def __init__(self, routes: dict[str, Route], port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.server.daemon_threads = True
        self.server.routes = routes  # type: ignore[attr-defined]
        # A short poll interval: stopping a server costs at most that long.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> HostileHttp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class RawServer:
    """A TCP server that answers garbage (``mode="garbage"``) or nothing (``"silent"``)."""

    def __init__(self, mode: str, port: int | None = None) -> None:
        self.mode = mode
        self.port = port or free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(512)
        self.stopped = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "garbage":
                threading.Thread(target=self._garbage, args=(conn,), daemon=True).start()
            else:
                self.held.append(conn)  # accepted, never answered, closed at stop

    @staticmethod
    def _garbage(conn: socket.socket) -> None:
        try:
            conn.settimeout(2)
            conn.recv(4096)
            conn.sendall(b"\x00\xff\x13garbage\x8f not http at all\r\n\r\n" + os.urandom(512))
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


def app_service(container: str, port: int, health_path: str = "/health", *,
                critical: bool = False, **extra: Any) -> dict[str, Any]:
    """A manifest entry for an HTTP application service published on ``port``."""
    return {"container": container, "port": port, "health_path": health_path,
            "critical": critical, "healthcheck": False, **extra}


def write_manifest(path: Path, services: dict[str, dict[str, Any]], *,
                   name: str = "hostile", **top: Any) -> Path:
    """Write a minimal valid manifest (no API description: only the generic suites run)."""
    doc: dict[str, Any] = {"version": 1, "name": name, "services": services, **top}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
