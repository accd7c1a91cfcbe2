"""Suite 1: containers. State, health, restart policy, image, OOM, env and secrets.

Everything comes from one shared Docker snapshot (inspect + stats), so this
suite costs one round of API calls however many services there are.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from bizosaas_acceptance.labels import EXTRA_SUITES, SUITES
from bizosaas_acceptance.model.manifest import PLACEHOLDER, Service, Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import Cause, check, health_cmd, logs_cmd
from bizosaas_acceptance.secrets import (
    STRONG_MIN,
    clip,
    is_secret_setting,
    label_names,
    url_passwords,
    weakness,
)

pytestmark = [pytest.mark.containers]


def test_exists(service: Service, docker_state) -> None:
    docker_state.require(service)


def test_running(service: Service, docker_state) -> None:
    state = docker_state.require(service)["State"]
    check(state.get("Status") == "running" and state.get("Running"),
          f"[STATE] ({state.get('Status')}) == running: {service.key}",
          expected="status running", seen=f"status {state.get('Status')}, exit code "
          f"{state.get('ExitCode')}, error {state.get('Error') or '-'}",
          cause=Cause.WONT_START,
          why="the process exits at start (missing env, dependency, bad command)",
          next_cmd=[logs_cmd(service.container), f"docker inspect --format "
                    f"'{{{{json .State}}}}' {service.container}"])


@pytest.mark.compose_only  # Swarm: tests/test_swarm.py (tasks, spec)
def test_not_restarting(service: Service, docker_state, stack: Stack) -> None:
    attrs = docker_state.require(service)
    restarts = attrs.get("RestartCount", 0)
    up_for = docker_state.up_for(service)
    stable_after = stack.threshold("stable_after_s")
    restarting = attrs["State"].get("Restarting")
    check(not restarting and (restarts == 0 or up_for >= stable_after),
          f"[RESTARTS] ({restarts}) == 0: {service.key}",
          expected=f"not restarting; restart count 0, or stable for {stable_after:g}s since the "
                   "last restart",
          seen=f"restarting={restarting}, restart count {restarts}, up {up_for:.0f}s",
          cause=Cause.WONT_START, why="the container crashes and Docker keeps restarting it",
          next_cmd=[logs_cmd(service.container, 100),
                    f"docker inspect --format '{{{{.RestartCount}}}}' {service.container}"])


@pytest.mark.compose_only  # Swarm: tests/test_swarm.py (tasks, spec)
def test_restart_count_stable(service: Service, docker_state, docker_client) -> None:
    """A second look through the API: the count has not moved since the snapshot."""
    before = docker_state.require(service).get("RestartCount")
    now = docker_client.api.inspect_container(service.container).get("RestartCount")
    # Both figures must exist: an engine that reports none proves nothing.
    check(before is not None and now == before, f"[RESTARTS] ({now}) == {before}: {service.key}",
          expected=f"restart count unchanged during the run ({before})",
          seen=f"{before} at the snapshot, {now} now",
          cause=Cause.WONT_START, why="the container restarted while the suite ran",
          next_cmd=logs_cmd(service.container, 100))


def test_healthy(service: Service, docker_state) -> None:
    attrs = docker_state.require(service)
    health = attrs["State"].get("Health")
    if not service.healthcheck:
        pytest.skip("the manifest says this container has no healthcheck")
    status = (health or {}).get("Status", "none")
    log = (health or {}).get("Log") or []
    last = log[-1] if log else {}
    check(status == "healthy", f"[HEALTH] ({status}) == healthy: {service.key}",
          expected="Docker health status healthy",
          seen=f"{status}; last probe exit {last.get('ExitCode', '-')}: "
               f"{clip((last.get('Output') or '').strip(), 160) or '-'}",
          cause=Cause.HEALTH if health else Cause.CONFIG,
          why="its healthcheck command fails" if health else "no healthcheck is configured",
          next_cmd=[health_cmd(service.container), logs_cmd(service.container)])


@pytest.mark.compose_only  # Swarm: tests/test_swarm.py (tasks, spec)
def test_restart_policy(service: Service, docker_state) -> None:
    policy = (docker_state.require(service)["HostConfig"].get("RestartPolicy") or {}).get("Name")
    check(policy == "unless-stopped", f"[POLICY] ({policy or 'no'}) == unless-stopped: "
          f"{service.key}", expected="restart policy unless-stopped",
          seen=f"restart policy {policy or 'none'}", cause=Cause.CONFIG,
          why="the compose file's restart: is missing or different",
          next_cmd=f"docker inspect --format '{{{{json .HostConfig.RestartPolicy}}}}' "
                   f"{service.container}")


def test_image_present(service: Service, docker_state) -> None:
    attrs = docker_state.require(service)
    image_id, ref = attrs["Image"], attrs["Config"].get("Image")
    present = docker_state.images.get(image_id, False)
    check(present, f"[IMAGE] {ref} present: {service.key}",
          expected=f"image {ref} ({image_id[:19]}) on the engine",
          seen="image missing (removed after the container was created)",
          cause=Cause.BUILD, why="the image was pruned or never built on this host",
          next_cmd=[f"docker image ls {ref}", "docker compose build"])
    if service.image:
        check(ref == service.image, f"[IMAGE] ({ref}) == {service.image}: {service.key}",
              expected=f"image {service.image}", seen=f"image {ref}", cause=Cause.BUILD,
              next_cmd=f"docker inspect --format '{{{{.Config.Image}}}}' {service.container}")


# Swarm: a task's image lives on the engine of its node and a service is updated,
# not recreated; not judged there yet.
@pytest.mark.compose_only
def test_image_current(service: Service, docker_state, docker_client) -> None:
    """The container runs the image its tag names now.

    An image rebuilt (or pulled) after the container was created moves the tag;
    the container keeps running the old image until it is recreated, so the
    deployment is not what was built. Compared through the engine: the tag's
    image id now against the id the container was created from.
    """
    from docker.errors import NotFound

    attrs = docker_state.require(service)
    image_id, ref = attrs["Image"], attrs["Config"].get("Image") or ""
    recreate = f"docker compose up -d --force-recreate {service.key}"
    inspect = f"docker image inspect --format '{{{{.Id}}}} {{{{.Created}}}}' {ref}"
    try:
        tagged = docker_client.api.inspect_image(ref)["Id"] if ref else None
    except NotFound:
        tagged = None
    check(tagged is not None, f"[IMAGE] {ref} no longer names an image: {service.key}",
          expected=f"{ref} naming the image {service.container} runs ({image_id[:19]})",
          seen=f"no image tagged {ref} on the engine (untagged or removed after the "
               "container was created)", cause=Cause.BUILD,
          why="the next recreate will fail or pull something else",
          next_cmd=[f"docker image ls {ref.rsplit(':', 1)[0]}", "docker compose build",
                    recreate])
    check(tagged == image_id, f"[IMAGE] {service.key} runs a stale image: {ref} was rebuilt",
          expected=f"{service.container} running the image {ref} names now "
                   f"({(tagged or '')[:19]})",
          seen=f"it runs {image_id[:19]}, created from an earlier {ref}",
          cause=Cause.BUILD, why="the image was rebuilt or pulled without recreating the "
                                 "container (drift: what runs is not what was built)",
          next_cmd=[recreate, inspect])


def test_not_oom_killed(service: Service, docker_state) -> None:
    state = docker_state.require(service)["State"]
    check(not state.get("OOMKilled"), f"[OOM] OOMKilled: {service.key}",
          expected="never killed for exceeding its memory limit",
          seen="the kernel OOM-killed its last run", cause=Cause.MEMORY,
          why="memory limit too low for the workload, or a leak",
          next_cmd=[f"docker stats --no-stream {service.container}", logs_cmd(service.container)])


def _env(attrs: dict) -> dict[str, str]:
    return dict((e.split("=", 1) + [""])[:2] for e in attrs["Config"].get("Env") or [])


def test_secret_present(secret_ref: tuple[Service, str], docker_state) -> None:
    svc, name = secret_ref
    env = _env(docker_state.require(svc))
    value = env.get(name)
    check(bool(value), f"[ENV] {name} set: {svc.key}",
          expected=f"{name} set and non-empty in the container's environment",
          seen="missing" if value is None else "empty",
          cause=Cause.API_KEY, why="environment variable not set in the deployment",
          next_cmd=f"docker exec {svc.container} sh -c 'test -n \"${name}\" && echo set'")


def test_secret_well_formed(secret_ref: tuple[Service, str], docker_state, stack: Stack) -> None:
    """Not a placeholder, no surrounding spaces or quotes, the expected prefix.

    The value itself is never shown: only what is wrong with it.
    """
    svc, name = secret_ref
    value = _env(docker_state.require(svc)).get(name) or ""
    problems = []
    if value != value.strip():
        problems.append("surrounding whitespace")
    stripped = value.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        problems.append("surrounding quotes")
    core = stripped.strip("'\"")
    if PLACEHOLDER.match(core):
        problems.append("a template placeholder (your-...-here)")
    prefix = (stack.secret_formats.get(name) or {}).get("prefix")
    if prefix and core and not core.startswith(prefix):
        problems.append(f"does not start with {prefix!r}")
    if not core:
        problems.append("empty")
    check(not problems, f"[ENV] {name} well-formed: {svc.key}",
          expected="a real value" + (f" starting with {prefix!r}" if prefix else "")
                   + ", no quotes or spaces around it",
          seen=f"{len(value)} characters: " + ", ".join(problems),
          cause=Cause.API_KEY, why="placeholder left in place, or extra spaces/quotes",
          next_cmd=f"docker exec {svc.container} sh -c 'printf %s \"${name}\" | wc -c'")


def test_secrets_not_weak(service: Service, docker_state, stack: Stack,
                          target: Target) -> None:
    """No secret in the container's environment is weak (shared/SPEC.md §5, API keys).

    Weak: equal to or part of a name the deployment uses (service, container,
    network, database, user, suite...), a common or default password, a single
    dictionary-like word, or shorter than 8 characters — also a URL's password.
    Such a value is guessable, and the suite cannot mask it in its reports
    without masking the names it equals (``postgres`` in every label and
    command), so it is reported here instead. The value itself is never shown:
    only the variable and what it collides with.
    """
    env = _env(docker_state.require(service))
    names = label_names(stack, user=target.postgres_user, suite=(*SUITES, *EXTRA_SUITES))
    problems = []
    for name, value in sorted(env.items()):
        if is_secret_setting(name, value):
            why = weakness(value.strip().strip("'\""), names)
            if why:
                problems.append(f"{name} {why}")
        for password in url_passwords(value):
            why = weakness(unquote(password), names)
            if why:
                problems.append(f"{name}: the password of the URL {why}")
    check(not problems, f"[ENV] {len(problems)} weak secret(s): {service.key}",
          expected=f"every secret at least {STRONG_MIN} characters, not a common or "
                   "dictionary word, not equal to or part of a name the deployment uses",
          seen="; ".join(problems), cause=Cause.API_KEY,
          why="a guessable secret, which reports cannot mask without masking the names "
              "it equals",
          next_cmd=["openssl rand -base64 32  # a new value for each weak secret",
                    f"docker compose up -d --force-recreate {service.key}  # with the new "
                    f"values in the env of {service.container}"])
