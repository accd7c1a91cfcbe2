"""The gate: counting, threshold, critical checks, settings, exit status, xdist."""

from __future__ import annotations

import pytest

from bizosaas_acceptance.gate import Check, decide, format_rate

# In-process runs import the plugin the outer run already imported (no rewrite
# warning wanted); pytest-benchmark, if installed, only adds noise here.
PLUGIN = ("-p", "bizosaas_acceptance.plugin", "-p", "no:benchmark",
          "-W", "ignore::pytest.PytestAssertRewriteWarning")


# -- the pure decision ---------------------------------------------------------------


def _checks(passed: int, failed: int = 0, *, critical_failed: int = 0) -> list[Check]:
    out = [Check(f"t::p{i}", "health", "redis", False, "passed") for i in range(passed)]
    out += [Check(f"t::f{i}", "health", "redis", False, "failed") for i in range(failed)]
    out += [Check(f"t::c{i}", "health", "redis", True, "error") for i in range(critical_failed)]
    return out


@pytest.mark.parametrize(
    ("threshold", "passed", "failed", "expected"),
    [
        (95, 19, 1, "FAIL"),  # 95.0 is not strictly greater than 95
        (95, 20, 0, "PASS"),
        (94.9, 19, 1, "PASS"),
        (0, 0, 1, "FAIL"),  # 0% is not above 0
        (100, 20, 0, "PASS"),  # 100 means every check passes
        (100, 19, 1, "FAIL"),
    ],
)
def test_decide_threshold_is_strict(threshold, passed, failed, expected):
    verdict = decide(_checks(passed, failed), threshold, True)
    assert verdict.verdict == expected
    assert verdict.total == passed + failed


def test_decide_without_checks_fails_with_reason():
    verdict = decide([], 95, True)
    assert verdict.verdict == "FAIL"
    assert verdict.pass_rate is None
    assert verdict.reasons[0].startswith("no checks ran")


def test_decide_critical_and_incomplete():
    checks = _checks(99, critical_failed=1)
    assert decide(checks, 95, True).verdict == "FAIL"
    assert decide(checks, 95, False).verdict == "PASS"
    assert decide(checks, 95, False).critical_failures == ("t::c0",)
    assert decide(_checks(20), 95, True, incomplete="interrupted").verdict == "FAIL"


def test_rate_formatting_never_hides_a_difference():
    assert format_rate(95.0, 95.0) == "95.0%"
    assert format_rate(95.04, 95.0) == "95.04%"
    assert format_rate(100.0) == "100.0%"


# -- real runs: counting --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "passed", "failed", "ret", "line"),
    [
        ((), 19, 1, 1, "bizosaas gate: FAIL  pass rate 95.0% <= 95.0%  (19 passed, 1 failed,*"),
        ((), 20, 0, 0, "bizosaas gate: PASS  pass rate 100.0% > 95.0%  (20 passed, 0 failed,*"),
        (("--gate-threshold=94.9",), 19, 1, 0, "bizosaas gate: PASS  pass rate 95.0% > 94.9%*"),
    ],
    ids=["at-threshold-fails", "above-passes", "just-below-threshold-passes"],
)
def test_threshold_boundaries(pytester, make_suite, args, passed, failed, ret, line):
    make_suite(passed=passed, failed=failed)
    result = pytester.runpytest(*PLUGIN, *args)
    result.assert_outcomes(passed=passed, failed=failed)
    assert result.ret == ret
    result.stdout.fnmatch_lines([line + "critical failures: none"])


def test_gate_overrides_pytest_failure_status(pytester, make_suite):
    """99 of 100 pass: pytest alone would exit 1; the gate passes the run (exit 0)."""
    make_suite(passed=99, failed=1)
    result = pytester.runpytest(*PLUGIN)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["bizosaas gate: PASS  pass rate 99.0% > 95.0%*"])


def test_setup_and_teardown_errors_count_as_failures(pytester, make_suite, gate_json):
    make_suite(passed=18, setup_errors=1, teardown_errors=1)
    result = pytester.runpytest(*PLUGIN, "--gate-threshold=89")
    # pytest: the teardown-error test is also "passed"; the gate counts it once, as an error.
    result.assert_outcomes(passed=19, errors=2)
    result.stdout.fnmatch_lines(
        [
            "bizosaas gate: PASS  pass rate 90.0% > 89.0%  "
            "(18 passed, 0 failed, 2 errors, 0 skipped)*"
        ]
    )
    assert result.ret == 0
    data = gate_json()
    assert (data["passed"], data["failed"], data["errors"], data["total"]) == (18, 0, 2, 20)
    errors = {c["nodeid"]: c for c in data["checks"] if c["outcome"] == "error"}
    setup = errors["test_suite.py::test_setup_error[0]"]
    assert setup["message"].startswith("Failed: cannot connect")
    assert setup["category"] == "database unreachable"
    assert "cleanup failed" in errors["test_suite.py::test_teardown_error[0]"]["message"]

    # The same at the default threshold: 90% fails the gate.
    assert pytester.runpytest(*PLUGIN).ret == 1


def test_call_failure_with_teardown_error_counts_once(pytester, gate_json):
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def leaky():
            yield
            raise RuntimeError("teardown too")

        def test_both(leaky):
            assert False, "call failed"
        """
    )
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(failed=1, errors=1)
    data = gate_json()
    assert (data["failed"], data["errors"], data["total"]) == (1, 0, 1)
    assert data["checks"][0]["message"].startswith("AssertionError: call failed")


def test_skips_and_xfails_are_not_counted(pytester, make_suite, gate_json):
    make_suite(passed=19, skipped=5, xfailed=3, xpassed=1)
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=19, skipped=5, xfailed=3, xpassed=1)
    result.stdout.fnmatch_lines(
        [("bizosaas gate: PASS  pass rate 100.0% > 95.0%  "
         "(20 passed, 0 failed, 0 errors, 5 skipped, 3 xfailed)*")]
    )
    assert result.ret == 0
    data = gate_json()
    assert (data["passed"], data["xpassed"], data["skipped"], data["xfailed"]) == (20, 1, 5, 3)
    skipped = [c for c in data["checks"] if c["outcome"] == "skipped"]
    assert skipped[0]["message"] == "not deployed here"
    xfailed = [c for c in data["checks"] if c["outcome"] == "xfailed"]
    assert xfailed[0]["message"] == "known bug"


def test_strict_xpass_is_a_failure(pytester, make_suite):
    make_suite(passed=19, strict_xpassed=1)
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=19, failed=1)
    result.stdout.fnmatch_lines(
        ["bizosaas gate: FAIL  pass rate 95.0% <= 95.0%  (19 passed, 1 failed*"]
    )
    assert result.ret == 1


def test_critical_failure_fails_the_gate_at_a_high_rate(pytester, make_suite, gate_json):
    make_suite(passed=99, critical_failed=1)
    result = pytester.runpytest(*PLUGIN)
    result.stdout.fnmatch_lines(
        [
            "bizosaas gate: FAIL  pass rate 99.0% > 95.0%  "
            "(99 passed, 1 failed, 0 errors, 0 skipped)  "
            "critical failures: 1 (test_suite.py::test_critical[0])"
        ]
    )
    assert result.ret == 1
    assert gate_json()["critical_failures"] == ["test_suite.py::test_critical[0]"]

    relaxed = pytester.runpytest(*PLUGIN, "--gate-critical=false")
    relaxed.stdout.fnmatch_lines(
        [
            "bizosaas gate: PASS  "
            "*critical failures: 1 (test_suite.py::test_critical[[]0]) [[]not enforced]"
        ]
    )
    assert relaxed.ret == 0
    assert gate_json()["critical_enforced"] is False


# -- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ini", "env", "cli", "threshold", "ret"),
    [
        (None, None, None, "95.0%", 0),  # default; 39/40 = 97.5%
        ("98", None, None, "98.0%", 1),  # ini
        ("98", "97", None, "97.0%", 0),  # environment beats ini
        ("97", "98", None, "98.0%", 1),
        ("98", "97", "99", "99.0%", 1),  # command line beats both
        (None, "99", "97", "97.0%", 0),
    ],
)
def test_threshold_precedence(pytester, monkeypatch, make_suite, ini, env, cli, threshold, ret):
    make_suite(passed=39, failed=1)
    if ini is not None:
        pytester.makeini(f"[pytest]\ngate_threshold = {ini}\n")
    if env is not None:
        monkeypatch.setenv("BIZOSAAS_GATE_THRESHOLD", env)
    args = [f"--gate-threshold={cli}"] if cli is not None else []
    result = pytester.runpytest(*PLUGIN, *args)
    result.stdout.fnmatch_lines([f"bizosaas gate: * pass rate 97.5% * {threshold}  *"])
    assert result.ret == ret


@pytest.mark.parametrize(
    ("source", "value", "where"),
    [
        ("cli", "101", "--gate-threshold"),
        ("cli", "abc", "--gate-threshold"),
        ("cli", "-1", "--gate-threshold"),
        ("env", "abc", "$BIZOSAAS_GATE_THRESHOLD"),
        ("env", "101", "$BIZOSAAS_GATE_THRESHOLD"),
        ("ini", "-1", "ini key 'gate_threshold'"),
    ],
)
def test_bad_threshold_is_a_usage_error(pytester, monkeypatch, make_suite, source, value, where):
    make_suite(passed=1)
    args = []
    if source == "cli":
        args.append(f"--gate-threshold={value}")
    elif source == "env":
        monkeypatch.setenv("BIZOSAAS_GATE_THRESHOLD", value)
    else:
        pytester.makeini(f"[pytest]\ngate_threshold = {value}\n")
    result = pytester.runpytest(*PLUGIN, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{where}: invalid value '{value}' for --gate-threshold*"])
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert "bizosaas gate:" not in output


# -- exit status edge cases -------------------------------------------------------------


def test_no_tests_is_a_failure_not_exit_5(pytester, gate_json):
    pytester.makepyfile("def helper():\n    pass\n")
    result = pytester.runpytest(*PLUGIN)
    assert result.ret == 1  # pytest alone: 5 (no tests collected)
    result.stdout.fnmatch_lines(["bizosaas gate: FAIL  no checks ran  (0 passed, 0 failed*"])
    assert gate_json()["reasons"][0].startswith("no checks ran")


def test_all_deselected_or_all_skipped_fails(pytester, make_suite):
    make_suite(passed=2, skipped=2)
    assert pytester.runpytest(*PLUGIN, "-m", "logs").ret == 1
    result = pytester.runpytest(*PLUGIN, "-k", "skipped")
    result.assert_outcomes(skipped=2)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["bizosaas gate: FAIL  no checks ran*"])


def test_collect_only_is_left_alone(pytester, make_suite):
    make_suite(passed=3)
    result = pytester.runpytest(*PLUGIN, "--collect-only")
    assert result.ret == 0
    assert "bizosaas gate:" not in result.stdout.str()


# -- reconciliation: the gate accounts for every check it expected (issue 11 §1) ----------


BROKEN_API = "import nonexistent_module_xyz\n"


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["n0", "n2"])
@pytest.mark.parametrize("cont", [(), ("--continue-on-collection-errors",)],
                         ids=["stop", "continue"])
def test_a_module_that_fails_to_import_fails_the_gate(pytester, make_suite, gate_json,
                                                      xdist, cont):
    """Was: PASS 99.6% (487 passed, 0 failed, 2 errors), exit 0, 206 checks vanished."""
    make_suite("test_health", suite="health", passed=300)
    pytester.makepyfile(test_api=BROKEN_API)
    result = pytester.runpytest_subprocess(*PLUGIN, *xdist, *cont)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["bizosaas gate: FAIL *suite api did not load: "
                                 "ModuleNotFoundError: No module named 'nonexistent_module_xyz'*"])
    data = gate_json()
    assert data["verdict"] == "FAIL" and data["exit_status"] == 1
    assert data["load_errors"] == ["test_api.py"]
    broken = next(c for c in data["checks"] if c["nodeid"] == "test_api.py")
    assert (broken["outcome"], broken["suite"], broken["category"]) == (
        "error", "api", "Suite Did Not Load")
    assert any(r.startswith("suite api did not load") for r in data["reasons"])
    # Every expected check is accounted for: run, or counted as not run.
    assert data["passed"] + data["not_run"] == 300
    assert data["not_run"] == (300 if not cont and not xdist else 0)


def test_a_broken_module_beside_the_others_fails_the_gate(pytester, make_suite, gate_json):
    make_suite("test_health", suite="health", passed=50)
    make_suite("test_logs", suite="logs", passed=50)
    pytester.makepyfile(test_extra="raise RuntimeError('half-written module')\n")
    result = pytester.runpytest_subprocess(*PLUGIN, "-n", "2")
    assert result.ret == 1
    data = gate_json()
    assert data["verdict"] == "FAIL"
    assert "module test_extra.py did not load: RuntimeError: half-written module" in (
        "\n".join(data["reasons"]))


@pytest.mark.parametrize("stop", [("-x",), ("--maxfail=1",)], ids=["x", "maxfail"])
@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["n0", "n2"])
def test_checks_that_never_reported_are_not_run(pytester, gate_json, stop, xdist):
    pytester.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.health
        def test_a_first_failure():
            assert 0, "broken"
        @pytest.mark.parametrize("i", range(30))
        def test_passed(i):
            pass
        """
    )
    result = pytester.runpytest_subprocess(*PLUGIN, *stop, *xdist, "-p", "no:randomly")
    assert result.ret == 1
    data = gate_json()
    assert data["verdict"] == "FAIL"
    assert data["total"] == 31, data  # every collected check counted once
    assert data["passed"] + data["failed"] + data["not_run"] == 31
    not_run = [c for c in data["checks"] if c["outcome"] == "not_run"]
    assert len(not_run) == data["not_run"]
    if not xdist:
        assert not_run, "with -x and no xdist, the checks after the failure never ran"
    for c in not_run:
        assert c["message"].startswith("not run: the run ended before this check reported")
        assert c["category"] == "Not Run"


def test_a_crashed_worker_fails_the_gate(pytester, gate_json):
    pytester.makepyfile(
        """
        import os, pytest
        @pytest.mark.health
        @pytest.mark.parametrize("i", range(20))
        def test_ok(i):
            pass
        @pytest.mark.health
        def test_crash():
            os._exit(1)
        """
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-n", "2", "--max-worker-restart=0")
    assert result.ret == 1
    data = gate_json()
    assert data["verdict"] == "FAIL"
    assert data["total"] == 21, data
    assert any("worker" in r and "crashed" in r for r in data["reasons"]), data["reasons"]


def test_interrupted_run_fails_with_exit_1_and_records_fail(pytester, make_suite, gate_json):
    make_suite(passed=3)
    pytester.makepyfile(test_zbroken=BROKEN_API)
    result = pytester.runpytest(*PLUGIN)
    # pytest would say 2 (interrupted by the collection error); the gate owns it: FAIL, 1.
    assert result.ret == 1
    data = gate_json()
    assert data["verdict"] == "FAIL"
    assert data["exit_status"] == 1
    assert data["not_run"] == 3
    broken = next(c for c in data["checks"] if c["nodeid"] == "test_zbroken.py")
    assert broken["outcome"] == "error"
    unrun = next(c for c in data["checks"] if c["outcome"] == "not_run")
    assert "--continue-on-collection-errors" in unrun["message"]


def test_threshold_100_means_every_check_passes(pytester, make_suite):
    make_suite(passed=20)
    result = pytester.runpytest(*PLUGIN, "--gate-threshold=100")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["bizosaas gate: PASS  pass rate 100.0% == 100.0%*"])
    make_suite(passed=19, failed=1)
    assert pytester.runpytest(*PLUGIN, "--gate-threshold=100").ret == 1


def test_stopped_early_cannot_pass(pytester, make_suite):
    make_suite(passed=50, failed=1)
    result = pytester.runpytest(*PLUGIN, "-x")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["bizosaas gate: FAIL  *run incomplete: stopped early*"])


def test_verdict_hook_is_called_once(pytester, make_suite):
    make_suite(passed=3)
    pytester.makeconftest(
        """
        seen = []

        def pytest_bizosaas_verdict(config, verdict):
            seen.append(verdict)
            print(f"HOOK verdict={verdict.verdict} passed={verdict.passed} n={len(seen)}")
        """
    )
    result = pytester.runpytest(*PLUGIN, "-s")
    result.stdout.fnmatch_lines(["*HOOK verdict=PASS passed=3 n=1"])
    assert result.stdout.str().count("HOOK verdict=") == 1


# -- xdist ------------------------------------------------------------------------------


def test_same_verdict_with_and_without_xdist(pytester, make_suite, gate_json):
    make_suite(passed=30, failed=1, setup_errors=1, skipped=2, xfailed=1, critical_failed=1)
    runs = {}
    for workers in ("0", "2"):
        result = pytester.runpytest_subprocess(*PLUGIN, "-n", workers, "-p", "no:cacheprovider")
        line = [x for x in result.outlines if x.startswith("bizosaas gate:")]
        data = gate_json()
        runs[workers] = (
            result.ret,
            line,
            {k: data[k] for k in ("verdict", "pass_rate", "passed", "failed", "errors",
                                  "skipped", "xfailed", "total", "critical_failures")},
            [(c["nodeid"], c["outcome"]) for c in data["checks"]],
        )
    assert runs["0"] == runs["2"]
    ret, line, counts, _ = runs["2"]
    assert ret == 1
    assert len(line) == 1
    assert counts["total"] == 33 and counts["passed"] == 30 and counts["errors"] == 1
