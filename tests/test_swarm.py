"""Docker Swarm: the stack as the manager sees it (only with ``--swarm-stack NAME``).

Dokploy deploys a compose file either with ``docker compose`` or as a Swarm
stack (``docker stack deploy``, required for more than one node). A stack's
truth is in the manager, not in a container: how many tasks each service
wants and runs, which tasks failed and were replaced, whether the last update
finished, the restart policy and limits of the service spec, the nodes and
the overlay networks. All of it comes from the run's one shared snapshot
(:mod:`bizosaas_acceptance.probes.swarm`); the other suites read each
service's running task's container through the same snapshot.

A Swarm task with a healthcheck counts as running only once it is healthy
(it is ``starting`` before, and an unhealthy task is killed and replaced), so
the replica and failure checks also judge health across every task and node.
"""

from __future__ import annotations

import pytest

from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.outcome import Cause, check, fail
from bizosaas_acceptance.probes.docker import DockerState, docker_time
from bizosaas_acceptance.probes.swarm import (
    BAD_UPDATE_STATES,
    SwarmView,
    ps_cmd,
    service_logs_cmd,
)

pytestmark = [pytest.mark.swarm]


def _view(docker_state: DockerState) -> SwarmView:
    __tracebackhide__ = True
    if docker_state.swarm is None:
        fail("[SWARM] no Swarm stack was read", expected="a run with --swarm-stack NAME",
             seen="the suite checks containers by name (no --swarm-stack)", cause=Cause.CONFIG,
             next_cmd="pytest --swarm-stack <stack name> ...")
    return docker_state.swarm


def _inspect_cmd(name: str, field: str) -> str:
    return f"docker service inspect --format '{{{{json .{field}}}}}' {name}"


def _mib(n: float | None) -> str:
    return "?" if n is None else f"{n / 2**20:.0f} MiB"


def _nodes_involved(sw: SwarmView, svc: Service) -> list[str]:
    """Nodes that are not ready and active among those the service's recent tasks ran on."""
    seen: list[str] = []
    for task in sw.tasks(svc)[:10]:
        node_id = task.get("node_id")
        if node_id and not sw.node_ok(node_id) and node_id not in seen:
            seen.append(node_id)
    return seen


@pytest.mark.service("stack")
def test_manager_reachable(docker_state: DockerState, stack: Stack) -> None:
    """The engine the suite talks to is a manager of the swarm that runs the stack."""
    sw = _view(docker_state)
    check(sw.error is None, f"[SWARM] stack {sw.stack} readable from this engine",
          expected="DOCKER_HOST pointing at a Swarm manager", seen=sw.error or "-",
          cause=Cause.CONFIG, why="only a manager knows a stack's services, tasks and nodes",
          next_cmd=["docker info --format '{{json .Swarm}}'", "docker node ls"])
    services = sorted(sw.data.get("services") or {})
    check(bool(services), f"[SWARM] stack {sw.stack} has services",
          expected=f"services labelled com.docker.stack.namespace={sw.stack}",
          seen="none", cause=Cause.BUILD, why="the stack is not deployed (or has another name)",
          next_cmd=["docker stack ls", f"docker stack services {sw.stack}"])


def test_service_deployed(service: Service, docker_state: DockerState) -> None:
    docker_state.require_service(service)


def test_replicas(service: Service, docker_state: DockerState) -> None:
    """Running tasks == desired (and at least one; the manifest's ``replicas`` if set)."""
    sw = _view(docker_state)
    spec = docker_state.require_service(service)
    desired = sw.desired(service) or 0
    running = sw.running(service)
    want = service.replicas if service.replicas is not None else max(1, desired)
    problems = []
    if desired != want:
        problems.append(f"the spec wants {desired} ({spec['mode']})")
    pending = sw.pending(service)
    problems += [sw.describe_task(t) for t in (pending or sw.tasks(service))[:3]]
    nodes = _nodes_involved(sw, service)
    problems += [sw.describe_node(n) for n in nodes]
    failed = sw.failures(service)
    scaled_to_zero = desired == 0 and want > 0
    check(len(running) == want and desired == want,
          f"[REPLICAS] ({len(running)}/{want}) running: {service.key} ({service.container})"
          + (f" — node {', '.join(sw.node_name(n) for n in nodes)}" if nodes else ""),
          expected=f"{want} running task(s) of {service.container}",
          seen=f"{len(running)} running; " + ("; ".join(problems) or "no task at all"),
          cause=Cause.CONFIG if scaled_to_zero else Cause.WONT_START,
          why="scaled to 0 replicas" if scaled_to_zero else
              f"its node is not available ({', '.join(sw.node_name(n) for n in nodes)})"
              if nodes else f"its tasks fail and are replaced ({len(failed)} failed in the "
              "history)" if failed else "its tasks cannot be scheduled or do not start",
          next_cmd=[ps_cmd(service.container), "docker node ls",
                    service_logs_cmd(service.container)])


def test_task_failures(service: Service, docker_state: DockerState, stack: Stack) -> None:
    """No task failed within ``stable_after_s``: a service whose tasks keep failing
    (crash, failed healthcheck, rejected) and being replaced is restarting."""
    sw = _view(docker_state)
    docker_state.require_service(service)
    stable_after = float(stack.threshold("stable_after_s"))
    recent = sw.failures(service, since=sw.read_at - stable_after)
    total = sw.failures(service)
    running = sw.running(service)
    up = [sw.read_at - (docker_time(t["since"]) or sw.read_at) for t in running]
    check(not recent, f"[TASKS] ({len(recent)}) failed task(s) in the last {stable_after:g}s: "
          f"{service.key} ({service.container})",
          expected=f"no task failed in the last {stable_after:g}s (tasks kept in history: "
                   f"{len(sw.tasks(service))})",
          seen="; ".join(sw.describe_task(t) for t in recent[:3])
               + f"; {len(total)} failed in the history"
               + (f"; current task up {min(up):.0f}s" if up else "; no running task"),
          cause=Cause.WONT_START,
          why="its tasks keep failing and Swarm keeps replacing them (crash, failing "
              "healthcheck, or rejected)",
          next_cmd=[ps_cmd(service.container), service_logs_cmd(service.container, 100)])


def test_update_status(service: Service, docker_state: DockerState) -> None:
    """The last update completed: a paused update or a rollback leaves the service
    short of (or other than) what was deployed last."""
    spec = docker_state.require_service(service)
    status = spec.get("update_status") or {}
    state = status.get("State")
    check(state not in BAD_UPDATE_STATES,
          f"[UPDATE] ({state}) not paused or rolled back: {service.key} ({service.container})",
          expected="no update, or the last update completed",
          seen=f"update {state}: {status.get('Message') or '-'}",
          cause=Cause.CONFIG,
          why="the last deploy's tasks failed: Swarm paused the update (failure_action "
              "pause) or rolled it back; what runs is not what was deployed"
              if state != "updating" else "an update is still rolling out: check again after it",
          next_cmd=[ps_cmd(service.container), _inspect_cmd(service.container, "UpdateStatus"),
                    service_logs_cmd(service.container)])


def test_restart_policy(service: Service, docker_state: DockerState) -> None:
    """From the service spec (``deploy.restart_policy``; ``restart:`` is ignored by
    ``docker stack deploy``): restart on any exit, without a limit of attempts,
    like Compose's ``unless-stopped``."""
    spec = docker_state.require_service(service)
    policy = spec.get("restart_policy") or {}
    condition = policy.get("Condition") or "any"  # Swarm's default
    attempts = policy.get("MaxAttempts") or 0
    check(condition == "any" and not attempts,
          f"[POLICY] (restart_policy {condition}, max attempts {attempts or 'none'}) == any: "
          f"{service.key}",
          expected="deploy.restart_policy condition any, no max_attempts",
          seen=f"condition {condition}" + ("" if policy.get("Condition") else " (default)")
               + f", max attempts {attempts or 'none'}, delay "
               f"{(policy.get('Delay') or 0) / 1e9:g}s",
          cause=Cause.CONFIG, why="the compose file's deploy.restart_policy differs: a task that "
          "exits is not replaced, or no longer after a few attempts",
          next_cmd=_inspect_cmd(service.container, "Spec.TaskTemplate.RestartPolicy"))


def test_memory_limit(service: Service, docker_state: DockerState) -> None:
    """From the service spec (``deploy.resources.limits.memory``)."""
    spec = docker_state.require_service(service)
    limit = ((spec.get("resources") or {}).get("Limits") or {}).get("MemoryBytes") or 0
    want = service.memory
    check(limit == want if want else limit > 0,
          f"[LIMIT] {service.key} spec memory ({_mib(limit) if limit else 'none'})"
          + (f" == {_mib(want)}" if want else " set"),
          expected=f"memory limit {_mib(want)} (budget)" if want else "a memory limit",
          seen=f"memory limit {_mib(limit)}" if limit else "no memory limit",
          cause=Cause.MEMORY, why="deploy.resources.limits.memory missing or different",
          next_cmd=_inspect_cmd(service.container, "Spec.TaskTemplate.Resources"))


def test_cpu_limit(service: Service, docker_state: DockerState) -> None:
    """From the service spec (``deploy.resources.limits.cpus``)."""
    spec = docker_state.require_service(service)
    nano = ((spec.get("resources") or {}).get("Limits") or {}).get("NanoCPUs") or 0
    cpus, want = nano / 1e9, service.cpus
    check(abs(cpus - want) < 0.01 if want else cpus > 0,
          f"[LIMIT] {service.key} spec cpus ({cpus:g})" + (f" == {want:g}" if want else " set"),
          expected=f"CPU limit {want:g}" if want else "a CPU limit",
          seen=f"CPU limit {cpus:g}" if cpus else "no CPU limit", cause=Cause.SLOW,
          why="deploy.resources.limits.cpus missing or different",
          next_cmd=_inspect_cmd(service.container, "Spec.TaskTemplate.Resources"))


def test_overlay_attached(service: Service, docker_state: DockerState, stack: Stack) -> None:
    """Every running task has an address on the stack's overlay network."""
    if not stack.network:
        pytest.skip("the manifest names no network")
    sw = _view(docker_state)
    docker_state.require_service(service)
    running = sw.running(service)
    check(bool(running), f"[NETWORK] {service.key}: no running task to be attached",
          expected=f"running tasks attached to {stack.network}", seen="no running task",
          cause=Cause.WONT_START, next_cmd=ps_cmd(service.container))
    missing = [t for t in running if not any(
        n["name"] == stack.network and n["addresses"] for n in t["networks"])]
    check(not missing, f"[NETWORK] {service.key} tasks on {stack.network}",
          expected=f"every running task with an address on {stack.network}",
          seen="; ".join(f"task slot {t.get('slot') or '-'}@{sw.node_name(t['node_id'])} on "
                         + (", ".join(n["name"] for n in t["networks"]) or "no network")
                         for t in missing[:3]),
          cause=Cause.NETWORK, why="the service spec does not join the stack's network: other "
          "services cannot reach it by name",
          next_cmd=[_inspect_cmd(service.container, "Spec.TaskTemplate.Networks"),
                    f"docker network inspect {stack.network}"])


def test_task_unchanged(service: Service, docker_state: DockerState, docker_client) -> None:
    """A second look at the manager: the task the snapshot read still runs (the Swarm
    form of "restart count unchanged during the run")."""
    sw = _view(docker_state)
    docker_state.require(service)
    loc = sw.location(service)
    tasks = docker_client.api.tasks(filters={"service": service.container,
                                             "desired-state": "running"})
    now = {t["ID"]: (t.get("Status") or {}).get("State") for t in tasks}
    state = now.get(loc["task"])
    check(state == "running", f"[TASKS] {service.key}: task {loc['task'][:12]} still running",
          expected=f"task {loc['task'][:12]} (slot {loc.get('slot')}@{loc.get('node')}) "
                   "running during the whole run",
          seen=f"now {state or 'gone'}; running tasks now: "
               + (", ".join(f"{i[:12]} {s}" for i, s in now.items()) or "none"),
          cause=Cause.WONT_START, why="the task failed or was replaced while the suite ran",
          next_cmd=[ps_cmd(service.container), service_logs_cmd(service.container, 100)])


@pytest.mark.service("stack")
def test_nodes_ready(docker_state: DockerState, stack: Stack) -> None:
    """Every node that runs (or recently ran) a task of the stack is ready and active."""
    sw = _view(docker_state)
    check(sw.error is None, "[NODES] cannot read the swarm's nodes",
          expected="a Swarm manager", seen=sw.error or "-", cause=Cause.CONFIG,
          next_cmd="docker node ls")
    hosting: dict[str, set[str]] = {}
    for svc in stack.services.values():
        for task in sw.tasks(svc)[:10]:
            if task.get("node_id"):
                hosting.setdefault(task["node_id"], set()).add(svc.key)
    bad = [n for n in hosting if not sw.node_ok(n)]
    check(not bad, f"[NODES] ({len(bad)}) node(s) not ready and active: "
          + ", ".join(sw.node_name(n) for n in bad),
          expected=f"every node of the stack ready and active ({len(hosting)} node(s): "
                   + ", ".join(sorted(sw.node_name(n) for n in hosting)) + ")",
          seen="; ".join(f"{sw.describe_node(n)}; its services: "
                         f"{', '.join(sorted(hosting[n]))}" for n in bad),
          cause=Cause.WONT_START, why="a node is down, drained or paused: its tasks do not "
          "run there (and pinned ones nowhere)",
          next_cmd=["docker node ls"] + [f"docker node ps {sw.node_name(n)}" for n in bad[:2]])


@pytest.mark.service("stack")
def test_overlay_network(docker_state: DockerState, stack: Stack) -> None:
    """The stack's network exists as a Swarm-scoped overlay network."""
    sw = _view(docker_state)
    if not stack.network:
        pytest.skip("the manifest names no network")
    nets = [n for n in sw.networks if n.get("name") == stack.network]
    check(bool(nets), f"[NETWORK] {stack.network} exists",
          expected=f"overlay network {stack.network} used by the stack's services",
          seen="the stack's services use: " + (", ".join(sorted(
              str(n.get("name")) for n in sw.networks)) or "no network"),
          cause=Cause.NETWORK, why="the compose file's network has another name, or the stack "
          "was deployed under another name",
          next_cmd=["docker network ls --filter driver=overlay", f"docker stack services "
                    f"{sw.stack}"])
    net = nets[0]
    check(net.get("driver") == "overlay" and net.get("scope") == "swarm",
          f"[NETWORK] {stack.network} driver ({net.get('driver')}/{net.get('scope')}) == "
          "overlay/swarm", expected="an overlay network, scope swarm (reaches every node)",
          seen=f"driver {net.get('driver')}, scope {net.get('scope')}", cause=Cause.NETWORK,
          why="a local network does not span the nodes: tasks on other nodes cannot reach it",
          next_cmd=f"docker network inspect {stack.network}")

