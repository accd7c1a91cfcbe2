"""Every record the suite creates on the target: registered, removed, verified, swept.

One mechanism for every suite (api, endpoints, integration):

- :class:`Records` is the process's registry. A check registers a record
  *before* the request that creates it, with whatever will find it: its own id
  when the client chooses it (a cart's session id), else a tag unique to that
  record (``bizosaas-acceptance-<run id>.<nonce>``, put into the body) and,
  where the service has one, a bulk ``DELETE ?tag=`` path. Once the answer
  arrives the record learns its id (``DELETE`` and ``GET`` paths), or is
  dropped when the answer proves nothing was created.
- At the end of each check (``fixtures/api.py``) every record the check
  registered is removed, newest first: the ``DELETE`` itself must succeed
  (2xx; a 404 means it was already gone: deleted twice, or never ours), then
  its absence is verified (``GET`` -> 404, or an empty view such as a cart with
  no items). Each problem names the record; the check then fails.
- Every registration is journaled in a private directory (:func:`records_dir`,
  0700, ours, not a symlink; anything else is refused with a one-line
  :class:`RecordsDirError`). One journal per process, also its liveness
  marker: host, pid (and the xdist controller's pid), the process start time,
  and an mtime refreshed every ``HEARTBEAT_S`` seconds.
- The sweep (:func:`sweep`) removes what earlier runs against the same target
  left behind, by their journals only: a run is swept when it is marked
  finished, or when none of its processes lives any more on this host.
  A run in progress is never touched, whatever its age; runs are told apart
  by their exact run id (a journal directory per run), never by a prefix or a
  substring of a tag, so finishing run ``ci`` cannot remove ``ci-2``'s records.

No pytest here: the fixtures turn problems into failed checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from bizosaas_acceptance.probes.http import HttpProbe, Reply

#: Environment variable naming the journal directory (default: see records_dir).
DIR_ENV = "BIZOSAAS_RECORDS_DIR"
HEARTBEAT_S = 15.0
SETTLE_S = 5.0
#: Bulk removal by tag, where a service has one: (service, POST path) -> DELETE path.
BULK_BY_TAG: dict[tuple[str, str], tuple[str, str]] = {
    ("django-crm", "/api/leads/"): ("django-crm", "/api/leads/"),
    ("coreldove-backend", "/api/orders"): ("coreldove-backend", "/api/orders"),
    ("brain-api", "/api/commerce/orders"): ("coreldove-backend", "/api/orders"),
}
#: Errors that prove the request never left this machine (nothing can exist).
NOT_SENT = ("connection refused", "not retried", "host name does not resolve")


class RecordsDirError(Exception):
    """The journal directory is not private: one line naming it and the fix."""


# --------------------------------------------------------------------------- directory


def default_dir() -> Path:
    """Where the journals live (not checked: for messages)."""
    return Path(os.environ.get(DIR_ENV) or
                Path(tempfile.gettempdir()) / f"bizosaas-records-{os.getuid()}")


def records_dir(create: bool = True) -> Path:
    """The private journal directory, checked (created 0700 when missing).

    ``$BIZOSAAS_RECORDS_DIR``, else ``<tmp>/bizosaas-records-<uid>`` (a name no
    run id can produce: the per-run scratch directories are
    ``bizosaas-acceptance-<run id>``). Refused unless it is a real directory
    (not a symlink), owned by this user, with no access for group or others.
    """
    base = default_dir()
    if create:
        with contextlib.suppress(FileExistsError):
            base.mkdir(mode=0o700)
    check_private(base)
    return base


def check_private(path: Path) -> None:
    """Raise :class:`RecordsDirError` unless ``path`` is our own 0700 directory."""
    fix = (f"remove it (rm -rf {path}) or point ${DIR_ENV} at a directory of yours "
           "with mode 0700")
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise RecordsDirError(f"{path}: the records journal directory does not exist; "
                              f"{fix}") from None
    if stat.S_ISLNK(st.st_mode):
        raise RecordsDirError(f"{path}: the records journal directory is a symlink; {fix}")
    if not stat.S_ISDIR(st.st_mode):
        raise RecordsDirError(f"{path}: the records journal path is not a directory; {fix}")
    if st.st_uid != os.getuid():
        raise RecordsDirError(f"{path}: the records journal directory belongs to uid "
                              f"{st.st_uid}, not to this user (uid {os.getuid()}); {fix}")
    if st.st_mode & 0o077:
        raise RecordsDirError(f"{path}: the records journal directory has mode "
                              f"{stat.S_IMODE(st.st_mode):04o}, others may read or plant "
                              f"markers (expected 0700); {fix}")


def run_dir_name(run_id: str) -> str:
    """One directory per run id, spelled exactly (no prefix can match another run)."""
    return "run-" + quote(run_id, safe="")


# --------------------------------------------------------------------------- liveness


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) on Linux; None elsewhere."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[-1].split()[19]


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether ``pid`` runs on this host (and is the same process, when ``start`` is known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process with that pid: alive, but maybe reused
    if start is not None:
        now = _start_time(pid)
        if now is not None and now != start:
            return False  # the pid was reused by another process
    return True


# --------------------------------------------------------------------------- records


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends (main thread only).

    A create request interrupted in flight may have created its record while
    its answer (the id) is lost; deferring the interrupt for one bounded
    request lets the record be identified, so the teardown that follows the
    interrupt removes it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            if callable(previous):
                previous(signal.SIGINT, None)
            else:
                raise KeyboardInterrupt


@dataclass
class Record:
    """One record a check creates (or may have created) on the target."""

    key: str
    service: str
    what: str
    tag: str | None = None  # unique to this record, in the request body
    find: str | None = None  # URL of a bulk DELETE by ``tag`` (id not needed)
    delete: str | None = None  # URL removing it, once known
    method: str = "DELETE"
    check: str | None = None  # URL that must show it gone
    settle: bool = False  # wait (bounded) until a GET no longer says "processing"
    state: str = "pending"  # pending | created | none | removed | failed | kept
    note: str = ""

    @property
    def open(self) -> bool:
        return self.state in ("pending", "created", "failed")


def absent(reply: Reply) -> bool:
    """A GET's answer saying the record is gone: 404/410, or an empty view
    (a cart or listing whose ``items``/``results`` are empty)."""
    if reply.status in (404, 410):
        return True
    if reply.status == 200:
        try:
            data = reply.json()
        except ValueError:
            return False
        if isinstance(data, dict):
            lists = [data[k] for k in ("items", "results") if isinstance(data.get(k), list)]
            return bool(lists) and not any(lists)
    return False


def deleted_count(reply: Reply) -> int | None:
    try:
        return int(reply.json().get("deleted"))
    except (ValueError, AttributeError, TypeError):
        return None


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


class Journal:
    """This process's journal of one run, and its liveness marker (with a heartbeat)."""

    def __init__(self, run_id: str, target_key: str, base: Path | None = None,
                 kind: str = "proc") -> None:
        self.base = base or records_dir()
        self.run_id, self.target_key = run_id, target_key
        self.dir = self.base / run_dir_name(run_id)
        host, pid = socket.gethostname(), os.getpid()
        self.path = self.dir / f"{kind}-{quote(host, safe='')}-{pid}.jsonl"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if kind != "proc":
            return  # a sweep's notes on another run: no liveness
        header: dict[str, Any] = {
            "ev": "proc", "run_id": run_id, "target": target_key, "host": host, "pid": pid,
            "start": _start_time(pid), "ppid": None, "pstart": None, "started": time.time()}
        if os.environ.get("PYTEST_XDIST_WORKER"):
            # A worker lives as long as its controller: the run is alive while it is.
            header["ppid"] = os.getppid()
            header["pstart"] = _start_time(os.getppid())
        self.write(header)
        threading.Thread(target=self._beat, daemon=True, name="bizosaas-heartbeat").start()

    def write(self, event: dict[str, Any]) -> None:
        """Append one event (the directory is re-created if a sweep just removed it)."""
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self._lock:
            for attempt in (1, 2):
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                 | os.O_NOFOLLOW, 0o600)
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                    with contextlib.suppress(FileExistsError):
                        self.dir.mkdir(mode=0o700)
                    check_private(self.dir)
                    continue
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
                return

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def close(self) -> None:
        self._stop.set()


class Records:
    """The registry of one process: register before, identify after, remove and verify.

    Writes are only possible while it is :attr:`active` (the ``records``
    fixture, around one check): a write outside is a bug and raises, so no
    record can escape the mechanism.
    """

    def __init__(self, http: HttpProbe, headers: Callable[[], dict[str, str]],
                 run_tag: str, journal: Callable[[], Journal] | None = None) -> None:
        self.http, self.headers, self.run_tag = http, headers, run_tag
        self._journal_factory = journal
        self.journal: Journal | None = None
        self.items: list[Record] = []
        self.active = False
        self._lock = threading.Lock()
        self._seq = 0

    def open_journal(self) -> None:
        """Open this process's journal (RecordsDirError when the directory is not private).

        The ``records`` fixture opens it, then sets :attr:`active` while its check runs.
        """
        if self.journal is None and self._journal_factory is not None:
            self.journal = self._journal_factory()

    # registration ------------------------------------------------------------

    def new_tag(self) -> str:
        """A tag unique to one record: ``<run tag>.<nonce>`` (found by it, and only it)."""
        return f"{self.run_tag}.{secrets.token_hex(6)}"

    def _log(self, ev: str, record: Record, **extra: Any) -> None:
        if self.journal is not None:
            self.journal.write({"ev": ev, "key": record.key, **extra})

    def register(self, service: str, what: str, *, tag: str | None = None,
                 find: str | None = None, delete: str | None = None,
                 check: str | None = None, settle: bool = False) -> Record:
        """Note a record *before* the request that creates it (journaled at once)."""
        if not self.active:
            raise RuntimeError(f"{what}: a write outside a records scope (request the "
                               "'records' fixture in the check that writes)")
        with self._lock:
            self._seq += 1
            rec = Record(f"{os.getpid()}-{self._seq}", service, what, tag, find, delete,
                         check=check, settle=settle,
                         state="created" if delete else "pending")
            self.items.append(rec)
        self._log("add", rec, rec=asdict(rec))
        return rec

    def created(self, rec: Record, delete: str, check: str | None = None,
                what: str | None = None, method: str = "DELETE") -> None:
        """The answer named the record: how to remove it and where to see it gone."""
        rec.delete, rec.check, rec.method, rec.state = delete, check, method, "created"
        if what:
            rec.what = what
        self._log("id", rec, delete=delete, check=check, method=method, what=rec.what)

    def nothing_created(self, rec: Record, why: str) -> None:
        """The answer proves the request created nothing (refused, or never sent)."""
        rec.state, rec.note = "none", why
        self._log("none", rec, why=why)

    def kept(self, rec: Record, why: str) -> None:
        """Documented as not removable (e.g. a usage row): reported, never deleted."""
        rec.state, rec.note = "kept", why
        self._log("kept", rec, why=why)

    def create(self, rec: Record, send: Callable[[], Reply],
               template: dict[str, str] | None, url_of: Callable[[str], str], *,
               refusal: bool = False) -> Reply:
        """Send the request that creates ``rec`` (registered already) and learn from its
        answer what it created; a Ctrl-C waits until both are done."""
        with sigint_deferred():
            reply = send()
            self.answered(rec, reply, template, url_of, refusal=refusal)
        return reply

    def answered(self, rec: Record, reply: Reply, template: dict[str, str] | None,
                 url_of: Callable[[str], str], *, refusal: bool = False) -> None:
        """Learn from the create request's answer what was created.

        ``template`` is the API description's ``cleanup`` ({method, path} with
        ``{field}`` placeholders from the answer); ``url_of`` turns a path into
        the service's URL. ``refusal``: the request was sent to be refused, so
        an accepted one without a way to remove what it made is a problem, not
        a documented leftover.
        """
        if reply.status is None:
            if any(s in (reply.error or "") for s in NOT_SENT):
                self.nothing_created(rec, f"never sent: {reply.error}")
            else:
                rec.note = f"no answer ({reply.error})"
            return  # maybe created: removed by its tag, or reported
        if not 200 <= reply.status < 300:
            if rec.find is None:
                self.nothing_created(rec, f"answered {reply.status}")
            return  # a failed request may still have written: its tag removes it
        if not template:
            if refusal:
                rec.note = f"accepted with {reply.status} although sent to be refused"
            elif rec.find is None and rec.delete is None:
                self.kept(rec, "the API description documents no cleanup for it")
            return
        try:
            path = _fill_path(template["path"], reply.json())
        except (ValueError, KeyError) as exc:
            missing = f"field {exc}" if isinstance(exc, KeyError) else "JSON body"
            rec.note = f"created ({reply.status}) but the answer has no {missing} to remove it by"
            return
        method = template.get("method", "DELETE")
        self.created(rec, url_of(path), url_of(path) if method == "DELETE" else None,
                     what=f"{rec.service} {path}", method=method)

    # removal -----------------------------------------------------------------

    def open_records(self) -> list[Record]:
        with self._lock:
            return [r for r in self.items if r.open]

    def remove_all(self) -> list[tuple[Record, str]]:
        """Remove every open record (newest first); (record, problem) per record
        not removed.

        Each record is tried once, by the check that created it: one that could
        not be removed is reported there, stays "failed" in the journal (the next
        run's sweep retries it) and is never blamed on a later check.
        A Ctrl-C arriving meanwhile waits until every removal is done (each
        request is bounded by the HTTP timeout).
        """
        problems = []
        handled = self.open_records()
        with sigint_deferred():
            for rec in reversed(handled):
                problem = self.remove(rec)
                if problem:
                    problems.append((rec, problem))
        with self._lock:
            self.items = [r for r in self.items if r.open and r not in handled]
        return problems

    def remove(self, rec: Record) -> str | None:
        """Delete one record, check the DELETE's own status, verify it is gone."""
        if not rec.open:
            return None
        problem = remove_record(self.http, self.headers(), rec)
        rec.state = "failed" if problem else "removed"
        if problem:
            self._log("failed", rec, problem=problem)
        else:
            self._log("removed", rec)
        return problem


def remove_record(http: HttpProbe, headers: dict[str, str], rec: Record, *,
                  gone_ok: bool = False) -> str | None:
    """The removal itself: None when deleted and verified gone.

    ``gone_ok`` (the sweep): a 404 to the DELETE means done, since the run
    that created the record may have removed it without living to note it.
    """
    name = rec.what
    if rec.settle and rec.check:
        _settle(http, rec)
    if rec.delete:
        reply = http.request(rec.method, rec.delete, headers=headers)
        if reply.status is None:
            return f"{name}: {rec.method} {rec.delete} -> no answer: {reply.error}"
        if reply.status == 404 and not gone_ok:
            return (f"{name}: {rec.method} {rec.delete} -> 404 (already gone before its "
                    "DELETE: removed twice, or removed by someone else)")
        if not (200 <= reply.status < 300 or reply.status == 404):
            return f"{name}: {rec.method} {rec.delete} -> {reply.describe(120)}"
        if rec.check:
            seen = http.request("GET", rec.check, headers=headers)
            if not absent(seen):
                return (f"{name}: still there after {rec.method} {reply.status} "
                        f"(GET {rec.check} -> {seen.describe(100)})")
        return None
    if rec.find:
        reply = http.request("DELETE", rec.find, headers=headers)
        if reply.status != 200:
            return f"{name}: DELETE {rec.find} -> {reply.describe(120)}"
        again = http.request("DELETE", rec.find, headers=headers)
        left = deleted_count(again) if again.status == 200 else None
        if left != 0:
            return (f"{name}: still there after DELETE by its tag {rec.tag} (a second "
                    f"DELETE {rec.find} -> {again.describe(100)})")
        return None
    return (f"{name}: {rec.note or 'may have been created'}; cannot be removed: no id to "
            "DELETE it by, and the service has no removal by tag"
            + (f" (it carries the tag {rec.tag})" if rec.tag else ""))


def _settle(http: HttpProbe, rec: Record) -> None:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline and rec.check:
        reply = http.request("GET", rec.check)
        try:
            if reply.status != 200 or reply.json().get("status") != "processing":
                return
        except (ValueError, AttributeError):
            return
        time.sleep(0.2)


def _fill_path(template: str, data: Any) -> str:
    import re

    return re.sub(r"\{(\w+)\}", lambda m: quote(str(dig(data, m.group(1))), safe=""), template)


# --------------------------------------------------------------------------- sweep


@dataclass
class RunState:
    """What the journals say about one run."""

    run_id: str
    dir: Path
    finished: bool
    target: str | None = None
    procs: int = 0  # liveness markers found
    alive: list[str] = field(default_factory=list)  # "pid 123 on host (heartbeat 4 s ago)"
    open: list[Record] = field(default_factory=list)  # records not removed (yet)

    @property
    def in_progress(self) -> bool:
        """Not finished and a process of it still runs here (or on a host we cannot see).

        A run directory without any marker is being created right now: in progress.
        """
        return not self.finished and (bool(self.alive) or self.procs == 0)


def _replay(path: Path, records: dict[str, Record], state: RunState, host: str) -> None:
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            return
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        kind = ev.get("ev")
        if kind == "proc":
            state.procs += 1
            state.target = ev.get("target")
            where = f"on {ev.get('host')}, heartbeat {time.time() - st.st_mtime:.0f} s ago"
            if ev.get("host") != host:
                state.alive.append(f"pid {ev.get('pid')} {where} (another host: "
                                   "its liveness cannot be checked from here)")
            elif pid_alive(int(ev.get("pid") or 0), ev.get("start")):
                state.alive.append(f"pid {ev.get('pid')} {where}")
            elif ev.get("ppid") and pid_alive(int(ev["ppid"]), ev.get("pstart")):
                state.alive.append(f"controller pid {ev['ppid']} {where}")
        elif kind == "add":
            raw = ev.get("rec") or {}
            rec = Record(**{k: raw[k] for k in Record.__dataclass_fields__ if k in raw})
            records[rec.key] = rec
        elif ev.get("key") in records:
            rec = records[ev["key"]]
            if kind == "id":
                rec.delete, rec.check = ev.get("delete"), ev.get("check")
                rec.method, rec.state = ev.get("method") or "DELETE", "created"
                rec.what = ev.get("what") or rec.what
            elif kind in ("none", "removed", "kept", "given-up"):
                rec.state = kind
            elif kind == "failed":
                rec.state, rec.note = "failed", ev.get("problem", "")


def read_run(run_dir: Path) -> RunState:
    """Replay a run's journals: its records' last states, and whether it still runs."""
    state = RunState(unquote(run_dir.name[len("run-"):]), run_dir,
                     (run_dir / "finished").exists())
    records: dict[str, Record] = {}
    host = socket.gethostname()
    # Its own journals first, then what sweeps noted about it.
    for pattern in ("proc-*.jsonl", "sweep-*.jsonl"):
        for path in sorted(run_dir.glob(pattern)):
            _replay(path, records, state, host)
    state.open = [r for r in records.values() if r.open]
    return state


def runs(base: Path) -> list[RunState]:
    """Every run with a journal directory in ``base``."""
    return [read_run(p) for p in sorted(base.glob("run-*"))
            if p.is_dir() and not p.is_symlink()]


def sweep(http: HttpProbe, headers: dict[str, str], this_run: str, target_key: str,
          base: Path | None = None) -> dict[str, Any]:
    """Remove what finished or abandoned runs against this target left (by their journals).

    A run is swept when it is marked finished, or when none of its processes
    lives any more on this host; a run in progress is never touched, whatever
    its age, nor a run against another target. Only the records a run's
    journal lists are removed, each by its own id (or by the tag unique to
    it): no run tag is ever matched as a prefix or substring. A record that
    cannot be removed at all (its id never arrived, the service has no removal
    by tag) is reported once and then given up. Serialised by a lock file.

    Returns {"removed": [...], "failures": [...], "in_progress": [...],
    "other_targets": n}.
    """
    base = base or records_dir()
    out: dict[str, Any] = {"removed": [], "failures": [], "in_progress": [],
                           "other_targets": 0}
    lock = os.open(base / ".sweep.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for run in runs(base):
            if run.run_id == this_run:
                continue
            if run.in_progress:
                out["in_progress"].append(f"{run.run_id}: "
                                          f"{run.alive[0] if run.alive else 'starting'}")
                continue
            if run.target not in (None, target_key):
                out["other_targets"] += 1
                continue
            notes = Journal(run.run_id, target_key, base, kind="sweep") if run.open else None
            failed = False
            for rec in reversed(run.open):
                problem = remove_record(http, headers, rec, gone_ok=True)
                if problem is None:
                    out["removed"].append(f"run {run.run_id}: {rec.what}")
                    notes.write({"ev": "removed", "key": rec.key})  # type: ignore[union-attr]
                    continue
                out["failures"].append(f"run {run.run_id}: {problem}")
                if rec.delete or rec.find:
                    failed = True  # retried by the next sweep
                    notes.write({"ev": "failed", "key": rec.key,  # type: ignore[union-attr]
                                 "problem": problem})
                else:
                    notes.write({"ev": "given-up", "key": rec.key})  # type: ignore[union-attr]
            if not failed:
                _forget(run.dir)
    finally:
        os.close(lock)
    return out


def _forget(run_dir: Path) -> None:
    for p in run_dir.iterdir():
        with contextlib.suppress(OSError):
            p.unlink()
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def leftovers(this_run: str, target_key: str, base: Path | None = None) -> list[str]:
    """Open records of finished or abandoned runs against this target (to report)."""
    base = base or records_dir()
    return [f"run {r.run_id}: {rec.what}" for r in runs(base)
            if r.run_id != this_run and not r.in_progress
            and r.target in (None, target_key) for rec in r.open]


def mark_finished(run_id: str) -> None:
    """Record that ``run_id`` ended (best effort; only a run that journaled anything).

    A finished run whose records are all removed leaves nothing behind; one
    with open records keeps its journal, marked finished, for the next sweep.
    """
    try:
        base = records_dir(create=False)
    except RecordsDirError:
        return
    run_dir = base / run_dir_name(run_id)
    if not run_dir.is_dir() or run_dir.is_symlink():
        return
    if not read_run(run_dir).open:
        _forget(run_dir)
        return
    with contextlib.suppress(OSError):
        (run_dir / "finished").touch(mode=0o600)
