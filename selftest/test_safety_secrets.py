"""Issue 7: no secret value reaches any output of the suite.

Canary values are planted everywhere the suite can see them, the suite runs
for real, and every artifact is scanned: stdout, stderr, report.html (with its
embedded base64 assets), junit.xml, gate.json and the run's scratch directory.

- ``test_canaries_in_target_never_leak``: a throwaway container ``canary-*``
  (own network) with canary API keys and a DSN with a canary password in its
  env, logging lines that quote them; a local hostile health endpoint whose body
  quotes them; canary credentials in the pytest process's environment and
  options. The manifest requires those secrets with a wrong prefix, so the
  checks fail and must talk about them.
- ``test_canaries_in_test_code_never_leak``: the generic report paths, with our
  plugins loaded: assertion rewriting, ``-l`` locals, print/stderr/logging,
  ``record_property``, skip and xfail reasons, pytest-html extras, a Docker URL
  with a password, a DSN in an exception.
"""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from selftest.hostile import HostileHttp, app_service, closed_port, json_reply, write_manifest
from selftest.leakscan import canaries, find_leaks
from selftest.stackrun import clean_env, run_suite

BASE_IMAGE = "local/bizosaas-base:1"


@pytest.fixture(scope="module")
def values() -> dict[str, str]:
    return canaries("stripe", "openai", "dsnpw", "logpw", "bodykv", "apitoken",
                    "envkey", "envurl", "vaulttoken", "pgpw")


def _docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def canary_container(values: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A ``canary-*`` container on its own network; its log quotes its secrets."""
    tag = values["stripe"][-11:-1]
    name, net = f"canary-{tag}", f"canary-net-{tag}"
    # The sleep first: lines printed in the very first instant can predate the
    # container's StartedAt, which the logs suite reads from.
    script = (f"sleep 1; echo 'ERROR payment failed: stripe rejected key {values['stripe']}'; "
              f"echo 'Traceback (most recent call last): password={values['logpw']}'; "
              f"echo 'CRITICAL connecting to postgresql://app:{values['dsnpw']}@db:5432/x'; "
              "exec sleep 600")
    _docker("network", "create", net)
    try:
        _docker("run", "-d", "--name", name, "--network", net,
                "-e", f"STRIPE_SECRET_KEY={values['stripe']}",
                "-e", f"OPENAI_API_KEY={values['openai']}",
                "-e", f"DATABASE_URL=postgresql://app:{values['dsnpw']}@db:5432/x",
                BASE_IMAGE, "sh", "-c", script)
        yield name, net
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run(["docker", "network", "rm", net], capture_output=True, timeout=60)


def _health_body(values: dict[str, str]) -> dict[str, str]:
    """What a misconfigured service might answer: its secrets, known and unknown."""
    return {
        "status": "unhealthy",
        "database": f"failed for postgresql://app:{values['dsnpw']}@db/x",
        "stripe": f"rejected {values['stripe']}",
        "token": values["apitoken"],
        "env": values["envkey"],
        # Never learnt anywhere: only its name says it is secret.
        "detail": f'client_secret="{values["bodykv"]}"',
    }


@pytest.mark.stack
def test_canaries_in_target_never_leak(tmp_path: Path, values: dict[str, str],
                                       canary_container: tuple[str, str]) -> None:
    name, net = canary_container
    with HostileHttp({"/health": json_reply(503, _health_body(values))}) as srv:
        manifest = write_manifest(
            tmp_path / "canary.yaml",
            {"canary-app": app_service(name, srv.port, critical=True, networks=[net],
                                       secrets=["STRIPE_SECRET_KEY", "OPENAI_API_KEY"],
                                       health_dependencies=["database"])},
            network=net,
            # Wrong prefixes: the well-formedness checks fail and describe the values.
            secret_formats={"STRIPE_SECRET_KEY": {"prefix": "sk_live_"},
                            "OPENAI_API_KEY": {"prefix": "sk-"}},
            logs={"error_patterns": [r"(?i)\b(error|critical|traceback)\b"]})
        env = clean_env(OPENAI_API_KEY=values["envkey"],
                        MY_SERVICE_URL=f"https://svc:{values['envurl']}@example.invalid/x",
                        BIZOSAAS_API_TOKEN=values["apitoken"],
                        BIZOSAAS_VAULT_TOKEN=values["vaulttoken"],
                        BIZOSAAS_POSTGRES_PASSWORD=values["pgpw"])
        run = run_suite(tmp_path / "out", f"--stack={manifest}", "--run-id=canary-run",
                        "-n", "2", "--http-timeout=3", env=env, timeout=120)
    assert run.ret == 1, run.summary()
    messages = {c["nodeid"].split("::")[-1]: c["message"] for c in run.failed()}
    # The checks did fail about the secrets, so the scan below means something.
    assert any("STRIPE_SECRET_KEY well-formed" in m for m in messages.values()), run.summary()
    assert "***" in messages["test_health_status_200[canary-app]"], run.summary()
    assert "***" in messages["test_log_free_of_errors[canary-app]"], run.summary()
    leaks = find_leaks(values, {"stdout": run.stdout, "stderr": run.stderr},
                       [tmp_path / "out"])
    assert not leaks, "\n".join(leaks)
    # The scratch directory held container env: it must be gone.
    assert not list(Path("/tmp").glob("bizosaas-acceptance-canary-run*"))


TEST_CODE = '''
import logging, os, sys
import pytest

SECRET = os.environ["OPENAI_API_KEY"]


def test_assert_rewrite():
    config = {"password": SECRET}
    assert config == {}


def test_output_and_logs():
    print("the key is", SECRET)
    sys.stderr.write("stderr " + SECRET + "\\n")
    logging.getLogger("app").warning("token %s", SECRET)
    assert False, "see the captured output"


def test_property(record_property):
    record_property("configured_key", SECRET)
    assert False


def test_skip_reason():
    pytest.skip("skipped, key " + SECRET)


def test_xfail_reason():
    pytest.xfail("known, key " + SECRET)


def test_html_extras(extras):
    import pytest_html
    extras.append(pytest_html.extras.text("key " + SECRET, name="config"))
    extras.append(pytest_html.extras.json({"api_key": SECRET}))
    assert False


def test_dsn_in_exception():
    raise ConnectionError("cannot reach postgresql://app:" + os.environ["DSN_PW"] + "@db/x")


def test_docker_host_with_password(docker_client):
    pass
'''


def test_canaries_in_test_code_never_leak(pytester: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch,
                                          values: dict[str, str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", values["envkey"])
    monkeypatch.setenv("DSN_PW", values["dsnpw"])
    monkeypatch.setenv("DOCKER_HOST", f"tcp://admin:{values['envurl']}@127.0.0.1:{closed_port()}")
    monkeypatch.setenv("BIZOSAAS_CONNECT_TIMEOUT", "1")
    pytester.makepyfile(test_leaky=textwrap.dedent(TEST_CODE))
    result = pytester.runpytest_subprocess(
        "-p", "bizosaas_acceptance.plugin", "-p", "fixtures.stack", "-p", "fixtures.clients",
        "-p", "no:cacheprovider", "-l", "-rA", "--html=out/report.html",
        "--junitxml=out/junit.xml", "--gate-json=out/gate.json", "-o", "log_level=INFO",
        timeout=120)
    out, err = result.stdout.str(), result.stderr.str()
    assert result.ret == 1, out + err
    assert "INTERNALERROR" not in out + err
    assert "tcp://admin:***@127.0.0.1" in out, out
    leaks = find_leaks(values, {"stdout": out, "stderr": err}, [pytester.path / "out"])
    assert not leaks, "\n".join(leaks)
