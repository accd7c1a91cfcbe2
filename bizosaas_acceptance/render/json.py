"""gate.json: the verdict for machines."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bizosaas_acceptance.gate import Summary


def gate_document(
    summary: Summary,
    *,
    run_id: str,
    started: str,
    finished: str,
    duration_s: float,
    exit_status: int | None,
    stack: str = "",
    target: str = "",
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The gate.json document.

    Top level: run_id, stack (manifest name), target (host), started, finished
    (ISO 8601, UTC), duration_s, exit_status, verdict ("PASS"/"FAIL"), pass_rate
    (percent, null when nothing counted), threshold, critical_enforced, passed
    (xpasses included), failed, errors, skipped, xfailed, xpassed, not_run, total
    (= passed + failed + errors + not_run), critical_failures [nodeid],
    load_errors [module nodeid], reasons [text]; per_suite / per_service {name:
    {passed, failed, errors, skipped, xfailed, total, pass_rate}}; matrix
    {service: {suite: "pass"|"fail"|"skip"|null}}; checks [{nodeid, suite,
    service, critical, outcome, duration, message, category}] sorted by nodeid,
    outcome one of passed, failed, error, skipped, xfailed, xpassed, not_run;
    changes (since the previous run or --baseline; see history.compare) or null.
    """
    verdict = summary.verdict
    return {
        "run_id": run_id,
        "stack": stack,
        "target": target,
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
        "not_run": verdict.not_run,
        "total": verdict.total,
        "critical_failures": list(verdict.critical_failures),
        "load_errors": list(verdict.load_errors),
        "reasons": list(verdict.reasons),
        "per_suite": summary.per_suite,
        "per_service": summary.per_service,
        "matrix": summary.matrix,
        "changes": changes,
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
            for c in summary.checks
        ],
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a verdict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
