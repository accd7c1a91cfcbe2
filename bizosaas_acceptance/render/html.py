"""The HTML report: pytest-html's summary (banner, per-suite table, matrix) and columns.

Nothing here counts or decides: every function takes the gate's one
:class:`~bizosaas_acceptance.gate.Summary`. pytest-html is extended through its
hooks only (its templates stay its own).
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

import pytest

from bizosaas_acceptance.gate import Summary, Verdict, format_rate
from bizosaas_acceptance.labels import report_labels
from bizosaas_acceptance.secrets import mask_metadata

#: What pytest-html's Environment table shows for a value named like a secret.
HIDDEN = "(hidden)"


# -- pytest-metadata / pytest-html -------------------------------------------------------


def scrub(metadata: dict[str, Any]) -> None:
    """Scrub a pytest-metadata mapping in place (see :func:`secrets.mask_metadata`):
    values named like secrets hidden, every other value masked (URL passwords)."""
    mask_metadata(metadata, HIDDEN)


def scrub_metadata(config: pytest.Config) -> None:
    """Scrub this process's metadata before pytest-html shows it (idempotent)."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:
        return
    metadata = config.stash.get(metadata_key, None)
    if metadata is not None:
        scrub(metadata)


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
    if verdict.pass_rate is None:
        rate = "no checks ran"
    else:
        op = {">": "&gt;", "==": "=", "<=": "&le;"}[verdict.comparison]
        rate = (f"pass rate <b>{escape(format_rate(verdict.pass_rate, verdict.threshold))}</b> "
                f"{op} threshold {escape(format_rate(verdict.threshold))}")
    counts = (f"{verdict.passed} passed, {verdict.failed} failed, {verdict.errors} errors, "
              f"{verdict.skipped} skipped, {verdict.xfailed} xfailed"
              + (f", {verdict.not_run} not run" if verdict.not_run else "")
              + f" ({verdict.total} counted)")
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


def render_suite_table(summary: Summary) -> str:
    """Per-suite counts: suite, passed, failed, errors, skipped, xfailed, pass rate."""
    rows = []
    for suite, c in summary.per_suite.items():
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


def render_matrix(summary: Summary) -> str:
    """Service × suite matrix; "–" where a suite has no check for the service."""
    suites = summary.suites
    head = "".join(f"<th>{escape(s)}</th>" for s in suites)
    rows = []
    for service, row in summary.cells.items():
        cells = []
        for suite in suites:
            cell = row[suite]
            if cell.state is None:
                cells.append("<td class='bz-none'>–</td>")
                continue
            title = f"{cell.ok}/{cell.counted} passed, {cell.total - cell.counted} not counted"
            cells.append(f"<td class='bz-{cell.state}' title='{escape(title)}'>{cell.state}</td>")
        name = "(no service)" if service == "-" else service
        rows.append(f"<tr><td class='bz-name'>{escape(name)}</td>{''.join(cells)}</tr>")
    return (
        "<h3>Service × suite</h3><table class='bz-table' id='bizosaas-matrix'><thead><tr>"
        f"<th>Service</th>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


class HtmlReport:
    """pytest-html hooks; registered by the controller only when pytest-html is active.

    ``summary`` returns the gate's Summary (frozen once the session finishes)
    or None when there is no verdict to show (``--collect-only``).
    """

    def __init__(self, summary: Callable[[], Summary | None], run_id: str,
                 extra_blocks: Callable[[], list[str]] | None = None) -> None:
        self.summary = summary
        self.run_id = run_id
        self.extra_blocks = extra_blocks or (lambda: [])

    @pytest.hookimpl(trylast=True, optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        """xdist: pytest-metadata merged a worker's mapping into ours; scrub again."""
        scrub_metadata(node.config)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Last scrub before pytest-html writes the Environment table."""
        scrub_metadata(session.config)

    def pytest_html_report_title(self, report: Any) -> None:
        report.title = f"BizOSaaS acceptance – run {self.run_id}"

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
    ) -> None:
        # pytest-html may render before our trylast sessionfinish; the summary
        # is then the one frozen in our tryfirst sessionfinish.
        data = self.summary()
        if data is None:
            return
        block = (
            f"<style>{_CSS}</style><div class='bz-gate'>"
            + render_banner(data.verdict, self.run_id)
            + "".join(self.extra_blocks())
            + render_suite_table(data)
            + render_matrix(data)
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
