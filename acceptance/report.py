"""Where the verdict goes: gate.json, pytest-html's summary and columns, JUnit properties.

Nothing here decides anything: every function takes the one
:class:`acceptance.gate.Verdict` and the checks the gate recorded.
pytest-html is extended through its hooks only (its templates stay its own).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from acceptance.plugin import RUN_ID, SUITES, report_labels

if TYPE_CHECKING:
    from acceptance.gate import Check, GatePlugin, Verdict

#: Metadata (pytest-html's Environment table) whose names look like these is hidden.
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
HIDDEN = "(hidden)"


# -- numbers per group ---------------------------------------------------------------


def _ordered_suites(names: Iterable[str]) -> list[str]:
    """The ten suites in SPEC order, then anything else alphabetically."""
    names = set(names)
    return [s for s in SUITES if s in names] + sorted(names - set(SUITES))


def _ordered_services(names: Iterable[str]) -> list[str]:
    # Unlabelled checks ("-") go last.
    return sorted(set(names), key=lambda s: (s == "-", s))


def group_counts(checks: Iterable[Check]) -> dict[str, int | float | None]:
    """passed (xpass included), failed, errors, skipped, xfailed, total and pass_rate."""
    c = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0}
    for check in checks:
        key = {"xpassed": "passed", "error": "errors"}.get(check.outcome, check.outcome)
        c[key] += 1
    total = c["passed"] + c["failed"] + c["errors"]
    rate = round(c["passed"] / total * 100, 2) if total else None
    return {**c, "total": total, "pass_rate": rate}


def per_group(checks: list[Check], attr: str) -> dict[str, dict[str, Any]]:
    """Counts per suite (``attr="suite"``) or per service (``attr="service"``)."""
    keys = [getattr(c, attr) for c in checks]
    order = _ordered_suites(keys) if attr == "suite" else _ordered_services(keys)
    return {k: group_counts(c for c in checks if getattr(c, attr) == k) for k in order}


def matrix(checks: list[Check]) -> dict[str, dict[str, str | None]]:
    """service → suite → "fail" (any failure or error), "pass", "skip" or None (no check)."""
    suites = _ordered_suites(c.suite for c in checks)
    out: dict[str, dict[str, str | None]] = {}
    for service in _ordered_services(c.service for c in checks):
        row: dict[str, str | None] = {}
        for suite in suites:
            cell = [c for c in checks if c.service == service and c.suite == suite]
            if not cell:
                row[suite] = None
            elif any(not c.ok and c.counted for c in cell):
                row[suite] = "fail"
            elif any(c.ok for c in cell):
                row[suite] = "pass"
            else:
                row[suite] = "skip"
        out[service] = row
    return out


# -- gate.json -------------------------------------------------------------------------


def gate_document(
    verdict: Verdict,
    checks: list[Check],
    *,
    run_id: str,
    started: str,
    finished: str,
    duration_s: float,
    exit_status: int | None,
) -> dict[str, Any]:
    """The gate.json document.

    Top level: run_id, started, finished (ISO 8601, UTC), duration_s, exit_status,
    verdict ("PASS"/"FAIL"), pass_rate (percent, null when nothing counted),
    threshold, critical_enforced, passed (xpasses included), failed, errors,
    skipped, xfailed, xpassed, total (= passed + failed + errors),
    critical_failures [nodeid], reasons [text];
    per_suite / per_service {name: {passed, failed, errors, skipped, xfailed,
    total, pass_rate}}; matrix {service: {suite: "pass"|"fail"|"skip"|null}};
    checks [{nodeid, suite, service, critical, outcome, duration, message,
    category}] sorted by nodeid, outcome one of passed, failed, error, skipped,
    xfailed, xpassed.
    """
    return {
        "run_id": run_id,
        "started": started,
        "finished": finished,
        "duration_s": round(duration_s, 3),
        "exit_status": exit_status,
        "verdict": verdict.verdict,
        "pass_rate": None if verdict.pass_rate is None else round(verdict.pass_rate, 4),
        "threshold": verdict.threshold,
        "critical_enforced": verdict.critical_enforced,
        "passed": verdict.passed,
        "failed": verdict.failed,
        "errors": verdict.errors,
        "skipped": verdict.skipped,
        "xfailed": verdict.xfailed,
        "xpassed": verdict.xpassed,
        "total": verdict.total,
        "critical_failures": list(verdict.critical_failures),
        "reasons": list(verdict.reasons),
        "per_suite": per_group(checks, "suite"),
        "per_service": per_group(checks, "service"),
        "matrix": matrix(checks),
        "checks": [
            {
                "nodeid": c.nodeid,
                "suite": c.suite,
                "service": c.service,
                "critical": c.critical,
                "outcome": c.outcome,
                "duration": round(c.duration, 4),
                "message": c.message,
                "category": c.category,
            }
            for c in checks
        ],
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a verdict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- JUnit XML -------------------------------------------------------------------------


def add_junit_properties(config: pytest.Config, verdict: Verdict) -> None:
    """Add the verdict as <testsuite> properties when --junitxml is on.

    ``record_testsuite_property`` is a fixture, unusable at session finish, so we
    use the LogXML object pytest keeps in the stash (what that fixture uses too).
    It writes in its own (untried) pytest_sessionfinish, after our tryfirst one.
    """
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - a pytest without it: skip quietly
        return
    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    props = {
        "bizosaas_gate_verdict": verdict.verdict,
        "bizosaas_gate_pass_rate": "" if verdict.pass_rate is None else f"{verdict.pass_rate:.4f}",
        "bizosaas_gate_threshold": verdict.threshold,
        "bizosaas_gate_passed": verdict.passed,
        "bizosaas_gate_failed": verdict.failed,
        "bizosaas_gate_errors": verdict.errors,
        "bizosaas_gate_skipped": verdict.skipped,
        "bizosaas_gate_total": verdict.total,
        "bizosaas_gate_critical_failures": ",".join(verdict.critical_failures),
        "bizosaas_run_id": config.stash.get(RUN_ID, ""),
    }
    for name, value in props.items():
        xml.add_global_property(name, str(value))


# -- pytest-metadata / pytest-html -------------------------------------------------------


def scrub_metadata(config: pytest.Config) -> None:
    """Hide values of metadata entries named like secrets before pytest-html shows them."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:
        return
    metadata = config.stash.get(metadata_key, None)
    if metadata is not None:
        _scrub(metadata)


def _scrub(mapping: dict[str, Any]) -> None:
    for name, value in mapping.items():
        if SECRET_NAME.search(str(name)):
            mapping[name] = HIDDEN
        elif isinstance(value, dict):
            _scrub(value)


_CSS = """
.bz-gate{color:#222;font-size:13px;margin:4px 0 18px;width:max-content;max-width:1300px}
.bz-gate h3{font-size:14px;margin:16px 0 6px;color:#222}
.bz-banner{display:flex;align-items:center;gap:22px;padding:14px 22px;border-radius:6px;
  border:2px solid}
.bz-banner.bz-PASS{background:#e8f5e9;border-color:#2e7d32}
.bz-banner.bz-FAIL{background:#ffebee;border-color:#c62828}
.bz-verdict{font-size:44px;font-weight:800;letter-spacing:3px;line-height:1}
.bz-PASS .bz-verdict{color:#1b5e20}.bz-FAIL .bz-verdict{color:#b71c1c}
.bz-facts{line-height:1.6}.bz-facts b{font-size:15px}
.bz-facts ul{margin:2px 0 0;padding-left:18px}
.bz-facts code{font-size:12px}
.bz-why{margin-top:6px;padding-top:4px;border-top:1px solid rgba(0,0,0,.15)}
.bz-run{margin-top:4px;color:#555}
table.bz-table{border-collapse:collapse;font-size:12px}
table.bz-table th,table.bz-table td{border:1px solid #cfd4d9;padding:4px 10px}
table.bz-table th{background:#eef1f4;text-align:center;font-weight:600}
table.bz-table td{text-align:right}
table.bz-table td.bz-name{text-align:left;font-weight:600}
table.bz-table td.bz-pass{background:#c8e6c9;color:#1b5e20;text-align:center}
table.bz-table td.bz-fail{background:#ffcdd2;color:#b71c1c;text-align:center;font-weight:700}
table.bz-table td.bz-skip{background:#fff3c4;color:#8a6d00;text-align:center}
table.bz-table td.bz-none{color:#9aa0a6;text-align:center}
"""


def _rate(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:.1f}%"


def render_banner(verdict: Verdict, run_id: str) -> str:
    """The verdict banner: big PASS/FAIL, rate vs threshold, counts, critical failures."""
    from acceptance.gate import format_rate

    if verdict.pass_rate is None:
        rate = "no checks ran"
    else:
        op = "&gt;" if verdict.pass_rate > verdict.threshold else "&le;"
        rate = (f"pass rate <b>{escape(format_rate(verdict.pass_rate, verdict.threshold))}</b> "
                f"{op} threshold {escape(format_rate(verdict.threshold))}")
    counts = (f"{verdict.passed} passed, {verdict.failed} failed, {verdict.errors} errors, "
              f"{verdict.skipped} skipped, {verdict.xfailed} xfailed "
              f"({verdict.total} counted)")
    if verdict.critical_failures:
        note = "" if verdict.critical_enforced else " (not enforced)"
        items = "".join(f"<li><code>{escape(n)}</code></li>" for n in verdict.critical_failures)
        critical = (f"critical failures: <b>{len(verdict.critical_failures)}</b>"
                    f"{note}<ul class='bz-critical'>{items}</ul>")
    else:
        critical = "critical failures: none"
    reasons = "".join(f"<li>{escape(r)}</li>" for r in verdict.reasons)
    reasons_html = (f"<div class='bz-why'>why {escape(verdict.verdict)}:"
                    f"<ul class='bz-reasons'>{reasons}</ul></div>") if reasons else ""
    v = escape(verdict.verdict)
    return (
        f"<div class='bz-banner bz-{v}' id='bizosaas-verdict' data-verdict='{v}'>"
        f"<div class='bz-verdict'>{v}</div>"
        f"<div class='bz-facts'><div>{rate}</div><div>{escape(counts)}</div>"
        f"<div>{critical}</div>{reasons_html}"
        f"<div class='bz-run'>run <code>{escape(run_id)}</code></div></div></div>"
    )


def render_suite_table(checks: list[Check]) -> str:
    """Per-suite counts: suite, passed, failed, errors, skipped, xfailed, pass rate."""
    rows = []
    for suite, c in per_group(checks, "suite").items():
        rows.append(
            f"<tr><td class='bz-name'>{escape(suite)}</td><td>{c['passed']}</td>"
            f"<td>{c['failed']}</td><td>{c['errors']}</td><td>{c['skipped']}</td>"
            f"<td>{c['xfailed']}</td><td>{_rate(c['pass_rate'])}</td></tr>"
        )
    return (
        "<h3>Per suite</h3><table class='bz-table' id='bizosaas-suites'><thead><tr>"
        "<th>Suite</th><th>Passed</th><th>Failed</th><th>Errors</th><th>Skipped</th>"
        "<th>XFailed</th><th>Pass rate</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>"
    )


def render_matrix(checks: list[Check]) -> str:
    """Service × suite matrix; "–" where a suite has no check for the service."""
    grid = matrix(checks)
    suites = _ordered_suites(c.suite for c in checks)
    head = "".join(f"<th>{escape(s)}</th>" for s in suites)
    rows = []
    for service, row in grid.items():
        cells = []
        for suite in suites:
            state = row[suite]
            if state is None:
                cells.append("<td class='bz-none'>–</td>")
                continue
            here = [c for c in checks if c.service == service and c.suite == suite]
            ok = sum(c.ok for c in here)
            counted = sum(c.counted for c in here)
            title = f"{ok}/{counted} passed, {len(here) - counted} not counted"
            cells.append(f"<td class='bz-{state}' title='{escape(title)}'>{state}</td>")
        name = "(no service)" if service == "-" else service
        rows.append(f"<tr><td class='bz-name'>{escape(name)}</td>{''.join(cells)}</tr>")
    return (
        "<h3>Service × suite</h3><table class='bz-table' id='bizosaas-matrix'><thead><tr>"
        f"<th>Service</th>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


class HtmlReport:
    """pytest-html hooks; registered by the gate only when pytest-html is active."""

    def __init__(self, gate: GatePlugin) -> None:
        self.gate = gate

    def pytest_html_report_title(self, report: Any) -> None:
        run_id = self.gate.config.stash.get(RUN_ID, "")
        report.title = f"BizOSaaS acceptance – run {run_id}"

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
    ) -> None:
        if not self.gate.active:  # --collect-only: no verdict to show
            return
        # pytest-html may render before our trylast sessionfinish; current_verdict()
        # then returns the verdict frozen in our tryfirst sessionfinish.
        verdict = self.gate.current_verdict()
        checks = self.gate.tally.checks()
        run_id = self.gate.config.stash.get(RUN_ID, "")
        block = (
            f"<style>{_CSS}</style><div class='bz-gate'>"
            + render_banner(verdict, run_id)
            + render_suite_table(checks)
            + render_matrix(checks)
            + "</div>"
        )
        prefix.insert(0, block)

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(2, '<th class="sortable" data-column-type="suite">Suite</th>')
        cells.insert(3, '<th class="sortable" data-column-type="service">Service</th>')

    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        suite, service, _ = report_labels(report)
        cells.insert(2, f'<td class="col-suite">{escape(suite)}</td>')
        cells.insert(3, f'<td class="col-service">{escape(service)}</td>')
