"""Fixtures for the plugin's self-tests: real pytest runs in temporary directories."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bizosaas_acceptance.options import OPTIONS

#: The project root (the directory holding the ``acceptance`` package).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _inner_run_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``acceptance`` importable in subprocess runs; keep the caller's settings out."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PROJECT_ROOT), path])))
    # A CI job may export BIZOSAAS_GATE_THRESHOLD etc.; inner runs must see defaults.
    for opt in OPTIONS:
        monkeypatch.delenv(opt.env, raising=False)


def suite_source(
    *,
    passed: int = 0,
    failed: int = 0,
    setup_errors: int = 0,
    teardown_errors: int = 0,
    skipped: int = 0,
    xfailed: int = 0,
    xpassed: int = 0,
    strict_xpassed: int = 0,
    critical_failed: int = 0,
    suite: str = "health",
    service: str = "brain-api",
) -> str:
    """A test module with the given number of checks of each kind, all labelled."""
    labels = f"@pytest.mark.{suite}\n@pytest.mark.service({service!r})\n"
    src = [
        "import pytest\n",
        (
            # A diagnosed fixture failure: the cause travels as data, not as text.
            "@pytest.fixture\ndef broken_setup():\n"
            "    from bizosaas_acceptance.outcome import fail\n"
            "    fail('cannot connect', expected='a database', seen='refused',\n"
            "         cause='database unreachable', next_cmd='docker logs db')\n"
        ),
        (
            "@pytest.fixture\ndef broken_teardown():\n"
            "    yield\n    raise RuntimeError('cleanup failed')\n"
        ),
    ]
    kinds = {
        "passed": (passed, "", "def test_passed(i):\n    pass\n"),
        "failed": (failed, "", "def test_failed(i):\n    assert i < 0, 'value out of range'\n"),
        "setup": (setup_errors, "", "def test_setup_error(i, broken_setup):\n    pass\n"),
        "teardown": (teardown_errors, "",
                     "def test_teardown_error(i, broken_teardown):\n    pass\n"),
        "skipped": (skipped, "", "def test_skipped(i):\n    pytest.skip('not deployed here')\n"),
        "xfailed": (xfailed, "@pytest.mark.xfail(reason='known bug')\n",
                    "def test_xfailed(i):\n    assert 0\n"),
        "xpassed": (xpassed, "@pytest.mark.xfail(reason='flaky')\n",
                    "def test_xpassed(i):\n    pass\n"),
        "strict": (strict_xpassed, "@pytest.mark.xfail(reason='must fail', strict=True)\n",
                   "def test_strict_xpassed(i):\n    pass\n"),
        "critical": (critical_failed, "@pytest.mark.critical\n",
                     "def test_critical(i):\n    assert False, 'critical service down'\n"),
    }
    for count, extra, body in kinds.values():
        if count:
            src.append(f"{labels}{extra}@pytest.mark.parametrize('i', range({count}))\n{body}")
    return "\n\n".join(src)


@pytest.fixture
def make_suite(pytester: pytest.Pytester):
    """Write ``test_suite.py`` (or the given module name) built by :func:`suite_source`."""

    def make(name: str = "test_suite", **counts: Any) -> Path:
        return pytester.makepyfile(**{name: suite_source(**counts)})

    return make


@pytest.fixture
def gate_json(pytester: pytest.Pytester):
    """Load the gate.json an inner run wrote (default path)."""

    def load(path: str = "reports/gate.json") -> dict[str, Any]:
        return json.loads((pytester.path / path).read_text(encoding="utf-8"))

    return load


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The three-node Swarm scenario (marker ``multinode``, ~3 min, three
    Docker-in-Docker nodes) runs only when ``-m`` names it: ``-m multinode``."""
    if "multinode" in (config.getoption("markexpr", "") or ""):
        return
    dropped = [i for i in items if i.get_closest_marker("multinode")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not i.get_closest_marker("multinode")]
