"""A local HTTP service whose chosen routes hang, like a service reading a locked table.

Every method is served; a request whose path starts with one of ``hung``
prefixes is accepted, read, and never answered (the handler waits until the
server stops); a path in ``answers`` gets that JSON; any other path answers
``200 {"status": "ok"}`` at once. Listens on 127.0.0.1, in the self-tests'
port range (selftest/hostile.py).

:data:`DOCKER_ANSWERS` make it a Docker engine that answers ``/_ping`` and
``/version`` (so a client connects) and hangs wherever told.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selftest.hostile import free_port

#: The longest a hung request is held (the server also lets go when it stops).
HOLD_S = 120
#: Enough of the Docker API for docker-py to connect.
DOCKER_ANSWERS: dict[str, Any] = {
    "/_ping": "OK",
    "/version": {"ApiVersion": "1.41", "Version": "24.0.0", "MinAPIVersion": "1.12"},
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _any(self) -> None:
        server: HungRoutes = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?")[0]
        with server.lock:
            server.seen.append(f"{self.command} {self.path}")
        if any(path.startswith(p) for p in server.hung):
            server.stopped.wait(HOLD_S)
            return
        answer = server.answers.get(path, {"status": "ok"})
        plain = isinstance(answer, str)
        body = answer.encode() if plain else json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain" if plain else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any  # noqa: N815


class HungRoutes:
    """``with HungRoutes(["/api/leads/"]) as srv:`` — ``srv.port``, ``srv.seen``."""

    def __init__(self, hung: list[str], port: int | None = None,
                 answers: dict[str, Any] | None = None) -> None:
        self.hung = list(hung)
        self.answers = dict(answers or {})
        self.port = port or free_port()
        self.seen: list[str] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.server.daemon_threads = True
        self.server.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> HungRoutes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()
