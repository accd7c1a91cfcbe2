"""Issue 7: bad input stops the run with exit 4 and one line naming what and where.

Each case runs the real suite in a subprocess from the project root (the way
QA runs it), with ``-n 2`` where it matters that the error comes before any
worker starts. No traceback, no INTERNALERROR, no report of a run that never
happened.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from selftest.stackrun import PROJECT_ROOT, clean_env

MALFORMED = "version: 1\nname: x\nservices:\n  a: {container: aa, port: [1\n"
WRONG_TYPE = "version: 1\nname: x\nservices:\n  a: {container: aa, port: abc}\n"
UNKNOWN_FIELD = "version: 1\nname: x\nservices:\n  a: {container: aa, port: 80, colour: red}\n"

# id: (manifest text or None, extra args, extra env, substrings the one line must hold)
CASES: dict[str, tuple[str | None, list[str], dict[str, str], list[str]]] = {
    "malformed-yaml": (MALFORMED, [], {}, ["{stack}", "line 5, column 1", "invalid YAML"]),
    "wrong-type": (WRONG_TYPE, [], {}, ["{stack}", "services.a.port", "'abc'",
                                        "port number"]),
    "unknown-field": (UNKNOWN_FIELD, [], {}, ["{stack}", "services.a", "'colour'"]),
    "missing-manifest": (None, ["--stack={missing}"], {}, ["{missing}", "file not found",
                                                            "--stack"]),
    "missing-compose": (None, ["--compose={missing}"], {}, ["{missing}", "file not found",
                                                             "--compose"]),
    "threshold-101": (None, ["--gate-threshold", "101"], {}, ["--gate-threshold", "'101'",
                                                              "between 0 and 100"]),
    "threshold-abc": (None, ["--gate-threshold=abc"], {}, ["--gate-threshold", "'abc'"]),
    "threshold-abc-env": (None, [], {"BIZOSAAS_GATE_THRESHOLD": "abc"},
                          ["$BIZOSAAS_GATE_THRESHOLD", "'abc'"]),
    "unknown-bool": (None, ["--gate-critical=maybe"], {}, ["--gate-critical", "'maybe'",
                                                          "true or false"]),
    "unknown-environment": (None, ["--env=qa"], {}, ["environments.qa", "no such environment",
                                                     "production, staging"]),
    "zero-timeout": (None, ["--http-timeout=0"], {}, ["--http-timeout", "'0'",
                                                      "greater than 0"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_4_with_one_line(case: str, tmp_path: Path) -> None:
    text, args, env, wanted = CASES[case]
    stack = tmp_path / "stack.yaml"
    missing = tmp_path / "does-not-exist.yaml"
    fill = {"stack": str(stack), "missing": str(missing)}
    extra = [a.format(**fill) for a in args]
    if text is not None:
        stack.write_text(text)
        extra.append(f"--stack={stack}")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
         f"--gate-json={tmp_path / 'gate.json'}", f"--html={tmp_path / 'report.html'}",
         f"--junitxml={tmp_path / 'junit.xml'}", *extra],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, env=clean_env(**env))
    output = proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 4, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), output
    for want in wanted:
        assert want.format(**fill) in lines[0], (want, lines[0])
    # Nothing ran: no verdict is claimed.
    assert not (tmp_path / "gate.json").exists()
