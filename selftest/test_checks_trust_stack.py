"""Issue 11 §4 and §6 against the running reference stack: what the checks measure
is the deployment's own state, not the manifest's, a self-report, or history.

- cache hit rate on a fresh Redis (counters reset): judged over the check's own
  window instead of being skipped until 1000 lookups, and able to fail;
- budget: the application containers' real limits (Docker's HostConfig) are
  compared with the budget, not the manifest's limits with themselves;
- image: a container whose tag was moved to another image (a rebuild without
  recreating) fails, named as Build Failures with the recreate command;
- leaks: a process in a container that keeps taking memory, and one that keeps
  opening PostgreSQL connections, during a run fail the stability checks with
  their figures.

The hit-rate and leak cases change the shared stack for a few seconds
(counters reset; a process inside business-directory-api): marked ``faults``,
run them serially under the stack lock. The budget case only reads; the image
case uses a container of its own beside the stack.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from selftest.stackrun import PROJECT_ROOT, Run, run_suite

pytestmark = pytest.mark.stack

MANIFEST = PROJECT_ROOT / "stacks" / "bizosaas-staging.yaml"
LEAKY = "bizosaas-directory-api-staging"


def _manifest(tmp: Path, change) -> Path:  # noqa: ANN001 - a callable on the data
    data = yaml.safe_load(MANIFEST.read_text())
    change(data)
    path = tmp / "bizosaas-staging.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _checks(run: Run) -> dict[str, dict[str, Any]]:
    return {c["nodeid"].split("::", 1)[1]: c for c in run.gate.get("checks", [])}


def _diagnosed(check: dict[str, Any]) -> None:
    for part in ("expected:", "seen:", "cause:", "next:"):
        assert part in (check.get("message") or ""), (part, check)


# --------------------------------------------------------------------------- (d) hit rate


@pytest.mark.faults
def test_hit_rate_is_judged_on_a_fresh_stack(tmp_path: Path) -> None:
    """Counters reset (as on a fresh stack): the check judges its own window, never skips."""
    import redis

    from bizosaas_acceptance.options import BY_NAME

    client = redis.Redis(host="127.0.0.1", port=6379,
                         password=BY_NAME["redis_password"].default, socket_timeout=10)
    client.config_resetstat()
    run = run_suite(tmp_path / "fresh", "tests/test_infra.py", "-k", "hit_rate", "-n", "0",
                    timeout=120)
    check = _checks(run)["test_redis_hit_rate[redis]"]
    assert check["outcome"] == "passed", run.summary()
    # The same window against a rate no cache reaches: it fails, with its figures.

    def impossible(data: dict[str, Any]) -> None:
        data["thresholds"]["cache_hit_rate"] = 1.0

    run = run_suite(tmp_path / "strict", "tests/test_infra.py", "-k", "hit_rate", "-n", "0",
                    f"--stack={_manifest(tmp_path, impossible)}", timeout=120)
    check = _checks(run)["test_redis_hit_rate[redis]"]
    assert check["outcome"] == "failed", run.summary()
    msg = check["message"]
    assert "[CACHE] hit rate (" in msg and "> 100%" in msg, msg
    assert "hits," in msg and "misses while" in msg and "GETs of" in msg, msg
    _diagnosed(check)


# --------------------------------------------------------------------------- (e) budget


def test_budget_compares_real_limits(tmp_path: Path) -> None:
    """The manifest claims 64 MiB per application service (512 MiB, within a 1 GiB
    budget); the containers really have 4.5 GiB of limits between them."""

    def small(data: dict[str, Any]) -> None:
        for svc in data["services"].values():
            if svc.get("kind", "app") == "app":
                svc["memory"] = "64M"
                svc["cpus"] = 0.1
        data["thresholds"]["budget_memory"] = "1G"
        data["thresholds"]["budget_cpus"] = 1.0

    run = run_suite(tmp_path / "out", "tests/test_resources.py", "-k", "total", "-n", "0",
                    f"--stack={_manifest(tmp_path, small)}", timeout=120)
    got = _checks(run)
    mem, cpu = got["test_total_footprint"], got["test_total_cpus"]
    assert mem["outcome"] == "failed" and cpu["outcome"] == "failed", run.summary()
    assert "limits 4608 MiB, budget 1024 MiB" in mem["message"], mem["message"]
    assert "brain-api 512 MiB" in mem["message"], mem["message"]  # per container, as enforced
    assert "(4.5) <= 1" in cpu["message"], cpu["message"]
    for c in (mem, cpu):
        _diagnosed(c)


# --------------------------------------------------------------------------- (f) image drift


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60,
                          check=True)


@pytest.fixture
def drifted() -> Iterator[tuple[str, str]]:
    """A container of its own, created from a tag that then moves to another image."""
    suffix = secrets.token_hex(3)
    tag, name = f"local/bizosaas-selftest-drift:{suffix}", f"bizosaas-selftest-drift-{suffix}"
    _docker("tag", "local/bizosaas-base:1", tag)
    try:
        _docker("run", "-d", "--name", name, "--memory", "32m", "--cpus", "0.1",
                "--restart", "unless-stopped", tag, "sleep", "600")
        # "Rebuilt": the tag now names another image; the container is not recreated.
        _docker("tag", "local/bizosaas-redis:1", tag)
        yield name, tag
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        # The tag only (the image keeps its own tag): never an image removal.
        subprocess.run(["docker", "image", "rm", "--no-prune", tag], capture_output=True,
                       timeout=60)


def test_rebuilt_image_without_recreate_fails(tmp_path: Path, drifted: tuple[str, str]) -> None:
    name, tag = drifted
    manifest = tmp_path / "drift.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "name": "drift", "services": {
        "drift": {"kind": "infra", "container": name, "port": 1, "protocol": "tcp",
                  "healthcheck": False, "published": False}}}))
    run = run_suite(tmp_path / "out", "tests/test_containers.py", "-k", "image", "-n", "0",
                    f"--stack={manifest}", timeout=120)
    got = _checks(run)
    assert got["test_image_present[drift]"]["outcome"] == "passed", run.summary()
    check = got.get("test_image_current[drift]")
    assert check is not None and check["outcome"] == "failed", run.summary()
    assert check["category"] == "Build Failures", check
    assert f"{tag} was rebuilt" in check["message"], check["message"]
    assert "docker compose up -d --force-recreate drift" in check["message"], check["message"]
    _diagnosed(check)


# --------------------------------------------------------------------------- (g) leaks

MEMORY_LEAK = r"""
import os, time
print(os.getpid(), flush=True)
held = []
for _ in range(120):          # 12 MiB/s for 10 s, then hold
    held.append(b"\x01" * (1 << 20))
    time.sleep(0.083)
time.sleep(60)
"""

CONNECTION_LEAK = r"""
import os, time, psycopg
print(os.getpid(), flush=True)
held = []
for _ in range(50):           # 5 new connections a second for 10 s, never closed
    held.append(psycopg.connect(os.environ["DATABASE_URL"]))
    time.sleep(0.2)
time.sleep(60)
"""


@pytest.fixture
def leakers() -> Iterator[None]:
    """Two processes inside business-directory-api: one keeps taking memory, one keeps
    opening connections. Stopped (by their pids) afterwards."""
    procs: list[tuple[subprocess.Popen[str], str]] = []
    try:
        for script in (MEMORY_LEAK, CONNECTION_LEAK):
            proc = subprocess.Popen(["docker", "exec", LEAKY, "python3", "-c", script],
                                    stdout=subprocess.PIPE, text=True)
            pid = (proc.stdout.readline() if proc.stdout else "").strip()
            assert pid.isdigit(), f"leaker did not start: {pid!r}"
            procs.append((proc, pid))
        time.sleep(0.5)
        yield
    finally:
        for proc, pid in procs:
            subprocess.run(["docker", "exec", LEAKY, "kill", pid], capture_output=True,
                           timeout=30)
            proc.wait(timeout=30)


@pytest.mark.faults
def test_leaks_fail_the_stability_checks(tmp_path: Path, leakers: None) -> None:
    def tight(data: dict[str, Any]) -> None:
        # Healthy stand-ins grow by well under 1 MiB in a run: 2% of 256 MiB is
        # 5 MiB, and the leak adds about 12 MiB a second.
        data["thresholds"]["memory_growth_pct"] = 2
        data["thresholds"]["pg_connections_growth"] = 3

    run = run_suite(tmp_path / "out", "tests/test_performance.py", "-k", "stable_under_load",
                    "-n", "0", f"--stack={_manifest(tmp_path, tight)}", timeout=120)
    got = _checks(run)
    mem = got["test_memory_stable_under_load[business-directory-api]"]
    pg = got["test_db_connections_stable_under_load[postgres]"]
    assert mem["outcome"] == "failed" and pg["outcome"] == "failed", run.summary()
    assert "[LEAK] business-directory-api memory +" in mem["message"], mem["message"]
    assert "(start of the run)" in mem["message"] and "after the load" in mem["message"]
    assert mem["category"] == "High Memory Usage", mem
    assert "[LEAK] PostgreSQL connections (" in pg["message"], pg["message"]
    assert f"{LEAKY} " in pg["message"], pg["message"]  # the leaking container is named
    assert pg["category"] == "Database Connection Issues", pg
    for c in (mem, pg):
        _diagnosed(c)
    # Only the leaking service: every other service's memory stayed stable.
    others = [c for n, c in got.items() if n.startswith("test_memory_stable_under_load[")
              and "business-directory-api" not in n]
    assert others and all(c["outcome"] == "passed" for c in others), run.summary()
