"""The controller's side of the gate: feed reports to the tally, freeze the verdict,
hand the one Summary to every renderer, set the exit status.

Registered by :mod:`bizosaas_acceptance.plugin` on the controller only (or in
the single process of a run without xdist); xdist re-fires every worker's
reports here.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Generator
from html import escape
from pathlib import Path
from typing import Any

import pytest

from bizosaas_acceptance import history
from bizosaas_acceptance.gate import Summary, Tally, decide, summarize
from bizosaas_acceptance.labels import item_labels
from bizosaas_acceptance.render import html as html_render
from bizosaas_acceptance.render.json import gate_document, write_json
from bizosaas_acceptance.render.junit import add_junit_properties
from bizosaas_acceptance.render.terminal import verdict_line
from bizosaas_acceptance.state import RUN_ID, SETTINGS, STACK, TARGET, VERDICT

# Exit statuses the gate owns: the verdict decides them. An interrupted run
# (Ctrl-C, or collection errors without --continue-on-collection-errors) is a
# failed gate too: its unreported checks are counted as not run. Usage errors
# (4) and internal errors (3) keep pytest's status.
_GATE_OWNS = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.INTERRUPTED,
              pytest.ExitCode.NO_TESTS_COLLECTED)
#: Longest list of not-run checks shown in the HTML report.
_SHOWN_NOT_RUN = 50


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
        self._summary: Summary | None = None
        self._crashed: list[str] = []
        # Run history: archived beside gate.json; compared with the previous run
        # against the same stack and target, or with --baseline.
        self.history_dir = self.json_path.parent / "history"
        self.history_runs: int = int(settings["history_runs"])
        self.baseline_raw: str | None = settings.get("baseline")
        self.baseline: dict[str, Any] | None = None
        if self.baseline_raw:
            try:
                self.baseline = history.load_baseline(self._resolve_path(self.baseline_raw))
            except ValueError as exc:
                raise pytest.UsageError(str(exc)) from None
        self.changes: dict[str, Any] | None = None
        self.history_error: str | None = None

    def _resolve_path(self, raw: str) -> Path:
        # Relative to where pytest was invoked, like --html and --junitxml.
        path = Path(os.path.expandvars(raw)).expanduser()
        return path if path.is_absolute() else self.config.invocation_params.dir / path

    # -- what other parts read ------------------------------------------------------

    @property
    def active(self) -> bool:
        # --collect-only runs nothing: the gate has nothing to say about it.
        return not self.config.option.collectonly

    def summary(self) -> Summary | None:
        """The frozen Summary once the session is finishing; else one computed now."""
        if not self.active:
            return None
        if self._summary is not None:
            return self._summary
        verdict = decide(self.tally, self.threshold, self.critical_enforced)
        return summarize(verdict, self.tally.checks())

    def _html_blocks(self) -> list[str]:
        summary = self.summary()
        if summary is None:
            return []
        unrun = [c for c in summary.checks if c.outcome == "not_run" or
                 c.nodeid in summary.verdict.load_errors]
        blocks = [history.render_html(self.changes)] if self.changes is not None else []
        if not unrun:
            return blocks
        items = "".join(f"<li><code>{escape(c.nodeid)}</code>: {escape(c.message)}</li>"
                        for c in unrun[:_SHOWN_NOT_RUN])
        more = len(unrun) - _SHOWN_NOT_RUN
        tail = f"<li>… and {more} more (gate.json lists them all)</li>" if more > 0 else ""
        return [*blocks, f"<h3>Did not run</h3><ul id='bizosaas-not-run'>{items}{tail}</ul>"]

    # -- hooks ----------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.started = _utc_now()
        self._t0 = time.monotonic()
        html_render.scrub_metadata(self.config)
        # pytest-html registers itself in its own pytest_configure, possibly after
        # ours, so look for it only now; its hooks run at its trylast sessionstart.
        if self.config.pluginmanager.hasplugin("html"):
            self.config.pluginmanager.register(
                html_render.HtmlReport(self.summary, self.config.stash.get(RUN_ID, ""),
                                       self._html_blocks),
                "bizosaas-gate-html")

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Without xdist: what was collected (after deselection) is what we expect."""
        self.tally.expect((i.nodeid for i in session.items),
                          {i.nodeid: item_labels(i) for i in session.items})

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """xdist: every worker's collection (the same ids) is what we expect."""
        self.tally.expect(ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        """xdist: a worker that went down with an error crashed (its check is failed)."""
        if error is not None:
            self._crashed.append(str(getattr(node, "gateway", node).id
                                     if hasattr(node, "gateway") else node))

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
        incomplete = _incomplete(session, exitstatus)
        if self._crashed and incomplete is None:
            incomplete = f"xdist worker(s) {', '.join(self._crashed)} crashed"
        if exitstatus == pytest.ExitCode.INTERRUPTED and self.tally.load_errors:
            # pytest stops before running anything when a module fails to collect.
            self.tally.stopped = (f"the run stopped at {len(self.tally.load_errors)} collection "
                                  "error(s); --continue-on-collection-errors runs the rest")
        else:
            self.tally.stopped = incomplete
        verdict = decide(self.tally, self.threshold, self.critical_enforced,
                         incomplete=incomplete)
        self._summary = summarize(verdict, self.tally.checks())
        self.config.stash[VERDICT] = verdict
        self.changes = self._compare(self._summary)
        add_junit_properties(self.config, verdict, self.config.stash.get(RUN_ID, ""))

    def _where(self) -> tuple[str, str]:
        stack = self.config.stash.get(STACK, None)
        target = self.config.stash.get(TARGET, None)
        return (stack.name if stack is not None else "", target.host if target is not None else "")

    def _selection(self) -> str:
        """The run's check selection (-m, -k), so history compares like with like."""
        opt = self.config.option
        parts = [f"-m {opt.markexpr}" if getattr(opt, "markexpr", "") else "",
                 f"-k {opt.keyword}" if getattr(opt, "keyword", "") else ""]
        return " ".join(p for p in parts if p)

    def _compare(self, summary: Summary) -> dict[str, Any] | None:
        """Changes since the baseline (--baseline) or the previous run on this stack+target."""
        stack, target = self._where()
        run_id = self.config.stash.get(RUN_ID, "")
        current = {"run_id": run_id, "stack": stack, "target": target,
                   "checks": [{"nodeid": c.nodeid, "outcome": c.outcome}
                              for c in summary.checks]}
        try:
            recent = history.recent(self.history_dir, stack=stack, target=target,
                                    exclude_run_id=run_id, selection=self._selection())
        except OSError:
            recent = []
        if self.baseline is not None:
            return history.compare(current, self.baseline, recent,
                                   source=f"--baseline {self.baseline_raw}")
        return history.compare(current, recent[0] if recent else None, recent)

    @pytest.hookimpl(trylast=True, specname="pytest_sessionfinish")
    def pytest_sessionfinish_exit_status(self, session: pytest.Session, exitstatus: int) -> None:
        """Set the exit status from the verdict, write gate.json, announce the verdict."""
        summary = self._summary
        if summary is None:
            return
        verdict = summary.verdict
        if exitstatus in _GATE_OWNS:
            session.exitstatus = pytest.ExitCode.OK if verdict.ok else pytest.ExitCode.TESTS_FAILED
        self.exit_status = int(session.exitstatus)
        if exitstatus in _GATE_OWNS or len(self.tally):
            stack, target = self._where()
            data = gate_document(
                summary,
                run_id=self.config.stash.get(RUN_ID, ""),
                started=self.started, finished=_utc_now(),
                duration_s=time.monotonic() - self._t0,
                exit_status=self.exit_status,
                stack=stack, target=target, changes=self.changes,
            )
            data["selection"] = self._selection()
            self.config.hook.pytest_bizosaas_gate_json(config=self.config, data=data)
            write_json(self.json_path, data)
            self.json_written = True
            try:
                history.archive(data, self.history_dir, max_runs=self.history_runs)
            except OSError as exc:
                self.history_error = f"run history not archived in {self.history_dir}: {exc}"
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
        summary = self._summary
        if summary is not None:
            verdict = summary.verdict
            if self.changes is not None:
                for line in history.summary_lines(self.changes):
                    terminalreporter.write_line(line)
            if self.history_error:
                terminalreporter.write_line(self.history_error, yellow=True)
            terminalreporter.write_line(verdict_line(verdict), green=verdict.ok,
                                        red=not verdict.ok, bold=True)
        return result
