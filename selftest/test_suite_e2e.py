"""The acceptance suite end to end against the reference stack (issue 3's "done means")."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import stack as sbx
from selftest.stackrun import run_suite
from selftest.test_check_counts import expected_counts

pytestmark = pytest.mark.stack


def test_healthy_stack_passes_every_check(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-n", "auto")
    assert run.ret == 0, run.summary()
    assert run.gate["verdict"] == "PASS" and run.gate["pass_rate"] == 100.0, run.summary()
    assert run.gate["failed"] == 0 and run.gate["errors"] == 0
    counts = expected_counts()
    assert run.gate["total"] == sum(counts.values()), run.summary()
    assert {s: c["total"] for s, c in run.gate["per_suite"].items()} == counts
    html = (tmp_path / "report.html").read_text()
    assert "PASS" in html and (tmp_path / "junit.xml").exists()


def test_verify_marker_runs_the_post_deploy_subset(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-n", "auto", "-m", "verify")
    assert run.ret == 0, run.summary()
    suites = {c["suite"] for c in run.gate["checks"]}
    assert suites == {"containers", "health", "infra", "network", "resources"}
    counts = expected_counts()
    assert run.gate["total"] == sum(counts[s] for s in suites)
    assert run.gate["total"] >= 29  # the deployment package's list


def _stopped(container: str):
    client = sbx.docker_client()
    c = client.containers.get(container)
    c.stop(timeout=5)
    return c


def _restore(c) -> None:
    c.start()
    sbx.compose(["up", "-d", "--no-build", "--wait", "--wait-timeout", "120"])


def test_stopping_a_non_critical_service_names_it(tmp_path: Path) -> None:
    c = _stopped("amazon-sourcing-staging")
    try:
        run = run_suite(tmp_path, "-n", "auto", "-m", "verify")
    finally:
        _restore(c)
    assert run.gate["pass_rate"] < 100.0, run.summary()
    assert run.gate["critical_failures"] == [], run.summary()
    assert run.failed(), run.summary()
    for check in run.failed():
        assert check["service"] == "amazon-sourcing" or "amazon" in check["message"], check
        assert "cause:" in check["message"] and "next:" in check["message"], check


def test_stopping_a_critical_service_fails_the_gate(tmp_path: Path) -> None:
    c = _stopped("coreldove-backend-staging")
    try:
        run = run_suite(tmp_path, "-n", "auto", "-m", "verify")
    finally:
        _restore(c)
    assert run.ret == 1, run.summary()
    assert run.gate["verdict"] == "FAIL"
    assert run.gate["critical_failures"], run.summary()
    assert all("coreldove" in n for n in run.gate["critical_failures"]), run.summary()
    assert "critical failures:" in run.stdout
