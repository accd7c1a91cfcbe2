"""Every failure in the same shape: undiagnosed errors, suite bugs, the last-resort timeout.

A check or fixture that fails through :func:`~bizosaas_acceptance.outcome.fail`
is diagnosed where it fails. Everything else is turned into the same shape here
(summary, ``expected:``, ``seen:``, ``cause:``, ``next:``), so that no report
ever carries a raw traceback, a dump of fixture locals or a model object's repr:

- a transport error nobody wrapped (a client call timing out or refused) is
  diagnosed as ``[TIMEOUT]``/``[CONNECT]``, naming the call it was waiting on
  (the innermost line of the suite's own code);
- anything else is a **bug in the acceptance suite (not the target)**, category
  ``Suite Bug``, with a short traceback (file, line, function, source line; no
  locals, no arguments) of the suite's own frames;
- pytest-timeout firing is a bug in our bounding: :func:`set_timer` takes over
  its signal timer and reports what the check was waiting on.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import sys
import sysconfig
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from bizosaas_acceptance.outcome import (
    Cause,
    Diagnosed,
    NoAnswer,
    describe_error,
    in_flight,
    is_timeout,
    is_transport,
    message,
    short,
)
from bizosaas_acceptance.state import SETTINGS

#: Where the suite's own code lives: the package and, beside it in a checkout,
#: the fixtures and the suites.
PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
OWN_DIRS = (PACKAGE_DIR, CHECKOUT_DIR / "fixtures", CHECKOUT_DIR / "tests")
#: Frames of these are the test runner's, never worth showing.
_RUNNER_PARTS = ("/_pytest/", "/pluggy/", "/xdist/", "/execnet/", "pytest_timeout.py")
#: Frames shown in a suite bug's traceback (innermost ones).
MAX_FRAMES = 8

# A repr of one of our objects: ``Service(key='x', ...`` or ``<Foo object at 0x7f..>``.
_OBJECT_AT = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")
_DATACLASS_REPR = re.compile(r"\b([A-Z]\w*)\((?=\w+=)")
#: Library code: never the suite's own frames.
_LIBRARY_DIRS = tuple(str(Path(p).resolve()) for p in {
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
    sysconfig.get_paths()["platlib"]})


def _own_dataclasses() -> set[str]:
    """Names of the dataclasses defined by the suite's own modules (loaded so far)."""
    names = set()
    for mod in list(sys.modules.values()):
        path = getattr(mod, "__file__", None)
        if not path or not _own(path):
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) \
                    and obj.__module__ == mod.__name__:
                names.add(obj.__name__)
    return names


def without_reprs(text: str) -> str:
    """``text`` with reprs of our objects cut to their type: ``Service(…)``, ``<HttpProbe>``.

    A repr of a model object carries every field (and a label that equals a
    secret would be masked into nonsense): messages name things by their key.
    Reprs of library objects (``HTTPConnectionPool(host=..., port=...)``) stay:
    they name the address.
    """
    text = _OBJECT_AT.sub(lambda m: f"<{m.group(1).rsplit('.', 1)[-1]}>", text)
    ours = _own_dataclasses()
    out, i = [], 0
    for m in _DATACLASS_REPR.finditer(text):
        if m.start() < i or m.group(1) not in ours:
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        out.append(text[i:m.start()] + f"{m.group(1)}(…)")
        i = j
    out.append(text[i:])
    return "".join(out)


def _own(filename: str) -> bool:
    """A file of the suite (or of checks beside it), not the runner's, a library's or
    Python's own."""
    if filename.startswith("<") or any(p in filename for p in _RUNNER_PARTS):
        return False
    path = str(Path(filename).resolve())
    if any(path.startswith(str(d)) for d in OWN_DIRS):
        return True
    return not any(path.startswith(d) for d in _LIBRARY_DIRS)


def _display(filename: str) -> str:
    """A path relative to the checkout (or the working directory) where it lies inside."""
    path = Path(filename)
    for base in (CHECKOUT_DIR, Path.cwd()):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return filename


def _frames(summary: traceback.StackSummary) -> list[traceback.FrameSummary]:
    """The suite's own frames, and the innermost frame wherever it is."""
    frames = list(summary)
    keep = [f for f in frames if _own(f.filename)]
    if frames and (not keep or keep[-1] is not frames[-1]):
        keep.append(frames[-1])
    return keep


def short_stack(summary: traceback.StackSummary, limit: int = MAX_FRAMES) -> list[str]:
    """``path:line in function`` plus the source line, innermost last; no locals."""
    lines = []
    for f in _frames(summary)[-limit:]:
        lines.append(f"    {_display(f.filename)}:{f.lineno} in {f.name}")
        if f.line:
            lines.append(f"      {without_reprs(f.line.strip())[:160]}")
    return lines


def innermost_own(summary: traceback.StackSummary) -> traceback.FrameSummary | None:
    """The innermost frame of the suite's own code (where it called out)."""
    own = [f for f in summary if _own(f.filename)]
    return own[-1] if own else None


def _where(f: traceback.FrameSummary | None) -> str:
    if f is None:
        return "an unknown call"
    code = f" `{without_reprs(f.line.strip())[:140]}`" if f.line else ""
    return f"{_display(f.filename)}:{f.lineno} in {f.name}{code}"


def is_own_item(item: pytest.Item) -> bool:
    """A check of this suite (its modules in tests/), not a foreign test module."""
    path = Path(str(item.path)).resolve()
    return any(path.is_relative_to(d) for d in (
        CHECKOUT_DIR / "tests", item.config.rootpath / "tests"))


def _rerun(item: pytest.Item, bug: bool = True) -> str:
    if bug:
        return f"pytest '{item.nodeid}' -p no:xdist  # reproduce, then report it with this message"
    return f"pytest '{item.nodeid}' -p no:xdist  # ask again once the call above answers"


# --------------------------------------------------------------------------- after the fact


def _pytest_timeout_fired(exc: BaseException) -> bool:
    return (isinstance(exc, pytest.fail.Exception) and not isinstance(exc, Diagnosed)
            and "from pytest-timeout" in str(exc))


def diagnose(item: pytest.Item, when: str, excinfo: pytest.ExceptionInfo[BaseException]
             ) -> Diagnosed | None:
    """The diagnosed form of a failure that was not diagnosed where it happened.

    None when the failure is left as it is (a foreign module's own assertion).
    """
    exc = excinfo.value
    if isinstance(exc, NoAnswer):
        return exc.diagnosed  # diagnosed where it happened, naming the request
    tb = traceback.extract_tb(exc.__traceback__)
    phase = {"setup": "setup", "call": "the check", "teardown": "teardown"}.get(when, when)
    if _pytest_timeout_fired(exc):
        return timeout_failure(item, _timeout_of(exc), tb, waited=None)
    if is_transport(exc):
        where = innermost_own(tb)
        timed_out = is_timeout(exc)
        return Diagnosed(message(
            f"[{'TIMEOUT' if timed_out else 'CONNECT'}] {phase} of {item.name}: "
            f"{'no answer in time to' if timed_out else 'connection failed for'} "
            f"{_where(where)}",
            expected="an answer within the suite's timeouts (--http-timeout, "
                     "--connect-timeout)",
            seen=without_reprs(describe_error(exc)),
            cause=Cause.SLOW if timed_out else Cause.NETWORK,
            why="the target did not answer this call in time" if timed_out
            else "the connection failed or was lost",
            next_cmd=_rerun(item, bug=False)), Cause.SLOW if timed_out else Cause.NETWORK)
    if not is_own_item(item):
        return None
    first = (str(exc).strip().splitlines() or [""])[0]
    text = without_reprs(f"{type(exc).__name__}: {short(first, 200)}" if first
                         else type(exc).__name__)
    lines = message(
        f"[SUITE BUG] bug in the acceptance suite (not the target): {text} "
        f"(in {phase} of {item.name})",
        expected="the acceptance suite's own code to run without errors",
        seen=text, cause=Cause.SUITE_BUG,
        why="an error in the suite's code, not a finding about the target; "
            "this check did not judge the target",
        next_cmd=_rerun(item))
    stack = short_stack(tb)
    if stack:
        lines += "\n  traceback (suite bug, innermost last):\n" + "\n".join(stack)
    return Diagnosed(message_masked(lines), Cause.SUITE_BUG)


def message_masked(text: str) -> str:
    from bizosaas_acceptance.secrets import MASKER

    return MASKER.mask(text)


def value_repr(exc: Diagnosed) -> Any:
    """A report's longrepr for ``exc``: its message only (no traceback, locals, arguments)."""
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - only ever exc itself (any copy of its class)
        info = pytest.ExceptionInfo.from_current()
    return info.getrepr(style="value", showlocals=False, funcargs=False, chain=False)


def short_repr(excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
    """A foreign failure's longrepr: short traceback, never locals or arguments."""
    return excinfo.getrepr(style="short", showlocals=False, funcargs=False, chain=False)


# --------------------------------------------------------------------------- the timer


def _timeout_of(exc: BaseException) -> float | None:
    m = re.search(r"Timeout \(>([0-9.]+)s\)", str(exc))
    return float(m.group(1)) if m else None


def _http_in_flight(frame: FrameType | None) -> str | None:
    """``GET http://...`` when the frame stack is inside HttpProbe.request."""
    while frame is not None:
        if frame.f_code.co_name == "request":
            loc = frame.f_locals
            owner = type(loc.get("self")).__name__
            if owner == "HttpProbe" and "method" in loc and "url" in loc:
                return f"{loc['method']} {loc['url']}"
        frame = frame.f_back
    return None


def timeout_failure(item: pytest.Item, limit: float | None,
                    tb: traceback.StackSummary, *, waited: str | None,
                    since: float | None = None) -> Diagnosed:
    """pytest-timeout's guard fired: a bug in our bounding, naming what it waited on."""
    settings = item.config.stash.get(SETTINGS, {})
    http_t, conn_t = settings.get("http_timeout"), settings.get("connect_timeout")
    where = innermost_own(tb)
    seen = (f"still waiting on {waited}" + (f" after {since:.1f}s" if since is not None else "")
            if waited else "still running")
    seen += f"; at {_where(where)}"
    text = message(
        f"[TIMEOUT] bug in the acceptance suite (not the target): {item.name} ran past "
        f"pytest-timeout's last-resort {limit or '?'} s",
        expected=f"every request bounded by --http-timeout ({http_t} s) or "
                 f"--connect-timeout ({conn_t} s), so the check ends well before the guard",
        seen=without_reprs(seen), cause=Cause.SUITE_BUG,
        why="a call without a deadline, or a loop without an overall bound, in the suite; "
            "the target is slow but the suite should have said so itself",
        next_cmd=_rerun(item))
    stack = short_stack(tb)
    if stack:
        text += "\n  stack (suite bug, innermost last):\n" + "\n".join(stack)
    return Diagnosed(message_masked(text), Cause.SUITE_BUG)


def set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's signal timer, reporting a bug in our bounding when it fires.

    Only the signal method in the main thread is taken over (it can raise in
    the check); otherwise None lets pytest-timeout do its own thing (the thread
    method dumps stacks and ends the process; the gate counts the crash).
    """
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None
    started = time.monotonic()

    def handler(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        try:
            from pytest_timeout import is_debugging
        except ImportError:  # pragma: no cover - the hook comes from pytest-timeout
            is_debugging = None  # type: ignore[assignment]
        if is_debugging and not settings.disable_debugger_detection and is_debugging():
            return
        pending = in_flight(threading.main_thread().ident)
        waited, since = None, None
        if pending:
            waited, t0, _ = pending[-1]
            since = time.monotonic() - t0
        waited = _http_in_flight(frame) or waited
        tb = traceback.extract_stack(frame) if frame is not None else traceback.StackSummary()
        raise timeout_failure(item, settings.timeout, tb, waited=waited,
                              since=since if since is not None else
                              time.monotonic() - started)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined] - pytest-timeout's contract
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True
