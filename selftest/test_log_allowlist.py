"""The log scan's false-positive handling is exercised on every run, and it can fail.

The reference stack's stand-ins no longer rewrite their log lines (issue 11 §5):
on a healthy stack they write benign lines that contain error-like words, as
real services do, and the manifest's ``logs.allow`` list excuses each one with
its reason:

- every application service: ``request stats (last 60 s): N requests, error
  rate 0.00% (0 of N)`` at start and every 60 s;
- amazon-sourcing: ``import retry sweep: 0 job(s) retried, 0 error(s) in last
  batch`` at start and every 30 s;
- saleor-api: ``DeprecationWarning: 'format_error' is deprecated. Use the
  'formatted' property of the error.`` once at start.

Against the running reference stack (read-only: it only reads container logs),
each noise line is really in the logs of the services that write it; with the
manifest as shipped the logs suite passes; with that one allow-list entry
removed (a temporary manifest through ``--stack``), the logs check fails for
exactly those services and quotes the line. Without the stack: each entry
excuses only the benign form of its line (a non-zero count stays an error).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from selftest.stackrun import PROJECT_ROOT, Run, run_suite

MANIFEST = PROJECT_ROOT / "stacks" / "bizosaas-staging.yaml"
APPS = frozenset({"brain-api", "wagtail-cms", "django-crm", "business-directory-api",
                  "coreldove-backend", "ai-agents", "amazon-sourcing", "saleor-api"})
#: A benign line as a stand-in writes it -> the services whose healthy log has it.
NOISE: dict[str, frozenset[str]] = {
    "request stats (last 60 s): 0 requests, error rate 0.00% (0 of 0)": APPS,
    "import retry sweep: 0 job(s) retried, 0 error(s) in last batch":
        frozenset({"amazon-sourcing"}),
    "DeprecationWarning: 'format_error' is deprecated. Use the 'formatted' property of the "
    "error.": frozenset({"saleor-api"}),
}
#: The same lines when something did go wrong: never excused.
NOT_BENIGN = [
    "request stats (last 60 s): 42 requests, error rate 2.38% (1 of 42)",
    "request stats (last 60 s): 100001 requests, error rate 0.00% (1 of 100001)",
    "import retry sweep: 3 job(s) retried, 1 error(s) in last batch",
]


def _logs_section() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())["logs"]


def _as_logged(msg: str) -> str:
    """The line as a stand-in writes it (one JSON object)."""
    import json

    return json.dumps({"ts": "2026-01-01T00:00:00.000Z", "level": "info",
                       "service": "x", "msg": msg})


def _matches(patterns: list[str], line: str) -> list[str]:
    return [p for p in patterns if re.search(p, line)]


def _entry_for(line: str) -> str:
    """The one allow-list entry that excuses ``line``."""
    entries = _matches(_logs_section()["allow"], _as_logged(line))
    assert len(entries) == 1, f"allow-list entries excusing {line!r}: {entries}"
    return entries[0]


# --------------------------------------------------------------------------- no stack


@pytest.mark.parametrize("line", list(NOISE))
def test_noise_matches_an_error_pattern_and_one_allow_entry(line: str) -> None:
    """Each noise line is a real false positive: the scan would flag it without its entry."""
    logs = _logs_section()
    assert _matches(logs["error_patterns"], _as_logged(line)), line
    _entry_for(line)


@pytest.mark.parametrize("line", NOT_BENIGN)
def test_allow_list_excuses_only_the_benign_form(line: str) -> None:
    logs = _logs_section()
    assert _matches(logs["error_patterns"], _as_logged(line)), line
    assert not _matches(logs["allow"], _as_logged(line)), line


def test_every_allow_entry_says_why() -> None:
    """Each entry is preceded by a ``# reason:`` comment in the manifest."""
    lines = MANIFEST.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "allow:")
    entries = [i for i in range(start + 1, len(lines)) if lines[i].startswith("    - ")
               and all(ln.startswith("    ") for ln in lines[start + 1:i + 1])]
    assert len(entries) == len(_logs_section()["allow"])
    for i in entries:
        j = i - 1
        while lines[j].strip().startswith("#") and "reason:" not in lines[j]:
            j -= 1
        assert "# reason:" in lines[j], f"{MANIFEST.name}:{i + 1}: allow entry without a reason"


# --------------------------------------------------------------------------- running stack


def _container(key: str) -> str:
    return yaml.safe_load(MANIFEST.read_text())["services"][key]["container"]


def _run_logs(tmp: Path, manifest: Path | None = None) -> Run:
    extra = [f"--stack={manifest}"] if manifest else []
    return run_suite(tmp / "out", "tests/test_logs.py", "-k", "test_log_free_of_errors",
                     "-n", "0", *extra, timeout=300)


@pytest.mark.stack
@pytest.mark.parametrize("line", list(NOISE))
def test_noise_is_in_the_healthy_logs(line: str) -> None:
    """The allow-list is exercised for real: every service named writes the line."""
    for key in sorted(NOISE[line]):
        out = subprocess.run(["docker", "logs", _container(key)], capture_output=True,
                             text=True, timeout=60)
        text = out.stdout + out.stderr
        assert out.returncode == 0, f"docker logs {_container(key)}: {out.stderr[-300:]}"
        head = line.split(":", 1)[0]
        assert any(head in ln and re.search(_entry_for(line), ln)
                   for ln in text.splitlines()), f"{key}: no benign {head!r} line in its log"


@pytest.mark.stack
def test_logs_pass_with_the_allow_list(tmp_path: Path) -> None:
    run = _run_logs(tmp_path)
    assert run.ret == 0 and run.gate["pass_rate"] == 100.0, run.summary()
    assert {c["service"] for c in run.gate["checks"]} >= APPS, run.summary()


@pytest.mark.stack
@pytest.mark.parametrize("line", list(NOISE))
def test_logs_fail_without_the_entry(line: str, tmp_path: Path) -> None:
    """Remove one entry: the logs check fails for exactly the services that write the line."""
    entry = _entry_for(line)
    data = yaml.safe_load(MANIFEST.read_text())
    data["logs"]["allow"] = [a for a in data["logs"]["allow"] if a != entry]
    manifest = tmp_path / "bizosaas-staging.yaml"
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    run = _run_logs(tmp_path, manifest)
    assert run.ret == 1, run.summary()
    assert run.failing_pairs() == {("logs", key) for key in NOISE[line]}, run.summary()
    head = line.split(":", 1)[0]
    for check in run.failed():
        message = check.get("message") or ""
        assert head in message, (check["nodeid"], message)  # the offending line is quoted
        assert "cause:" in message and "next:" in message, (check["nodeid"], message)
