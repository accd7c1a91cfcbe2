"""Soak mode (issue 15): trends over time, bounded, interruptible.

Unit tests of the arithmetic and the loop run without a stack; the stack
tests run real soaks against the reference stack (marker ``soak``: about
70 s each): a healthy stack passes, the ``memory-leak`` fault is caught by a
60 s soak (a plain run does not catch it: see its fault-matrix entry), and
Ctrl-C ends a soak early with a verdict on what was measured.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bizosaas_acceptance.probes.soak import (
    Sample,
    Soak,
    Traffic,
    p95,
    parse_duration,
    slope,
    thirds,
)
from selftest.stackrun import PROJECT_ROOT, clean_env, run_suite, sandbox

PLUGIN = ("-p", "bizosaas_acceptance.plugin", "-p", "no:benchmark",
          "-W", "ignore::pytest.PytestAssertRewriteWarning")


@pytest.mark.parametrize(("raw", "seconds"), [("60", 60), ("60s", 60), ("10m", 600),
                                              ("1.5h", 5400), (" 2 min ", 120)])
def test_parse_duration(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "ten minutes", "-5m", "0s", "5d"])
def test_parse_duration_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


def test_bad_soak_value_is_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest(*PLUGIN, "--soak=ten")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--soak: invalid value 'ten' for --soak: must be a duration*"])


def test_trend_arithmetic() -> None:
    assert slope([(0, 10), (60, 25), (120, 40)]) == pytest.approx(0.25)
    assert slope([(0, 1), (1, 1)]) is None  # too few points
    assert slope([(0, 5), (30, 5), (60, 5)]) == 0
    assert thirds(list(range(9))) == ([0, 1, 2], [6, 7, 8])
    assert thirds([1]) == ([1], [1])
    assert p95(list(range(1, 101))) == 95
    assert p95([]) is None


def test_soak_without_the_option_has_no_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n"
        "@pytest.mark.soak\n"
        "def test_trend():\n    pass\n"
        "@pytest.mark.health\n"
        "def test_other():\n    pass\n")
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=1, deselected=1)


def test_ctrl_c_ends_the_loop_with_what_was_measured() -> None:
    """The loop keeps its samples when interrupted (Ctrl-C lands in the main thread)."""
    calls = {"n": 0}

    def progress(_line: str) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # about 3 s in: after the first samples
            raise KeyboardInterrupt

    soak = Soak(duration_s=60, interval_s=1, traffic=Traffic([], lambda u: None, 1),
                memory=lambda: {"svc": (100.0, 1.0)}, pg=lambda: 3, redis=lambda: 1.0,
                progress=progress)
    t0 = time.monotonic()
    result = soak.run()
    assert time.monotonic() - t0 < 10
    assert result.ended_early == "interrupted (Ctrl-C)"
    assert 1 <= len(result.samples) <= 4
    assert isinstance(result.samples[0], Sample) and result.samples[0].pg_connections == 3
    assert "ended early after" in result.describe()


# -- against the reference stack -------------------------------------------------------


def _soak_run(tmp_path: Path, *args: str):
    return run_suite(tmp_path, "-n", "auto", "-m", "soak", "--soak", "60s", *args,
                     timeout=300)


@pytest.mark.stack
@pytest.mark.soak
def test_healthy_stack_soaks_clean(tmp_path: Path) -> None:
    run = _soak_run(tmp_path)
    assert run.ret == 0, run.summary()
    assert run.gate["total"] >= 20 and run.gate["failed"] == 0


@pytest.mark.stack
@pytest.mark.soak
@pytest.mark.faults
def test_memory_leak_is_caught_by_a_soak(tmp_path: Path) -> None:
    sandbox("fault", "memory-leak")
    try:
        run = _soak_run(tmp_path)
    finally:
        sandbox("heal")
    failing = {c["nodeid"] for c in run.failed()}
    assert failing == {"tests/test_soak.py::test_soak_memory_trend[amazon-sourcing]"}, (
        run.summary())
    msg = run.failed()[0]["message"]
    assert "MB/min" in msg and "cause:    High Memory Usage" in msg, msg


@pytest.mark.stack
@pytest.mark.soak
def test_ctrl_c_ends_a_real_soak_early_with_a_verdict(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-m", "soak", "--soak", "5m", "-p", "no:randomly",
         f"--gate-json={tmp_path}/gate.json", f"--junitxml={tmp_path}/junit.xml",
         f"--html={tmp_path}/report.html"],
        cwd=PROJECT_ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        time.sleep(25)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "bizosaas soak:" in out and "INTERNALERROR" not in out, out[-3000:]
    assert "bizosaas gate: " in out, out[-3000:]
    import json

    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["total"] >= 20, gate
    # A verdict on what was measured: no check was left unjudged.
    assert gate["not_run"] == 0
    assert proc.returncode == (0 if gate["verdict"] == "PASS" else 1)
