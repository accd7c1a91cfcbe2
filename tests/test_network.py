"""Suite 8: network. The network exists, every container is on it and resolvable,
each service reaches its dependencies from inside its container, published
ports match, nothing unexpected is published.

Reachability runs one exec per application container (all dependencies probed
in that one exec), once per run, shared by every check and worker.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import Cause, check, fail, logs_cmd

pytestmark = [pytest.mark.network]


@pytest.mark.service("stack")
@pytest.mark.compose_only  # Swarm: overlay networks in tests/test_swarm.py
def test_network_exists(stack: Stack, docker_client) -> None:
    if not stack.network:
        pytest.skip("the manifest names no network")
    nets = docker_client.api.networks(names=[stack.network])
    exact = [n for n in nets if n.get("Name") == stack.network]
    check(bool(exact), f"[NETWORK] {stack.network} exists", expected=f"network {stack.network}",
          seen="absent; networks: " + ", ".join(sorted(n["Name"] for n in
                                                        docker_client.api.networks())),
          cause=Cause.NETWORK, why="wrong network configuration (not created, or created "
          "under a project-prefixed name)",
          next_cmd=[f"docker network create {stack.network}", "docker network ls"])
    driver = exact[0].get("Driver")
    check(driver == "bridge", f"[NETWORK] {stack.network} driver ({driver}) == bridge",
          expected="a user-defined bridge network", seen=f"driver {driver}",
          cause=Cause.NETWORK, next_cmd=f"docker network inspect {stack.network}")


def test_attached(service: Service, docker_state, stack: Stack) -> None:
    if not stack.network:
        pytest.skip("the manifest names no network")
    nets = docker_state.require(service)["NetworkSettings"].get("Networks") or {}
    check(stack.network in nets, f"[NETWORK] {service.key} on {stack.network}",
          expected=f"attached to {stack.network}",
          seen="attached to " + (", ".join(sorted(nets)) or "no network"), cause=Cause.NETWORK,
          why="the container runs on another network: services cannot reach it by name",
          next_cmd=[f"docker network connect {stack.network} {service.container}",
                    f"docker inspect --format '{{{{json .NetworkSettings.Networks}}}}' "
                    f"{service.container}"])
    ip = (nets[stack.network] or {}).get("IPAddress")
    check(bool(ip), f"[NETWORK] {service.key} has an address on {stack.network}",
          expected="an IP address", seen=repr(ip), cause=Cause.NETWORK,
          next_cmd=f"docker network inspect {stack.network}")


def _probe_result(network_probe, svc: Service, dep: Service) -> dict[str, Any]:
    __tracebackhide__ = True
    result = network_probe.get(svc.container)
    if result is None:
        fail(f"[REACH] {svc.key} -> {dep.key}: cannot probe from {svc.container}",
             expected=f"{svc.container} running, to probe from inside it",
             seen="container not running", cause=Cause.WONT_START,
             next_cmd=logs_cmd(svc.container))
    if "elsewhere" in result:  # Swarm: the task runs on a node this run cannot reach
        fail(f"[REACH] {svc.key} -> {dep.key}: task runs on node {result['elsewhere']}",
             expected="the probe run inside the task's container", seen=result["error"],
             cause=Cause.CONFIG, why="run the suite on that node, or give its engine in the "
             "manifest (swarm.engines)", next_cmd=result["next"])
    if "error" in result:
        fail(f"[REACH] {svc.key} -> {dep.key}: probe failed inside {svc.container}",
             expected="python3 in the container to run the probe", seen=result["error"],
             cause=Cause.NETWORK, next_cmd=f"docker exec {svc.container} getent hosts "
             f"{dep.container}")
    return result.get(f"{dep.container}:{dep.port}") or {}


def test_dependency_resolves(dependency: tuple[Service, Service], network_probe) -> None:
    svc, dep = dependency
    r = _probe_result(network_probe, svc, dep)
    check(bool(r.get("resolved")), f"[DNS] {svc.key} resolves {dep.container}",
          expected=f"{dep.container} resolvable from {svc.container}",
          seen=r.get("connect") or "no address", cause=Cause.NETWORK,
          why="DNS resolution failure: the two containers do not share a network",
          next_cmd=[f"docker exec {svc.container} getent hosts {dep.container}",
                    f"docker inspect --format '{{{{json .NetworkSettings.Networks}}}}' "
                    f"{dep.container}"])


def test_dependency_reachable(dependency: tuple[Service, Service], network_probe) -> None:
    svc, dep = dependency
    r = _probe_result(network_probe, svc, dep)
    check(r.get("connect") == "ok", f"[REACH] {svc.key} -> {dep.container}:{dep.port}",
          expected=f"TCP connect from {svc.container} to {dep.container}:{dep.port}",
          seen=f"resolved {r.get('resolved') or '-'}, connect: {r.get('connect') or '-'}",
          cause=Cause.NETWORK if not r.get("resolved") else (
              Cause.DATABASE if dep.protocol == "postgres" else
              Cause.REDIS if dep.protocol == "redis" else Cause.NETWORK),
          why="services can't communicate (network isolation, or the dependency is down)",
          next_cmd=[f"docker exec {svc.container} sh -c 'nc -zv {dep.container} {dep.port}'",
                    logs_cmd(dep.container)])


def test_published_port(service: Service, docker_state, stack: Stack) -> None:
    ports = docker_state.ports(service)
    bindings = ports.get(f"{service.port}/tcp") or []
    published = sorted({int(b["HostPort"]) for b in bindings if b.get("HostPort")})
    if not service.published:
        # A compose service that publishes nothing (e.g. an internal Redis).
        check(not published, f"[PORT] {service.key} {service.port}/tcp published on "
              f"{published}", expected="not published (the compose file publishes no port)",
              seen=f"published on {published}", cause=Cause.PORTS,
              why="a port is published that the compose file does not declare",
              next_cmd=f"docker port {service.container}")
        return
    check(published == [service.host_port],
          f"[PORT] {service.key} {service.port}/tcp published on {published or 'nothing'}",
          expected=f"container port {service.port} published on host port {service.host_port}",
          seen="published on " + (", ".join(f"{b.get('HostIp') or '*'}:{b['HostPort']}"
                                            for b in bindings) or "nothing"),
          cause=Cause.PORTS, why="wrong or duplicate port mapping in the compose file",
          next_cmd=[f"docker port {service.container}", "ss -ltnp"])


def test_nothing_unexpected_published(service: Service, docker_state) -> None:
    ports = docker_state.ports(service)
    extra = sorted(p for p, b in ports.items() if b and p != f"{service.port}/tcp")
    check(not extra, f"[PORT] {service.key} publishes extra ports {extra}",
          expected=f"only {service.port}/tcp published", seen=f"also published: {extra}",
          cause=Cause.PORTS, why="a port is exposed that the deployment does not document",
          next_cmd=f"docker port {service.container}")


def test_port_answers_from_host(service: Service, target: Target) -> None:
    if not service.published:
        pytest.skip("not published on the host: reachable on the Docker network only")
    try:
        address = (target.host, service.host_port)
        with socket.create_connection(address, timeout=target.http_timeout):
            pass
    except OSError as exc:
        fail(f"[PORT] {service.key}: {target.host}:{service.host_port} not accepting",
             expected=f"TCP connect to {target.host}:{service.host_port}",
             seen=f"{type(exc).__name__}: {exc.strerror or exc}", cause=Cause.PORTS,
             why="not published on that port, or the service is down",
             next_cmd=[f"docker port {service.container}", "ss -ltnp"])
