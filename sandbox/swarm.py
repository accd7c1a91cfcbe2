"""The reference stack as a Docker Swarm stack (how Dokploy's "stack" compose type runs it).

``python -m sandbox up --swarm`` deploys the same 12 services with
``docker stack deploy`` on this machine's engine (a one-node swarm, initialised
with ``docker swarm init --advertise-addr 127.0.0.1`` when needed);
``up --swarm --nodes 3`` builds a three-node swarm of Docker-in-Docker nodes
and spreads the stack over them. The stack file is generated from
``compose.yaml``:

- ``container_name``, ``build``, ``restart``, ``depends_on``, ``cap_add`` go
  (a stack ignores or refuses them); each old container name becomes a network
  alias, so the services still reach ``bizosaas-postgres-staging`` & co;
- ``restart`` becomes ``deploy.restart_policy``; limits stay in ``deploy.resources``;
- the network is an attachable overlay (``bizosaas_staging``);
- ports are published in host mode on offset ports (+20000 on one node, +30000
  on three): this kernel has no IPVS, so neither the ingress routing mesh nor
  service VIPs work here; services use ``endpoint_mode: dnsrr`` (names resolve
  to the tasks' addresses). Swarm cannot publish on 127.0.0.1 only: host-mode
  ports listen on every interface of the node.

Nothing here ever runs ``docker swarm leave`` on this machine's engine: after
leaving, containers on existing bridge networks lose name resolution until
dockerd restarts (shared/SPEC.md §7). ``down --swarm`` removes the stack, not the
swarm membership. The three DinD nodes are containers of their own; ``down``
removes them whole.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox import stack
from sandbox.stack import COMPOSE_FILE, HERE, STATE_DIR, SandboxError

STACK = "bizosaas"
NETWORK = f"{STACK}_staging"
SINGLE_OFFSET = 20000
MULTI_OFFSET = 30000
#: Compose keys a stack ignores or refuses.
DROP = ("container_name", "build", "restart", "depends_on", "cap_add", "pull_policy")
RESTART = {"unless-stopped": "any", "always": "any", "on-failure": "on-failure", "no": "none"}
ROOT = HERE.parent
MANIFEST_SINGLE = ROOT / "stacks" / "bizosaas-swarm.yaml"
MANIFEST_MULTI = ROOT / "stacks" / "bizosaas-swarm-3nodes.yaml"
STAGING_MANIFEST = ROOT / "stacks" / "bizosaas-staging.yaml"
FAULTS_FILE = HERE / "swarm-faults.yaml"
FAULT_STATE = STATE_DIR / "swarm-fault.json"

# --------------------------------------------------------------------------- nodes

NODE_IMAGE = "local/bizosaas-dind:1"
NODE_PACKAGES = "docker.io,iptables,ca-certificates,procps,mount,iproute2"
NODES = ("bizosaas-node1", "bizosaas-node2", "bizosaas-node3")
NODES_NETWORK = "bizosaas-nodes"
#: Each node's engine socket, on the host (the manifest's swarm.engines).
NODE_DIR = Path("/tmp/bizosaas-swarm-nodes")
#: Where each service runs on three nodes: infrastructure on the manager,
#: the applications split over the two workers.
PLACEMENT = {
    "postgres": NODES[0], "redis": NODES[0], "vault": NODES[0], "temporal": NODES[0],
    "brain-api": NODES[1], "wagtail-cms": NODES[1], "django-crm": NODES[1],
    "business-directory-api": NODES[1],
    "coreldove-backend": NODES[2], "ai-agents": NODES[2], "amazon-sourcing": NODES[2],
    "saleor-api": NODES[2],
}
# The node's command: the cgroup v1 controllers are mounted read-only inside a
# container; remount each fresh and writable (shared/RECIPES.md), then dockerd
# on its usual socket and on one the host sees.
NODE_BOOT = (
    "set -e; for c in blkio cpu cpuacct cpuset devices freezer memory pids; do "
    "umount /sys/fs/cgroup/$c 2>/dev/null || true; mkdir -p /sys/fs/cgroup/$c; "
    "mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done; "
    "umount /sys/fs/cgroup/systemd 2>/dev/null || true; mkdir -p /sys/fs/cgroup/systemd; "
    "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd; "
    "rm -f /run/node/docker.sock; "
    "exec dockerd --host unix:///var/run/docker.sock --host unix:///run/node/docker.sock"
)


def host_client() -> Any:
    """This machine's engine (the one the DinD nodes run on), even when DOCKER_HOST
    points at a node's socket (as it does for the suite against three nodes)."""
    if os.environ.get("DOCKER_HOST", "").startswith(f"unix://{NODE_DIR}/"):
        import docker

        env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        client = docker.from_env(timeout=120, environment=env)
        client.ping()
        return client
    return stack.docker_client()


def node_socket(node: str) -> Path:
    return NODE_DIR / node / "docker.sock"


def node_url(node: str) -> str:
    return f"unix://{node_socket(node)}"


# --------------------------------------------------------------------------- generating


def _ports(raw: list[Any], offset: int) -> list[dict[str, Any]]:
    out = []
    for spec in raw:
        parts = str(spec).split(":")
        published, target = int(parts[-2]), int(parts[-1])
        out.append({"target": target, "published": published + offset, "protocol": "tcp",
                    "mode": "host"})
    return out


def compose_doc(offset: int, placement: dict[str, str] | None = None) -> dict[str, Any]:
    """The stack file for ``docker stack deploy``, from compose.yaml.

    ``${VAR:-default}`` stays as compose.yaml writes it (``docker stack deploy``
    interpolates it): a value set in the environment is never written to the file.
    """
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    services: dict[str, Any] = {}
    for key, svc in raw["services"].items():
        new = {k: copy.deepcopy(v) for k, v in svc.items() if k not in DROP}
        new["networks"] = {"staging": {"aliases": [svc["container_name"]]}}
        if svc.get("ports"):
            new["ports"] = _ports(svc["ports"], offset)
        deploy = copy.deepcopy(svc.get("deploy") or {})
        limits = (deploy.get("resources") or {}).get("limits") or {}
        if "cpus" in limits:
            limits["cpus"] = str(limits["cpus"])
        deploy["restart_policy"] = {"condition": RESTART.get(svc.get("restart", "no"), "any"),
                                    "delay": "5s"}
        deploy["endpoint_mode"] = "dnsrr"
        deploy["update_config"] = {"failure_action": "pause", "monitor": "10s"}
        if placement:
            deploy["placement"] = {"constraints": [f"node.hostname == {placement[key]}"]}
        new["deploy"] = deploy
        services[key] = new
    return {
        "version": "3.8",
        "services": services,
        "networks": {"staging": {"driver": "overlay", "attachable": True}},
        # Not the compose stack's volume: both stacks may be up at once.
        "volumes": {"pgdata": {"name": "bizosaas-swarm-pgdata"}},
    }


def manifest_doc(offset: int, name: str, engines: dict[str, str] | None = None) -> dict[str, Any]:
    """The staging manifest for the Swarm stack: its ports and network, the same checks."""
    data = yaml.safe_load(STAGING_MANIFEST.read_text())
    data["name"] = name
    data["api"] = "api/bizosaas-staging.yaml"
    data["network"] = NETWORK
    for svc in data["services"].values():
        svc["published_port"] = svc.get("published_port", svc["port"]) + offset
    if engines:
        data["swarm"] = {"engines": dict(engines)}
    return data


MANIFEST_HEADER = """\
# GENERATED by `python -m sandbox swarm-manifests` from bizosaas-staging.yaml:
# the reference stack deployed as a Docker Swarm stack ({what}).
# Same services and thresholds; ports offset by +{offset} (host mode), the
# overlay network {network}. Use with: pytest --swarm-stack bizosaas --stack {path}
"""


def manifest_text(multi: bool) -> str:
    offset = MULTI_OFFSET if multi else SINGLE_OFFSET
    path = MANIFEST_MULTI if multi else MANIFEST_SINGLE
    engines = {n: node_url(n) for n in NODES} if multi else None
    data = manifest_doc(offset, "bizosaas-swarm-3nodes" if multi else "bizosaas-swarm", engines)
    what = ("three Docker-in-Docker nodes, `python -m sandbox up --swarm --nodes 3`; "
            "DOCKER_HOST=" + node_url(NODES[0]) if multi
            else "this engine, one node, `python -m sandbox up --swarm`")
    header = MANIFEST_HEADER.format(what=what, offset=offset, network=NETWORK,
                                    path=path.relative_to(ROOT))
    return header + yaml.safe_dump(data, sort_keys=False, width=100)


def write_manifests() -> list[Path]:
    out = []
    for multi in (False, True):
        path = MANIFEST_MULTI if multi else MANIFEST_SINGLE
        path.write_text(manifest_text(multi))
        out.append(path)
    return out


def dependencies() -> list[str]:
    """The services others wait for under Compose (``depends_on``: the infrastructure)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return sorted({dep for svc in raw["services"].values()
                   for dep in (svc.get("depends_on") or {})})


def stack_file(nodes: int, overrides: dict[str, dict[str, Any]] | None = None,
               only: Iterable[str] | None = None) -> Path:
    """Write the stack file; ``overrides`` merge into services (a fault's);
    ``only``: just those services (the first of two deploys)."""
    multi = nodes > 1
    doc = compose_doc(MULTI_OFFSET if multi else SINGLE_OFFSET, PLACEMENT if multi else None)
    if only is not None:
        keep = set(only)
        doc["services"] = {k: v for k, v in doc["services"].items() if k in keep}
    for key, over in (overrides or {}).items():
        for field_name, value in over.items():
            current = doc["services"][key].get(field_name)
            if isinstance(current, dict) and isinstance(value, dict):
                current.update(value)
            else:
                doc["services"][key][field_name] = value
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / ("swarm-stack-3nodes" if multi else "swarm-stack")
    path = path.with_name(path.name + ("-infra" if only is not None else "") + ".yaml")
    path.write_text("# GENERATED from sandbox/compose.yaml by sandbox/swarm.py: "
                    "docker stack deploy --resolve-image never -c <this> bizosaas\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return path


# --------------------------------------------------------------------------- engines


@dataclass
class Engine:
    """Where the swarm's manager is: this engine, or the first DinD node."""

    url: str | None = None  # None: this machine's engine (DOCKER_HOST or the socket)
    _client: Any = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.url:
            env["DOCKER_HOST"] = self.url
        elif env.get("DOCKER_HOST", "").startswith(f"unix://{NODE_DIR}/"):
            env.pop("DOCKER_HOST")  # this machine's engine, not a node's
        return env

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            if self.url:
                self._client = docker.DockerClient(base_url=self.url, timeout=120)
            else:
                self._client = host_client()
        return self._client

    def run(self, args: list[str], check: bool = True, what: str | None = None,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True,
                              env=self.env, **kw)
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise SandboxError(f"{what or 'docker ' + ' '.join(args[:3])} failed: "
                               f"{tail[-1] if tail else f'exit {proc.returncode}'}")
        return proc


def engine_for(nodes: int) -> Engine:
    return Engine(node_url(NODES[0])) if nodes > 1 else Engine()


def ensure_swarm(engine: Engine, say: Callable[[str], None],
                 advertise: str = "127.0.0.1") -> None:
    """Initialise a swarm on ``engine`` when it has none; never leave one."""
    sw = engine.client.info().get("Swarm") or {}
    state = sw.get("LocalNodeState")
    if state == "active":
        if not sw.get("ControlAvailable"):
            raise SandboxError("this engine is a Swarm worker, not a manager: deploy from a "
                               "manager (docker node ls there)")
        say(f"swarm: active, this engine is a manager ({sw.get('NodeID')})")
        return
    if state not in (None, "", "inactive"):
        raise SandboxError(f"swarm state {state!r}: fix it by hand (docker info); this tool "
                           "never runs docker swarm leave")
    say(f"swarm: initialising (docker swarm init --advertise-addr {advertise})")
    engine.run(["swarm", "init", "--advertise-addr", advertise], what="docker swarm init")


# --------------------------------------------------------------------------- deploy and wait


def deploy(engine: Engine, nodes: int, say: Callable[[str], None],
           overrides: dict[str, dict[str, Any]] | None = None,
           timeout: float = 240) -> Path:
    """``docker stack deploy``, infrastructure first.

    A stack ignores ``depends_on``: applications started together with their
    databases log connection errors until those answer (and the log checks
    would rightly report them). So, like Compose's ``condition:
    service_healthy``, the services others depend on are deployed first and
    awaited when they are not running yet; then the whole stack.
    """
    infra = dependencies()
    if not converged(engine, only=[_svc(k) for k in infra]).ok:
        first = stack_file(nodes, overrides, only=infra)
        say(f"stack: infrastructure first ({', '.join(infra)})")
        engine.run(["stack", "deploy", "--resolve-image", "never", "-c", str(first), STACK],
                   what="docker stack deploy (infrastructure)")
        wait_converged(engine, timeout, say, only=[_svc(k) for k in infra])
    path = stack_file(nodes, overrides)
    say(f"stack: docker stack deploy --resolve-image never -c {path.name} {STACK}")
    engine.run(["stack", "deploy", "--prune", "--resolve-image", "never", "-c", str(path),
                STACK], what="docker stack deploy")
    return path


def services(engine: Engine) -> list[dict[str, Any]]:
    return engine.client.api.services(filters={"label": f"com.docker.stack.namespace={STACK}"})


@dataclass
class Convergence:
    ok: bool
    detail: str


def converged(engine: Engine, only: Iterable[str] | None = None) -> Convergence:
    """Every service of the stack (or the ``only`` ones, by Swarm name) runs its
    desired tasks, healthy, no update under way."""
    api = engine.client.api
    nodes = {n["ID"]: n for n in api.nodes()}
    svcs = services(engine)
    if only is not None:
        wanted = set(only)
        svcs = [s for s in svcs if s["Spec"]["Name"] in wanted]
        if len(svcs) < len(wanted):
            return Convergence(False, "not all deployed yet")
    if not svcs:
        return Convergence(False, "no services yet")
    bad = []
    for svc in svcs:
        spec = svc["Spec"]
        name = spec["Name"]
        want = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
        tasks = api.tasks(filters={"service": svc["ID"], "desired-state": "running"})
        up = [t for t in tasks if t["Status"]["State"] == "running"
              and (nodes.get(t.get("NodeID")) or {}).get("Status", {}).get("State") == "ready"]
        update = (svc.get("UpdateStatus") or {}).get("State")
        if len(up) != want or update in ("updating", "rollback_started"):
            states = ",".join(sorted({t["Status"]["State"] for t in tasks})) or "none"
            err = next((t["Status"].get("Err") for t in tasks if t["Status"].get("Err")), "")
            bad.append(f"{name} {len(up)}/{want} ({states}{', ' + update if update else ''}"
                       f"{': ' + err[:120] if err else ''})")
    return Convergence(not bad, "; ".join(bad))


def wait_converged(engine: Engine, timeout: float, say: Callable[[str], None],
                   settle: int = 3, only: Iterable[str] | None = None) -> None:
    """Wait until :func:`converged` holds ``settle`` polls in a row."""
    deadline = time.monotonic() + timeout
    streak = 0
    last = Convergence(False, "?")
    only = list(only) if only is not None else None
    while time.monotonic() < deadline:
        last = converged(engine, only)
        streak = streak + 1 if last.ok else 0
        if streak >= settle:
            say("stack: " + ("every service" if only is None else ", ".join(only))
                + " runs its tasks, healthy")
            return
        time.sleep(2)
    raise SandboxError(f"swarm stack did not converge within {timeout:.0f}s: {last.detail}; "
                       f"see docker service ps --no-trunc {STACK}_<service>")


def wait_gone(engine: Engine, timeout: float = 90) -> None:
    """``docker stack rm`` returns at once; wait for the services and the network."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = services(engine)
        nets = engine.client.api.networks(filters={
            "label": f"com.docker.stack.namespace={STACK}"})
        running = engine.client.api.containers(filters={
            "label": f"com.docker.stack.namespace={STACK}"})
        if not left and not nets and not running:
            return
        time.sleep(1)
    raise SandboxError(f"stack {STACK} still has services or networks after {timeout:.0f}s "
                       "(docker stack ps bizosaas)")


# --------------------------------------------------------------------------- up / down


def _ensure_images(client: Any, say: Callable[[str], None]) -> None:
    """Build only what is missing: on a shared engine the compose stack's images
    are the ones to deploy; rebuilding a "changed" tag is `python -m sandbox up`'s job."""
    from docker.errors import ImageNotFound

    missing = []
    for spec in stack.IMAGES:
        try:
            client.images.get(spec.tag)
        except ImageNotFound:
            missing.append(spec.tag)
    if missing:
        say(f"images missing: {', '.join(missing)}; building")
        stack.build_images(client, say)
    else:
        say("images: present (local, no registry)")


def up(say: Callable[[str], None], nodes: int = 1, timeout: int = 240) -> None:
    if nodes not in (1, 3):
        raise SandboxError(f"--nodes {nodes}: the Swarm reference stack runs on 1 or 3 nodes")
    client = host_client()
    say(f"engine: Docker {client.version().get('Version')} reachable")
    _ensure_images(client, say)
    if nodes > 1:
        engine = nodes_up(client, say)
    else:
        engine = Engine()
        ensure_swarm(engine, say)
    deploy(engine, nodes, say)
    wait_converged(engine, timeout, say)


def down(say: Callable[[str], None], nodes: int = 1, volumes: bool = False) -> None:
    if nodes > 1:
        nodes_down(say, volumes=volumes)
        return
    engine = Engine()
    sw = engine.client.info().get("Swarm") or {}
    if sw.get("LocalNodeState") != "active":
        say("swarm: not active on this engine, nothing to remove")
        return
    engine.run(["stack", "rm", STACK], what="docker stack rm")
    wait_gone(engine)
    if volumes:
        engine.run(["volume", "rm", "-f", "bizosaas-swarm-pgdata"], check=False)
    FAULT_STATE.unlink(missing_ok=True)
    say(f"swarm stack {STACK} removed (this engine stays in the swarm)")


def status_rows(nodes: int = 1) -> list[tuple[str, str, str, str]]:
    engine = engine_for(nodes)
    api = engine.client.api
    node_names = {n["ID"]: n["Description"]["Hostname"] for n in api.nodes()}
    rows = []
    for svc in sorted(services(engine), key=lambda s: s["Spec"]["Name"]):
        spec = svc["Spec"]
        want = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
        tasks = api.tasks(filters={"service": svc["ID"], "desired-state": "running"})
        up_ = [t for t in tasks if t["Status"]["State"] == "running"]
        where = ",".join(sorted({node_names.get(t.get("NodeID"), "-") for t in tasks})) or "-"
        ports = ",".join(str(p.get("PublishedPort")) for p in
                         (svc.get("Endpoint") or {}).get("Ports") or []) or "-"
        rows.append((spec["Name"], f"{len(up_)}/{want}", where, ports))
    return rows


# --------------------------------------------------------------------------- DinD nodes


def ensure_node_image(client: Any, say: Callable[[str], None]) -> None:
    from docker.errors import ImageNotFound

    try:
        client.images.get(NODE_IMAGE)
        say(f"node image {NODE_IMAGE}: present")
        return
    except ImageNotFound:
        pass
    if not shutil.which("mmdebstrap"):
        raise SandboxError(f"node image {NODE_IMAGE} is missing and mmdebstrap is not "
                           "installed: apt-get install -y mmdebstrap")
    say(f"node image {NODE_IMAGE}: building with mmdebstrap (Debian's docker.io; 1-2 min)")
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "node.tar"
        proc = subprocess.run(["mmdebstrap", "--variant=apt", f"--include={NODE_PACKAGES}",
                               "bookworm", str(tar)], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise SandboxError(f"build step 'node image (mmdebstrap)' failed: {last}")
        repo, tag = NODE_IMAGE.rsplit(":", 1)
        client.api.import_image_from_file(str(tar), repository=repo, tag=tag)


def _node_ports(node: str) -> dict[str, tuple[str, int]]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    ports = {}
    for key, svc in raw["services"].items():
        if PLACEMENT[key] != node:
            continue
        for p in _ports(svc.get("ports") or [], MULTI_OFFSET):
            ports[f"{p['published']}/tcp"] = ("127.0.0.1", p["published"])
    return ports


def _images_for(node: str) -> list[str]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return sorted({svc["image"] for key, svc in raw["services"].items()
                   if PLACEMENT[key] == node})


def _wait_engine(url: str, timeout: float = 60) -> Any:
    import docker

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = docker.DockerClient(base_url=url, timeout=120)
            client.ping()
            return client
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(0.5)
    raise SandboxError(f"node engine {url} did not answer within {timeout:.0f}s: {last}")


def start_node(client: Any, node: str, say: Callable[[str], None]) -> Any:
    """Create (or start) one DinD node; returns a client for its engine."""
    from docker.errors import NotFound

    (NODE_DIR / node).mkdir(parents=True, exist_ok=True)
    try:
        c = client.containers.get(node)
        if c.status != "running":
            say(f"node {node}: starting")
            c.start()
    except NotFound:
        volume = f"{node}-docker"
        # A kept volume keeps its images; its old swarm state must go.
        client.containers.run(NODE_IMAGE, ["sh", "-c", "rm -rf /var/lib/docker/swarm"],
                              remove=True, volumes={volume: {"bind": "/var/lib/docker"}})
        say(f"node {node}: creating (Docker-in-Docker, {NODE_IMAGE})")
        # The docker CLI (not the API): `systempaths=unconfined` is its shorthand
        # for unmasked /proc and /sys. --privileged fails on this machine (its
        # bounding set lacks CAP_SYS_RESOURCE); everything else it grants is here.
        ports = [arg for host_ip, port in _node_ports(node).values()
                 for arg in ("-p", f"{host_ip}:{port}:{port}")]
        Engine().run(["run", "-d", "--name", node, "--hostname", node,
                      "--network", NODES_NETWORK, "--cap-add", "ALL",
                      "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
                      "--security-opt", "apparmor=unconfined",
                      "--security-opt", "systempaths=unconfined",
                      "-v", f"{volume}:/var/lib/docker", "-v", f"{NODE_DIR / node}:/run/node",
                      "--label", "org.bizosaas.sandbox=swarm-node", *ports,
                      NODE_IMAGE, "sh", "-c", NODE_BOOT], what=f"creating node {node}")
    return _wait_engine(node_url(node))


def load_images(client: Any, node: str, node_client: Any, say: Callable[[str], None]) -> None:
    """``docker save | docker load`` the images the node's services need (no registry)."""
    from docker.errors import ImageNotFound

    missing = []
    for ref in _images_for(node):
        want = client.images.get(ref).id
        try:
            have = node_client.images.get(ref).id
        except ImageNotFound:
            have = None
        if have != want:
            missing.append(ref)
    if not missing:
        say(f"node {node}: images present")
        return
    say(f"node {node}: loading {', '.join(missing)} (docker save | docker load)")
    save = subprocess.Popen(["docker", "save", *missing], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "-H", node_url(node), "load", "-q"], stdin=save.stdout,
                          capture_output=True, text=True)
    save.wait()
    if save.returncode != 0 or load.returncode != 0:
        raise SandboxError(f"loading images into {node} failed: "
                           f"{(load.stderr or '').strip()[-200:] or 'docker save failed'}")


def _node_ip(client: Any, node: str) -> str:
    c = client.containers.get(node)
    return c.attrs["NetworkSettings"]["Networks"][NODES_NETWORK]["IPAddress"]


def nodes_up(client: Any, say: Callable[[str], None]) -> Engine:
    """Three DinD nodes in one swarm (node1 manages); returns the manager's engine."""
    ensure_node_image(client, say)
    if not client.networks.list(names=[NODES_NETWORK]):
        client.networks.create(NODES_NETWORK, driver="bridge",
                               labels={"org.bizosaas.sandbox": "swarm-nodes"})
    node_clients = {n: start_node(client, n, say) for n in NODES}
    for n in NODES:
        load_images(client, n, node_clients[n], say)
    manager = Engine(node_url(NODES[0]), node_clients[NODES[0]])
    ensure_swarm(manager, say, advertise=_node_ip(client, NODES[0]))
    token = manager.client.swarm.attrs["JoinTokens"]["Worker"]
    addr = f"{_node_ip(client, NODES[0])}:2377"
    for n in NODES[1:]:
        sw = node_clients[n].info().get("Swarm") or {}
        if sw.get("LocalNodeState") == "active":
            continue
        say(f"node {n}: joining the swarm as a worker")
        Engine(node_url(n)).run(["swarm", "join", "--token", token, addr],
                                what=f"docker swarm join ({n})")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = {x["Description"]["Hostname"] for x in manager.client.api.nodes()
                 if x["Status"]["State"] == "ready"}
        if set(NODES) <= ready:
            say(f"swarm: {len(NODES)} nodes ready ({', '.join(NODES)})")
            return manager
        time.sleep(1)
    raise SandboxError(f"swarm nodes not ready within 60s: docker -H {node_url(NODES[0])} "
                       "node ls")


def nodes_down(say: Callable[[str], None], volumes: bool = False) -> None:
    from docker.errors import NotFound

    client = host_client()
    for n in NODES:
        try:
            client.containers.get(n).remove(force=True, v=False)
            say(f"node {n}: removed")
        except NotFound:
            pass
        if volumes:
            for v in client.volumes.list(filters={"name": f"{n}-docker"}):
                v.remove(force=True)
    for net in client.networks.list(names=[NODES_NETWORK]):
        net.remove()
    FAULT_STATE.unlink(missing_ok=True)


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class SwarmFault:
    """One fault of the Swarm reference stack (swarm-faults.yaml)."""

    name: str
    category: str
    summary: str
    action: str
    service: str | None = None
    node: str | None = None
    nodes: int = 1
    args: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, list[str]] = field(default_factory=dict)


def load_faults() -> dict[str, SwarmFault]:
    return stack.load_faults_file(FAULTS_FILE, SwarmFault)


def _svc(name: str) -> str:
    return f"{STACK}_{name}"


def _task_states(engine: Engine, service: str) -> list[dict[str, Any]]:
    return engine.client.api.tasks(filters={"service": _svc(service)})


def _wait(cond: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(1)
    raise SandboxError(f"{what} did not happen within {timeout:.0f}s")


def fault_on(names: Iterable[str], say: Callable[[str], None]) -> list[SwarmFault]:
    """Switch Swarm faults on (several at once when they touch different services)."""
    faults = load_faults()
    chosen = []
    for name in names:
        if name not in faults:
            raise SandboxError(f"unknown Swarm fault {name!r}; list them with "
                               "`python -m sandbox faults --swarm`")
        chosen.append(faults[name])
    nodes = max(f.nodes for f in chosen)
    engine = engine_for(nodes)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    FAULT_STATE.write_text(json.dumps({"faults": [f.name for f in chosen], "nodes": nodes}))
    # A service recreated from an altered stack file first (a deploy would undo
    # the other faults' changes), then the runtime changes.
    recreate = [f for f in chosen if f.action == "recreate"]
    if recreate:
        for f in recreate:
            say(f"fault {f.name}: recreating {_svc(f.service or '')} with "
                f"{', '.join(f.args.get('override') or {})} changed")
            engine.run(["service", "rm", _svc(f.service or "")], check=False)
        for f in recreate:
            _wait(lambda s=f.service: not _containers_of(nodes, s or ""),
                  f"containers of {_svc(f.service or '')} removed", timeout=60)
        deploy(engine, nodes, say, {f.service or "": f.args.get("override") or {}
                                    for f in recreate})
    for f in chosen:
        if f.action != "recreate":
            _apply(engine, f, say)
    for f in chosen:
        _wait_symptom(engine, f)
        say(f"fault {f.name} is on: {f.summary}")
    return chosen


def _apply(engine: Engine, f: SwarmFault, say: Callable[[str], None]) -> None:
    say(f"fault {f.name}: {f.action}")
    if f.action == "scale":
        engine.run(["service", "scale", "--detach", f"{_svc(f.service or '')}="
                    f"{int(f.args.get('replicas', 0))}"])
    elif f.action == "update":
        engine.run(["service", "update", "--detach", "--no-resolve-image",
                    *[str(a) for a in f.args.get("flags", [])], _svc(f.service or "")])
    elif f.action == "drain":
        engine.run(["node", "update", "--availability", "drain", f.node or ""])
    elif f.action == "stop-node":
        host_client().containers.get(f.node).stop(timeout=5)
    else:
        raise SandboxError(f"{FAULTS_FILE}: fault {f.name}: unknown action {f.action!r}")


def _wait_symptom(engine: Engine, f: SwarmFault) -> None:
    api = engine.client.api
    if f.action == "scale":
        _wait(lambda: not [t for t in _task_states(engine, f.service or "")
                           if t["Status"]["State"] == "running"
                           and t["DesiredState"] == "running"],
              f"fault {f.name}: {_svc(f.service or '')} scaling to 0")
    elif f.action == "update" and f.args.get("symptom") == "paused":
        _wait(lambda: (api.inspect_service(_svc(f.service or "")).get("UpdateStatus")
                       or {}).get("State") == "paused", f"fault {f.name}: update paused")
    elif f.action in ("update", "recreate"):
        _wait(lambda: len([t for t in _task_states(engine, f.service or "")
                           if t["Status"]["State"] in ("failed", "rejected")]) >= 2,
              f"fault {f.name}: tasks of {_svc(f.service or '')} failing")
    elif f.action == "drain":
        _wait(lambda: all(t["Status"]["State"] != "running" or t["DesiredState"] != "running"
                          for s in services(engine) for t in api.tasks(
                              filters={"service": s["ID"], "node": f.node})),
              f"fault {f.name}: {f.node} drained")
    elif f.action == "stop-node":
        _wait(lambda: any(n["Description"]["Hostname"] == f.node
                          and n["Status"]["State"] == "down" for n in api.nodes()),
              f"fault {f.name}: {f.node} seen down by the manager")


def heal(say: Callable[[str], None], timeout: int = 240) -> None:
    """Undo the active Swarm faults: restore nodes, recreate touched services, redeploy."""
    try:
        state = json.loads(FAULT_STATE.read_text())
    except (FileNotFoundError, ValueError):
        state = {"faults": [], "nodes": 1}
    nodes = int(state.get("nodes", 1))
    engine = engine_for(nodes)
    faults = load_faults()
    for name in state.get("faults", []):
        f = faults.get(name)
        if f is None:
            continue
        say(f"healing {name}")
        if f.action == "drain":
            engine.run(["node", "update", "--availability", "active", f.node or ""])
        elif f.action == "stop-node":
            client = host_client()
            client.containers.get(f.node).start()
            _wait_engine(node_url(f.node or ""))
            _wait(lambda node=f.node: any(n["Description"]["Hostname"] == node
                                          and n["Status"]["State"] == "ready"
                              for n in engine.client.api.nodes()),
                  f"{f.node} ready again", timeout=120)
        elif f.service:
            # A new service has no failed tasks in its history: the checks judge
            # the healed service, not the fault's leftovers.
            engine.run(["service", "rm", _svc(f.service)], check=False)
    for name in state.get("faults", []):
        f = faults.get(name)
        if f is not None and f.service:
            # Its old task must be gone before the new one binds the same host port.
            _wait(lambda s=f.service: not _containers_of(nodes, s),
                  f"containers of {_svc(f.service)} removed", timeout=60)
    deploy(engine, nodes, say)
    wait_converged(engine, timeout, say)
    FAULT_STATE.unlink(missing_ok=True)


def _containers_of(nodes: int, service: str) -> list[Any]:
    """Containers of ``service``'s tasks on every node's engine (stopping ones too)."""
    import docker

    urls = [node_url(n) for n in NODES] if nodes > 1 else [None]
    found = []
    for url in urls:
        client = docker.DockerClient(base_url=url, timeout=30) if url else host_client()
        found += client.api.containers(all=True, filters={
            "label": f"com.docker.swarm.service.name={_svc(service)}"})
    return found


def describe_faults() -> list[tuple[str, str, str, str]]:
    return [(f.name, f.category, f.service or f.node or "-", f.summary)
            for f in load_faults().values()]
