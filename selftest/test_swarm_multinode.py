"""Swarm on many nodes: the reference stack spread over three Docker-in-Docker nodes.

``python -m sandbox up --swarm --nodes 3`` builds three DinD nodes from
``local/bizosaas-dind:1`` (Debian's docker.io, made with mmdebstrap), joins
them into one swarm (bizosaas-node1 manages), loads the images each node needs
with ``docker save | docker load`` (no registry) and deploys the stack pinned:
infrastructure on node1, the applications on node2 and node3. The suite talks
to the manager's engine and to each node's engine (``swarm.engines`` in
``stacks/bizosaas-swarm-3nodes.yaml``) and must pass at 100%. Then two node
faults on node3, a drained node and a stopped node: the Swarm checks name the
four services below their desired replicas and the node involved, nothing else
fails, and heal restores 100%.

Opt-in (``-m multinode``): about three minutes, most of it the first start
(building nodes, loading images); the nodes are removed afterwards, their
image volumes kept for the next run (``down --swarm --nodes 3 --volumes``
drops them). It never touches this machine's own engine's swarm.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import swarm
from selftest.stackrun import PROJECT_ROOT, Run, clean_env, run_suite, sandbox

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(900)]

MANIFEST = str(swarm.MANIFEST_MULTI.relative_to(PROJECT_ROOT))
NODE_FAULTS = [name for name, f in swarm.load_faults().items() if f.nodes > 1]


@pytest.fixture(scope="module")
def three_nodes():
    sandbox("up", "--swarm", "--nodes", "3", timeout=900)
    yield
    sandbox("down", "--swarm", "--nodes", "3", timeout=300)


def _suite(out: Path, *args: str) -> Run:
    return run_suite(out, "-n", "4", "--swarm-stack", swarm.STACK, f"--stack={MANIFEST}", *args,
                     timeout=600, env=clean_env(DOCKER_HOST=swarm.node_url(swarm.NODES[0])))


def test_stack_spread_over_three_nodes_passes(three_nodes, tmp_path: Path) -> None:
    rows = swarm.status_rows(3)
    assert {r[2] for r in rows} == set(swarm.NODES), rows
    run = _suite(tmp_path)
    assert run.ret == 0 and run.gate["pass_rate"] == 100.0, run.summary()
    # Containers on every node were read (through each node's engine).
    assert run.gate["per_suite"]["containers"]["failed"] == 0


@pytest.mark.parametrize("name", NODE_FAULTS)
def test_node_fault_names_services_and_node(three_nodes, name: str, tmp_path: Path) -> None:
    fault = swarm.load_faults()[name]
    sandbox("fault", "--swarm", name, timeout=300)
    try:
        run = _suite(tmp_path / "fault", "-m", "swarm")
    finally:
        sandbox("heal", "--swarm", timeout=600)
    expected = {(svc, test) for svc, tests in fault.expect.items() for test in tests}
    seen = {(c["service"], c["nodeid"].split("::")[-1].split("[")[0]) for c in run.failed()}
    assert seen == expected, (f"missing {sorted(expected - seen)}; unexpected "
                              f"{sorted(seen - expected)}\n{run.summary()}")
    msgs = {c["nodeid"].split("::")[-1]: c["message"] for c in run.failed()}
    below = [k for k in msgs if k.startswith("test_replicas[")]
    assert len(below) == 4
    for key in below:
        assert f"node {fault.node}" in msgs[key].splitlines()[0], msgs[key]
        assert "docker service ps --no-trunc bizosaas_" in msgs[key]
    state = "drain" if fault.action == "drain" else "down"
    assert fault.node in msgs["test_nodes_ready"] and state in msgs["test_nodes_ready"]
    healed = _suite(tmp_path / "healed", "-m", "swarm")
    assert healed.ret == 0 and healed.gate["pass_rate"] == 100.0, healed.summary()
