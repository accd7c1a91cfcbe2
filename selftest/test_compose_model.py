"""The compose loader on a corpus of real-world-shaped files (selftest/data/compose/).

Pure loading (no engine): every quirk of SPEC §4 loads, the derived model is
right, errors are one line naming file, field and fix, secrets never reach the
model or an error, and a bad --compose/--stack exits 4 with that line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bizosaas_acceptance.model.compose import (
    ComposeProject,
    Interpolator,
    load_compose,
    manifest_data,
    stack_from_compose,
)
from bizosaas_acceptance.model.manifest import ManifestError
from bizosaas_acceptance.model.target import Target, default_host, engine_host

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "selftest" / "data" / "compose"
SECRETS_IN_CORPUS = ("hunter2", "s3cret", "tok_live_0123456789")


def corpus(*names: str) -> list[str]:
    return [str(CORPUS / n) for n in names]


@pytest.fixture(autouse=True)
def _no_compose_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus must load with none of its ${VAR}s set (SPEC §4)."""
    for name in ("DB_PASSWORD", "REDIS_PASSWORD", "STRIPE_SECRET_KEY", "API_TAG", "SECRET_KEY",
                 "UNSET_WITHOUT_DEFAULT", "UNSET_WITH_DEFAULT", "WEB_EXTRA_PORT", "API_TOKEN",
                 "SESSION_SECRET", "COMPOSE_PROJECT_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def shop() -> ComposeProject:
    return load_compose(corpus("infra.yaml", "backend.yaml"))


@pytest.fixture(scope="module")
def quirks() -> ComposeProject:
    return load_compose(corpus("quirks.yaml"))


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("files", [["infra.yaml", "backend.yaml"], ["quirks.yaml"],
                                   ["hygiene.yaml"], ["backend.yaml"], ["infra.yaml"]],
                         ids=lambda f: "+".join(f))
def test_corpus_loads_as_a_stack(files: list[str]) -> None:
    stack = stack_from_compose(corpus(*files))
    assert stack.services


def test_reference_compose_file_matches_the_default_manifest() -> None:
    """sandbox/compose.yaml derives the same containers, ports, paths and limits."""
    from bizosaas_acceptance.model.manifest import load_manifest

    derived = stack_from_compose([str(ROOT / "sandbox" / "compose.yaml")])
    manifest = load_manifest()
    assert derived.network == manifest.network
    for key, want in manifest.services.items():
        got = derived.services[key]
        assert (got.container, got.port, got.host_port, got.health_path, got.kind,
                got.protocol, got.memory, got.cpus) == (
            want.container, want.port, want.host_port, want.health_path, want.kind,
            want.protocol, want.memory, want.cpus), key
        assert set(want.depends_on) <= set(got.depends_on), key  # compose may say more


def test_project_name_and_container_names(shop: ComposeProject, quirks: ComposeProject) -> None:
    assert shop.name == "shopstack"  # name: in the first file
    assert shop.services["db"].container == "shop-db"  # container_name
    assert shop.services["cache"].container == "shopstack-cache-1"  # <project>-<service>-1
    assert quirks.name == "compose"  # no name: -> the first file's directory
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPOSE_PROJECT_NAME", "Other.Name")
        assert load_compose(corpus("quirks.yaml")).name == "othername"


def test_later_files_override_and_append(shop: ComposeProject) -> None:
    api = shop.services["api"]
    assert api.image == "ghcr.io/example/api:latest"  # replaced, ${API_TAG:-latest}
    assert api.container == "shop-api"
    assert [(b.target, b.published) for b in api.ports] == [(8080, 18080)]  # not duplicated
    assert api.depends_on == ("db", "cache")  # map form, services of the other file
    assert (api.memory, api.cpus) == (512 * 2**20, 0.5)
    assert api.source.endswith("backend.yaml")


def test_git_url_build_contexts(shop: ComposeProject) -> None:
    assert shop.services["api"].build == "https://github.com/example/api.git#main:docker"
    assert shop.services["worker"].build == "git@github.com:example/worker.git"
    assert shop.services["worker"].image is None


def test_unset_variables_leave_markers(shop: ComposeProject, quirks: ComposeProject) -> None:
    assert {"DB_PASSWORD", "REDIS_PASSWORD", "STRIPE_SECRET_KEY"} <= shop.unresolved
    assert {"SECRET_KEY", "UNSET_WITHOUT_DEFAULT", "WEB_EXTRA_PORT"} <= quirks.unresolved
    app = quirks.services["app"]
    assert app.resolved_env["REQUIRED"] == "${UNSET_WITHOUT_DEFAULT}"
    assert app.resolved_env["WITH_DEFAULT"] == "fallback"
    assert quirks.services["web"].resolved_env["PRICE"] == "$5"  # $$ escapes


def test_interpolation_rules() -> None:
    i = Interpolator({"SET": "v", "EMPTY": ""})
    assert i.text("${SET}-${SET:-d}-${EMPTY:-d}-${EMPTY-d}-${NOPE-d}") == "v-v-d--d"
    assert i.text("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}|$SET|$$SET") == "alt||alt|v|$SET"
    assert i.text("${NOPE:?must be set}") == "${NOPE:?must be set}"
    assert i.text("${NOPE:-${SET}}") == "v"
    assert i.unresolved == {"NOPE"}


def test_ports_short_long_ranges(quirks: ComposeProject) -> None:
    got = [(b.target, b.published, b.host_ip, b.protocol) for b in quirks.services["web"].ports]
    assert got == [
        (80, 18100, "127.0.0.1", "tcp"),       # "127.0.0.1:18100:80"
        (443, 18143, "127.0.0.1", "tcp"),      # long syntax, published as a string
        (9000, 18200, None, "tcp"), (9001, 18201, None, "tcp"), (9002, 18202, None, "tcp"),
        (8300, 18300, "::1", "tcp"),           # "[::1]:18300:8300"
        (8400, 18400, None, "udp"),            # "18400:8400/udp"
        (9999, None, None, "tcp"),             # bare number: random host port
        (7000, None, None, "tcp"),             # "${WEB_EXTRA_PORT}:7000", unset
    ]


@pytest.mark.parametrize(("service", "path", "port", "has_check"), [
    ("web", "/healthz", 80, True),         # plain string, curl, no port
    ("app", "/status/live", 3000, True),   # CMD-SHELL, wget
    ("probe", "/ready", 8081, True),       # CMD, python urllib
    ("cron", None, None, False),           # disable: true
])
def test_health_paths(quirks: ComposeProject, service: str, path: str | None,
                      port: int | None, has_check: bool) -> None:
    svc = quirks.services[service]
    assert (svc.health_path, svc.health_port, svc.healthcheck) == (path, port, has_check)


def test_limits_both_spellings(quirks: ComposeProject, shop: ComposeProject) -> None:
    assert (quirks.services["web"].memory, quirks.services["web"].cpus) == (128 * 2**20, 0.1)
    assert (quirks.services["app"].memory, quirks.services["app"].cpus) == (
        int(1.5 * 2**30), 2.0)
    assert (shop.services["cache"].memory, shop.services["cache"].cpus) == (256 * 2**20, 0.25)
    assert quirks.services["probe"].memory is None


def test_networks_external_and_named(shop: ComposeProject, quirks: ComposeProject) -> None:
    assert shop.networks["backend"].external and shop.networks["backend"].name == \
        "shop-backend-net"
    assert quirks.networks["legacy"].name == "legacy-net"  # external: {name: ...}
    assert quirks.services["probe"].networks == ()  # network_mode: service:app
    assert stack_from_compose(corpus("infra.yaml", "backend.yaml")).network == \
        "shop-backend-net"


def test_derived_kinds_and_ports() -> None:
    stack = stack_from_compose(corpus("infra.yaml", "backend.yaml"))
    db, cache, api, worker = (stack.services[k] for k in ("db", "cache", "api", "worker"))
    assert (db.kind, db.protocol, db.port, db.host_port, db.published) == (
        "infra", "postgres", 5432, 15432, True)
    assert (cache.kind, cache.protocol, cache.port, cache.published) == (
        "infra", "redis", 6379, False)
    assert (api.kind, api.health_path, api.port, api.host_port) == ("app", "/api/health", 8080,
                                                                    18080)
    assert worker.kind == "infra" and not worker.published
    assert api.depends_on == ("db", "cache")


def test_env_names_only_never_values() -> None:
    project = load_compose(corpus("hygiene.yaml"))
    dumped = yaml.safe_dump(manifest_data(project))
    stack = stack_from_compose(corpus("hygiene.yaml"))
    assert "POSTGRES_PASSWORD" in stack.services["db"].env
    for secret in SECRETS_IN_CORPUS:
        assert secret not in dumped
        assert secret not in repr(stack)
        assert secret not in repr(project)


def test_depends_on_outside_the_files_still_loads() -> None:
    stack = stack_from_compose(corpus("backend.yaml"))  # db/cache live in infra.yaml
    assert stack.services["api"].depends_on == ()


# --------------------------------------------------------------------------- overlay


def test_overlay_adds_what_compose_cannot_say() -> None:
    stack = stack_from_compose(corpus("infra.yaml", "backend.yaml"), str(CORPUS / "overlay.yaml"))
    assert stack.name == "shop-staging"
    assert stack.services["api"].critical and stack.services["db"].critical
    assert not stack.services["cache"].critical
    assert stack.services["api"].secrets == ("STRIPE_SECRET_KEY",)
    assert stack.services["api"].container == "shop-api"  # compose facts kept
    assert stack.threshold("memory_pct") == 90
    assert stack.threshold("cpu_pct") == 50  # defaults kept
    assert "overlay" in stack.source


def test_default_environments_for_compose_stacks() -> None:
    from bizosaas_acceptance.model.manifest import apply_environment

    stack = stack_from_compose(corpus("quirks.yaml"))
    _, prod = apply_environment(stack, "production")
    _, staging = apply_environment(stack, "staging")
    assert prod["allow_writes"] is False and staging["allow_writes"] is True


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("files", "overlay", "expected"), [
    (["nope.yaml"], None, "nope.yaml: file not found (check --compose"),
    (["bad/bad_port.yaml"], None, "bad_port.yaml: services.web.ports[0]: 'http' is not a port"),
    (["bad/bad_memory.yaml"], None,
     "bad_memory.yaml: services.web.deploy.resources.limits.memory: 'lots' is not a size"),
    (["bad/no_image.yaml"], None, "no_image.yaml: services.web: neither image nor build"),
    (["bad/not_mapping.yaml"], None, "not_mapping.yaml: (top level): expected a mapping"),
    (["bad/bad_yaml.yaml"], None, "bad_yaml.yaml: line 4, column 4: invalid YAML"),
    (["infra.yaml", "backend.yaml"], "bad/overlay_unknown.yaml",
     "overlay_unknown.yaml: services.payments: no such service in"),
    (["infra.yaml", "backend.yaml"], "bad/overlay_badfield.yaml",
     "overlay_badfield.yaml: services.api.critical: 'maybe' is not of type 'boolean' "
     "(expected true or false)"),
    (["infra.yaml"], "nope-overlay.yaml", "nope-overlay.yaml: file not found (check --stack"),
], ids=["missing-file", "bad-port", "bad-memory", "no-image", "not-mapping", "bad-yaml",
        "overlay-unknown-key", "overlay-bad-field", "overlay-missing"])
def test_errors_are_one_line(files: list[str], overlay: str | None, expected: str) -> None:
    with pytest.raises(ManifestError) as info:
        stack_from_compose(corpus(*files), str(CORPUS / overlay) if overlay else None)
    text = str(info.value)
    assert "\n" not in text
    assert expected in text
    assert "(expected" in text or "(check" in text or "(fix" in text


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIZOSAAS_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "expected"), [
    (["--compose", "nope.yaml"], "nope.yaml: file not found"),
    (["--compose", str(CORPUS / "infra.yaml"), "--compose", str(CORPUS / "backend.yaml"),
      "--stack", str(CORPUS / "bad" / "overlay_unknown.yaml")],
     "services.payments: no such service"),
], ids=["missing-compose-file", "unknown-overlay-key"])
def test_usage_error_exits_4_with_one_line(args: list[str], expected: str,
                                           tmp_path: Path) -> None:
    res = _pytest("tests/test_containers.py", *args, f"--html={tmp_path}/r.html",
                  f"--junitxml={tmp_path}/j.xml", f"--gate-json={tmp_path}/g.json")
    assert res.returncode == 4, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if expected in ln]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_env_alias_and_production_header(tmp_path: Path) -> None:
    """--env production on a compose stack: the overlay's host, writes off."""
    res = _pytest("tests/test_containers.py", "--collect-only",
                  "--compose", str(CORPUS / "infra.yaml"), "--compose",
                  str(CORPUS / "backend.yaml"), "--stack", str(CORPUS / "overlay.yaml"),
                  "--env", "production", f"--html={tmp_path}/r.html",
                  f"--junitxml={tmp_path}/j.xml", f"--gate-json={tmp_path}/g.json")
    out = res.stdout
    assert "target host shop.example.com" in out, out + res.stderr
    assert "environment production, writes not allowed" in out


# --------------------------------------------------------------------------- hygiene

HYGIENE_FAILURES = {
    "test_limits_set[db]", "test_limits_set[app]", "test_no_debug_flags[app]",
    "test_no_literal_secrets[db]", "test_no_literal_secrets[app]",
    "test_depends_on_defined[app]", "test_external_networks_exist[app]",
    "test_databases_not_on_all_interfaces[db]",
}


def test_hygiene_finds_each_problem_once(tmp_path: Path) -> None:
    """hygiene.yaml has one of each problem; "good" has none; values never printed.

    Needs a Docker engine (the external-network check asks it).
    """
    import json

    res = _pytest("tests/test_hygiene.py", "--compose", str(CORPUS / "hygiene.yaml"),
                  f"--html={tmp_path}/r.html", f"--junitxml={tmp_path}/j.xml",
                  f"--gate-json={tmp_path}/g.json")
    gate = json.loads((tmp_path / "g.json").read_text())
    failed = {c["nodeid"].split("::")[-1] for c in gate["checks"] if c["outcome"] == "failed"}
    assert failed == HYGIENE_FAILURES, res.stdout[-3000:]
    passed = {c["nodeid"].split("::")[-1] for c in gate["checks"] if c["outcome"] == "passed"}
    assert {"test_limits_set[good]", "test_no_literal_secrets[good]"} <= passed
    everything = res.stdout + res.stderr + "".join(
        p.read_text() for p in tmp_path.iterdir() if p.is_file())
    for secret in SECRETS_IN_CORPUS:
        assert secret not in everything


def test_hygiene_absent_without_compose(tmp_path: Path) -> None:
    res = _pytest("tests/test_hygiene.py", f"--html={tmp_path}/r.html",
                  f"--junitxml={tmp_path}/j.xml", f"--gate-json={tmp_path}/g.json")
    assert "6 deselected" in res.stdout, res.stdout[-2000:]


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(("docker_host", "explicit", "section", "expected"), [
    (None, None, {}, "127.0.0.1"),
    ("unix:///var/run/docker.sock", None, {}, "127.0.0.1"),
    ("ssh://deploy@staging.example.com", None, {}, "staging.example.com"),
    ("ssh://root@127.0.0.1:2222", None, {}, "127.0.0.1"),
    ("ssh://root@localhost:2222", None, {}, "127.0.0.1"),
    ("tcp://10.0.0.5:2376", None, {}, "10.0.0.5"),
    ("ssh://deploy@staging.example.com", "10.1.1.1", {}, "10.1.1.1"),
    ("ssh://deploy@staging.example.com", None, {"target_host": "lb.example"}, "lb.example"),
])
def test_target_host_defaults(docker_host: str | None, explicit: str | None,
                              section: dict[str, str], expected: str) -> None:
    settings = {"docker_host": docker_host, "target_host": explicit or "127.0.0.1",
                "_target_host_default": explicit is None}
    assert default_host(settings, section) == expected


def test_engine_host() -> None:
    assert engine_host("ssh://u@h.example:22") == "h.example"
    assert engine_host("npipe:////./pipe/docker_engine") is None


@pytest.mark.parametrize(("env", "section", "writes"), [
    (None, {}, True), ("staging", {"allow_writes": True}, True),
    ("production", {}, False), ("production", {"allow_writes": True}, True),
])
def test_writes_by_environment(env: str | None, section: dict[str, bool], writes: bool) -> None:
    settings = {"docker_host": None, "target_host": "127.0.0.1", "environment": env,
                "postgres_user": "u", "postgres_password": "", "redis_password": "",
                "vault_token": "", "http_timeout": 1.0, "connect_timeout": 1.0}
    stack = stack_from_compose(corpus("quirks.yaml"))
    assert Target.from_settings(settings, stack, section).allow_writes is writes
