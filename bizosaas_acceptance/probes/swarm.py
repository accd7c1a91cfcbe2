"""Docker Swarm: a stack's services, tasks, nodes and networks, read from a manager.

With ``--swarm-stack NAME`` the run's one Docker snapshot (:mod:`.snapshot`)
is taken here: first what the manager knows (every service labelled
``com.docker.stack.namespace=NAME``, each service's tasks including the
recent history Swarm keeps, the nodes, the stack's networks), slimmed to what
the checks read (no environment: service specs carry secrets); then, for each
manifest service, the container of its running task is located and inspected
and sampled like a compose container, keyed by the Swarm service name. A task
on this engine's node is inspected here; a task on another node through that
node's engine when the manifest gives one (``swarm.engines``), otherwise the
location says which node to run on, and checks that need the container fail
with that.

Everything here is JSON data, shared by every xdist worker like the rest of
the snapshot; :class:`SwarmView` answers the checks' questions about it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.model.swarm import NAMESPACE_LABEL
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.probes.docker import docker_time

#: Task states after which a task never runs again.
FAILED_STATES = frozenset({"failed", "rejected"})
ENDED_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "orphaned", "remove"})
#: Update states that leave a service short of its spec (``docker service inspect``).
BAD_UPDATE_STATES = frozenset({"paused", "rollback_started", "rollback_paused",
                               "rollback_completed", "updating"})

_CLIENTS: dict[str, Any] = {}


def engine_client(url: str, connect_timeout: float) -> Any:
    """A pinged client for one node's engine (cached per process)."""
    if url not in _CLIENTS:
        from bizosaas_acceptance.probes.docker import connect_docker

        target = Target(host="127.0.0.1", docker_host=url, postgres_user="",
                        postgres_password="", redis_password="", vault_token="",
                        api_token=None, http_timeout=connect_timeout,
                        connect_timeout=connect_timeout, allow_writes=False, environment=None)
        _CLIENTS[url] = connect_docker(target)
    return _CLIENTS[url]


# --------------------------------------------------------------------------- reading


def _slim_service(svc: dict[str, Any]) -> dict[str, Any]:
    spec = svc.get("Spec") or {}
    tmpl = spec.get("TaskTemplate") or {}
    cspec = tmpl.get("ContainerSpec") or {}
    mode = spec.get("Mode") or {}
    endpoint = svc.get("Endpoint") or {}
    return {
        "id": svc.get("ID"),
        "name": spec.get("Name"),
        "labels": spec.get("Labels") or {},
        "image": cspec.get("Image"),
        # Kept only to mask these values wherever logs or messages quote them
        # (the snapshot's directory is the run's own, mode 0700).
        "env": list(cspec.get("Env") or []),
        "healthcheck": bool((cspec.get("Healthcheck") or {}).get("Test")),
        "mode": "global" if "Global" in mode else "replicated",
        "replicas": (mode.get("Replicated") or {}).get("Replicas"),
        "status": svc.get("ServiceStatus") or {},
        "update_status": svc.get("UpdateStatus") or {},
        "update_config": spec.get("UpdateConfig") or {},
        "restart_policy": tmpl.get("RestartPolicy") or {},
        "resources": tmpl.get("Resources") or {},
        "placement": tmpl.get("Placement") or {},
        "networks": [{"target": n.get("Target"), "aliases": n.get("Aliases") or []}
                     for n in (tmpl.get("Networks") or spec.get("Networks") or [])],
        "endpoint_mode": (spec.get("EndpointSpec") or {}).get("Mode") or "vip",
        "ports": endpoint.get("Ports") or (endpoint.get("Spec") or {}).get("Ports") or [],
        "created": svc.get("CreatedAt"),
        "updated": svc.get("UpdatedAt"),
    }


def _slim_task(task: dict[str, Any]) -> dict[str, Any]:
    status = task.get("Status") or {}
    cstatus = status.get("ContainerStatus") or {}
    return {
        "id": task.get("ID"),
        "slot": task.get("Slot"),
        "node_id": task.get("NodeID"),
        "desired": task.get("DesiredState"),
        "state": status.get("State"),
        "message": status.get("Message") or "",
        "err": status.get("Err") or "",
        "exit_code": cstatus.get("ExitCode"),
        "container": cstatus.get("ContainerID"),
        "since": status.get("Timestamp"),
        "created": task.get("CreatedAt"),
        "networks": [{"name": ((a.get("Network") or {}).get("Spec") or {}).get("Name"),
                      "id": (a.get("Network") or {}).get("ID"),
                      "addresses": a.get("Addresses") or []}
                     for a in task.get("NetworksAttachments") or []],
    }


def _slim_node(node: dict[str, Any]) -> dict[str, Any]:
    spec, status = node.get("Spec") or {}, node.get("Status") or {}
    return {
        "id": node.get("ID"),
        "hostname": (node.get("Description") or {}).get("Hostname") or node.get("ID"),
        "role": spec.get("Role"),
        "availability": spec.get("Availability"),
        "labels": spec.get("Labels") or {},
        "state": status.get("State"),
        "message": status.get("Message") or "",
        "addr": status.get("Addr"),
        "leader": bool((node.get("ManagerStatus") or {}).get("Leader")),
    }


def read_swarm(client: Any, stack_name: str) -> dict[str, Any]:
    """What the manager says about stack ``stack_name`` (JSON data, no secrets)."""
    api = client.api
    info = api.info()
    swarm = info.get("Swarm") or {}
    out: dict[str, Any] = {
        "stack": stack_name, "read_at": time.time(), "error": None,
        "engine_node": info.get("Name"), "node_id": swarm.get("NodeID"),
        "local_state": swarm.get("LocalNodeState"),
        "manager": bool(swarm.get("ControlAvailable")),
        "services": {}, "tasks": {}, "nodes": {}, "networks": {}, "locations": {},
    }
    if swarm.get("LocalNodeState") != "active":
        out["error"] = (f"this engine ({info.get('Name')}) is not part of a swarm "
                        f"(Swarm: {swarm.get('LocalNodeState') or 'inactive'})")
        return out
    if not swarm.get("ControlAvailable"):
        out["error"] = (f"this engine ({info.get('Name')}) is a Swarm worker: only a manager "
                        "knows the stack's services and tasks")
        return out
    try:
        services = api.services(filters={"label": f"{NAMESPACE_LABEL}={stack_name}"},
                                status=True)
    except TypeError:  # docker-py without the status argument
        services = api.services(filters={"label": f"{NAMESPACE_LABEL}={stack_name}"})
    slim = [_slim_service(s) for s in services]
    out["services"] = {s["name"]: s for s in slim}
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(slim)))) as pool:
        tasks = list(pool.map(lambda s: api.tasks(filters={"service": s["id"]}), slim))
    for svc, found in zip(slim, tasks, strict=True):
        out["tasks"][svc["name"]] = sorted((_slim_task(t) for t in found),
                                           key=lambda t: t["created"] or "", reverse=True)
    out["nodes"] = {n["id"]: n for n in (_slim_node(x) for x in api.nodes())}
    targets = {n["target"] for s in slim for n in s["networks"] if n["target"]}
    for net in api.networks(filters={"label": f"{NAMESPACE_LABEL}={stack_name}"}):
        targets.add(net["Id"])
    for ref in sorted(targets):
        try:
            net = api.inspect_network(ref)
        except Exception:  # noqa: BLE001 - a vanished network is reported by the checks
            out["networks"][ref] = {"id": ref, "name": ref, "missing": True}
            continue
        out["networks"][net["Id"]] = {
            "id": net["Id"], "name": net.get("Name"), "driver": net.get("Driver"),
            "scope": net.get("Scope"), "attachable": bool(net.get("Attachable")),
            "labels": net.get("Labels") or {}, "missing": False,
        }
    return out


# --------------------------------------------------------------------------- locating


def running(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks the manager wants running and that run."""
    return [t for t in tasks if t["desired"] == "running" and t["state"] == "running"]


def locate(swarm: dict[str, Any], stack: Stack) -> dict[str, dict[str, Any]]:
    """For each manifest service: the running task whose container the checks read.

    Prefers a task on this engine's node, then one on a node with an engine in
    the manifest's ``swarm.engines``. ``engine`` is None for this engine.
    """
    engines = (stack.swarm or {}).get("engines") or {}
    local = swarm.get("node_id")
    where: dict[str, dict[str, Any]] = {}
    node = swarm["nodes"]

    def rank(t: dict[str, Any]) -> int:
        host = (node.get(t["node_id"]) or {}).get("hostname")
        return 0 if t["node_id"] == local else 1 if host in engines else 2

    for svc in stack.services.values():
        tasks = [t for t in running(swarm["tasks"].get(svc.container) or [])
                 if (node.get(t["node_id"]) or {}).get("state") == "ready"]
        tasks.sort(key=rank)
        if not tasks:
            where[svc.container] = {"task": None}
            continue
        task = tasks[0]
        host = (node.get(task["node_id"]) or {}).get("hostname") or task["node_id"]
        where[svc.container] = {
            "task": task["id"], "slot": task["slot"], "container": task["container"],
            "node": host, "node_id": task["node_id"], "local": task["node_id"] == local,
            "engine": None if task["node_id"] == local else engines.get(host),
            "error": None,
        }
    return where


def take_swarm_snapshot(client: Any, stack: Stack, target: Target) -> dict[str, Any]:
    """The run's Docker snapshot for a Swarm stack: the swarm block, then the
    located task containers, inspected and sampled per engine, keyed by service."""
    from bizosaas_acceptance.probes.snapshot import take_snapshot

    swarm = read_swarm(client, target.swarm_stack or "")
    swarm["connect_timeout"] = target.connect_timeout
    names = [s.container for s in stack.services.values()]
    containers: dict[str, Any] = {n: None for n in names}
    usage: dict[str, Any] = {}
    images: dict[str, bool] = {}
    taken_at = time.time()
    if swarm["error"] is None:
        where = locate(swarm, stack)
        swarm["locations"] = where
        groups: dict[str | None, list[str]] = {}
        for name, loc in where.items():
            if loc.get("task") and (loc["local"] or loc["engine"]):
                groups.setdefault(loc["engine"], []).append(name)
        for engine, members in groups.items():
            try:
                engine_cli = (client if engine is None
                              else engine_client(engine, target.connect_timeout))
                ids = [where[n]["container"] for n in members]
                part = take_snapshot(engine_cli, ids)
            except Exception as exc:  # noqa: BLE001 - reported per service by require()
                for n in members:
                    where[n]["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            taken_at = min(taken_at, part["taken_at"])
            for n in members:
                cid = where[n]["container"]
                containers[n] = part["containers"].get(cid)
                if cid in part["usage"]:
                    usage[n] = part["usage"][cid]
            for image_id, present in part["images"].items():
                images[image_id] = images.get(image_id, True) and present
    return {"taken_at": taken_at, "containers": containers, "usage": usage, "images": images,
            "swarm": swarm}


# --------------------------------------------------------------------------- answers


@dataclass
class SwarmView:
    """Questions the checks ask about the swarm block of the snapshot."""

    data: dict[str, Any]

    @property
    def stack(self) -> str:
        return str(self.data.get("stack"))

    @property
    def error(self) -> str | None:
        return self.data.get("error")

    def service(self, svc: Service) -> dict[str, Any] | None:
        return (self.data.get("services") or {}).get(svc.container)

    def tasks(self, svc: Service) -> list[dict[str, Any]]:
        return list((self.data.get("tasks") or {}).get(svc.container) or [])

    def location(self, svc: Service) -> dict[str, Any]:
        return (self.data.get("locations") or {}).get(svc.container) or {"task": None}

    def node(self, node_id: str | None) -> dict[str, Any]:
        return (self.data.get("nodes") or {}).get(node_id or "") or {
            "id": node_id, "hostname": node_id or "?", "state": "unknown",
            "availability": "?", "role": "?", "message": "not in the swarm's node list"}

    def node_name(self, node_id: str | None) -> str:
        return str(self.node(node_id).get("hostname") or node_id or "?")

    @property
    def nodes(self) -> list[dict[str, Any]]:
        return list((self.data.get("nodes") or {}).values())

    @property
    def networks(self) -> list[dict[str, Any]]:
        return list((self.data.get("networks") or {}).values())

    @property
    def read_at(self) -> float:
        return float(self.data.get("read_at") or time.time())

    def node_ok(self, node_id: str | None) -> bool:
        node = self.node(node_id)
        return node.get("state") == "ready" and node.get("availability") == "active"

    def running(self, svc: Service) -> list[dict[str, Any]]:
        """Running tasks on nodes that are up (a down node's last report is stale)."""
        return [t for t in running(self.tasks(svc))
                if self.node(t["node_id"]).get("state") == "ready"]

    def desired(self, svc: Service) -> int | None:
        spec = self.service(svc)
        if spec is None:
            return None
        status = spec.get("status") or {}
        if spec["mode"] == "replicated" and spec.get("replicas") is not None:
            return int(spec["replicas"])
        if "DesiredTasks" in status:
            return int(status["DesiredTasks"])
        return len({t["node_id"] for t in self.tasks(svc) if t["desired"] == "running"})

    def failures(self, svc: Service, since: float | None = None) -> list[dict[str, Any]]:
        """Failed or rejected tasks (newest first), since ``since`` when given."""
        out = [t for t in self.tasks(svc) if t["state"] in FAILED_STATES]
        if since is not None:
            out = [t for t in out if (docker_time(t["since"]) or 0) >= since]
        return sorted(out, key=lambda t: docker_time(t["since"]) or 0, reverse=True)

    def pending(self, svc: Service) -> list[dict[str, Any]]:
        """Tasks the manager wants running (or readied, between restarts) that do not
        run: pending, starting, or reported running by a node that is not up."""
        return [t for t in self.tasks(svc) if t["desired"] in ("running", "ready")
                and (t["state"] != "running" or self.node(t["node_id"]).get("state") != "ready")]

    def describe_task(self, task: dict[str, Any]) -> str:
        """``NAME.slot@node state (err)``, as ``docker service ps`` shows it."""
        node = self.node(task["node_id"])
        where = (f"@{node['hostname']}" if task.get("node_id") else " (no node)")
        extra = task.get("err") or task.get("message") or ""
        exit_code = task.get("exit_code")
        code = f" exit {exit_code}" if exit_code not in (None, 0) else ""
        return (f"slot {task.get('slot') or '-'}{where} {task['state']}{code}"
                + (f": {extra}" if extra else ""))

    def describe_node(self, node_id: str | None) -> str:
        node = self.node(node_id)
        text = (f"node {node['hostname']} ({node.get('role')}) is {node.get('state')}, "
                f"availability {node.get('availability')}")
        return text + (f" ({node['message']})" if node.get("message") else "")

    def ports(self, svc: Service) -> dict[str, list[dict[str, str]]]:
        """The service's published ports in the shape of a container's
        ``NetworkSettings.Ports`` (ingress and host mode alike)."""
        spec = self.service(svc) or {}
        out: dict[str, list[dict[str, str]]] = {}
        for p in spec.get("ports") or []:
            if not p.get("PublishedPort"):
                continue
            key = f"{p.get('TargetPort')}/{p.get('Protocol') or 'tcp'}"
            out.setdefault(key, []).append({"HostIp": "", "HostPort": str(p["PublishedPort"]),
                                            "Mode": p.get("PublishMode") or "ingress"})
        return out


def ps_cmd(name: str) -> str:
    return f"docker service ps --no-trunc {name}"


def service_logs_cmd(name: str, tail: int = 50) -> str:
    return f"docker service logs --tail {tail} {name}"
