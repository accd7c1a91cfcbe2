"""gate.json, JUnit XML and the pytest-html report: written, consistent, safe, rendered."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET

import pytest

PLUGIN = ("-p", "bizosaas_acceptance.plugin", "-p", "no:benchmark",
          "-W", "ignore::pytest.PytestAssertRewriteWarning")

GATE_FIELDS = {
    "run_id", "started", "finished", "duration_s", "exit_status", "verdict", "pass_rate",
    "threshold", "critical_enforced", "passed", "failed", "errors", "skipped", "xfailed",
    "xpassed", "total", "critical_failures", "reasons", "per_suite", "per_service", "matrix",
    "checks", "stack", "target", "not_run", "load_errors", "changes", "selection",
}
CHECK_FIELDS = {"nodeid", "suite", "service", "critical", "outcome", "duration", "message",
                "category"}


@pytest.fixture
def mixed_stack(make_suite):
    """Three suites over three services, with a failure, an error and skips."""
    make_suite("test_health", suite="health", service="brain-api", passed=6, critical_failed=1)
    make_suite("test_api", suite="api", service="wagtail-cms", passed=5, failed=1, skipped=1,
               setup_errors=1)
    make_suite("test_logs", suite="logs", service="redis", skipped=2, xfailed=1)
    make_suite("test_logs_brain", suite="logs", service="brain-api", passed=2)


def test_gate_json_schema(pytester, mixed_stack, gate_json):
    result = pytester.runpytest(*PLUGIN, "--gate-json=out/nested/verdict.json")
    assert result.ret == 1
    data = gate_json("out/nested/verdict.json")
    assert set(data) == GATE_FIELDS
    assert data["verdict"] == "FAIL"
    assert data["exit_status"] == 1
    assert (data["passed"], data["failed"], data["errors"], data["total"]) == (13, 2, 1, 16)
    assert (data["skipped"], data["xfailed"]) == (3, 1)
    assert data["pass_rate"] == pytest.approx(81.25)
    assert data["critical_failures"] == ["test_health.py::test_critical[0]"]
    assert list(data["per_suite"]) == ["health", "api", "logs"]  # SPEC order, not a-z
    assert data["per_suite"]["api"] == {
        "passed": 5, "failed": 1, "errors": 1, "skipped": 1, "xfailed": 0, "total": 7,
        "pass_rate": pytest.approx(71.43),
    }
    assert data["per_suite"]["logs"]["pass_rate"] == 100.0
    assert data["per_service"]["redis"]["pass_rate"] is None  # nothing counted
    assert data["matrix"] == {
        "brain-api": {"health": "fail", "api": None, "logs": "pass"},
        "redis": {"health": None, "api": None, "logs": "skip"},
        "wagtail-cms": {"health": None, "api": "fail", "logs": None},
    }
    assert len(data["checks"]) == 20
    for check in data["checks"]:
        assert set(check) == CHECK_FIELDS
    by_id = {c["nodeid"]: c for c in data["checks"]}
    err = by_id["test_api.py::test_setup_error[0]"]
    assert (err["outcome"], err["suite"], err["service"]) == ("error", "api", "wagtail-cms")
    assert err["category"] == "database unreachable"
    assert by_id["test_health.py::test_critical[0]"]["critical"] is True
    assert by_id["test_api.py::test_failed[0]"]["message"].startswith(
        "AssertionError: value out of range"
    )
    assert data["started"] <= data["finished"]


def test_gate_json_path_from_environment(pytester, monkeypatch, make_suite, gate_json):
    make_suite(passed=2)
    monkeypatch.setenv("BIZOSAAS_GATE_JSON", "env-reports/g.json")
    assert pytester.runpytest(*PLUGIN).ret == 0
    assert gate_json("env-reports/g.json")["verdict"] == "PASS"


def test_gate_json_hook_can_add_fields(pytester, make_suite, gate_json):
    make_suite(passed=1)
    pytester.makeconftest(
        """
        def pytest_bizosaas_gate_json(config, data):
            data["build_url"] = "https://ci.example/123"
        """
    )
    assert pytester.runpytest(*PLUGIN).ret == 0
    data = gate_json()
    assert data["build_url"] == "https://ci.example/123"
    assert data["verdict"] == "PASS"


def _html_banner_numbers(html: str) -> dict[str, int]:
    counts = re.search(
        r"(\d+) passed, (\d+) failed, (\d+) errors, (\d+) skipped, (\d+) xfailed "
        r"\((\d+) counted\)", html
    )
    assert counts, "verdict banner counts missing from the HTML"
    keys = ("passed", "failed", "errors", "skipped", "xfailed", "total")
    return dict(zip(keys, map(int, counts.groups()), strict=True))


def test_json_junit_and_html_agree_under_xdist(pytester, mixed_stack, gate_json):
    result = pytester.runpytest_subprocess(
        *PLUGIN, "-n", "2", "--html=reports/report.html", "--junitxml=reports/junit.xml"
    )
    assert result.ret == 1
    data = gate_json()

    # Our own freshly written file, not untrusted input.
    junit = ET.parse(pytester.path / "reports/junit.xml")  # noqa: S314
    suite = junit.getroot().find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["bizosaas_gate_verdict"] == data["verdict"] == "FAIL"
    assert float(props["bizosaas_gate_pass_rate"]) == pytest.approx(data["pass_rate"])
    for key in ("passed", "failed", "errors", "skipped", "total"):
        assert int(props[f"bizosaas_gate_{key}"]) == data[key], key
    assert props["bizosaas_gate_critical_failures"] == ",".join(data["critical_failures"])
    assert props["bizosaas_run_id"] == data["run_id"]
    # pytest's own JUnit counts tell the same story (no test both failed and errored here).
    assert int(suite.get("failures")) == data["failed"]
    assert int(suite.get("errors")) == data["errors"]

    html = (pytester.path / "reports/report.html").read_text(encoding="utf-8")
    assert "data-verdict='FAIL'" in html
    numbers = _html_banner_numbers(html)
    assert numbers == {k: data[k] for k in numbers}
    assert data["run_id"] in html
    assert "id='bizosaas-suites'" in html and "id='bizosaas-matrix'" in html
    for suite_name, counts in data["per_suite"].items():
        assert re.search(
            rf"<td class='bz-name'>{suite_name}</td><td>{counts['passed']}</td>"
            rf"<td>{counts['failed']}</td><td>{counts['errors']}</td>", html
        ), suite_name
    assert html.count("<td class='bz-none'>–</td>") == sum(
        v is None for row in data["matrix"].values() for v in row.values()
    )
    assert 'data-column-type="suite">Suite</th>' in html
    assert 'data-column-type="service">Service</th>' in html
    # The terminal line is the same verdict again.
    result.stdout.fnmatch_lines([f"bizosaas gate: FAIL  pass rate {data['pass_rate']:.1f}%*"])


def test_html_escapes_labels_and_hides_secrets(pytester, make_suite):
    make_suite(service="<img src=x onerror=alert(1)>", passed=2)
    result = pytester.runpytest(
        *PLUGIN, "--html=report.html",
        "--metadata", "API_TOKEN", "tok-hunter2-value",
        "--metadata-from-json", '{"DB": {"POSTGRES_PASSWORD": "pg-hunter2-value"}, "Team": "qa"}',
    )
    assert result.ret == 0
    html = (pytester.path / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "hunter2" not in html
    assert "qa" in html  # non-secret metadata is kept


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")


def _browser(chromium: str, profile, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         "--window-size=1400,1600", *args],
        capture_output=True, text=True, timeout=90, check=False,
    )


@pytest.mark.browser
def test_html_report_renders_in_chromium(pytester, mixed_stack, tmp_path):
    chromium = _chromium()
    result = pytester.runpytest(*PLUGIN, "--html=reports/report.html", "--self-contained-html")
    assert result.ret == 1
    url = (pytester.path / "reports/report.html").as_uri()

    dom = _browser(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert 'id="bizosaas-verdict"' in page and 'data-verdict="FAIL"' in page
    assert 'id="bizosaas-suites"' in page and 'id="bizosaas-matrix"' in page
    # Result rows are built by pytest-html's JavaScript from its data blob: our
    # Suite/Service cells in the DOM prove the script ran with our columns.
    assert page.count('class="col-suite"') >= 20
    assert '<td class="col-service">wagtail-cms</td>' in page

    png = tmp_path / "report.png"
    shot = _browser(chromium, tmp_path / "profile-shot", f"--screenshot={png}", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    assert (width, height) == (1400, 1600)
    assert len(raw) > 30_000  # a blank page compresses to a few kB
