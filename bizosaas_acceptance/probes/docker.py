"""The Docker engine: a bounded client (local, tcp:// or ssh://) and the run's state.

:func:`connect_docker` makes the client (first contact within
``--connect-timeout``) and wraps it in :class:`BoundedDocker`: every Docker API
call carries a deadline and, when the engine does not answer, fails diagnosed,
naming the call. :class:`DockerState` answers questions about the containers
from the run's one shared snapshot (:mod:`.snapshot`).

Deadlines (``c`` is ``--connect-timeout``, 5 s by default). They are socket
deadlines: no single read from the engine waits longer; a stream also has a
deadline for the whole of it.

=====================  ==============  ============================================
call                   deadline        why
=====================  ==============  ============================================
everything by default  c               metadata the engine answers in milliseconds
                                       (ping, version, inspect, networks, images,
                                       exec create/inspect)
``stats`` (one-shot)   c + 2 s         waits for the engine's 1 s collection tick
``exec_start``         set per call    the in-container probe's own bound
                                       (:func:`~.snapshot.probe_budget`)
streams (``logs``)     c per read,     the engine sends as it reads; a log that
                       6 c in all      takes longer is cut, not waited for
                                       (docker-py's own "no timeout on a stream"
                                       is switched off)
=====================  ==============  ============================================

The old single client timeout of 30 s (``DOCKER_API_TIMEOUT``) let a hung
engine hold one snapshot for 90 s (three rounds of calls), past pytest-timeout.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import Cause, fail, waiting_on
from bizosaas_acceptance.probes.retry import retry

if TYPE_CHECKING:
    from bizosaas_acceptance.probes.swarm import SwarmView

#: SSH channels one docker client may hold open: below sshd's default MaxSessions (10).
SSH_CHANNELS = 8


def _bound_ssh_channels(client: Any, channels: int, wait_s: float = 120) -> None:
    """Share one blocking pool of at most ``channels`` connections over SSH.

    docker-py keeps a connection pool per request URL and opens one SSH channel
    (``docker system dial-stdio``) per connection, without bound; the snapshot's
    concurrent inspect/stats calls then exceed sshd's MaxSessions and fail with
    "Unable to open channel". One pool whose callers wait for a free connection
    keeps the run within the limit of any stock sshd.
    """
    adapter = client.api.get_adapter(client.api.base_url)
    get_connection = adapter.get_connection

    def one_pool(url: str, proxies: Any = None) -> Any:
        pool = get_connection("ssh://docker-engine/", proxies)
        if not getattr(pool, "_bizosaas_bounded", False):
            get_conn = pool._get_conn
            pool.block = True
            # Wait for a free connection, but never forever (a leaked stream).
            pool._get_conn = lambda timeout=None: get_conn(timeout or wait_s)
            pool._bizosaas_bounded = True
        return pool

    adapter.get_connection = one_pool


#: Extra seconds a one-shot ``stats`` call may wait (the engine's collection tick).
STATS_EXTRA_S = 2.0
#: A stream (logs) may last this many connect timeouts in all.
STREAM_FACTOR = 6.0

_TLS = threading.local()


@contextmanager
def docker_deadline(seconds: float) -> Iterator[None]:
    """Docker API calls made in this block (this thread) wait at most ``seconds`` per read."""
    before = getattr(_TLS, "deadline", None)
    _TLS.deadline = seconds
    try:
        yield
    finally:
        _TLS.deadline = before


def _docker_calls() -> frozenset[str]:
    """The Docker API methods of docker-py's APIClient (not requests.Session's)."""
    from docker.api.client import APIClient

    names = set()
    for name in dir(APIClient):
        attr = getattr(APIClient, name, None)
        module = getattr(attr, "__module__", "") or ""
        if (not name.startswith("_") and callable(attr) and module.startswith("docker.api.")
                and module != "docker.api.client"):
            names.add(name)
    return frozenset(names)


class BoundedApi:
    """docker-py's low-level client with a deadline on every call.

    Attribute access passes through to the APIClient, so code written for
    docker-py works unchanged; the Docker API methods (``inspect_container``,
    ``stats``, ``logs``, ``exec_start``, ...) run inside
    :func:`~bizosaas_acceptance.outcome.waiting_on`, so a timeout or a lost
    connection raises :class:`~bizosaas_acceptance.outcome.NoAnswer` carrying the
    diagnosis (naming the call and the engine): an ordinary exception, so code
    that samples in the background can still record it. An error the engine
    *answers* (404 NotFound, 409 Conflict) is raised as docker-py raises it.
    """

    def __init__(self, api: Any, endpoint: str, connect_timeout: float) -> None:
        self._api = api
        self._endpoint = endpoint
        self._connect_timeout = connect_timeout
        self._calls = _docker_calls()
        # docker-py puts its one client-wide timeout on every request; ours depends
        # on the call (thread-local, set around each call).
        api._set_request_timeout = self._set_request_timeout
        # docker-py takes the timeout off a streamed response's socket ("block
        # forever on a stream"); ours keeps its per-read deadline.
        api._disable_socket_timeout = lambda sock: None

    def _set_request_timeout(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("timeout", getattr(_TLS, "deadline", None) or self._connect_timeout)
        return kwargs

    def budget(self, name: str) -> float:
        """The per-read deadline of Docker API call ``name`` (see the module doc)."""
        override = getattr(_TLS, "deadline", None)
        if override:
            return override
        if name == "stats":
            return self._connect_timeout + STATS_EXTRA_S
        return self._connect_timeout

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if name not in self._calls or not callable(attr):
            return attr
        return functools.partial(self._call, name, attr)

    def _describe(self, name: str, args: tuple[Any, ...]) -> str:
        subject = str(args[0])[:80] if args and isinstance(args[0], str) else ""
        return f"Docker API {name}({subject}) on {self._endpoint}"

    def _next_cmd(self, name: str, args: tuple[Any, ...]) -> list[str]:
        subject = str(args[0]) if args and isinstance(args[0], str) else ""
        if name == "logs" and subject:
            return [f"time docker logs --tail 50 {subject}", "docker info"]
        if name in ("inspect_container", "stats") and subject:
            return [f"time docker inspect {subject} >/dev/null", "docker info"]
        return ["time docker info", "systemctl status docker  # or: journalctl -u docker"]

    def _call(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        budget = self.budget(name)
        what = self._describe(name, args)
        nxt = self._next_cmd(name, args)
        with waiting_on(what, cause=Cause.WONT_START, next_cmd=nxt, budget=budget,
                        expected=f"the Docker engine answering within {budget:g}s",
                        as_exception=True), docker_deadline(budget):
            result = fn(*args, **kwargs)
        if kwargs.get("stream") and hasattr(result, "__next__"):
            return self._stream(result, what, nxt, budget)
        return result

    def _stream(self, stream: Any, what: str, nxt: list[str], budget: float) -> Iterator[Any]:
        """Iterate a stream: each read within ``budget``, the whole within STREAM_FACTOR c."""
        total = self._connect_timeout * STREAM_FACTOR
        deadline = time.monotonic() + total
        try:
            while True:
                with waiting_on(what, cause=Cause.WONT_START, next_cmd=nxt, budget=budget,
                                expected=f"the whole stream within {total:g}s",
                                as_exception=True):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the stream was still open after {total:g}s")
                    try:
                        item = next(stream)
                    except StopIteration:
                        return
                yield item
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001, S110 - closing a broken stream
                    pass


class BoundedDocker:
    """A docker-py client whose ``api`` is a :class:`BoundedApi`."""

    def __init__(self, client: Any, target: Target) -> None:
        self.client = client
        self.api = BoundedApi(client.api, target.docker_display(), target.connect_timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def __repr__(self) -> str:
        return f"<BoundedDocker {self.api._endpoint}>"

    def close(self) -> None:
        self.client.close()


def _import_docker(ssh: bool) -> Any:
    """``import docker``, without paramiko unless the engine is reached over ssh://.

    docker-py imports paramiko (for ssh:// engines) at import time whenever it
    is installed: about a quarter of a second of CPU in every process that
    touches Docker, for nothing on a local or tcp:// engine. Hiding it for the
    duration of the import makes docker-py skip its ssh transport (it guards
    that import), and nothing else of ours uses paramiko.
    """
    import sys

    if ssh or "docker" in sys.modules or "paramiko" in sys.modules:
        import docker

        return docker
    sys.modules["paramiko"] = None  # type: ignore[assignment]  # import -> ImportError
    try:
        import docker
    finally:
        if sys.modules.get("paramiko", 0) is None:
            del sys.modules["paramiko"]
    return docker


def _docker_client(target: Target, timeout: float) -> Any:
    """A docker-py client; creating one already asks the engine for its API version."""
    ssh = bool(target.docker_host and target.docker_host.startswith("ssh://"))
    docker = _import_docker(ssh)

    if ssh:
        # paramiko (no ssh binary needed); ~/.ssh/config and known_hosts apply.
        client = docker.DockerClient(base_url=target.docker_host, timeout=timeout,
                                     use_ssh_client=False, max_pool_size=SSH_CHANNELS)
        _bound_ssh_channels(client, SSH_CHANNELS)
    elif target.docker_host:
        # from_env so that DOCKER_TLS_VERIFY/DOCKER_CERT_PATH apply to tcp:// too.
        client = docker.from_env(timeout=timeout, environment={**os.environ,
                                                               "DOCKER_HOST": target.docker_host})
    else:
        client = docker.from_env(timeout=timeout)
    return client


def connect_docker(target: Target) -> BoundedDocker:
    """A bounded docker-py client for ``--docker-host`` / ``$DOCKER_HOST``, pinged;
    raises on failure.

    First contact (the version query in the constructor, the ping) is bounded by
    --connect-timeout: an engine port that accepts and never answers fails once
    per process within it, instead of holding every worker. Every later call
    has its own deadline (see the module doc).
    """

    def connect() -> Any:
        client = _docker_client(target, target.connect_timeout)
        client.ping()
        return client

    return BoundedDocker(retry(connect, target.connect_timeout), target)


def snapshot_budget(connect_timeout: float) -> float:
    """Longest a snapshot may take: inspect, two stats rounds, images (each one deadline)."""
    return 4 * connect_timeout + 2 * STATS_EXTRA_S



def snapshot_names(stack: Stack) -> list[str]:
    return [s.container for s in stack.services.values()]


def take_docker_snapshot(client: Any, stack: Stack, target: Target) -> dict[str, Any]:
    """The run's Docker snapshot: containers by name, or a Swarm stack's task
    containers by service (``--swarm-stack``, :mod:`.swarm`)."""
    if target.swarm_stack:
        from bizosaas_acceptance.probes.swarm import take_swarm_snapshot

        return take_swarm_snapshot(client, stack, target)
    from bizosaas_acceptance.probes.snapshot import take_inspect

    # Inspect only: the stats samples wait for the engine's ticks, so they are
    # a separate shared part (``docker-usage``) that only usage checks wait for.
    return take_inspect(client, snapshot_names(stack))


def docker_state_from(raw: dict[str, Any],
                      usage: Callable[[], dict[str, dict[str, Any]]] | None = None
                      ) -> DockerState:
    """A :class:`DockerState` from a snapshot as :func:`take_docker_snapshot` made
    it; ``usage`` reads the stats part on first use when the snapshot has none."""
    swarm = None
    if raw.get("swarm") is not None:
        from bizosaas_acceptance.probes.swarm import SwarmView

        swarm = SwarmView(raw["swarm"])
    source = raw["usage"] if "usage" in raw else (usage or {})
    return DockerState(raw["containers"], source, raw["images"], raw["taken_at"], swarm)


def log_stream(client: Any, container: str, attrs: dict[str, Any], **kwargs: Any) -> Any:
    """The log of a container, as a stream of chunks; for a Swarm task, its
    service's log (``docker service logs``: every task of the service, any node)."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    service = labels.get("com.docker.swarm.service.name")
    if service:
        kwargs.pop("stream", None)  # service_logs always streams
        stream = client.api.service_logs(service, **kwargs)
        bounded = getattr(client.api, "_stream", None)
        if bounded is None or not hasattr(stream, "__next__"):
            return stream
        # The same deadlines as a container's log: per read, and for the whole.
        return bounded(stream, f"Docker API service_logs({service})",
                       [f"time docker service logs --tail 50 {service}", "docker info"],
                       client.api.budget("logs"))
    return client.api.logs(container, **kwargs)



def docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 time (nanoseconds, Z or offset) as epoch seconds; None if
    unset (``0001-01-01...``) or unreadable."""
    if not text or text.startswith("0001-"):
        return None
    body, zone = text.strip(), "+00:00"
    if body.endswith("Z"):
        body = body[:-1]
    elif len(body) > 6 and body[-6] in "+-" and body[-3] == ":":
        body, zone = body[:-6], body[-6:]
    head, _, frac = body.partition(".")
    try:
        base = datetime.fromisoformat(head + zone).timestamp()
    except ValueError:
        return None
    return base + (float("0." + frac[:9]) if frac else 0.0)


@dataclass
class DockerState:
    """What the snapshot says about containers, by container name.

    ``usage`` (stats) may be given as a callable: it is then read on first use,
    so checks that never look at usage never wait for its samples.
    """

    containers: dict[str, dict[str, Any] | None]
    usage_source: dict[str, dict[str, Any]] | Callable[[], dict[str, dict[str, Any]]]
    images: dict[str, bool]
    taken_at: float
    #: The Swarm stack's services, tasks and nodes (``--swarm-stack``); None otherwise.
    swarm: SwarmView | None = None

    @property
    def usage(self) -> dict[str, dict[str, Any]]:
        if callable(self.usage_source):
            self.usage_source = self.usage_source()
        return self.usage_source

    def __repr__(self) -> str:
        return f"<docker state of {len(self.containers)} containers>"

    def container(self, svc: Service) -> dict[str, Any] | None:
        return self.containers.get(svc.container)

    def log_attrs(self, svc: Service) -> dict[str, Any] | None:
        """What the log scan needs of ``svc``'s container (start time, labels, env).

        In Swarm mode logs are read through the service, from the manager, so a
        task on a node without an engine is read too: its start and labels come
        from the task. No running task: the check fails saying why.
        """
        __tracebackhide__ = True
        attrs = self.containers.get(svc.container)
        if attrs is not None or self.swarm is None:
            return attrs
        loc = self.swarm.location(svc)
        task = next((t for t in self.swarm.tasks(svc) if t["id"] == loc.get("task")), None)
        if task is None:
            self.require(svc)
        spec = self.swarm.service(svc) or {}
        # The task's creation, not its "running" time (with a healthcheck that is
        # after it turned healthy, after its startup lines).
        return {"State": {"StartedAt": (task["created"] or task["since"]) if task else ""},
                "Config": {"Labels": {"com.docker.swarm.service.name": svc.container},
                           "Env": spec.get("env") or []}}

    def ref(self, svc: Service) -> str:
        """What to pass to the Docker API for ``svc``'s container: its name, or in
        Swarm mode the id of its located task's container."""
        if self.swarm is None:
            return svc.container
        attrs = self.containers.get(svc.container) or {}
        return str(attrs.get("Id") or self.swarm.location(svc).get("container")
                   or svc.container)

    def client(self, default: Any, svc: Service) -> Any:
        """The engine holding ``svc``'s container: ``default``, or in Swarm mode the
        engine of the node its task runs on (manifest ``swarm.engines``)."""
        engine = self.swarm.location(svc).get("engine") if self.swarm else None
        if not engine:
            return default
        from bizosaas_acceptance.probes.swarm import engine_client

        return engine_client(engine, float(self.swarm.data.get("connect_timeout") or 5))

    def ports(self, svc: Service) -> dict[str, Any]:
        """Published ports as ``NetworkSettings.Ports``: the container's, or in Swarm
        mode the service's endpoint (ingress ports are not on any container)."""
        __tracebackhide__ = True
        if self.swarm is None:
            return self.require(svc)["NetworkSettings"].get("Ports") or {}
        self.require_service(svc)
        return self.swarm.ports(svc)

    def up_for(self, svc: Service) -> float:
        """Seconds since the container last started (0 when unknown)."""
        attrs = self.containers.get(svc.container) or {}
        started = docker_time((attrs.get("State") or {}).get("StartedAt"))
        return 0.0 if started is None else max(0.0, time.time() - started)

    def crash_looping(self, svc: Service, stable_after: float) -> bool:
        """Restarting, or restarted and not yet up for ``stable_after`` seconds
        (Swarm: a task of the service failed within ``stable_after`` seconds)."""
        if self.swarm is not None:
            return bool(self.swarm.failures(svc, since=self.taken_at - stable_after))
        attrs = self.containers.get(svc.container) or {}
        if (attrs.get("State") or {}).get("Restarting"):
            return True
        return bool(attrs.get("RestartCount")) and self.up_for(svc) < stable_after

    def require(self, svc: Service) -> dict[str, Any]:
        """Inspect data of ``svc``'s container; fails the check when it does not exist."""
        __tracebackhide__ = True
        attrs = self.containers.get(svc.container)
        if attrs is None and self.swarm is not None:
            self._require_task(svc)
        if attrs is None:
            fail(f"[EXISTS] {svc.key}: container {svc.container} not found",
                 expected=f"a container named {svc.container}",
                 seen="no such container on the engine",
                 cause=Cause.BUILD, why="never created: build or deploy failed, or it was removed",
                 next_cmd=[f"docker ps -a --filter name={svc.container}",
                           "docker compose ps  # in the deployment's directory"])
        return attrs

    def require_service(self, svc: Service) -> dict[str, Any]:
        """The Swarm service of ``svc``; fails the check when the manager has none."""
        __tracebackhide__ = True
        assert self.swarm is not None
        sw = self.swarm
        if sw.error:
            fail(f"[SWARM] {svc.key}: cannot read stack {sw.stack}",
                 expected="DOCKER_HOST pointing at a manager of the swarm running the stack",
                 seen=sw.error, cause=Cause.CONFIG,
                 why="the suite talks to an engine that cannot list the stack's services",
                 next_cmd=["docker info --format '{{json .Swarm}}'", "docker node ls"])
        spec = sw.service(svc)
        if spec is None:
            fail(f"[SWARM] {svc.key}: service {svc.container} not found in stack {sw.stack}",
                 expected=f"a Swarm service {svc.container} labelled "
                          f"com.docker.stack.namespace={sw.stack}",
                 seen="services of the stack: " + (", ".join(sorted(
                     sw.data.get("services") or {})) or "none"),
                 cause=Cause.BUILD, why="never deployed: stack deploy failed, the compose file "
                 "lacks the service, or the stack has another name",
                 next_cmd=[f"docker stack services {sw.stack}",
                           f"docker stack deploy --resolve-image never -c <compose file> "
                           f"{sw.stack}"])
        return spec

    def _require_task(self, svc: Service) -> None:
        """Fail with where ``svc``'s task is (or why it has none): Swarm mode, no container."""
        __tracebackhide__ = True
        from bizosaas_acceptance.probes.swarm import ps_cmd, service_logs_cmd

        assert self.swarm is not None
        sw = self.swarm
        self.require_service(svc)
        loc = sw.location(svc)
        if not loc.get("task"):
            tasks = sw.pending(svc) or sw.tasks(svc)
            fail(f"[TASK] {svc.key}: {svc.container} has no running task",
                 expected="a running task whose container the checks can read",
                 seen="; ".join(sw.describe_task(t) for t in tasks[:3]) or "no task at all",
                 cause=Cause.WONT_START,
                 why="its tasks fail, cannot be scheduled, or the service is scaled to 0",
                 next_cmd=[ps_cmd(svc.container), service_logs_cmd(svc.container)])
        node = loc.get("node")
        if loc.get("error"):
            fail(f"[NODE] {svc.key}: engine of node {node} unreachable",
                 expected=f"the Docker engine of node {node} ({loc.get('engine')}) answering",
                 seen=str(loc["error"]), cause=Cause.NETWORK,
                 why="the node's engine given in the manifest (swarm.engines) does not answer",
                 next_cmd=[f"DOCKER_HOST={loc.get('engine')} docker info",
                           f"docker node inspect --pretty {node}"])
        fail(f"[NODE] {svc.key}: task {svc.container}.{loc.get('slot') or ''} runs on node "
             f"{node}, not on this engine's node",
             expected="the task's container on this engine's node, or an engine for its node "
                      "in the manifest (swarm.engines)",
             seen=f"running on node {node}; this engine is node "
                  f"{sw.node_name(sw.data.get('node_id'))}; no engine for {node} in "
                  "swarm.engines",
             cause=Cause.CONFIG, why="checks that read the container must run on its node",
             next_cmd=[f"DOCKER_HOST=ssh://<user>@{node} docker inspect {loc.get('container')}",
                       f"add  swarm: {{engines: {{{node}: ssh://<user>@{node}}}}}  "
                       "to the manifest"])


def prefetch_snapshot(run_id: str, stack: Stack, target: Target) -> None:
    """Take the run's Docker snapshot in the background while the session starts.

    Stats one-shot samples wait for the engine's one-second collection tick, so
    the snapshot costs about two seconds whatever we do; taken on the controller
    at configure time, it overlaps collection and the xdist workers' start-up.
    Workers (and the fixture) block on the snapshot's file lock until it is
    written. Any failure is left for the fixtures to report.
    """
    from bizosaas_acceptance.outcome import Diagnosed
    from bizosaas_acceptance.probes.snapshot import running_names, shared, take_usage

    wait = snapshot_budget(target.connect_timeout) + target.connect_timeout
    try:
        client = connect_docker(target)
        raw = shared(run_id, "docker-snapshot",
                     lambda: take_docker_snapshot(client, stack, target), wait=wait)
        if "usage" not in raw:  # Swarm snapshots carry their usage already
            shared(run_id, "docker-usage", lambda: take_usage(client, running_names(raw)),
                   wait=wait)
    except (Exception, Diagnosed):  # noqa: BLE001, S110 - the fixtures report it properly
        pass

