"""Switch faults of the reference stack on and off (data in faults.yaml)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from sandbox import stack
from sandbox.stack import HERE, STATE_DIR, SandboxError

FAULTS_FILE = HERE / "faults.yaml"
STATE_FILE = STATE_DIR / "fault.json"
OVERRIDE_FILE = STATE_DIR / "fault-override.yaml"


class _Loader(yaml.SafeLoader):
    """Keeps Compose's `!override` / `!reset` tags so they reach Compose intact."""


@dataclass(frozen=True)
class Tagged:
    tag: str
    value: Any


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Tagged:
    if isinstance(node, yaml.SequenceNode):
        return Tagged(node.tag, loader.construct_sequence(node, deep=True))
    if isinstance(node, yaml.MappingNode):
        return Tagged(node.tag, loader.construct_mapping(node, deep=True))
    return Tagged(node.tag, loader.construct_scalar(node))


_Loader.add_constructor("!override", _tagged)
_Loader.add_constructor("!reset", _tagged)


class _Dumper(yaml.SafeDumper):
    pass


def _represent_tagged(dumper: yaml.SafeDumper, data: Tagged) -> yaml.Node:
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value)
    if isinstance(data.value, dict):
        return dumper.represent_mapping(data.tag, data.value)
    return dumper.represent_scalar(data.tag, str(data.value))


_Dumper.add_representer(Tagged, _represent_tagged)


@dataclass(frozen=True)
class Fault:
    name: str
    category: str
    service: str
    summary: str
    symptom: str = "healthy"
    override: dict = field(default_factory=dict)
    networks: dict = field(default_factory=dict)
    remove: bool = False
    up_fails: bool = False
    action: str | None = None
    # None: not filled in (the matrix refuses it); {}: a plain run must pass.
    expect: dict | None = None
    # The gate's verdict under this fault ("PASS" or "FAIL"), as README's matrix prints it.
    gate: str | None = None


def load() -> dict[str, Fault]:
    return stack.load_faults_file(FAULTS_FILE, Fault, _Loader)


def active() -> str | None:
    try:
        return json.loads(STATE_FILE.read_text()).get("fault")
    except (FileNotFoundError, ValueError):
        return None


def _container_name(service: str) -> str:
    model = yaml.safe_load(stack.COMPOSE_FILE.read_text())
    return model["services"][service]["container_name"]


def _wait_symptom(client, fault: Fault, say: Callable[[str], None], timeout: float = 60) -> None:
    from docker.errors import NotFound

    name = _container_name(fault.service)
    deadline = time.monotonic() + timeout
    seen = "?"
    while time.monotonic() < deadline:
        try:
            c = client.containers.get(name)
            state = c.attrs["State"]
            health = (state.get("Health") or {}).get("Status")
            seen = f"{state.get('Status')}/{health or '-'} restarts={c.attrs.get('RestartCount')}"
            if fault.symptom == "restarting" and (c.attrs.get("RestartCount", 0) >= 1
                                                  or state.get("Status") == "restarting"):
                return
            probes = (state.get("Health") or {}).get("Log") or []
            # During start_period Docker keeps a failing container "starting"
            # (failures don't even count in FailingStreak); a failed probe is
            # already the symptom the checks will see.
            if fault.symptom == "unhealthy" and (
                    health == "unhealthy" or (probes and probes[-1].get("ExitCode") != 0)):
                return
            if fault.symptom == "healthy" and health == "healthy":
                return
            if fault.symptom == "running" and state.get("Status") == "running":
                return
            if fault.symptom in ("paused", "exited") and state.get("Status") == fault.symptom:
                return
        except NotFound:
            seen = "absent"
            if fault.symptom == "absent":
                return
        time.sleep(0.5)
    raise SandboxError(f"fault {fault.name}: {name} did not become {fault.symptom} "
                       f"within {timeout:.0f}s (seen {seen})")


def switch_on(name: str, say: Callable[[str], None]) -> Fault:
    faults = load()
    if name not in faults:
        raise SandboxError(f"unknown fault {name!r}; list them with `python -m sandbox faults`")
    fault = faults[name]
    client = stack.docker_client()
    current = active()
    if current and current != name:
        say(f"healing the active fault {current} first (one fault at a time)")
        heal(say)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"services": {fault.service: fault.override}}
    if fault.networks:
        doc["networks"] = fault.networks
    OVERRIDE_FILE.write_text(yaml.dump(doc, Dumper=_Dumper, sort_keys=False))
    STATE_FILE.write_text(json.dumps({"fault": name, "service": fault.service}))
    if fault.remove:
        stack.compose(["rm", "-f", "-s", fault.service], check=False)
    if fault.action == "image-drift":
        # The service's own tag for the image it runs now (what the override names).
        image = yaml.safe_load(stack.COMPOSE_FILE.read_text())["services"][fault.service]
        _tag(client, _image_of(image), fault.override["image"])
    if fault.override or fault.remove:
        proc = stack.compose(["up", "-d", "--no-build", "--no-deps", fault.service],
                             files=[OVERRIDE_FILE], check=not fault.up_fails)
        if fault.up_fails:
            # Compose may even exit 0 here; the symptom wait below is the proof.
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()
            say(f"compose refused {fault.service} as intended: {lines[-1] if lines else '?'}")
    if fault.action:
        _run_action(client, fault)
    say(f"fault {name} on: {fault.summary}; waiting for {fault.service} to be {fault.symptom}")
    _wait_symptom(client, fault, say)
    say(f"fault {name} is on")
    return fault


def _run_action(client, fault: Fault) -> None:
    name = _container_name(fault.service)
    if fault.action == "stop":
        client.containers.get(name).stop(timeout=5)
    elif fault.action == "seal-vault":
        res = client.containers.get(name).exec_run(
            ["sh", "-c", 'BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN="$VAULT_DEV_ROOT_TOKEN_ID" '
                         "bao operator seal"])
        if res.exit_code != 0:
            raise SandboxError(f"fault {fault.name}: sealing failed: {res.output[-200:]!r}")
    elif fault.action == "image-drift":
        # "Rebuilt": the tag now names another image; the container is not recreated.
        _tag(client, stack.BASE_IMAGE, fault.override["image"])
    elif fault.action == "pause":
        client.containers.get(name).pause()
    elif fault.action == "lock-table":
        _lock_table(client)
    else:
        raise SandboxError(f"{FAULTS_FILE}: fault {fault.name}: unknown action {fault.action!r}")


def _image_of(service: dict) -> str:
    """The image reference of a compose service (its own, or the YAML anchor's)."""
    image = service.get("image") or (service.get("<<") or {}).get("image")
    if not image:
        raise SandboxError(f"{stack.COMPOSE_FILE}: no image for the image-drift fault")
    return image


def _tag(client, source: str, ref: str) -> None:
    repo, _, tag = ref.rpartition(":")
    if not client.images.get(source).tag(repo, tag):
        raise SandboxError(f"cannot tag {source} as {ref}")


def _drop_drift_tags(say: Callable[[str], None]) -> None:
    """Remove the tags image-drift faults add, never an image: only a tag whose image
    carries another tag as well is removed (``docker image rm`` then only untags)."""
    from docker.errors import ImageNotFound

    client = stack.docker_client()
    for fault in load().values():
        ref = fault.override.get("image") if fault.action == "image-drift" else None
        if not ref:
            continue
        try:
            image = client.images.get(ref)
        except ImageNotFound:
            continue
        if len(image.tags) > 1:
            client.images.remove(ref, noprune=True)
        else:
            say(f"left {ref} in place: it is the image's only tag")


# The crm-table-lock fault: which table, for how long at most, and how the
# holder is found again (heal terminates it; otherwise it ends by itself).
LOCK_TABLE = "crm.clients"
LOCK_SECONDS = 600
LOCK_APP = "bizosaas-fault-table-lock"
#: crm's Redis DB and the cache keys of what reads the table (a cached answer
#: would not touch the table at all).
LOCK_CACHE = (3, "*cache:clients:*")


def _psql(client, sql: str, *, detach: bool = False) -> str:
    pg = client.containers.get(_container_name("postgres"))
    cmd = ["psql", "-U", "bizosaas", "-d", "bizosaas_staging", "-v", "ON_ERROR_STOP=1",
           "-tAc", sql]
    res = pg.exec_run(cmd, environment={"PGAPPNAME": LOCK_APP}, detach=detach)
    if detach:
        return ""
    if res.exit_code != 0:
        raise SandboxError(f"psql failed ({res.exit_code}): {res.output[-200:]!r}")
    return res.output.decode(errors="replace").strip()


def _lock_table(client) -> None:
    """Hold the lock in a detached psql, wait until it is granted, drop cached reads."""
    _psql(client, f"BEGIN; LOCK TABLE {LOCK_TABLE} IN ACCESS EXCLUSIVE MODE; "
                  f"SELECT pg_sleep({LOCK_SECONDS});", detach=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        held = _psql(client, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "  # noqa: S608
                             "USING (pid) WHERE a.application_name = "
                             f"'{LOCK_APP}' AND l.mode = 'AccessExclusiveLock' AND l.granted "
                             f"AND l.relation = '{LOCK_TABLE}'::regclass")
        if held.splitlines() and held.splitlines()[-1] == "1":
            break
        time.sleep(0.2)
    else:
        raise SandboxError(f"fault crm-table-lock: the lock on {LOCK_TABLE} was not granted "
                           "within 15 s")
    db, pattern = LOCK_CACHE
    redis = client.containers.get(_container_name("redis"))
    redis.exec_run(["sh", "-c", f'export REDISCLI_AUTH="$REDIS_PASSWORD"; redis-cli -n {db} '
                                f'--scan --pattern "{pattern}" | xargs -r redis-cli -n {db} del'])


def _undo_action(client, fault: Fault | None) -> None:
    """What recreating the service does not undo: a pause, a lock held elsewhere."""
    if fault is None or not fault.action:
        return
    if fault.action == "pause":
        from docker.errors import APIError, NotFound

        try:
            client.containers.get(_container_name(fault.service)).unpause()
        except (APIError, NotFound):
            pass  # not paused (any more)
    elif fault.action == "lock-table":
        _psql(client, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
                      f"WHERE application_name = '{LOCK_APP}' AND pid <> pg_backend_pid()")


def heal(say: Callable[[str], None]) -> None:
    """Recreate what the active fault touched from the base compose file."""
    client = stack.docker_client()
    current = active()
    if current:
        fault = load().get(current)
        _undo_action(client, fault)
        service = fault.service if fault else json.loads(STATE_FILE.read_text())["service"]
        say(f"healing {current}: recreating {service}")
        stack.compose(["up", "-d", "--no-build", "--no-deps", "--force-recreate", service])
    stack.compose(["up", "-d", "--no-build", "--remove-orphans", "--wait", "--wait-timeout", "180"])
    # The isolated network of a network fault is not part of the base project.
    _drop_fault_networks(say)
    _drop_drift_tags(say)
    STATE_FILE.unlink(missing_ok=True)
    OVERRIDE_FILE.unlink(missing_ok=True)
    say("healthy stack restored")


def _drop_fault_networks(say: Callable[[str], None]) -> None:
    client = stack.docker_client()
    for fault in load().values():
        for net in fault.networks.values():
            for n in client.networks.list(names=[net["name"]]):
                if not n.attrs.get("Containers"):
                    n.remove()


def describe() -> list[tuple[str, str, str, str]]:
    return [(f.name, f.category, f.service, f.summary) for f in load().values()]


def expectation(name: str) -> dict[str, list[str]]:
    return dict(load()[name].expect or {})
