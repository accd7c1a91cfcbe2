"""Suite 7: resources. Limits configured, memory and CPU within them, pids, budget.

All figures come from the run's shared Docker snapshot: two one-shot stats
samples per container, taken concurrently one engine collection tick apart.
"""

from __future__ import annotations

from typing import Any

import pytest

from bizosaas_acceptance.model.manifest import Service, Stack, parse_size
from bizosaas_acceptance.outcome import Cause, check, fail

pytestmark = [pytest.mark.resources]


def _usage(docker_state, svc: Service, stack: Stack) -> dict[str, Any]:
    __tracebackhide__ = True
    stable_after = float(stack.threshold("stable_after_s"))
    if docker_state.crash_looping(svc, stable_after):
        # A sample from a process seconds old (or between two crashes) says
        # nothing about its steady-state use: judge it once it stays up.
        fail(f"[STATS] {svc.key}: restarting, figures not meaningful",
             expected=f"a container up for at least {stable_after:g}s to sample",
             seen=f"restart count {(docker_state.container(svc) or {}).get('RestartCount')}, "
                  f"up {docker_state.up_for(svc):.0f}s", cause=Cause.WONT_START,
             why="the container crashes and Docker keeps restarting it",
             next_cmd=f"docker logs --tail 100 {svc.container}")
    usage = docker_state.usage.get(svc.container)
    if usage is None:
        attrs = docker_state.container(svc)
        fail(f"[STATS] {svc.key}: no resource figures",
             expected=f"{svc.container} running, with stats",
             seen="container absent" if attrs is None else
             f"container {attrs['State'].get('Status')}", cause=Cause.WONT_START,
             next_cmd=f"docker stats --no-stream {svc.container}")
    return usage


def _mib(n: float | None) -> str:
    return "?" if n is None else f"{n / 2**20:.0f} MiB"


def test_memory_limit_configured(service: Service, docker_state) -> None:
    limit = docker_state.require(service)['HostConfig'].get("Memory") or 0
    if service.memory is None:
        check(limit > 0, f"[LIMIT] {service.key} memory limit set",
              expected="a memory limit", seen="no memory limit", cause=Cause.MEMORY,
              why="no memory limits set: one service can starve the host",
              next_cmd=f"docker inspect --format '{{{{.HostConfig.Memory}}}}' {service.container}")
        return
    check(limit == service.memory, f"[LIMIT] {service.key} memory ({_mib(limit)}) == "
          f"{_mib(service.memory)}", expected=f"memory limit {_mib(service.memory)} (budget)",
          seen="no memory limit" if not limit else f"memory limit {_mib(limit)}",
          cause=Cause.MEMORY, why="no memory limits set, or they differ from the budget",
          next_cmd=f"docker inspect --format '{{{{.HostConfig.Memory}}}}' {service.container}")


def _real_cpus(attrs: dict[str, Any]) -> float:
    """The container's CPU limit as Docker enforces it (0.0: none)."""
    host = attrs.get("HostConfig") or {}
    nano = host.get("NanoCpus") or 0
    quota = host.get("CpuQuota") or 0
    period = host.get("CpuPeriod") or 100000
    return nano / 1e9 if nano else (quota / period if quota and quota > 0 else 0.0)


def _real_memory(attrs: dict[str, Any]) -> int:
    """The container's memory limit as Docker enforces it, in bytes (0: none)."""
    return int((attrs.get("HostConfig") or {}).get("Memory") or 0)


def test_cpu_limit_configured(service: Service, docker_state) -> None:
    cpus = _real_cpus(docker_state.require(service))
    want = service.cpus
    if want is None:
        check(cpus > 0, f"[LIMIT] {service.key} CPU limit set", expected="a CPU limit",
              seen="no CPU limit", cause=Cause.SLOW, why="no CPU limit: noisy neighbours",
              next_cmd=f"docker inspect --format '{{{{.HostConfig.NanoCpus}}}}' "
                       f"{service.container}")
        return
    check(abs(cpus - want) < 0.01, f"[LIMIT] {service.key} cpus ({cpus:g}) == {want:g}",
          expected=f"CPU limit {want:g}", seen=f"CPU limit {cpus:g}" if cpus else "no CPU limit",
          cause=Cause.SLOW, why="CPU limit missing or different from the budget",
          next_cmd=f"docker update --cpus {want:g} {service.container}")


def test_memory_usage(service: Service, docker_state, stack: Stack) -> None:
    usage = _usage(docker_state, service, stack)
    # The limit the kernel enforces; the manifest's only where none is set.
    real = _real_memory(docker_state.container(service) or {})
    used, limit = usage["mem_used"], real or service.memory or usage["mem_limit"]
    max_pct = float(stack.threshold("memory_pct"))
    if not used or not limit:
        fail(f"[MEMORY] {service.key}: no memory figure", expected="memory usage from stats",
             seen=repr(usage), cause=Cause.MEMORY,
             next_cmd=f"docker stats --no-stream {service.container}")
    pct = used / limit * 100
    check(pct < max_pct, f"[MEMORY] {service.key} ({pct:.0f}%) < {max_pct:.0f}% of limit",
          expected=f"memory below {max_pct:.0f}% of {_mib(limit)}",
          seen=f"{_mib(used)} of {_mib(limit)} ({pct:.0f}%)", cause=Cause.MEMORY,
          why="memory leak, too many workers, or a limit too low for the load",
          next_cmd=[f"docker stats --no-stream {service.container}",
                    f"docker exec {service.container} ps aux --sort=-rss"])


def test_cpu_usage(service: Service, docker_state, stack: Stack) -> None:
    usage = _usage(docker_state, service, stack)
    cpu = usage.get("cpu_pct")
    if cpu is None:
        fail(f"[CPU] {service.key}: no CPU figure", expected="two CPU samples",
             seen=repr(usage), cause=Cause.SLOW,
             next_cmd=f"docker stats --no-stream {service.container}")
    # docker stats units: 100% = one CPU. Judge against the container's limit.
    cap = (_real_cpus(docker_state.container(service) or {}) or service.cpus
           or usage.get("online_cpus") or 1) * 100
    pct_of_limit = cpu / cap * 100
    max_pct = float(stack.threshold("cpu_pct"))
    check(pct_of_limit < max_pct, f"[CPU] {service.key} ({pct_of_limit:.0f}%) < "
          f"{max_pct:.0f}% of limit", expected=f"CPU below {max_pct:.0f}% of its limit",
          seen=f"{cpu:.1f}% of one CPU = {pct_of_limit:.0f}% of {cap / 100:g} CPU",
          cause=Cause.SLOW, why="a busy loop, or the limit is too low for the load",
          next_cmd=f"docker stats --no-stream {service.container}")


def test_pids(service: Service, docker_state, stack: Stack) -> None:
    pids = _usage(docker_state, service, stack).get("pids")
    limit = int(stack.threshold("pids_max"))
    check(pids is not None and pids < limit, f"[PIDS] {service.key} ({pids}) < {limit}",
          expected=f"fewer than {limit} processes/threads", seen=f"{pids} pids",
          cause=Cause.MEMORY, why="too many workers or a thread leak",
          next_cmd=f"docker top {service.container}")


def _limits(stack: Stack, docker_state, real: Any) -> tuple[list[tuple[Service, Any]],
                                                           list[str], list[str]]:
    """(service, real limit) of every running application container, the ones
    without a limit, and the ones absent (judged by their own checks)."""
    present, unlimited, absent = [], [], []
    for svc in stack.apps:
        attrs = docker_state.container(svc)
        if attrs is None:
            absent.append(svc.key)
            continue
        value = real(attrs)
        present.append((svc, value))
        if not value:
            unlimited.append(svc.key)
    return present, unlimited, absent


@pytest.mark.service("stack")
def test_total_footprint(stack: Stack, docker_state) -> None:
    """The application containers' real memory limits (Docker's HostConfig, not the
    manifest) and their usage add up to within the budget."""
    budget = parse_size(stack.threshold("budget_memory"))
    if budget is None:
        pytest.skip("the manifest sets no thresholds.budget_memory")
    present, unlimited, absent = _limits(stack, docker_state, _real_memory)
    limits = sum(v for _, v in present)
    used = sum((docker_state.usage.get(s.container) or {}).get("mem_used") or 0
               for s in stack.apps)
    check(not unlimited and limits <= budget * 1.02 and used < budget,
          f"[BUDGET] apps use {_mib(used)}, limits {_mib(limits)}, budget {_mib(budget)}"
          + (f"; no memory limit: {', '.join(unlimited)}" if unlimited else ""),
          expected=f"every application container limited, the limits and usage within the "
                   f"{_mib(budget)} budget",
          seen=f"{_mib(used)} used, {_mib(limits)} of limits as Docker enforces them ("
               + ", ".join(f"{s.key} {_mib(v) if v else 'unlimited'}" for s, v in present)
               + ")" + (f"; not running: {', '.join(absent)}" if absent else ""),
          cause=Cause.MEMORY, why="the deployed limits differ from the budget (compose "
          "deploy.resources.limits)",
          next_cmd=["docker stats --no-stream",
                    "docker inspect --format '{{.Name}} {{.HostConfig.Memory}}' "
                    + " ".join(s.container for s, _ in present)])


@pytest.mark.service("stack")
def test_total_cpus(stack: Stack, docker_state) -> None:
    """The application containers' real CPU limits add up to within the budget."""
    budget = stack.threshold("budget_cpus")
    if budget is None:
        pytest.skip("the manifest sets no thresholds.budget_cpus")
    present, unlimited, absent = _limits(stack, docker_state, _real_cpus)
    total = sum(v for _, v in present)
    check(not unlimited and total <= float(budget) + 0.01,
          f"[BUDGET] app CPU limits ({total:g}) <= {budget:g}"
          + (f"; no CPU limit: {', '.join(unlimited)}" if unlimited else ""),
          expected=f"every application container limited, CPU limits summing to at most "
                   f"{budget:g}",
          seen=f"{total:g} CPUs (" + ", ".join(f"{s.key} {v:g}" if v else f"{s.key} unlimited"
                                              for s, v in present) + ")"
               + (f"; not running: {', '.join(absent)}" if absent else ""),
          cause=Cause.SLOW,
          next_cmd=["docker stats --no-stream",
                    "docker inspect --format '{{.Name}} {{.HostConfig.NanoCpus}}' "
                    + " ".join(s.container for s, _ in present)])
