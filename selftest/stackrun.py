"""Run the acceptance suite for real, in a subprocess, and read what it decided.

Used by the end-to-end self-tests: they run against the reference stack of
sandbox/ (started by `./run selftest`), never against a mock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bizosaas_acceptance.options import OPTIONS

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    """One finished run: exit status, output and its gate.json."""

    ret: int
    stdout: str
    stderr: str
    gate: dict[str, Any]
    reports: Path

    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.gate.get("checks", []) if c["outcome"] in ("failed", "error")]

    def failing_pairs(self) -> set[tuple[str, str]]:
        return {(c["suite"], c["service"]) for c in self.failed()}

    def summary(self) -> str:
        lines = [f"exit {self.ret}; verdict {self.gate.get('verdict')} "
                 f"{self.gate.get('pass_rate')}%"]
        for c in self.failed()[:40]:
            first = (c.get("message") or "").splitlines()[:1]
            lines.append(f"  {c['outcome']}: {c['nodeid']} [{c['suite']}/{c['service']}] "
                         f"{first[0] if first else ''}")
        return "\n".join(lines)


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus every suite setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in {o.env for o in OPTIONS}}
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env.update(extra)
    return env


def run_suite(out_dir: Path, *args: str, timeout: float = 600,
              env: dict[str, str] | None = None) -> Run:
    """``python -m pytest <args>`` in the project root, reports written to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gate = out_dir / "gate.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--gate-json={gate}", f"--html={out_dir / 'report.html'}",
           f"--junitxml={out_dir / 'junit.xml'}", *args]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env or clean_env())
    data = json.loads(gate.read_text()) if gate.exists() else {}
    return Run(proc.returncode, proc.stdout, proc.stderr, data, out_dir)


def sandbox(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    """``python -m sandbox <args>``; raises with its output when it fails."""
    proc = subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout, env=clean_env())
    if proc.returncode != 0:
        raise AssertionError(f"python -m sandbox {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc
