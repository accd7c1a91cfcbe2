"""The log reader on a Swarm service's log: tasks interleave, each is read whole.

A unit test of ``bizosaas_acceptance.probes.logs`` against a small engine
stand-in (a loopback HTTP server speaking the Docker API's
``GET /services/{name}/logs``: per-task ``tail``, then ``since``, ``details``
naming the task, multiplexed frames). The real thing is covered by
``selftest/test_swarm.py`` (a one-node Swarm, under the stack lock); this file
pins what that cannot show cheaply: lines of two tasks arriving in any order
are each scanned once, the byte cap keeps the most recent part of each task,
and the startup lines are found from the start.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from bizosaas_acceptance.probes import logs as probe

BASE = 1_767_225_600  # 2026-01-01T00:00:00Z
ERRORS = [re.compile(r"(?i)\b(error|critical|traceback|panic)\b")]


def _ts(t: float) -> str:
    return probe._ts_text(t)


def _task_lines(task: str, n: int, offset: float) -> list[tuple[float, str]]:
    lines = [(BASE + offset, f"{task} Connected to PostgreSQL")]
    lines.append((BASE + offset + 0.5, f"{task} ERROR early in {task}"))
    lines += [(BASE + offset + 1 + i, f"{task} GET /api/items/{i} 200 " + "x" * 60)
              for i in range(n)]
    lines.append((BASE + offset + n + 2, f"{task} ERROR late in {task}"))
    return lines


class Engine(BaseHTTPRequestHandler):
    """Per task: the last ``tail`` lines, then ``since``; tasks in ``order``."""

    tasks: dict[str, list[tuple[float, str]]] = {}
    order: list[str] = []
    requests_seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        type(self).requests_seen.append(q)
        if not url.path.endswith("/services/svc/logs"):
            self.send_response(404)
            self.end_headers()
            return
        tail = q.get("tail", "all")
        since = float(q["since"]) if "since" in q else None
        frames = []
        for task in self.order:
            lines = self.tasks[task]
            if tail != "all":
                lines = lines[-int(tail):] if int(tail) else []
            if since is not None:
                lines = [(t, m) for t, m in lines if t >= since]
            for t, msg in lines:
                details = (f"com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,"
                           f"com.docker.swarm.task.id={task} ") if q.get("details") == "1" else ""
                payload = f"{_ts(t)} {details}{msg}\n".encode()
                frames.append(b"\x01\x00\x00\x00" + len(payload).to_bytes(4, "big") + payload)
        body = b"".join(frames)
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.raw-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Api:
    """What the reader uses of docker-py's APIClient: base_url, api_version, get."""

    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_version = "1.41"
        self.session = requests.Session()

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.session.get(url, **kwargs)


@pytest.fixture
def engine() -> Iterator[Api]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Engine.requests_seen = []
    try:
        yield Api(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _scan(api: Api, **kwargs: Any) -> dict[str, Any]:
    judge = probe.LineJudge(ERRORS, [], ["Connected to PostgreSQL"])
    window = probe.Window(BASE - 1, "the container's start", BASE)
    return probe.scan_log(api, "svc", window=window, judge=judge, service="svc", **kwargs)


@pytest.mark.parametrize("order", [["t1", "t2"], ["t2", "t1"]])
def test_every_task_is_read_once_in_any_order(engine: Api, order: list[str]) -> None:
    # t2 runs half a second behind t1: their lines interleave in time, and the
    # stream sends one task's lines after the other's.
    Engine.tasks = {"t1": _task_lines("t1", 6000, 0), "t2": _task_lines("t2", 6000, 0.25)}
    Engine.order = order
    got = _scan(engine, max_bytes=50 * 2**20, first_pass=1000)
    assert got["passes"] > 2, got  # more than one tail per task
    assert got["lines"] == 2 * 6003 and got["count"] == 4, got
    assert not got["capped"] and got["reached_window_start"], got
    assert got["startup_found"] == ["Connected to PostgreSQL"] and got["startup_pass"] is None
    assert all(q.get("details") == "1" for q in Engine.requests_seen)
    assert got["service"] == "svc"


def test_cap_keeps_the_most_recent_part_of_each_task(engine: Api) -> None:
    Engine.tasks = {"t1": _task_lines("t1", 6000, 0), "t2": _task_lines("t2", 6000, 0.25)}
    Engine.order = ["t2", "t1"]
    cap = 200 * 1024
    got = _scan(engine, max_bytes=cap, first_pass=500)
    assert got["capped"] and got["bytes"] <= cap, got
    # The newest lines of both tasks are in; the early errors are not.
    assert sorted(m[1] for m in got["matches"]) == ["t1 ERROR late in t1", "t2 ERROR late in t2"]
    assert got["last"] == _ts(BASE + 0.25 + 6002)
    # Older than what was read: the startup line, found reading from the start.
    assert got["startup_found"] == ["Connected to PostgreSQL"] and got["startup_pass"], got


def test_details_are_not_part_of_the_line(engine: Api) -> None:
    """A line is judged without the task's attributes (task ids can look like anything)."""
    Engine.tasks = {"error-task": [(BASE + 1, "all fine")]}
    Engine.order = ["error-task"]
    got = _scan(engine)
    assert got["lines"] == 1 and got["count"] == 0, got
