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


def test_cpu_limit_configured(service: Service, docker_state) -> None:
    nano = docker_state.require(service)['HostConfig'].get("NanoCpus") or 0
    quota = docker_state.require(service)['HostConfig'].get("CpuQuota") or 0
    period = docker_state.require(service)['HostConfig'].get("CpuPeriod") or 100000
    cpus = nano / 1e9 if nano else (quota / period if quota else 0.0)
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
    used, limit = usage["mem_used"], service.memory or usage["mem_limit"]
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
    cap = (service.cpus or usage.get("online_cpus") or 1) * 100
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


@pytest.mark.service("stack")
def test_total_footprint(stack: Stack, docker_state) -> None:
    """Sum of the application services' memory: within the budget, and the limits add up."""
    budget = parse_size(stack.threshold("budget_memory"))
    if budget is None:
        pytest.skip("the manifest sets no thresholds.budget_memory")
    apps = stack.apps
    limits = sum(s.memory or 0 for s in apps)
    used = sum((docker_state.usage.get(s.container) or {}).get("mem_used") or 0 for s in apps)
    check(limits <= budget * 1.02 and used < budget,
          f"[BUDGET] apps use {_mib(used)}, limits {_mib(limits)}, budget {_mib(budget)}",
          expected=f"limits and usage within the {_mib(budget)} budget",
          seen=f"{_mib(used)} used, {_mib(limits)} of limits", cause=Cause.MEMORY,
          next_cmd="docker stats --no-stream")


@pytest.mark.service("stack")
def test_total_cpus(stack: Stack, docker_state) -> None:
    budget = stack.threshold("budget_cpus")
    if budget is None:
        pytest.skip("the manifest sets no thresholds.budget_cpus")
    total = 0.0
    for s in stack.apps:
        attrs = docker_state.container(s)
        if attrs:
            total += (attrs["HostConfig"].get("NanoCpus") or 0) / 1e9
    check(total <= float(budget) + 0.01, f"[BUDGET] app CPU limits ({total:g}) <= {budget:g}",
          expected=f"CPU limits sum to at most {budget:g}", seen=f"{total:g} CPUs",
          cause=Cause.SLOW, next_cmd="docker stats --no-stream")
