"""The pass-rate gate: count every check once, reconcile, decide one verdict.

Rules (SPEC §3):

- Every check (test node id) is counted once. It *passed* when its call passed
  and neither setup nor teardown failed. A failure in setup or teardown is an
  *error*: reported apart from failures, but counted against the pass rate (a
  fixture that cannot connect is a failure, not a skip).
- Skipped and xfailed checks are reported, not counted. A non-strict xpass
  counts as passed; a strict xpass is reported failed by pytest and counts so.
- The gate accounts for every check it expected. A check that was collected
  but never reported (worker crash, ``-x``/``--maxfail``, Ctrl-C, a run stopped
  by collection errors) is *not run*: counted, and failing. A test module that
  could not be collected is a *load error*: its suite "did not load", counted
  as a failing check and always failing the gate, whatever the rate.
- ``pass rate = passed / (passed + failed + errors + not run) * 100``. The gate
  passes when the pass rate is *strictly* greater than the threshold (a
  threshold of 100 means every check passes) and, when critical checks are
  enforced, no check labelled critical failed or errored.
- No counted check at all is a FAIL ("no checks ran"), never a silent pass.

This module is pure bookkeeping: it imports no renderer and sets no exit
status (see :mod:`bizosaas_acceptance.controller`). The :class:`Summary` it
computes (verdict, checks, per-suite, per-service, matrix) is counted once
and read by every renderer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bizosaas_acceptance.labels import SUITES, module_suite, report_labels
from bizosaas_acceptance.outcome import CAUSE_PROPERTY
from bizosaas_acceptance.secrets import clip

#: Every outcome a check can end with.
OUTCOMES: tuple[str, ...] = ("passed", "failed", "error", "skipped", "xfailed", "xpassed",
                             "not_run")
#: Outcomes that count against the pass rate.
FAILING: frozenset[str] = frozenset({"failed", "error", "not_run"})
#: The category of a check the run expected and never heard from.
NOT_RUN = "Not Run"
#: The category of a test module that could not be collected.
LOAD_ERROR = "Suite Did Not Load"
#: Longest message kept per check (reports stay readable; tracebacks are in the HTML).
MAX_MESSAGE = 2000


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
    category: str | None = None  # the cause, carried as data (outcome.Diagnosed)

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
    category: str | None = None


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
    """Masked first, then cut (a cut secret would no longer match its value)."""
    return clip(text.strip(), limit, "…")


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


def report_cause(report: pytest.TestReport) -> str | None:
    """The category a diagnosed failure put on its report (see outcome.Diagnosed)."""
    for name, value in getattr(report, "user_properties", ()):
        if name == CAUSE_PROPERTY:
            return str(value)
    return None


def load_error_message(report: pytest.CollectReport) -> str:
    """``ImportError: No module named 'x'`` from a collection error's long text."""
    text = report.longreprtext or ""
    errs = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    if errs:
        return errs[-1]
    return report_message(report).splitlines()[0] if report_message(report) else "error"


class Tally:
    """Per-nodeid outcome bookkeeping; every check ends up with exactly one outcome.

    Besides what reported, it keeps what was *expected* (the collected node ids)
    and which modules failed to load, so that :meth:`checks` accounts for every
    check: one that never reported comes back as ``not_run``.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._expected: dict[str, tuple[str, str, bool]] = {}
        self._load_errors: dict[str, _Entry] = {}
        #: Why checks may not have reported (set by the controller at finish).
        self.stopped: str | None = None

    def expect(self, nodeids: Iterable[str],
               labels: dict[str, tuple[str, str, bool]] | None = None) -> None:
        """Remember the checks this run collected (after deselection)."""
        labels = labels or {}
        for nodeid in nodeids:
            if nodeid not in self._expected:
                suite = module_suite(nodeid) or "other"
                self._expected[nodeid] = labels.get(nodeid, (suite, "-", False))

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
            entry.category = report_cause(report)

    def record_collect_error(self, report: pytest.CollectReport) -> None:
        """A module that cannot be collected: its suite did not load."""
        if report.nodeid in self._load_errors:
            return  # xdist: every worker reports the same error
        suite = module_suite(report.nodeid) or "other"
        what = f"suite {suite}" if suite in SUITES else f"module {report.nodeid or '(root)'}"
        message = (f"{what} did not load: {load_error_message(report)} "
                   f"(its checks did not run)\n  next:     python -m pytest --collect-only -q "
                   f"{report.nodeid}")
        self._load_errors[report.nodeid] = _Entry(suite, "-", False, "error", 0.0,
                                                  _clip(message), LOAD_ERROR)

    @property
    def load_errors(self) -> list[str]:
        """Node ids of the modules that failed to load."""
        return sorted(self._load_errors)

    def put(self, check: Check) -> None:
        """Record a finished check directly (for other plugins and for tests)."""
        self._entries[check.nodeid] = _Entry(
            check.suite, check.service, check.critical, check.outcome, check.duration,
            check.message, check.category,
        )

    def checks(self) -> list[Check]:
        """All checks, sorted by node id (stable across ``-n 0`` and ``-n N``).

        Expected checks that never reported are ``not_run``; modules that did not
        load are one failing check each.
        """
        out = []
        for nodeid, e in sorted(self._entries.items()):
            # Only passed phases and no call (e.g. --setup-only): nothing was checked.
            outcome = e.outcome or "skipped"
            message = e.message if e.outcome else "no call phase ran"
            out.append(Check(nodeid, e.suite, e.service, e.critical, outcome, e.duration,
                             message, e.category))
        why = self.stopped or "its report never arrived (an xdist worker died?)"
        for nodeid, (suite, service, critical) in sorted(self._expected.items()):
            if nodeid not in self._entries:
                out.append(Check(nodeid, suite, service, critical, "not_run", 0.0,
                                 f"not run: the run ended before this check reported ({why})",
                                 NOT_RUN))
        for nodeid, e in sorted(self._load_errors.items()):
            out.append(Check(nodeid, e.suite, e.service, e.critical, "error", 0.0, e.message,
                             e.category))
        out.sort(key=lambda c: c.nodeid)
        return out

    def __len__(self) -> int:
        return len(self._entries) + len(self._load_errors)


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and the numbers behind it.

    ``passed`` includes non-strict xpasses (also counted in ``xpassed``);
    ``skipped`` excludes xfails (counted in ``xfailed``); ``not_run`` are checks
    collected that never reported; ``total`` is the number of counted checks,
    ``passed + failed + errors + not_run``. ``pass_rate`` is None when nothing
    was counted. ``load_errors`` names the modules that did not load.
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
    not_run: int = 0
    load_errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.verdict == "PASS"

    @property
    def comparison(self) -> str:
        """``>`` when the rate clears the threshold, else ``<=`` (``==`` for 100 of 100)."""
        if self.pass_rate is None:
            return ""
        if self.pass_rate > self.threshold:
            return ">"
        return "==" if self.threshold >= 100 and self.pass_rate >= 100 else "<="

    def counts_text(self) -> str:
        counts = (f"{self.passed} passed, {self.failed} failed, {self.errors} errors, "
                  f"{self.skipped} skipped")
        if self.xfailed:
            counts += f", {self.xfailed} xfailed"
        if self.not_run:
            counts += f", {self.not_run} not run"
        return counts


def format_rate(rate: float, other: float | None = None) -> str:
    """``95.0%``; more digits when one decimal would make ``rate`` look equal to ``other``."""
    for digits in (1, 2, 3, 4):
        text = f"{rate:.{digits}f}"
        if other is None or rate == other or text != f"{other:.{digits}f}":
            return text + "%"
    return f"{rate}%"


def rate_clears(rate: float, threshold: float) -> bool:
    """Strictly above the threshold; a threshold of 100 means every check passed."""
    return rate > threshold or (threshold >= 100 and rate >= 100)


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
    n = dict.fromkeys(OUTCOMES, 0)
    for c in checks:
        n[c.outcome] += 1
    passed = n["passed"] + n["xpassed"]
    total = passed + n["failed"] + n["error"] + n["not_run"]
    rate = passed / total * 100 if total else None
    critical = tuple(c.nodeid for c in checks if c.critical and c.outcome in FAILING)
    load_errors = tuple(c.nodeid for c in checks if c.category == LOAD_ERROR)

    reasons: list[str] = []
    if rate is None:
        reasons.append("no checks ran: nothing was collected, selected or counted "
                       "(skips and xfails are not counted)")
    elif not rate_clears(rate, threshold):
        reasons.append(f"pass rate {format_rate(rate, threshold)} is not above the "
                       f"threshold {format_rate(threshold)}")
    for c in checks:
        if c.category == LOAD_ERROR:
            reasons.append(c.message.splitlines()[0])
    if n["not_run"]:
        reasons.append(f"{n['not_run']} expected check(s) never reported")
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
        not_run=n["not_run"],
        load_errors=load_errors,
    )


# -- counted once, rendered many times ----------------------------------------------------


def ordered_suites(names: Iterable[str]) -> list[str]:
    """The ten suites in SPEC order, then anything else alphabetically."""
    names = set(names)
    return [s for s in SUITES if s in names] + sorted(names - set(SUITES))


def _ordered_services(names: Iterable[str]) -> list[str]:
    # Unlabelled checks ("-") go last.
    return sorted(set(names), key=lambda s: (s == "-", s))


def group_counts(checks: Iterable[Check]) -> dict[str, int | float | None]:
    """passed (xpass included), failed, errors (not-run included), skipped, xfailed,
    total and pass_rate."""
    c = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0}
    for check in checks:
        key = {"xpassed": "passed", "error": "errors", "not_run": "errors"}.get(
            check.outcome, check.outcome)
        c[key] += 1
    total = c["passed"] + c["failed"] + c["errors"]
    rate = round(c["passed"] / total * 100, 2) if total else None
    return {**c, "total": total, "pass_rate": rate}


def per_group(checks: list[Check], attr: str) -> dict[str, dict[str, Any]]:
    """Counts per suite (``attr="suite"``) or per service (``attr="service"``)."""
    keys = [getattr(c, attr) for c in checks]
    order = ordered_suites(keys) if attr == "suite" else _ordered_services(keys)
    return {k: group_counts(c for c in checks if getattr(c, attr) == k) for k in order}


@dataclass(frozen=True)
class Cell:
    """One service × suite cell: its state and the numbers behind it."""

    state: str | None  # "fail", "pass", "skip", or None (no check)
    ok: int = 0
    counted: int = 0
    total: int = 0


def matrix_cells(checks: list[Check]) -> dict[str, dict[str, Cell]]:
    """service → suite → :class:`Cell`."""
    suites = ordered_suites(c.suite for c in checks)
    out: dict[str, dict[str, Cell]] = {}
    for service in _ordered_services(c.service for c in checks):
        row: dict[str, Cell] = {}
        for suite in suites:
            cell = [c for c in checks if c.service == service and c.suite == suite]
            ok = sum(c.ok for c in cell)
            counted = sum(c.counted for c in cell)
            if not cell:
                state = None
            elif any(not c.ok and c.counted for c in cell):
                state = "fail"
            elif ok:
                state = "pass"
            else:
                state = "skip"
            row[suite] = Cell(state, ok, counted, len(cell))
        out[service] = row
    return out


@dataclass(frozen=True)
class Summary:
    """Everything the renderers show, computed once from the tally."""

    verdict: Verdict
    checks: list[Check]
    per_suite: dict[str, dict[str, Any]]
    per_service: dict[str, dict[str, Any]]
    cells: dict[str, dict[str, Cell]]

    @property
    def suites(self) -> list[str]:
        return ordered_suites(c.suite for c in self.checks)

    @property
    def matrix(self) -> dict[str, dict[str, str | None]]:
        """service → suite → "fail", "pass", "skip" or None (no check)."""
        return {svc: {suite: cell.state for suite, cell in row.items()}
                for svc, row in self.cells.items()}


def summarize(verdict: Verdict, checks: list[Check]) -> Summary:
    """Count per suite, per service and per cell, once."""
    return Summary(verdict, checks, per_group(checks, "suite"), per_group(checks, "service"),
                   matrix_cells(checks))
