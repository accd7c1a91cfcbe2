"""The fault matrix: every fault the reference stack can switch on is caught, where it belongs.

For each fault of ``python -m sandbox faults``: switch it on, run the whole
acceptance suite (``-n auto``) in a subprocess, read its gate.json, and check
that

- every (suite, service) the fault's ``expect`` names has a failing check;
- nothing outside that expectation fails (no collateral noise); ``expect: {}``
  (a fault only a soak catches) means the plain run is 100%;
- every failure names a cause category and a next command.

The expectation is data, in ``sandbox/faults.yaml``. Then heal, and a full run
is back to 100%.

These tests change the shared stack: run the self-tests serially (the default).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import faults
from selftest.stackrun import run_suite, sandbox

pytestmark = [pytest.mark.stack, pytest.mark.faults]

FAULTS = faults.load()


@pytest.fixture(scope="module", autouse=True)
def _heal_afterwards():
    yield
    sandbox("heal")


def _expected(fault: faults.Fault) -> set[tuple[str, str]]:
    return {(suite, svc) for svc, suites in (fault.expect or {}).items() for suite in suites}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_is_caught_where_it_belongs(name: str, tmp_path: Path) -> None:
    fault = FAULTS[name]
    assert fault.expect is not None, (
        f"sandbox/faults.yaml: {name}.expect is missing (fill in the checks that must fail, "
        "or `{}` for a fault a plain run must not catch)")
    sandbox("fault", name)
    run = run_suite(tmp_path, "-n", "auto")
    seen = run.failing_pairs()
    expected = _expected(fault)
    missing, extra = expected - seen, seen - expected
    assert not missing and not extra, (
        f"fault {name}: missing {sorted(missing)}; unexpected {sorted(extra)}\n{run.summary()}")
    assert run.ret == 1 or run.gate["verdict"] == "PASS", run.summary()
    # The verdict README's fault matrix prints for this fault.
    assert fault.gate in ("PASS", "FAIL"), f"sandbox/faults.yaml: {name}.gate is not set"
    assert run.gate["verdict"] == fault.gate, (
        f"fault {name}: README says {fault.gate}, the gate said {run.gate['verdict']}\n"
        f"{run.summary()}")
    if not fault.expect:
        # A fault only time shows (memory-leak): the plain run is entirely green.
        assert run.ret == 0 and run.gate["pass_rate"] == 100.0, run.summary()
    for check in run.failed():
        msg = check.get("message") or ""
        assert "cause:" in msg and "next:" in msg, (check["nodeid"], msg)


def test_heal_restores_a_clean_run(tmp_path: Path) -> None:
    sandbox("heal")
    run = run_suite(tmp_path, "-n", "auto")
    assert run.ret == 0 and run.gate["pass_rate"] == 100.0, run.summary()


def test_readme_matrix_lists_every_fault_with_its_gate() -> None:
    """README's fault matrix prints the verdict faults.yaml expects (asserted above)."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([\w-]+)` \| [^|]+ \| [^|]+ \| (PASS|FAIL)[^|]*\|$",
                           readme, re.M))
    assert rows == {name: f.gate for name, f in FAULTS.items()}
