"""The Docker engine: a bounded client (local, tcp:// or ssh://) and the run's state.

:func:`connect_docker` makes the client (first contact within
``--connect-timeout``); :class:`DockerState` answers questions about the
containers from the run's one shared snapshot (:mod:`.snapshot`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import Cause, fail
from bizosaas_acceptance.probes.retry import retry

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


#: docker-py's timeout once connected: streamed logs, stats and execs take seconds.
DOCKER_API_TIMEOUT = 30


def _docker_client(target: Target, timeout: float) -> Any:
    """A docker-py client; creating one already asks the engine for its API version."""
    import docker

    if target.docker_host and target.docker_host.startswith("ssh://"):
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


def connect_docker(target: Target) -> Any:
    """A docker-py client for ``--docker-host`` / ``$DOCKER_HOST``, pinged; raises on failure.

    First contact (the version query in the constructor, the ping) is bounded by
    --connect-timeout: an engine port that accepts and never answers fails once
    per process within it, instead of holding every worker for the API timeout.
    """

    def connect() -> Any:
        client = _docker_client(target, target.connect_timeout)
        client.ping()
        return client

    client = retry(connect, target.connect_timeout)
    client.api.timeout = DOCKER_API_TIMEOUT
    return client



def snapshot_names(stack: Stack) -> list[str]:
    return [s.container for s in stack.services.values()]



@dataclass
class DockerState:
    """What the snapshot says about containers, by container name."""

    containers: dict[str, dict[str, Any] | None]
    usage: dict[str, dict[str, Any]]
    images: dict[str, bool]
    taken_at: float

    def container(self, svc: Service) -> dict[str, Any] | None:
        return self.containers.get(svc.container)

    def up_for(self, svc: Service) -> float:
        """Seconds since the container last started (0 when unknown)."""
        attrs = self.containers.get(svc.container) or {}
        started = (attrs.get("State") or {}).get("StartedAt", "")
        try:
            ts = datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00")
        except ValueError:
            return 0.0
        return max(0.0, time.time() - ts.timestamp())

    def crash_looping(self, svc: Service, stable_after: float) -> bool:
        """Restarting, or restarted and not yet up for ``stable_after`` seconds."""
        attrs = self.containers.get(svc.container) or {}
        if (attrs.get("State") or {}).get("Restarting"):
            return True
        return bool(attrs.get("RestartCount")) and self.up_for(svc) < stable_after

    def require(self, svc: Service) -> dict[str, Any]:
        """Inspect data of ``svc``'s container; fails the check when it does not exist."""
        __tracebackhide__ = True
        attrs = self.containers.get(svc.container)
        if attrs is None:
            fail(f"[EXISTS] {svc.key}: container {svc.container} not found",
                 expected=f"a container named {svc.container}",
                 seen="no such container on the engine",
                 cause=Cause.BUILD, why="never created: build or deploy failed, or it was removed",
                 next_cmd=[f"docker ps -a --filter name={svc.container}",
                           "docker compose ps  # in the deployment's directory"])
        return attrs


def prefetch_snapshot(run_id: str, stack: Stack, target: Target) -> None:
    """Take the run's Docker snapshot in the background while the session starts.

    Stats one-shot samples wait for the engine's one-second collection tick, so
    the snapshot costs about two seconds whatever we do; taken on the controller
    at configure time, it overlaps collection and the xdist workers' start-up.
    Workers (and the fixture) block on the snapshot's file lock until it is
    written. Any failure is left for the fixtures to report.
    """
    from bizosaas_acceptance.probes.snapshot import shared, take_snapshot

    try:
        client = connect_docker(target)
        shared(run_id, "docker-snapshot", lambda: take_snapshot(client, snapshot_names(stack)))
    except Exception:  # noqa: BLE001, S110 - the fixture reports it properly
        pass
