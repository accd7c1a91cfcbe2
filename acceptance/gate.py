"""The pass-rate gate: count every check once, decide one verdict, set the exit status.

Rules (SPEC §3):

- Every check (test node id) is counted once. It *passed* when its call passed
  and neither setup nor teardown failed. A failure in setup or teardown is an
  *error*: reported apart from failures, but counted against the pass rate (a
  fixture that cannot connect is a failure, not a skip).
- Skipped and xfailed checks are reported, not counted. A non-strict xpass
  counts as passed; a strict xpass is reported failed by pytest and counts so.
- ``pass rate = passed / (passed + failed + errors) * 100``. The gate passes
  when the pass rate is *strictly* greater than the threshold and, when
  critical checks are enforced, no check labelled critical failed or errored.
- No counted check at all is a FAIL ("no checks ran"), never a silent pass.
  This deliberately turns pytest's exit status 5 (nothing collected) into 1:
  a gate that selected nothing has verified nothing.
- Usage errors (4), interruptions (2) and internal errors (3) keep pytest's
  exit status; the verdict is still recorded (as FAIL, "run incomplete") when
  any outcome was recorded.

The verdict is computed once, at the start of ``pytest_sessionfinish``, and the
terminal line, the HTML summary, gate.json, JUnit properties and the exit
status all read that one :class:`Verdict`.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from acceptance import report as reports
from acceptance.plugin import RUN_ID, SETTINGS, report_labels

#: Every outcome a check can end with.
OUTCOMES: tuple[str, ...] = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
#: Outcomes that count against the pass rate.
FAILING: frozenset[str] = frozenset({"failed", "error"})
#: Longest message kept per check (reports stay readable; tracebacks are in the HTML).
MAX_MESSAGE = 2000

VERDICT = pytest.StashKey["Verdict"]()

# Exit statuses the gate owns; everything else (2, 3, 4, plugin codes) is left alone.
_GATE_OWNS = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)


@dataclass(frozen=True)
class Check:
    """The final outcome of one check (test node id), as reported and counted."""

    nodeid: str
    suite: str
    service: str
    critical: bool
    outcome: str  # one of OUTCOMES
    duration: float = 0.0  # seconds, all phases
    message: str = ""
    category: str | None = None  # text of a "cause:" line in the message

    @property
    def counted(self) -> bool:
        return self.outcome not in ("skipped", "xfailed")

    @property
    def ok(self) -> bool:
        return self.outcome in ("passed", "xpassed")


@dataclass
class _Entry:
    """A check while its phases are still arriving."""

    suite: str
    service: str
    critical: bool
    outcome: str | None = None
    duration: float = 0.0
    message: str = ""


def _phase_outcome(report: pytest.TestReport) -> str | None:
    """What one phase says about its check; None when it says nothing (a passed setup)."""
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if report.passed:
            return "xpassed" if xfail else "passed"
        if report.failed:
            return "failed"  # includes strict xpass: pytest reports it failed
        return "xfailed" if xfail else "skipped"
    if report.failed:
        return "error"
    if report.skipped:
        return "xfailed" if xfail else "skipped"
    return None


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def report_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The crash message of a failure, the reason of a skip or xfail, else ''."""
    if hasattr(report, "wasxfail") and not report.failed:
        return _clip(str(report.wasxfail or "expected failure"))
    longrepr = report.longrepr
    if report.skipped:
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            return _clip(str(longrepr[2]).removeprefix("Skipped: "))
        return _clip(str(longrepr or "skipped"))
    if report.failed:
        crash = getattr(longrepr, "reprcrash", None)
        if crash is not None and getattr(crash, "message", ""):
            return _clip(crash.message)
        # No structured crash (e.g. strict xpass, xdist worker crash): the first lines.
        lines = report.longreprtext.strip().splitlines()
        return _clip("\n".join(lines[:15]))
    return ""


def message_category(message: str) -> str | None:
    """The category of a ``cause: <category> — <detail>`` line, if the message has one."""
    for line in message.splitlines():
        line = line.strip()
        if line.lower().startswith("cause:"):
            text = line[len("cause:"):].split(" — ", 1)[0].strip()
            return text or None
    return None


class Tally:
    """Per-nodeid outcome bookkeeping; every check ends up with exactly one outcome."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def record(self, report: pytest.TestReport) -> None:
        """Fold one phase report (setup, call or teardown) into its check."""
        if report.outcome == "rerun":  # pytest-rerunfailures: a retried attempt, not final
            return
        entry = self._entries.get(report.nodeid)
        if entry is None or report.when == "setup":
            # A setup report starts a (possibly repeated) attempt afresh.
            suite, service, critical = report_labels(report)
            entry = self._entries[report.nodeid] = _Entry(suite, service, critical)
        entry.duration += report.duration or 0.0
        new = _phase_outcome(report)
        if new is None:
            return
        # The first failure wins (a failed call keeps "failed" even if teardown errs
        # too); any failure overrides an earlier pass or skip (teardown error → error).
        if entry.outcome is None or (entry.outcome not in FAILING and new in FAILING):
            entry.outcome = new
            entry.message = report_message(report)

    def record_collect_error(self, report: pytest.CollectReport) -> None:
        """A module that cannot be collected is an error: its checks never ran."""
        self._entries.setdefault(
            report.nodeid,
            _Entry("other", "-", False, "error", 0.0, report_message(report)),
        )

    def put(self, check: Check) -> None:
        """Record a finished check directly (for other plugins and for tests)."""
        self._entries[check.nodeid] = _Entry(
            check.suite, check.service, check.critical, check.outcome, check.duration,
            check.message,
        )

    def checks(self) -> list[Check]:
        """All checks, sorted by node id (stable across ``-n 0`` and ``-n N``)."""
        out = []
        for nodeid, e in sorted(self._entries.items()):
            # Only passed phases and no call (e.g. --setup-only): nothing was checked.
            outcome = e.outcome or "skipped"
            message = e.message if e.outcome else "no call phase ran"
            out.append(Check(nodeid, e.suite, e.service, e.critical, outcome, e.duration,
                             message, message_category(message)))
        return out

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and the numbers behind it.

    ``passed`` includes non-strict xpasses (also counted in ``xpassed``);
    ``skipped`` excludes xfails (counted in ``xfailed``); ``total`` is the number
    of counted checks, ``passed + failed + errors``. ``pass_rate`` is None when
    nothing was counted.
    """

    verdict: str  # "PASS" or "FAIL"
    pass_rate: float | None
    threshold: float
    passed: int
    failed: int
    errors: int
    skipped: int
    xfailed: int
    xpassed: int
    total: int
    critical_failures: tuple[str, ...] = ()
    critical_enforced: bool = True
    reasons: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.verdict == "PASS"

    def line(self) -> str:
        """The one terminal line: verdict, rate vs threshold, counts, critical failures."""
        if self.pass_rate is None:
            rate = "no checks ran"
        else:
            op = ">" if self.pass_rate > self.threshold else "<="
            rate = (f"pass rate {format_rate(self.pass_rate, self.threshold)} {op} "
                    f"{format_rate(self.threshold)}")
        counts = (f"{self.passed} passed, {self.failed} failed, {self.errors} errors, "
                  f"{self.skipped} skipped")
        if self.xfailed:
            counts += f", {self.xfailed} xfailed"
        crit = "none"
        if self.critical_failures:
            shown = ", ".join(self.critical_failures[:3])
            more = len(self.critical_failures) - 3
            crit = f"{len(self.critical_failures)} ({shown}{f', +{more} more' if more > 0 else ''})"
            if not self.critical_enforced:
                crit += " [not enforced]"
        text = f"bizosaas gate: {self.verdict}  {rate}  ({counts})  critical failures: {crit}"
        extra = [r for r in self.reasons if r.startswith("run incomplete")]
        return text + ("  " + "; ".join(extra) if extra else "")


def format_rate(rate: float, other: float | None = None) -> str:
    """``95.0%``; more digits when one decimal would make ``rate`` look equal to ``other``."""
    for digits in (1, 2, 3, 4):
        text = f"{rate:.{digits}f}"
        if other is None or rate == other or text != f"{other:.{digits}f}":
            return text + "%"
    return f"{rate}%"


def decide(
    tally: Tally | Iterable[Check],
    threshold: float,
    critical_enforced: bool,
    *,
    incomplete: str | None = None,
) -> Verdict:
    """Decide the verdict from the recorded checks (pure; same input, same verdict).

    ``incomplete`` names why the run did not finish normally (interrupted, usage
    error, stopped early); such a run cannot pass, whatever its pass rate.
    """
    checks = tally.checks() if isinstance(tally, Tally) else list(tally)
    n = {o: 0 for o in OUTCOMES}
    for c in checks:
        n[c.outcome] += 1
    passed = n["passed"] + n["xpassed"]
    total = passed + n["failed"] + n["error"]
    rate = passed / total * 100 if total else None
    critical = tuple(c.nodeid for c in checks if c.critical and c.outcome in FAILING)

    reasons: list[str] = []
    if rate is None:
        reasons.append("no checks ran: nothing was collected, selected or counted "
                       "(skips and xfails are not counted)")
    elif not rate > threshold:
        reasons.append(f"pass rate {format_rate(rate, threshold)} is not above the "
                       f"threshold {format_rate(threshold)}")
    if critical and critical_enforced:
        reasons.append(f"{len(critical)} critical check(s) failed")
    if incomplete:
        reasons.append(f"run incomplete: {incomplete}")
    return Verdict(
        verdict="FAIL" if reasons else "PASS",
        pass_rate=rate,
        threshold=threshold,
        passed=passed,
        failed=n["failed"],
        errors=n["error"],
        skipped=n["skipped"],
        xfailed=n["xfailed"],
        xpassed=n["xpassed"],
        total=total,
        critical_failures=critical,
        critical_enforced=critical_enforced,
        reasons=tuple(reasons),
    )


def _incomplete(session: pytest.Session, exitstatus: int) -> str | None:
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        return "interrupted (exit status 2)"
    if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
        return "internal error (exit status 3)"
    if exitstatus == pytest.ExitCode.USAGE_ERROR:
        return "usage error (exit status 4)"
    stopped = session.shouldfail or session.shouldstop
    if stopped:
        return f"stopped early ({stopped})"
    return None


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class GatePlugin:
    """Counts outcomes and decides the verdict; registered on the controller only."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        settings = config.stash[SETTINGS]
        self.threshold: float = float(settings["gate_threshold"])
        self.critical_enforced: bool = bool(settings["gate_critical"])
        self.json_path: Path = self._resolve_path(str(settings["gate_json"]))
        self.tally = Tally()
        self.started: str = _utc_now()
        self._t0 = time.monotonic()
        self.exit_status: int | None = None
        self.json_written = False

    def _resolve_path(self, raw: str) -> Path:
        # Relative to where pytest was invoked, like --html and --junitxml.
        path = Path(os.path.expandvars(raw)).expanduser()
        return path if path.is_absolute() else self.config.invocation_params.dir / path

    # -- what other parts read ------------------------------------------------------

    @property
    def verdict(self) -> Verdict | None:
        """The final verdict, once the session is finishing."""
        return self.config.stash.get(VERDICT, None)

    def current_verdict(self) -> Verdict:
        """The final verdict if decided, else one computed now from the tally."""
        frozen = self.verdict
        if frozen is not None:
            return frozen
        return decide(self.tally, self.threshold, self.critical_enforced)

    @property
    def active(self) -> bool:
        # --collect-only runs nothing: the gate has nothing to say about it.
        return not self.config.option.collectonly

    # -- hooks ----------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.started = _utc_now()
        self._t0 = time.monotonic()
        reports.scrub_metadata(self.config)
        # pytest-html registers itself in its own pytest_configure, possibly after
        # ours, so look for it only now; its hooks run at its trylast sessionstart.
        if self.config.pluginmanager.hasplugin("html"):
            self.config.pluginmanager.register(reports.HtmlReport(self), "bizosaas-gate-html")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # With xdist this fires on the controller for every worker's reports.
        self.tally.record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.tally.record_collect_error(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Freeze the verdict before pytest-html, JUnit and our own writer read it."""
        if not self.active:
            return
        verdict = decide(self.tally, self.threshold, self.critical_enforced,
                         incomplete=_incomplete(session, exitstatus))
        self.config.stash[VERDICT] = verdict
        reports.add_junit_properties(self.config, verdict)

    @pytest.hookimpl(trylast=True, specname="pytest_sessionfinish")
    def pytest_sessionfinish_exit_status(self, session: pytest.Session, exitstatus: int) -> None:
        """Set the exit status from the verdict, write gate.json, announce the verdict."""
        verdict = self.verdict
        if verdict is None:
            return
        if exitstatus in _GATE_OWNS:
            session.exitstatus = pytest.ExitCode.OK if verdict.ok else pytest.ExitCode.TESTS_FAILED
        self.exit_status = int(session.exitstatus)
        if exitstatus in _GATE_OWNS or len(self.tally):
            data = reports.gate_document(
                verdict, self.tally.checks(),
                run_id=self.config.stash.get(RUN_ID, ""),
                started=self.started, finished=_utc_now(),
                duration_s=time.monotonic() - self._t0,
                exit_status=self.exit_status,
            )
            self.config.hook.pytest_bizosaas_gate_json(config=self.config, data=data)
            reports.write_json(self.json_path, data)
            self.json_written = True
        self.config.hook.pytest_bizosaas_verdict(config=self.config, verdict=verdict)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.json_written:
            terminalreporter.write_sep("-", f"bizosaas gate verdict: {self.json_path}")

    @pytest.hookimpl(wrapper=True, tryfirst=True, specname="pytest_terminal_summary")
    def pytest_terminal_summary_verdict(self, terminalreporter: Any) -> Generator[None, None, None]:
        """Print the one verdict line, after everything else pytest summarises."""
        # Outermost wrapper: the line comes after the short test summary, right
        # before pytest's final "N passed in Xs" line.
        result = yield
        verdict = self.verdict
        if verdict is not None:
            terminalreporter.write_line(verdict.line(), green=verdict.ok, red=not verdict.ok,
                                        bold=True)
        return result
