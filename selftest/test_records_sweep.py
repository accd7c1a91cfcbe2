"""Issue 11 §2: the sweep is exact, keeps private markers, never touches a run in progress.

Unit level (``bizosaas_acceptance.probes.records`` against a local HTTP
recorder on 127.0.0.1:19xxx): journals of runs in every state are written to a
private directory, a sweep runs, and exactly the DELETEs it may send are seen.

End to end (reference stack): a finished run ``<id>`` and a run
``<id>-2`` whose lead is on the CRM; a full integration run sweeps, and the
lead of ``<id>-2`` is still there (today's prefix/substring matching removed
it). A journal directory that is not private stops every writing check with
a one-line error and nothing is written.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

from bizosaas_acceptance.options import BY_NAME
from bizosaas_acceptance.probes import records as rec_mod
from bizosaas_acceptance.probes.http import HttpProbe
from bizosaas_acceptance.probes.records import (
    DIR_ENV,
    RecordsDirError,
    mark_finished,
    records_dir,
    run_dir_name,
    sweep,
)
from selftest.hostile import free_port
from selftest.stackrun import clean_env, run_suite
from selftest.test_safety_writes import TAG_PREFIX, tagged_rows

KEY = "bizosaas-staging@127.0.0.1:1,2"
HOST = __import__("socket").gethostname()


# --------------------------------------------------------------------------- helpers


class Recorder:
    """Answers DELETE with 204 and GET with 404; remembers every request."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int) -> None:
                rec.seen.append(f"{self.command} {self.path}")
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
                self._answer(204)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                self._answer(404)

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "records"
    path.mkdir(mode=0o700)
    monkeypatch.setenv(DIR_ENV, str(path))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def journal(base: Path, run_id: str, paths: list[str], recorder: Recorder, *,
            pid: int, start: str | None, host: str = HOST, target: str = KEY,
            finished: bool = False, heartbeat_age_s: float = 0.0) -> Path:
    """A run's journal as a process of it would have written it."""
    run_dir = base / run_dir_name(run_id)
    run_dir.mkdir(mode=0o700)
    lines = [{"ev": "proc", "run_id": run_id, "target": target, "host": host, "pid": pid,
              "start": start, "ppid": None, "pstart": None, "started": time.time()}]
    for n, path in enumerate(paths):
        url = recorder.url(path)
        lines.append({"ev": "add", "key": f"{pid}-{n}", "rec": {
            "key": f"{pid}-{n}", "service": "django-crm", "what": f"django-crm {path}",
            "delete": url, "check": url, "state": "created"}})
    proc = run_dir / f"proc-{HOST}-{pid}.jsonl"
    proc.write_text("".join(json.dumps(x) + "\n" for x in lines))
    if heartbeat_age_s:
        old = time.time() - heartbeat_age_s
        os.utime(proc, (old, old))
    if finished:
        (run_dir / "finished").touch()
    return run_dir


# --------------------------------------------------------------------------- unit


def test_sweep_is_exact_and_spares_runs_in_progress(base: Path, recorder: Recorder) -> None:
    me, me_start = os.getpid(), rec_mod._start_time(os.getpid())
    dead = dead_pid()
    journal(base, "ci", ["/ci/1", "/ci/2"], recorder, pid=dead, start=None, finished=True)
    journal(base, "ci-2", ["/ci-2/1"], recorder, pid=me, start=me_start)
    journal(base, "c", ["/c/1"], recorder, pid=me, start=me_start)
    # In progress for hours, its heartbeat long silent: its pid lives, so it is spared.
    journal(base, "ci-old", ["/ci-old/1"], recorder, pid=me, start=me_start,
            heartbeat_age_s=6 * 3600)
    journal(base, "abandoned", ["/abandoned/1"], recorder, pid=dead_pid(), start=None)
    # Our pid, but another process's start time: the pid was reused, the run is gone.
    journal(base, "reused", ["/reused/1"], recorder, pid=me, start="1")
    journal(base, "elsewhere", ["/elsewhere/1"], recorder, pid=dead, start=None,
            host="ci-runner-7")
    journal(base, "other-target", ["/other-target/1"], recorder, pid=dead, start=None,
            target="acmeshop@127.0.0.1:18501", finished=True)
    result = sweep(HttpProbe(5.0), {}, "me", KEY, base)
    deletes = sorted(s for s in recorder.seen if s.startswith("DELETE"))
    assert deletes == ["DELETE /abandoned/1", "DELETE /ci/1", "DELETE /ci/2",
                       "DELETE /reused/1"], recorder.seen
    assert result["failures"] == [], result
    assert sorted(r.split(":")[0] for r in result["in_progress"]) == [
        "c", "ci-2", "ci-old", "elsewhere"], result
    assert result["other_targets"] == 1
    left = sorted(p.name for p in base.glob("run-*"))
    assert left == [run_dir_name(r) for r in sorted(
        ["c", "ci-2", "ci-old", "elsewhere", "other-target"])], left
    # Every removal was verified: a GET after each DELETE.
    assert sorted(s for s in recorder.seen if s.startswith("GET")) == [
        "GET /abandoned/1", "GET /ci/1", "GET /ci/2", "GET /reused/1"]


def test_finished_run_keeps_only_what_is_left(base: Path, recorder: Recorder) -> None:
    run_dir = journal(base, "done", [], recorder, pid=os.getpid(), start=None)
    mark_finished("done")
    assert not run_dir.exists()  # nothing open: nothing kept
    run_dir = journal(base, "open", ["/open/1"], recorder, pid=os.getpid(), start=None)
    mark_finished("open")
    assert (run_dir / "finished").exists()
    mark_finished("never-wrote")  # a run that wrote nothing leaves nothing
    assert not (base / run_dir_name("never-wrote")).exists()


def test_private_directory_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rec"
    monkeypatch.setenv(DIR_ENV, str(path))
    assert records_dir() == path and (path.stat().st_mode & 0o777) == 0o700
    path.chmod(0o755)
    with pytest.raises(RecordsDirError) as exc:
        records_dir()
    msgs = [str(exc.value)]
    path.chmod(0o700)
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    with pytest.raises(RecordsDirError) as exc:
        rec_mod.check_private(path)
    msgs.append(str(exc.value))
    monkeypatch.undo()
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "link"))
    (tmp_path / "link").symlink_to(path)
    with pytest.raises(RecordsDirError) as exc:
        records_dir()
    msgs.append(str(exc.value))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "file"))
    with pytest.raises(RecordsDirError) as exc:
        records_dir()
    msgs.append(str(exc.value))
    for msg, part in zip(msgs, ("mode 0755", "belongs to uid", "is a symlink",
                                "not a directory"), strict=True):
        assert part in msg and "\n" not in msg and "rm -rf" in msg, msg


# --------------------------------------------------------------------------- end to end


def _api_token() -> str:
    client = hvac.Client(url="http://127.0.0.1:8200", token=BY_NAME["vault_token"].default)
    return client.secrets.kv.v2.read_secret_version(
        path="bizosaas/shared", mount_point="secret",
        raise_on_deleted_version=True)["data"]["data"]["api_token"]


@pytest.mark.stack
def test_finished_run_never_touches_a_longer_run_id(tmp_path: Path) -> None:
    """Run ``<id>`` finished; run ``<id>-2`` has a lead on the CRM. A full
    integration run sweeps: the lead of ``<id>-2`` is still there."""
    short = f"ci{secrets.token_hex(3)}"
    headers = {"Authorization": f"Bearer {_api_token()}"}
    lead = requests.post("http://127.0.0.1:8003/api/leads/", headers=headers, timeout=5, json={
        "name": "Someone else's run", "email": "other@bizosaas-acceptance.example",
        "source": f"{TAG_PREFIX}{short}-2", "notes": f"{TAG_PREFIX}{short}-2"})
    assert lead.status_code == 201, lead.text
    lead_url = f"http://127.0.0.1:8003/api/leads/{lead.json()['id']}/"
    records = tmp_path / "records"
    records.mkdir(mode=0o700)
    # Run <id> finished, as today's code and this one mark it.
    (records / run_dir_name(short)).mkdir(mode=0o700)
    (records / run_dir_name(short) / "finished").touch()
    legacy = Path("/tmp/bizosaas-acceptance-finished")
    legacy.mkdir(exist_ok=True)
    (legacy / short).touch()
    try:
        run = run_suite(tmp_path / "run", "-n", "0", "-m", "integration",
                        env=clean_env(**{DIR_ENV: str(records)}))
        still = requests.get(lead_url, timeout=5)
        assert still.status_code == 200, (still.status_code, run.summary())
        assert run.ret == 0, run.summary()
    finally:
        try:
            requests.delete(lead_url, headers=headers, timeout=5)
        except requests.RequestException:
            pass  # the stack restarted: its database is fresh
        (legacy / short).unlink(missing_ok=True)


@pytest.mark.stack
def test_journal_directory_not_private_stops_every_write(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir(mode=0o755)
    records.chmod(0o755)
    run_id = f"np-{secrets.token_hex(4)}"
    run = run_suite(tmp_path / "run", "-n", "0", "-m", "integration", f"--run-id={run_id}",
                    env=clean_env(**{DIR_ENV: str(records)}))
    assert run.ret == 1, run.summary()
    flows = [c for c in run.gate["checks"] if c["outcome"] in ("failed", "error")]
    assert len(flows) == 4, run.summary()  # three flows and the leftovers check
    for c in flows:
        first = c["message"].splitlines()[0]
        assert f"[RECORDS] {records}: the records journal directory has mode 0755" in first, c
        assert "Traceback" not in c["message"]
    assert tagged_rows(TAG_PREFIX + run_id) == {}
    assert list(records.iterdir()) == []
