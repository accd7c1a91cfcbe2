"""JUnit XML: the verdict as <testsuite> properties."""

from __future__ import annotations

import pytest

from bizosaas_acceptance.gate import Verdict


def add_junit_properties(config: pytest.Config, verdict: Verdict, run_id: str) -> None:
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
        "bizosaas_gate_not_run": verdict.not_run,
        "bizosaas_gate_total": verdict.total,
        "bizosaas_gate_critical_failures": ",".join(verdict.critical_failures),
        "bizosaas_gate_load_errors": ",".join(verdict.load_errors),
        "bizosaas_gate_reasons": "; ".join(verdict.reasons),
        "bizosaas_run_id": run_id,
    }
    for name, value in props.items():
        xml.add_global_property(name, str(value))
