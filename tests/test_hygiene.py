"""Compose hygiene: what a staging operator wants told about the compose files.

Only with ``--compose`` (the checks judge the files, not the running stack; the
plugin deselects them otherwise). Each check is parametrized per compose
service. Environment values are read to judge them but never shown: a message
names the variable and what is wrong, never its value.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import pytest

from bizosaas_acceptance.model.compose import (
    ComposeProject,
    ComposeService,
    PortBinding,
    is_reference,
    load_compose,
)
from bizosaas_acceptance.model.manifest import ManifestError
from bizosaas_acceptance.outcome import Cause, check
from bizosaas_acceptance.state import SETTINGS

pytestmark = [pytest.mark.hygiene]

#: Ports of databases and other backends that must never listen on every interface.
DATABASE_PORTS: dict[int, str] = {
    5432: "PostgreSQL", 6379: "Redis", 3306: "MySQL/MariaDB", 27017: "MongoDB",
    8200: "Vault", 7233: "Temporal", 9200: "Elasticsearch", 11211: "Memcached",
    5672: "RabbitMQ", 1433: "SQL Server", 9042: "Cassandra", 2379: "etcd",
}
#: Names whose value is a secret.
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.I)
#: A URL with a password in it: scheme://user:password@host.
URL_PASSWORD = re.compile(r"://[^:/@\s]*:(?P<pw>[^@\s/]+)@")
#: A ${VAR:-default} / ${VAR-default} reference that carries a literal default.
LITERAL_DEFAULT = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-(?P<default>[^}]+)\}")
TRUE = {"1", "true", "yes", "on"}
#: Debug switches: name -> values that mean "on".
DEBUG_FLAGS: dict[str, set[str]] = {
    "DEBUG": TRUE, "FLASK_DEBUG": TRUE, "DJANGO_DEBUG": TRUE, "APP_DEBUG": TRUE,
    "WERKZEUG_DEBUG_PIN": {"off"}, "PYTHONDEVMODE": TRUE,
    "NODE_ENV": {"development", "dev"}, "FLASK_ENV": {"development"},
    "APP_ENV": {"development", "dev", "local"}, "RAILS_ENV": {"development"},
    "ENVIRONMENT": {"development", "dev", "local"}, "ENV": {"development", "dev", "local"},
    "ASPNETCORE_ENVIRONMENT": {"development"}, "SPRING_PROFILES_ACTIVE": {"dev"},
    "LOG_LEVEL": {"debug", "trace"},
}


@lru_cache(maxsize=4)
def _project(paths: tuple[str, ...]) -> ComposeProject:
    return load_compose(list(paths))


def _from_config(config: pytest.Config) -> ComposeProject | None:
    paths = tuple(config.stash[SETTINGS].get("compose") or ())
    if not paths:
        return None
    try:
        return _project(paths)
    except ManifestError as exc:  # already a usage error at configure time
        raise pytest.UsageError(str(exc)) from None


def _critical(config: pytest.Config, key: str) -> bool:
    from bizosaas_acceptance.state import STACK

    svc = config.stash[STACK].services.get(key)
    return bool(svc and svc.critical)


def _external_nets(project: ComposeProject, svc: ComposeService) -> list[str]:
    return [project.networks[n].name for n in svc.networks
            if n in project.networks and project.networks[n].external]


#: Which services each parametrized argument covers.
SELECT: dict[str, Any] = {
    "compose_service": lambda p, s: True,
    "networked_service": lambda p, s: bool(_external_nets(p, s)),
    "publishing_service": lambda p, s: bool(s.ports),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    project = _from_config(metafunc.config)
    for name, wanted in SELECT.items():
        if name not in metafunc.fixturenames:
            continue
        params = []
        for svc in (project.services.values() if project else ()):
            if not wanted(project, svc):
                continue
            marks = [pytest.mark.service(svc.key)]
            if _critical(metafunc.config, svc.key):
                marks.append(pytest.mark.critical)
            params.append(pytest.param(svc, id=svc.key, marks=marks))
        metafunc.parametrize(name, params or [pytest.param(None, marks=pytest.mark.skip(
            reason=f"no compose service needs this check ({name})"))])


@pytest.fixture(scope="session")
def compose_project(pytestconfig: pytest.Config) -> ComposeProject:
    project = _from_config(pytestconfig)
    assert project is not None  # noqa: S101 - hygiene items exist only with --compose
    return project


def _edit(svc: ComposeService, what: str) -> str:
    return f"edit {svc.source}: services.{svc.key}.{what}"


# --------------------------------------------------------------------------- checks


def test_limits_set(compose_service: ComposeService) -> None:
    svc = compose_service
    missing = [n for n, v in (("memory", svc.memory), ("cpus", svc.cpus)) if v is None]
    check(not missing, f"[HYGIENE] {svc.key}: no {' and no '.join(missing)} limit",
          expected="deploy.resources.limits.memory and .cpus (or mem_limit/cpus) set",
          seen="missing: " + ", ".join(missing), cause=Cause.MEMORY,
          why="without limits one service can starve every other on the host",
          next_cmd=[_edit(svc, "deploy.resources.limits  # e.g. {memory: 512M, cpus: '0.5'}"),
                    f"docker stats --no-stream {svc.container}"])


def _debug_flags(svc: ComposeService) -> list[str]:
    found = []
    for name, value in svc.resolved_env.items():
        on = DEBUG_FLAGS.get(name.upper())
        if on and value is not None and value.strip().strip("'\"").lower() in on:
            found.append(f"{name}={value.strip()}")  # debug switches are not secrets
    return found


def test_no_debug_flags(compose_service: ComposeService) -> None:
    svc = compose_service
    flags = _debug_flags(svc)
    check(not flags, f"[HYGIENE] {svc.key}: debug flags on: {', '.join(flags)}",
          expected="no DEBUG/FLASK_DEBUG/DJANGO_DEBUG on, NODE_ENV not development",
          seen=", ".join(flags), cause=Cause.CONFIG,
          why="debug mode leaks stack traces and settings, and is slow",
          next_cmd=_edit(svc, "environment  # set the flag off, or from ${VAR} per environment"))


def _literal_secrets(svc: ComposeService) -> list[str]:
    """Names (never values) of variables that hold a secret written into the file."""
    found = []
    for name, raw in svc.environment.items():
        if raw is None or raw == "":
            continue
        if name.upper().endswith("_FILE"):  # a path to a secret file, not a secret
            continue
        if SECRET_NAME.search(name):
            if not is_reference(raw):
                found.append(f"{name} (literal value)")
                continue
            if LITERAL_DEFAULT.search(raw):
                found.append(f"{name} (literal default in ${{...:-...}})")
                continue
        url = URL_PASSWORD.search(raw)
        if url and not is_reference(url.group("pw")):
            found.append(f"{name} (password inside a URL)")
    return found


def test_no_literal_secrets(compose_service: ComposeService) -> None:
    svc = compose_service
    found = _literal_secrets(svc)
    check(not found, f"[HYGIENE] {svc.key}: secrets written into the compose file: "
          f"{', '.join(found)}",
          expected="secrets from the environment as ${VAR} (or Docker secrets), no defaults",
          seen=f"{len(found)} variable(s): " + ", ".join(found) + " (values not shown)",
          cause=Cause.CONFIG,
          why="a secret in a committed file leaks with the repository and cannot differ "
              "per environment",
          next_cmd=[_edit(svc, "environment  # NAME: ${NAME}, value in .env or the CI secret "
                               "store"), "git log -p -- " + svc.source + "  # rotate if pushed"])


def test_depends_on_defined(compose_service: ComposeService,
                            compose_project: ComposeProject) -> None:
    svc = compose_service
    missing = [d for d in svc.depends_on if d not in compose_project.services]
    check(not missing, f"[HYGIENE] {svc.key}: depends_on names undefined service(s) "
          f"{', '.join(missing)}",
          expected="every depends_on entry defined in one of " + ", ".join(compose_project.files),
          seen="undefined: " + ", ".join(missing), cause=Cause.CONFIG,
          why="compose refuses to start a service whose dependency no file defines; "
              "pass the file that defines it too (--compose A --compose B)",
          next_cmd=[f"docker compose -f {' -f '.join(compose_project.files)} config --services",
                    _edit(svc, "depends_on")])


def test_external_networks_exist(networked_service: ComposeService,
                                 compose_project: ComposeProject, docker_client: Any) -> None:
    svc = networked_service
    wanted = _external_nets(compose_project, svc)
    present = {n["Name"] for n in docker_client.api.networks(names=wanted)}
    missing = [n for n in wanted if n not in present]
    check(not missing, f"[HYGIENE] {svc.key}: external network(s) missing on the engine: "
          f"{', '.join(missing)}",
          expected="external networks " + ", ".join(wanted) + " created beforehand",
          seen="absent: " + ", ".join(missing), cause=Cause.NETWORK,
          why="compose does not create external networks; the stack will not start",
          next_cmd=[*(f"docker network create {n}" for n in missing), "docker network ls"])


def _db_name(binding: PortBinding) -> str | None:
    return DATABASE_PORTS.get(binding.target) or DATABASE_PORTS.get(binding.published or 0)


def test_databases_not_on_all_interfaces(publishing_service: ComposeService) -> None:
    svc = publishing_service
    exposed = [f"{b.published or '(random)'}->{b.target} ({_db_name(b)})"
               for b in svc.ports if b.all_interfaces and _db_name(b)]
    check(not exposed, f"[HYGIENE] {svc.key}: database port(s) published on every interface: "
          f"{', '.join(exposed)}",
          expected="database ports unpublished, or bound to 127.0.0.1 (\"127.0.0.1:5432:5432\")",
          seen="0.0.0.0: " + ", ".join(exposed), cause=Cause.PORTS,
          why="a database reachable from the internet is one weak password from a breach",
          next_cmd=[_edit(svc, "ports  # prefix with 127.0.0.1: or remove"),
                    f"docker port {svc.container}"])
