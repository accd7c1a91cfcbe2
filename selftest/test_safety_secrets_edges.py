"""Issue 11 §3: the edges of secret masking, each a reproduction that failed before.

- Metadata: ``--metadata DB_URL postgresql://app:PW@db/x --metadata API_TOKEN V``
  reached report.html under ``-n 2`` (xdist workers' metadata is merged into
  the controller's after it was scrubbed) and the URL password under ``-n 0``.
- Truncation: a known secret that a message cut short leaked its prefix
  (36 of 49 characters of a Stripe key): everything is masked first, then cut,
  and a fragment of a known secret at a cut (``...``/``…``) is masked too.
- Weak values: ``POSTGRES_PASSWORD=postgres`` turned every ``postgres`` in
  labels, commands and gate.json's per_service/matrix into ``***``. Labels are
  never masked; such a value is reported as a failing "secret not weak" check.
- Empty values: ``BIZOSAAS_REDIS_PASSWORD=`` means "no password", not "the
  default"; where empty is not a valid value the run stops with one line.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bizosaas_acceptance import gate
from bizosaas_acceptance.outcome import curl_cmd, short
from bizosaas_acceptance.probes.http import Reply
from bizosaas_acceptance.secrets import Masker, clip, weakness
from selftest.hostile import HostileHttp, app_service, raw_reply, write_manifest
from selftest.leakscan import canaries, find_leaks
from selftest.stackrun import PROJECT_ROOT, clean_env, run_suite

BASE_IMAGE = "local/bizosaas-base:1"


@pytest.fixture(scope="module")
def values() -> dict[str, str]:
    return canaries("metapw", "metatoken", "metanested", "metanestedurl", "metaenvurl",
                    "stripe", "cutpw", "reprkey")


# -- 1. metadata (pytest-metadata → pytest-html's Environment table, -v header) ----------

META_TEST = textwrap.dedent("""
    import pytest

    @pytest.mark.health
    @pytest.mark.service("brain-api")
    @pytest.mark.parametrize("i", range(4))
    def test_ok(i):
        pass
""")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_metadata_never_leaks(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                              values: dict[str, str], workers: str) -> None:
    # A CI variable pytest-metadata copies on its own (Jenkins' GIT_URL) with a password.
    monkeypatch.setenv("GIT_URL", f"https://ci:{values['metaenvurl']}@git.example.invalid/r")
    pytester.makepyfile(test_meta=META_TEST)
    nested = {"ci": {"DEPLOY_PASSWORD": values["metanested"],
                     "REPO": f"https://bot:{values['metanestedurl']}@git.example.invalid/x"}}
    result = pytester.runpytest_subprocess(
        "-p", "bizosaas_acceptance.plugin", "-p", "no:cacheprovider", "-n", workers, "-v",
        "--metadata", "DB_URL", f"postgresql://app:{values['metapw']}@db/x",
        "--metadata", "API_TOKEN", values["metatoken"],
        "--metadata-from-json", json.dumps(nested),
        "--html=out/report.html", "--junitxml=out/junit.xml", "--gate-json=out/gate.json",
        timeout=120)
    out, err = result.stdout.str(), result.stderr.str()
    assert result.ret == 0, out + err
    # pytest-html keeps the Environment table as escaped JSON in an attribute.
    page = html.unescape((pytester.path / "out" / "report.html").read_text())
    # The entries are still there, their values are not.
    assert '"DB_URL": "postgresql://app:***@db/x"' in page, page[-3000:]
    assert '"API_TOKEN": "(hidden)"' in page and '"DEPLOY_PASSWORD": "(hidden)"' in page
    assert '"REPO": "https://bot:***@git.example.invalid/x"' in page
    assert '"GIT_URL": "https://ci:***@git.example.invalid/r"' in page
    leaks = find_leaks(values, {"stdout": out, "stderr": err}, [pytester.path / "out"])
    assert not leaks, "\n".join(leaks)


# -- 2. mask first, then cut ------------------------------------------------------------

STRIPE = "sk_test_51TestOnlyStagingKeyAbCdEfGhIjKlMnOpQrStUv"  # 49 characters, as in the issue


def _fragments(secret: str, text: str, shortest: int = 4) -> list[str]:
    """Every prefix or suffix of ``secret`` (``shortest`` characters or more) in ``text``."""
    found = []
    for k in range(len(secret), shortest - 1, -1):
        for part in (secret[:k], secret[-k:]):
            if part in text:
                found.append(part)
        if found:
            break
    return found


@pytest.fixture
def stripe_known() -> Iterator[None]:
    from bizosaas_acceptance.secrets import MASKER

    MASKER.add(STRIPE)
    yield


@pytest.mark.parametrize("offset", range(150, 200, 7))
def test_describe_masks_before_it_cuts(stripe_known: None, offset: int) -> None:
    """Reply.describe cuts the body at 200 characters: the key straddling the cut."""
    body = ("x" * offset + " " + STRIPE + " tail " * 40).encode()
    text = Reply(url="http://127.0.0.1:1/health", method="GET", status=503, body=body).describe()
    assert not _fragments(STRIPE, text), text


@pytest.mark.parametrize("offset", range(40, 80, 5))
def test_every_clip_masks_before_it_cuts(stripe_known: None, offset: int) -> None:
    text = "y" * offset + STRIPE + " z" * 50
    assert not _fragments(STRIPE, short(text, 60))
    assert not _fragments(STRIPE, clip(text, 60))
    assert not _fragments(STRIPE, gate._clip(text, 60))
    assert not _fragments(STRIPE, curl_cmd("POST", "http://x/y", body={"k": text}))
    pad = "w" * (gate.MAX_MESSAGE - 30)
    assert not _fragments(STRIPE, gate._clip(pad + STRIPE))


def test_fragment_at_a_cut_is_masked(stripe_known: None) -> None:
    """Text cut elsewhere (a service, pytest's repr): a fragment glued to ``...``."""
    from bizosaas_acceptance.secrets import MASKER

    for text in (f"key {STRIPE[:36]}...", f"key {STRIPE[:30]}… more",
                 f"'abc{STRIPE[:20]}...{STRIPE[-12:]}def'", f"...{STRIPE[-9:]} rest"):
        masked = MASKER.mask(text)
        assert not _fragments(STRIPE, masked), masked
    # A URL's password cut before its '@' is still a password.
    masked = MASKER.mask("dsn postgresql://app:unknownsecretvalue...")
    assert "unknownsecret" not in masked, masked
    # Ordinary text beside an ellipsis is left alone.
    assert MASKER.mask("waiting for staging...") == "waiting for staging..."
    assert MASKER.mask("http://127.0.0.1:8001...") == "http://127.0.0.1:8001..."


def test_known_secret_cut_by_the_target_never_leaks(tmp_path: Path,
                                                     values: dict[str, str]) -> None:
    """End to end: a health body quoting a known key right where describe() cuts it.

    The key is known (an env variable named like a secret in the suite's
    environment); describe() keeps 197 characters of the body, so the cut
    falls 18 characters into the key (its name and 6 of its random characters).
    """
    key = values["stripe"]
    body = ("x" * (197 - 18 - 1) + " " + key + " tail" * 60).encode()
    with HostileHttp({"/health": raw_reply(503, "application/json", body)}) as srv:
        manifest = write_manifest(tmp_path / "cut.yaml", {
            "cut-app": app_service("cut-app-absent", srv.port)})
        env = clean_env(STRIPE_SECRET_KEY=key)
        run = run_suite(tmp_path / "out", f"--stack={manifest}", "-m", "health", "-n", "2",
                        "--http-timeout=3", env=env, timeout=120)
    assert run.ret == 1, run.summary()
    status = next(c["message"] for c in run.failed() if "test_health_status_200" in c["nodeid"])
    assert "503" in status and "xxxxxxxx" in status, status  # the body was quoted
    leaks = find_leaks({"stripe": key}, {"stdout": run.stdout, "stderr": run.stderr},
                       [tmp_path / "out"])
    assert not leaks, "\n".join(leaks)


REPR_TEST = textwrap.dedent('''
    import os
    import pytest

    KEY = os.environ["MY_SERVICE_API_KEY"]

    # pytest keeps the head and the tail of a long repr: some offset puts its cut
    # inside the key, on either side.
    @pytest.mark.parametrize("offset", range(90, 135, 3))
    def test_long_repr(offset):
        blob = "a" * offset + KEY + "b" * 300
        assert {"blob": blob} == {"blob": "other"}

    @pytest.mark.parametrize("offset", range(90, 135, 3))
    def test_long_repr_tail(offset):
        blob = "a" * 300 + KEY + "b" * offset
        assert {"blob": blob} == {"blob": "other"}

    @pytest.mark.parametrize("offset", range(80, 130, 4))
    def test_long_local(offset):
        blob = "c" * offset + KEY + "d" * 300
        assert not blob
''')


def test_pytest_truncated_reprs_never_leak(pytester: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch,
                                           values: dict[str, str]) -> None:
    """pytest itself cuts long reprs in the middle (``aaa...bbb``), with ``-l`` too."""
    monkeypatch.setenv("MY_SERVICE_API_KEY", values["reprkey"])
    pytester.makepyfile(test_repr=REPR_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "bizosaas_acceptance.plugin", "-p", "no:cacheprovider", "-l",
        "--html=out/report.html", "--junitxml=out/junit.xml", "--gate-json=out/gate.json",
        timeout=120)
    out, err = result.stdout.str(), result.stderr.str()
    assert result.ret == 1, out + err
    assert "..." in out, out  # pytest did cut something
    files = [p for p in (pytester.path / "out").rglob("*") if p.is_file()]
    for text in [out, err, *(p.read_text(errors="replace") for p in files)]:
        assert not _fragments(values["reprkey"], text, shortest=8), _fragments(
            values["reprkey"], text, shortest=8)
    leaks = find_leaks(values, {"stdout": out, "stderr": err}, [pytester.path / "out"])
    assert not leaks, "\n".join(leaks)


BROKEN_MODULE = textwrap.dedent('''
    import os
    raise ConnectionError("cannot reach postgresql://app:" + os.environ["DSN_PW"] + "@db/x, "
                          "key " + os.environ["MY_SERVICE_API_KEY"])
''')


@pytest.mark.parametrize("args", [["-n", "0"], ["-n", "2"],
                                  ["-n", "2", "--continue-on-collection-errors"]],
                         ids=["n0", "n2", "n2-continue"])
def test_collection_error_never_leaks(pytester: pytest.Pytester,
                                      monkeypatch: pytest.MonkeyPatch,
                                      values: dict[str, str], args: list[str]) -> None:
    """A module that fails at import with a secret in its exception: terminal, JUnit,
    HTML and gate.json all show the load error, none shows the secret."""
    monkeypatch.setenv("DSN_PW", values["cutpw"])
    monkeypatch.setenv("MY_SERVICE_API_KEY", values["reprkey"])
    pytester.makepyfile(test_broken=BROKEN_MODULE, test_meta=META_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "bizosaas_acceptance.plugin", "-p", "no:cacheprovider", *args,
        "--html=out/report.html", "--junitxml=out/junit.xml", "--gate-json=out/gate.json",
        timeout=120)
    out, err = result.stdout.str(), result.stderr.str()
    assert result.ret == 1, out + err
    assert "postgresql://app:***@db/x" in out, out
    data = json.loads((pytester.path / "out" / "gate.json").read_text())
    assert data["load_errors"] == ["test_broken.py"], data
    leaks = find_leaks(values, {"stdout": out, "stderr": err}, [pytester.path / "out"])
    assert not leaks, "\n".join(leaks)


# -- 3. weak values: never mask labels; report the value instead --------------------------

WEAK_TEST = textwrap.dedent("""
    import pytest
    from bizosaas_acceptance.outcome import Cause, fail

    @pytest.mark.containers
    @pytest.mark.service("postgres")
    @pytest.mark.critical
    def test_state():
        fail("[STATE] (exited) == running: postgres", expected="status running",
             seen="status exited", cause=Cause.WONT_START,
             next_cmd="docker logs --tail 50 bizosaas-postgres-staging")

    @pytest.mark.health
    @pytest.mark.service("brain-api")
    def test_quoted():
        fail("[HEALTH] brain-api", expected="200", seen='503 {"password": "postgres"}',
             cause=Cause.HEALTH, next_cmd="curl -s http://127.0.0.1:8001/health")
""")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_weak_value_never_garbles_labels(pytester: pytest.Pytester,
                                         monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", "postgres")
    monkeypatch.setenv("BIZOSAAS_POSTGRES_PASSWORD", "postgres")
    pytester.makepyfile(test_weak=WEAK_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "bizosaas_acceptance.plugin", "-p", "no:cacheprovider", "-n", workers,
        "--html=out/report.html", "--junitxml=out/junit.xml", "--gate-json=out/gate.json",
        timeout=120)
    out = result.stdout.str()
    assert result.ret == 1, out
    data = json.loads((pytester.path / "out" / "gate.json").read_text())
    assert "postgres" in data["per_service"], data["per_service"]
    assert "postgres" in json.dumps(data["matrix"]), data["matrix"]
    checks = {c["nodeid"].split("::")[-1]: c for c in data["checks"]}
    state = checks["test_state"]
    assert state["service"] == "postgres" and state["suite"] == "containers", state
    assert "docker logs --tail 50 bizosaas-postgres-staging" in state["message"], state
    assert "running: postgres" in state["message"], state
    assert data["critical_failures"] == ["test_weak.py::test_state"], data["critical_failures"]
    # A value where a value is announced is still masked.
    assert '"password": "***"' in checks["test_quoted"]["message"], checks["test_quoted"]
    for name in ("report.html", "junit.xml"):
        text = (pytester.path / "out" / name).read_text()
        assert "bizosaas-postgres-staging" in text, name
        assert "***-staging" not in text and "bizosaas-***" not in text, name
    assert "bizosaas-postgres-staging" in out and "bizosaas-***" not in out, out


def test_weakness_names_the_reason_never_the_value() -> None:
    names = {"service": ["postgres", "brain-api"], "container": ["bizosaas-postgres-staging"],
             "database": ["bizosaas_staging"], "user": ["bizosaas"]}
    assert weakness("postgres", names) == "equals the name of service postgres"
    assert weakness("bizosaas", names) == "equals the name of user bizosaas"
    assert weakness("postgres-staging", names) == (
        "is part of the name of container bizosaas-postgres-staging")
    assert weakness("short", names) == "is shorter than 8 characters"
    assert weakness("password", names) == "is a common word"
    assert weakness("Changeme2024!", names) == "is a common word"
    assert weakness("Elephant", names) == "is a single dictionary-like word"
    assert weakness("staging-pg-password", names) is None
    assert weakness("sk_test_51TestOnlyStagingKeyAbCdEf", names) is None
    # The masker keeps weak values out of its pattern (labels stay readable) ...
    m = Masker()
    m.protect(names)
    m.add("postgres", "s3cr3t-Value-xyz")
    assert m.mask("service postgres, container bizosaas-postgres-staging") == (
        "service postgres, container bizosaas-postgres-staging")
    assert m.mask("key s3cr3t-Value-xyz") == "key ***"
    # ... and a name learnt later demotes a value learnt earlier.
    m.add("brain-gateway-one")
    m.protect({"container": ["brain-gateway-one"]})
    assert m.mask("docker logs brain-gateway-one") == "docker logs brain-gateway-one"
    # Where the value is clearly a value it is masked whatever it is.
    assert m.mask("POSTGRES_PASSWORD=postgres") == "POSTGRES_PASSWORD=***"
    assert m.mask("postgresql://app:postgres@db/x") == "postgresql://app:***@db/x"


@pytest.fixture
def weak_container() -> Iterator[str]:
    """A ``weak-*`` container whose secrets are a name, a word, a short value and a DSN."""
    import secrets as _secrets

    name = f"weak-{_secrets.token_hex(4)}"
    subprocess.run(["docker", "run", "-d", "--name", name,
                    "-e", "POSTGRES_PASSWORD=postgres", "-e", "APP_SECRET_KEY=changeme",
                    "-e", "SHORT_TOKEN=ab12", "-e", "STRONG_API_KEY=Zq8-strong-Secret-4471",
                    "-e", "DATABASE_URL=postgresql://app:app@db:5432/x",
                    "-e", "TOKEN_TTL=3600",
                    BASE_IMAGE, "sleep", "600"], check=True, capture_output=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


@pytest.mark.stack
def test_weak_container_secret_fails_its_check(tmp_path: Path, weak_container: str) -> None:
    manifest = write_manifest(tmp_path / "weak.yaml", {
        "postgres": {"container": weak_container, "port": 5432, "kind": "infra",
                     "protocol": "postgres", "healthcheck": False, "published": False}})
    run = run_suite(tmp_path / "out", f"--stack={manifest}", "-m", "containers", "-n", "0",
                    env=clean_env(), timeout=120)
    weak = {c["service"]: c for c in run.gate.get("checks", [])
            if "test_secrets_not_weak" in c["nodeid"]}
    assert set(weak) == {"postgres"}, run.summary()
    msg = weak["postgres"]["message"]
    assert weak["postgres"]["outcome"] == "failed", msg
    assert weak["postgres"]["category"] == "API Key Not Working", weak["postgres"]
    assert "POSTGRES_PASSWORD equals the name of service postgres" in msg, msg
    assert "APP_SECRET_KEY is a common word" in msg, msg
    assert "SHORT_TOKEN is shorter than 8 characters" in msg, msg
    assert "DATABASE_URL: the password of the URL" in msg, msg
    for line in ("expected:", "seen:", "cause:", "next:"):
        assert line in msg, msg
    assert "STRONG_API_KEY" not in msg and "TOKEN_TTL" not in msg, msg
    # The labels and commands are intact; the weak values themselves never appear
    # as values (only as the names they equal).
    assert "changeme" not in msg and "ab12" not in msg, msg
    assert weak_container in msg, msg
    assert "postgres" in run.gate["per_service"], run.gate["per_service"]


# -- 4. empty means empty ------------------------------------------------------------------

SHOW_TEST = textwrap.dedent("""
    def test_show(pytestconfig):
        from bizosaas_acceptance.state import TARGET
        t = pytestconfig.stash[TARGET]
        print("RESOLVED", repr((t.redis_password, t.postgres_password)))
""")


@pytest.mark.parametrize("source", ["env", "ini", "cli"])
def test_empty_password_means_no_password(pytester: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    pytester.makepyfile(test_show=SHOW_TEST)
    args = []
    if source == "env":
        monkeypatch.setenv("BIZOSAAS_REDIS_PASSWORD", "")
        monkeypatch.setenv("BIZOSAAS_POSTGRES_PASSWORD", "")
    elif source == "ini":
        pytester.makeini("[pytest]\nbizosaas_redis_password =\nbizosaas_postgres_password =\n")
    else:
        args = ["--redis-password=", "--postgres-password="]
    result = pytester.runpytest_subprocess(
        "-p", "bizosaas_acceptance.plugin", "-p", "no:cacheprovider", "-s", "-n", "0",
        "--gate-json=out/gate.json", *args, timeout=120)
    out = result.stdout.str()
    assert "RESOLVED ('', '')" in out, out


EMPTY_INVALID = {
    "BIZOSAAS_GATE_THRESHOLD": "--gate-threshold",
    "BIZOSAAS_HTTP_TIMEOUT": "--http-timeout",
    "BIZOSAAS_GATE_CRITICAL": "--gate-critical",
    "BIZOSAAS_ALLOW_WRITES": "--allow-writes",
    "BIZOSAAS_HOST": "--target-host",
    "BIZOSAAS_VAULT_TOKEN": "--vault-token",
    "BIZOSAAS_API_TOKEN": "--api-token",
    "BIZOSAAS_STACK": "--stack",
}


@pytest.mark.parametrize("var", list(EMPTY_INVALID))
def test_empty_where_empty_is_invalid_exits_4(tmp_path: Path, var: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
         f"--gate-json={tmp_path / 'gate.json'}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        env=clean_env(**{var: ""}))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), proc.stderr
    assert f"${var}" in lines[0] and EMPTY_INVALID[var] in lines[0], lines[0]
    assert "empty" in lines[0], lines[0]
    assert not (tmp_path / "gate.json").exists()
