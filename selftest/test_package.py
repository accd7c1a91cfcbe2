"""The plugin is a real package: it builds, installs, and works from any directory.

Issue 13: `pip install .` used to fail ("Multiple top-level packages"), path
options only worked in the ``--opt=PATH`` form, and a run started elsewhere
stopped on selftest/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from selftest.test_check_counts import expected_counts

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("BIZOSAAS_") and k != "PYTHONPATH"}
    full_env.update(env or {})
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the plugin installed from a built wheel (`pip install .`)."""
    base = tmp_path_factory.mktemp("pkg")
    wheels = base / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(wheels), str(ROOT)], cwd=base)
    assert built.returncode == 0, built.stderr[-2000:]
    env_dir = base / "venv"
    # The dependencies come from this interpreter (no network needed); the plugin
    # itself only from the wheel.
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    wheel = next(wheels.glob("bizosaas_acceptance-*.whl"))
    inst = _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                 "--disable-pip-version-check", str(wheel)], cwd=base)
    assert inst.returncode == 0, inst.stderr[-2000:]
    return py


def test_pip_install_dot_gives_the_plugin(installed: Path, tmp_path: Path) -> None:
    where = _run([str(installed), "-c", "import bizosaas_acceptance as b; print(b.__file__)"],
                 cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(installed.parent.parent) in where.stdout, where.stdout  # the venv's copy
    # The built-in manifest and schemas ship inside the package.
    manifest = _run([str(installed), "-c",
                     "from bizosaas_acceptance.model.manifest import load_manifest;"
                     "s = load_manifest(None); print(s.name, len(s.services))"], cwd=tmp_path)
    assert manifest.returncode == 0, manifest.stderr
    assert manifest.stdout.split() == ["bizosaas-staging", "12"]


def test_help_shows_the_option_group_from_any_directory(installed: Path,
                                                        tmp_path: Path) -> None:
    result = _run([str(installed), "-m", "pytest", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bizosaas acceptance:" in result.stdout
    assert "--compose=COMPOSE" in result.stdout and "--gate-threshold" in result.stdout


def test_editable_checkout_shows_the_option_group(tmp_path: Path) -> None:
    result = _run([sys.executable, "-m", "pytest", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bizosaas acceptance:" in result.stdout


_COMPOSE_CHECKS: list[int] = []


def compose_checks() -> int:
    """Checks collected for sandbox/compose.yaml in the plain form from the checkout
    (the reference the other forms and directories must equal)."""
    if not _COMPOSE_CHECKS:
        import re

        out = _run([sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider",
                    f"--compose={ROOT / 'sandbox' / 'compose.yaml'}", "--co", "-q"], cwd=ROOT)
        m = re.search(r"(\d+)(?:/\d+)? tests? collected", out.stdout)
        assert m, out.stdout[-800:] + out.stderr[-800:]
        _COMPOSE_CHECKS.append(int(m.group(1)))
    return _COMPOSE_CHECKS[0]


@pytest.mark.parametrize("form", ["space", "equals"])
@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_path_options_in_both_forms_from_anywhere(tmp_path: Path, form: str,
                                                  where: str) -> None:
    compose = ROOT / "sandbox" / "compose.yaml"
    manifest = tmp_path / "outside" / "manifest.yaml"
    manifest.parent.mkdir()
    manifest.write_text((ROOT / "stacks" / "bizosaas-staging.yaml").read_text())
    cwd = ROOT if where == "checkout" else tmp_path
    tests = "tests" if where == "checkout" else str(ROOT / "tests")

    def opt(name: str, value: Path) -> list[str]:
        return [name, str(value)] if form == "space" else [f"{name}={value}"]

    full = str(sum(expected_counts().values()))
    for args, expected in ((opt("--compose", compose), str(compose_checks())),
                           (opt("--stack", manifest), full)):
        result = _run([sys.executable, "-m", "pytest", tests, *args, "--co", "-q",
                       f"--html={tmp_path}/r.html", f"--junitxml={tmp_path}/j.xml",
                       f"--gate-json={tmp_path}/g.json"], cwd=cwd)
        assert result.returncode == 0, (args, result.stdout[-1500:], result.stderr[-1500:])
        assert f"{expected} tests collected" in result.stdout or (
            f"{expected}/" in result.stdout), result.stdout[-600:]


def test_a_run_of_the_checkout_from_elsewhere_collects_the_suites_only(tmp_path: Path) -> None:
    result = _run([sys.executable, "-m", "pytest", str(ROOT), "--co", "-q",
                   f"--html={tmp_path}/r.html", f"--junitxml={tmp_path}/j.xml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    assert "selftest" not in result.stdout
    assert f"{sum(expected_counts().values())}/" in result.stdout, result.stdout[-500:]
