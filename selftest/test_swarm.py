"""Swarm mode (``--swarm-stack``): the model, the generated stack, and real runs.

The first tests need no engine: how manifest services map to Swarm services,
the stack file generated from compose.yaml, the committed Swarm manifests
being what the generator writes, which checks exist with and without
``--swarm-stack``, and the answers :class:`SwarmView` gives from task data.

The rest run against the reference stack deployed as a Swarm stack on this
machine's engine (``python -m sandbox up --swarm``, a one-node swarm; torn
down again at the end): the whole suite passes at 100%; a wrong stack name
fails with Swarm commands to run; three Swarm faults at once (a service scaled
to 0, an update left paused, a task that keeps crashing) fail exactly the
checks ``sandbox/swarm-faults.yaml`` expects, with expected/seen/cause/next
and ``docker service ps``; heal brings 100% back. They change what runs on the
shared engine: run them under the stack lock (``flock /tmp/bizosaas-stack.lock``),
like the fault matrix. About two minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bizosaas_acceptance.model.manifest import load_manifest
from bizosaas_acceptance.model.swarm import apply_swarm, service_name
from bizosaas_acceptance.probes.docker import docker_time
from bizosaas_acceptance.probes.swarm import SwarmView
from sandbox import swarm
from selftest.stackrun import PROJECT_ROOT, Run, clean_env, run_suite, sandbox

pytestmark = [pytest.mark.swarm]

SINGLE_FAULTS = [name for name, f in swarm.load_faults().items() if f.nodes == 1]
MANIFEST = str(swarm.MANIFEST_SINGLE.relative_to(PROJECT_ROOT))


# --------------------------------------------------------------------------- no engine


def test_manifest_services_are_stack_services() -> None:
    stack = apply_swarm(load_manifest(), "bizosaas")
    assert stack.services["brain-api"].container == "bizosaas_brain-api"
    assert service_name("prod", "redis") == "prod_redis"
    assert stack.network == "bizosaas-staging-network"  # a manifest names it as it is


def test_compose_networks_take_the_stack_name(tmp_path: Path) -> None:
    """A compose-derived model: ``<project>_net`` under compose is ``<stack>_net`` in Swarm."""
    from bizosaas_acceptance.model.compose import load_compose, stack_from_compose

    path = swarm.stack_file(1)
    stack = apply_swarm(stack_from_compose([str(path)]), "bizosaas", load_compose([str(path)]).name)
    assert stack.network == swarm.NETWORK
    assert stack.services["postgres"].networks == (swarm.NETWORK,)
    assert stack.services["postgres"].host_port == 5432 + swarm.SINGLE_OFFSET


def test_stack_file_from_compose() -> None:
    import yaml

    compose = yaml.safe_load(swarm.COMPOSE_FILE.read_text())["services"]
    doc = swarm.compose_doc(swarm.SINGLE_OFFSET)
    assert doc["version"].startswith("3.")
    assert doc["networks"]["staging"] == {"driver": "overlay", "attachable": True}
    assert doc["volumes"]["pgdata"]["name"] != "bizosaas-pgdata"  # not the compose stack's
    assert set(doc["services"]) == set(compose)
    for key, svc in doc["services"].items():
        assert not set(swarm.DROP) & set(svc), key
        assert svc["networks"]["staging"]["aliases"] == [compose[key]["container_name"]]
        deploy = svc["deploy"]
        assert deploy["restart_policy"]["condition"] == "any"
        assert deploy["endpoint_mode"] == "dnsrr"  # no IPVS on this kernel
        assert deploy["resources"] == {"limits": {
            **compose[key]["deploy"]["resources"]["limits"],
            "cpus": str(compose[key]["deploy"]["resources"]["limits"]["cpus"])}}
        published = int(compose[key]["ports"][0].split(":")[1])
        assert svc["ports"] == [{"target": int(compose[key]["ports"][0].split(":")[2]),
                                 "published": published + swarm.SINGLE_OFFSET,
                                 "protocol": "tcp", "mode": "host"}]
    multi = swarm.compose_doc(swarm.MULTI_OFFSET, swarm.PLACEMENT)
    assert multi["services"]["saleor-api"]["deploy"]["placement"] == {
        "constraints": ["node.hostname == bizosaas-node3"]}


@pytest.mark.parametrize("multi", [False, True], ids=["one-node", "three-nodes"])
def test_committed_swarm_manifests_are_generated(multi: bool) -> None:
    """stacks/bizosaas-swarm*.yaml follow bizosaas-staging.yaml (regenerate:
    ``python -m sandbox swarm-manifests``)."""
    path = swarm.MANIFEST_MULTI if multi else swarm.MANIFEST_SINGLE
    assert path.read_text() == swarm.manifest_text(multi), (
        f"{path.name} is stale: run python -m sandbox swarm-manifests")
    stack = load_manifest(path)
    staging = load_manifest()
    offset = swarm.MULTI_OFFSET if multi else swarm.SINGLE_OFFSET
    assert {k: s.host_port - offset for k, s in stack.services.items()} == {
        k: s.host_port for k, s in staging.services.items()}
    assert bool(stack.swarm.get("engines")) is multi


def _collect(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, env=clean_env(), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [ln for ln in proc.stdout.splitlines() if "::" in ln]


def test_swarm_checks_only_with_swarm_stack() -> None:
    plain = _collect()
    assert plain and not [n for n in plain if "test_swarm.py" in n]
    assert any("test_restart_policy" in n for n in plain)
    swarmed = _collect("--swarm-stack", "bizosaas", "--stack", MANIFEST)
    assert any("test_swarm.py::test_replicas[brain-api]" in n for n in swarmed)
    # Compose-only checks give way to their Swarm counterparts.
    for gone in ("test_containers.py::test_restart_policy", "test_containers.py::test_not_"
                 "restarting", "test_containers.py::test_restart_count_stable",
                 "test_network.py::test_network_exists"):
        assert not [n for n in swarmed if gone in n], gone


def test_bad_stack_name_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "--swarm-stack", "no such"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, env=clean_env(), timeout=60)
    assert proc.returncode == 4
    assert "--swarm-stack" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def _task(tid: str, state: str, desired: str = "running", node: str = "n1",
          stamp: str = "2026-01-01T00:00:00Z", **extra: object) -> dict:
    return {"id": tid, "slot": 1, "node_id": node, "desired": desired, "state": state,
            "message": "", "err": "", "exit_code": None, "container": "c" + tid,
            "since": stamp, "created": stamp, "networks": [], **extra}


def test_swarm_view_answers() -> None:
    from bizosaas_acceptance.model.manifest import Service

    svc = Service(key="api", container="s_api", port=80)
    view = SwarmView({
        "stack": "s", "error": None, "node_id": "n1",
        "read_at": docker_time("2026-01-01T00:01:00Z"),
        "nodes": {"n1": {"id": "n1", "hostname": "one", "state": "ready",
                         "availability": "active", "role": "manager", "message": ""},
                  "n2": {"id": "n2", "hostname": "two", "state": "down",
                         "availability": "active", "role": "worker", "message": "heartbeat"}},
        "services": {"s_api": {"mode": "replicated", "replicas": 2, "status": {},
                               "ports": [{"TargetPort": 80, "PublishedPort": 8080,
                                          "Protocol": "tcp", "PublishMode": "ingress"}]}},
        "tasks": {"s_api": [
            _task("a", "running"),
            _task("b", "running", node="n2"),  # a down node's last word
            _task("c", "failed", desired="shutdown", stamp="2026-01-01T00:00:50Z",
                  err="task: non-zero exit (1)", exit_code=1),
            _task("d", "rejected", desired="shutdown", stamp="2025-12-31T00:00:00Z"),
        ]},
        "locations": {},
    })
    assert view.desired(svc) == 2
    assert [t["id"] for t in view.running(svc)] == ["a"]
    assert [t["id"] for t in view.pending(svc)] == ["b"]
    assert [t["id"] for t in view.failures(svc)] == ["c", "d"]
    assert [t["id"] for t in view.failures(svc, since=view.read_at - 60)] == ["c"]
    assert view.ports(svc) == {"80/tcp": [{"HostIp": "", "HostPort": "8080", "Mode": "ingress"}]}
    assert "two (worker) is down" in view.describe_node("n2")
    assert view.describe_task(view.tasks(svc)[2]) == (
        "slot 1@one failed exit 1: task: non-zero exit (1)")
    assert docker_time("2026-01-01T00:00:00.5+01:00") == docker_time("2025-12-31T23:00:00Z") + 0.5


# --------------------------------------------------------------------------- on the engine


@pytest.fixture(scope="module")
def swarm_stack():
    """The reference stack as a Swarm stack on this engine, removed afterwards;
    yields when the deploy began (epoch seconds)."""
    began = time.time()
    sandbox("up", "--swarm", timeout=400)
    yield began
    sandbox("down", "--swarm", timeout=200)


def _suite(tmp_path: Path, *args: str) -> Run:
    return run_suite(tmp_path, "-n", "4", "--swarm-stack", swarm.STACK, f"--stack={MANIFEST}",
                     *args, timeout=400)


def _by_check(run: Run) -> set[tuple[str, str]]:
    """(service, test function) of every failed check."""
    return {(c["service"], c["nodeid"].split("::")[-1].split("[")[0]) for c in run.failed()}


def replaced_tasks(since: float) -> list[str]:
    """Tasks of the stack that Swarm created after ``since`` (epoch seconds): a
    service whose task was replaced then, with the old task's state and error."""
    engine = swarm.Engine()
    api = engine.client.api
    found = []
    for svc in swarm.services(engine):
        tasks = sorted(api.tasks(filters={"service": svc["ID"]}),
                       key=lambda t: docker_time(t.get("CreatedAt")) or 0.0)
        for old, new in zip(tasks, tasks[1:], strict=False):
            if (docker_time(new.get("CreatedAt")) or 0.0) > since:
                status = old.get("Status") or {}
                found.append(f"{svc['Spec']['Name']}: task {old['ID'][:12]} "
                             f"{status.get('State')} ({status.get('Err') or status.get('Message')})"
                             f" replaced at {new.get('CreatedAt')}")
    return found


def test_suite_passes_on_the_swarm_stack(swarm_stack: float, tmp_path: Path) -> None:
    """100% on the settled Swarm stack.

    Its premise is a stack whose every task started once and was left alone.
    Once (1 CI run in several) Swarm replaced the temporal task during the
    run, and the logs suite rightly reported the new task's start-up errors
    ("Frontend is not healthy yet": its log was read a second after it began;
    a forced ``docker service update`` of temporal reproduces such lines).
    Should Swarm replace a task again, the evidence is printed and the run is
    repeated once on the settled stack, its logs judged from then on; a
    failure without such evidence, or a second one, fails the test.
    """
    run = _suite(tmp_path / "first")
    if run.ret != 0:
        replaced = replaced_tasks(swarm_stack)
        if replaced:
            print("Swarm replaced tasks of the stack, so this test's premise did not hold:\n  "
                  + "\n  ".join(replaced) + "\nfirst run: " + run.summary()[:3000])
            # Wait until it has settled (no new deploy: one racing Swarm's own
            # update fails with "update out of sequence").
            swarm.wait_converged(swarm.Engine(), 240, print)
            settled = datetime.now(UTC) - timedelta(seconds=1)
            run = _suite(tmp_path / "again", f"--logs-since={settled.isoformat()}")
    assert run.ret == 0 and run.gate["pass_rate"] == 100.0, run.summary()
    suites = run.gate["per_suite"]
    assert suites["swarm"]["passed"] >= 9 * 12, suites["swarm"]
    ids = [c["nodeid"] for c in run.gate["checks"]]
    assert not [n for n in ids if "test_restart_policy" in n and "test_containers" in n]


def test_compose_file_of_the_stack(swarm_stack, tmp_path: Path) -> None:
    """--compose with the stack file it was deployed from: everything but hygiene
    passes, and hygiene names what Swarm forces (databases on every interface)."""
    run = run_suite(tmp_path, "-n", "4", "--swarm-stack", swarm.STACK,
                    f"--compose={swarm.stack_file(1)}", timeout=400)
    failed = run.failed()
    # A compose-derived stack has no API description, so the Redis hit-rate check has
    # no documented GETs to make its window's cache traffic: it fails (never skips).
    failed = [c for c in failed if "test_redis_hit_rate" not in c["nodeid"]]
    assert failed and {c["suite"] for c in failed} == {"hygiene"}, run.summary()
    assert any("test_databases_not_on_all_interfaces[postgres]" in c["nodeid"] for c in failed)
    assert run.gate["per_suite"]["swarm"]["failed"] == 0


def test_wrong_stack_name_fails_with_swarm_commands(swarm_stack, tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-n", "4", "--swarm-stack", "nosuch", f"--stack={MANIFEST}",
                    "-m", "swarm or containers", timeout=400)
    assert run.ret == 1
    msgs = {c["nodeid"]: c["message"] for c in run.failed()}
    assert "[SWARM] stack nosuch has services" in msgs["tests/test_swarm.py::test_manager_"
                                                        "reachable"]
    exists = msgs["tests/test_containers.py::test_exists[brain-api]"]
    assert "service nosuch_brain-api not found in stack nosuch" in exists
    assert "docker stack services nosuch" in exists


def test_swarm_faults_are_caught_and_healed(swarm_stack, tmp_path: Path) -> None:
    faults = swarm.load_faults()
    sandbox("fault", "--swarm", *SINGLE_FAULTS, timeout=300)
    try:
        run = _suite(tmp_path / "faults", "-m", "swarm")
    finally:
        sandbox("heal", "--swarm", timeout=400)
    expected = {(svc, test) for name in SINGLE_FAULTS
                for svc, tests in faults[name].expect.items() for test in tests}
    seen = _by_check(run)
    assert seen == expected, (f"missing {sorted(expected - seen)}; unexpected "
                              f"{sorted(seen - expected)}\n{run.summary()}")
    for check in run.failed():
        msg = check["message"]
        for part in ("expected:", "seen:", "cause:", "next:"):
            assert part in msg, (check["nodeid"], msg)
        assert f"docker service ps --no-trunc {swarm._svc(check['service'])}" in msg \
            or f"docker service logs --tail 50 {swarm._svc(check['service'])}" in msg, msg
    msgs = {c["nodeid"].split("::")[-1]: c["message"] for c in run.failed()}
    assert "scaled to 0 replicas" in msgs["test_replicas[business-directory-api]"]
    assert "update paused" in msgs["test_update_status[saleor-api]"]
    assert "non-zero exit (1)" in msgs["test_task_failures[django-crm]"]
    assert "No such image" in msgs["test_task_failures[saleor-api]"]
    healed = _suite(tmp_path / "healed", "-m", "swarm")
    assert healed.ret == 0 and healed.gate["pass_rate"] == 100.0, healed.summary()


def test_fault_file_is_complete() -> None:
    for name, fault in swarm.load_faults().items():
        assert fault.expect, f"sandbox/swarm-faults.yaml: {name}.expect is empty"
        assert (fault.service is None) != (fault.node is None), name
        for tests in fault.expect.values():
            assert all(t.startswith("test_") for t in tests), name
    assert json.dumps(swarm.describe_faults())
