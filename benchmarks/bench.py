"""Benchmark the acceptance suite against the running reference stack.

    python benchmarks/bench.py                 # everything, 3 repetitions
    python benchmarks/bench.py --reps 5 --only full,verify,shell
    python benchmarks/bench.py --only scale --scale 8,24,48

Reports (markdown tables on stdout, raw numbers in reports/benchmark.json):

- full run (all ten suites) with ``-n auto`` and ``-n 0``, and ``-m verify``:
  wall time and checks per second, median and spread over repetitions;
- time per suite (sum of check durations in the ``-n 0`` run) and the three
  slowest checks;
- the same checks done the sequential shell way (docker CLI, curl,
  ``docker exec nc``, ``docker stats --no-stream``, ``docker logs | grep``),
  timed in the same session, and the ratio;
- scaling: replicas of a stand-in added under new names through a generated
  manifest (8, 24, 48 application services), generic suites timed at each size;
- logs: the logs suite's time and peak memory with logs at 1x, 10x, 100x the
  reference stack's volume (synthetic, in throwaway containers; see
  benchmarks/logs_bench.py).
- ``--sick``: the sick-stack table: a full run with each fault of
  ``sandbox/faults.yaml`` switched on in turn (frozen container, locked table,
  stopped critical service and dead port included), wall time against healthy
  runs of the same session, and how many checks failed. It changes the shared
  stack: ``flock /tmp/bizosaas-stack.lock python3 benchmarks/bench.py --sick``.

This is a measurement script, not a test: it never fails on a slow number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import logs_bench  # noqa: E402
from bizosaas_acceptance.model.manifest import load_manifest  # noqa: E402
from selftest.stackrun import clean_env  # noqa: E402

GENERIC = "containers or health or resources or network or logs"


def pytest_run(args: list[str], out: Path) -> dict[str, Any]:
    """One suite run in a subprocess; wall time from outside, gate.json from inside."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--gate-json={out / 'gate.json'}", f"--html={out / 'r.html'}",
           f"--junitxml={out / 'j.xml'}", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=clean_env())
    wall = time.perf_counter() - t0
    gate = json.loads((out / "gate.json").read_text()) if (out / "gate.json").exists() else {}
    return {"wall": wall, "ret": proc.returncode, "gate": gate,
            "checks": gate.get("total", 0) + gate.get("skipped", 0)}


def stats(values: list[float]) -> str:
    med = statistics.median(values)
    spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{med:.2f} s ± {spread:.2f}"


def bench_runs(reps: int, work: Path) -> dict[str, Any]:
    modes = {
        "full, -n auto": ["-n", "auto"],
        "full, -n 0": ["-n", "0"],
        "verify, -n auto": ["-n", "auto", "-m", "verify"],
        "verify, -n 0": ["-n", "0", "-m", "verify"],
    }
    results: dict[str, Any] = {}
    for name, args in modes.items():
        runs = [pytest_run(args, work / f"{name.replace(' ', '_')}-{i}") for i in range(reps)]
        walls = [r["wall"] for r in runs]
        checks = runs[-1]["checks"]
        results[name] = {"walls": walls, "checks": checks, "ret": [r["ret"] for r in runs],
                         "gate": runs[-1]["gate"]}
        print(f"  {name:18s} {stats(walls):>16s}  {checks} checks  "
              f"{checks / statistics.median(walls):.0f} checks/s  exit {[r['ret'] for r in runs]}",
              file=sys.stderr)
    return results


def per_suite(gate: dict[str, Any]) -> tuple[dict[str, float], list[tuple[float, str]]]:
    suites: dict[str, float] = {}
    for c in gate.get("checks", []):
        suites[c["suite"]] = suites.get(c["suite"], 0.0) + float(c.get("duration") or 0)
    slow = sorted(((float(c.get("duration") or 0), c["nodeid"]) for c in gate.get("checks", [])),
                  reverse=True)[:3]
    return suites, slow


SHELL = r"""
set -u
n=0
for c in $CONTAINERS; do
  docker inspect -f '{{.State.Status}}' "$c" >/dev/null; n=$((n+1))
  docker inspect -f '{{.State.Health.Status}}' "$c" >/dev/null 2>&1; n=$((n+1))
  docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$c" >/dev/null; n=$((n+1))
  docker inspect -f '{{.RestartCount}}' "$c" >/dev/null; n=$((n+1))
  docker inspect -f '{{.State.OOMKilled}}' "$c" >/dev/null; n=$((n+1))
  docker inspect -f '{{.HostConfig.Memory}}' "$c" >/dev/null; n=$((n+1))
  docker port "$c" >/dev/null; n=$((n+1))
  docker stats --no-stream --format '{{.MemPerc}} {{.CPUPerc}}' "$c" >/dev/null; n=$((n+1))
  docker logs "$c" 2>&1 | grep -Eic 'error|critical|traceback|panic' >/dev/null; n=$((n+1))
done
for u in $URLS; do
  curl -s -o /dev/null -w '%{http_code}' "$u" >/dev/null; n=$((n+1))
done
for pair in $DEPS; do
  c=${pair%%=*}; t=${pair#*=}
  docker exec "$c" sh -c "nc -z -w 2 ${t%:*} ${t#*:}" >/dev/null 2>&1; n=$((n+1))
done
echo $n
"""


def bench_shell(reps: int) -> dict[str, Any]:
    stack = load_manifest()
    env = clean_env(
        CONTAINERS=" ".join(s.container for s in stack.services.values()),
        URLS=" ".join(f"http://127.0.0.1:{s.host_port}{s.health_path}"
                      for s in stack.http_services),
        DEPS=" ".join(f"{s.container}={stack.services[d].container}:{stack.services[d].port}"
                      for s in stack.apps for d in (*s.depends_on, *s.upstreams)),
    )
    walls, count = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", "-c", SHELL], capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - t0)
        count = int(proc.stdout.strip() or 0)
    print(f"  shell way          {stats(walls):>16s}  {count} checks", file=sys.stderr)
    return {"walls": walls, "checks": count}


# --------------------------------------------------------------------------- sick stack

#: Faults of the sick-stack table beyond sandbox/faults.yaml's own list: none
#: (the frozen container, the locked table and the stopped critical service are
#: entries there; amazon-wrong-port is the dead port).
SICK_EXTRA: list[str] = []


def _sandbox(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=ROOT,
                          capture_output=True, text=True, env=clean_env(), timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"python -m sandbox {' '.join(args)} failed:\n{proc.stdout}\n"
                         f"{proc.stderr}")


def _failing(gate: dict[str, Any]) -> list[str]:
    """Failed checks as 'nodeid: first line of seen' (what the table's count is made of)."""
    out = []
    for c in gate.get("checks", []):
        if c["outcome"] in ("failed", "error"):
            seen = next((ln.strip() for ln in (c.get("message") or "").splitlines()
                         if ln.strip().startswith("seen:")), "")
            out.append(f"{c['nodeid']} ({float(c.get('duration') or 0):.2f} s): {seen[:200]}")
    return out


def sick(reps: int, work: Path, names: list[str] | None, fault_reps: int = 1,
         settle: float = 10.0) -> dict[str, Any]:
    """Full runs (-n auto) with one fault on at a time, each paired with a healthy
    run just before it; healthy runs also open and close the session.

    Every run starts ``settle`` seconds after the stack changed (switching a fault
    and healing recreate containers; a fresh stand-in is busy starting for a few
    seconds), so fault and healthy runs meet the same conditions. The ratio is the
    fault run's wall time over its paired healthy run's (the machine's load
    drifts over a benchmark of many minutes; a pair sees the same).

    Run it holding the stack lock for the whole benchmark:
    ``flock /tmp/bizosaas-stack.lock python3 benchmarks/bench.py --sick``.
    """
    sys.path.insert(0, str(ROOT))
    from sandbox import faults as sandbox_faults

    chosen = names or [*sandbox_faults.load(), *SICK_EXTRA]
    _sandbox("heal")
    results: dict[str, Any] = {"healthy": {"walls": [], "failed": [], "failing": []},
                               "faults": {}, "settle_s": settle}

    def healthy_run(tag: str) -> dict[str, Any]:
        time.sleep(settle)
        r = pytest_run(["-n", "auto"], work / f"healthy-{tag}")
        results["healthy"]["walls"].append(r["wall"])
        results["healthy"]["failed"].append(r["gate"].get("failed", 0)
                                            + r["gate"].get("errors", 0))
        results["healthy"]["failing"].append(_failing(r["gate"]))
        print(f"  healthy                {r['wall']:6.2f} s  failed "
              f"{results['healthy']['failed'][-1]}", file=sys.stderr)
        return r

    for i in range(reps):
        healthy_run(f"before-{i}")
    try:
        for name in chosen:
            runs, pairs = [], []
            for i in range(fault_reps):
                pairs.append(healthy_run(f"{name}-{i}")["wall"])
                # Switched on afresh for every run: a fault's effects may accumulate
                # (requests stuck behind a table lock hold the service's connections).
                _sandbox("fault", name)
                time.sleep(settle)
                runs.append(pytest_run(["-n", "auto"], work / f"sick-{name}-{i}"))
                _sandbox("heal")
            walls = [r["wall"] for r in runs]
            failed = [r["gate"].get("failed", 0) + r["gate"].get("errors", 0) for r in runs]
            slow = sorted(((float(c.get("duration") or 0), c["nodeid"])
                           for c in runs[-1]["gate"].get("checks", [])), reverse=True)[:3]
            results["faults"][name] = {"walls": walls, "paired_healthy": pairs,
                                       "ratios": [w / h for w, h in zip(walls, pairs,
                                                                        strict=True)],
                                       "failed": failed,
                                       "ret": [r["ret"] for r in runs], "slowest": slow,
                                       "failing": _failing(runs[-1]["gate"]),
                                       "verdict": runs[-1]["gate"].get("verdict")}
            print(f"  {name:22s} {stats(walls):>16s}  paired healthy {stats(pairs)}  "
                  f"failed {failed}", file=sys.stderr)
    finally:
        _sandbox("heal")
    for i in range(reps):
        healthy_run(f"after-{i}")
    return results


# --------------------------------------------------------------------------- scaling

REPLICA_IMAGE = "local/bizosaas-app:1"


def _replica_env(stack_env: list[str], port: int) -> list[str]:
    env = [e for e in stack_env if not e.startswith("PORT=")]
    return env + [f"PORT={port}"]


def scale(sizes: list[int], reps: int, work: Path) -> dict[str, Any]:
    """Add replicas of the directory stand-in so the stack has N application services."""
    import docker

    client = docker.from_env()
    base = load_manifest()
    template = client.containers.get(base.services["business-directory-api"].container)
    tenv = template.attrs["Config"]["Env"]
    created: list[Any] = []
    results: dict[str, Any] = {}
    raw = yaml.safe_load((ROOT / "stacks/bizosaas-staging.yaml").read_text())
    try:
        for size in sizes:
            extra = size - len(base.apps)
            while len(created) < extra:
                i = len(created)
                port = 18600 + i
                name = f"bench-replica-{i:02d}"
                c = client.containers.run(
                    REPLICA_IMAGE, name=name, detach=True, environment=_replica_env(tenv, port),
                    network=base.network, ports={f"{port}/tcp": ("127.0.0.1", port)},
                    mem_limit="256m", nano_cpus=int(0.25e9),
                    restart_policy={"Name": "unless-stopped"},
                    healthcheck={"test": ["CMD", "curl", "-f", f"http://localhost:{port}/health"],
                                 "interval": 5_000_000_000, "timeout": 3_000_000_000,
                                 "retries": 3, "start_period": 20_000_000_000},
                    labels={"org.bizosaas.benchmark": "1"})
                created.append((c, name, port))
            _wait_healthy(client, [n for _, n, _ in created])
            manifest = dict(raw)
            services = dict(raw["services"])
            for _, name, port in created[:max(0, extra)]:
                services[name] = {
                    "container": name, "port": port, "health_path": "/health", "critical": False,
                    "depends_on": ["postgres", "redis"], "memory": "256M", "cpus": 0.25,
                    "perf_class": "default",
                    "startup_lines": ["Connected to PostgreSQL", "Connected to Redis"]}
            manifest["services"] = services
            manifest["thresholds"] = dict(raw.get("thresholds", {}), budget_memory=None,
                                          budget_cpus=None)
            manifest["thresholds"] = {k: v for k, v in manifest["thresholds"].items()
                                      if v is not None}
            path = work / f"scale-{size}.yaml"
            path.write_text(yaml.safe_dump(manifest))
            runs = [pytest_run(["-n", "auto", f"--stack={path}", "-m", GENERIC],
                               work / f"scale-{size}-{i}") for i in range(reps)]
            walls = [r["wall"] for r in runs]
            results[str(size)] = {"walls": walls, "checks": runs[-1]["checks"],
                                  "ret": [r["ret"] for r in runs]}
            print(f"  {size:3d} app services  {stats(walls):>16s}  {runs[-1]['checks']} checks"
                  f"  exit {[r['ret'] for r in runs]}", file=sys.stderr)
    finally:
        for c, _, _ in created:
            c.remove(force=True)
    return results


def _wait_healthy(client: Any, names: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [(client.api.inspect_container(n)["State"].get("Health") or {}).get("Status")
                  for n in names]
        if all(s == "healthy" for s in states):
            return
        time.sleep(1)
    raise SystemExit(f"replicas not healthy within {timeout:.0f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="full,shell,scale,logs")
    ap.add_argument("--scale", default="8,24,48")
    ap.add_argument("--log-factors", default="1,10,100",
                    help="log volumes, as multiples of the reference stack's")
    ap.add_argument("--log-caps", default="50M", help="logs.max_bytes values to run at")
    ap.add_argument("--sick", action="store_true",
                    help="only the sick-stack table (switches faults: hold the stack lock)")
    ap.add_argument("--faults", default="",
                    help="with --sick: comma-separated fault names (default: all)")
    ap.add_argument("--fault-reps", type=int, default=1,
                    help="with --sick: runs per fault (healthy runs: --reps before and after)")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="with --sick: seconds to wait after the stack changed before a run")
    args = ap.parse_args()
    parts = {"sick"} if args.sick else set(args.only.split(","))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bizosaas-bench-") as tmp:
        work = Path(tmp)
        if "full" in parts:
            print("suite runs:", file=sys.stderr)
            out["runs"] = bench_runs(args.reps, work)
        if "shell" in parts:
            out["shell"] = bench_shell(args.reps)
        if "sick" in parts:
            print("sick stack (full runs, -n auto, one fault at a time):", file=sys.stderr)
            out["sick"] = sick(args.reps, work, [n for n in args.faults.split(",") if n],
                               args.fault_reps, args.settle)
        if "scale" in parts:
            print("scaling (generic suites, -n auto):", file=sys.stderr)
            out["scale"] = scale([int(s) for s in args.scale.split(",")], args.reps, work)
        if "logs" in parts:
            print("logs suite as logs grow:", file=sys.stderr)
            out["logs"] = logs_bench.bench_logs(
                [int(f) for f in args.log_factors.split(",")],
                [logs_bench.parse_size(c) or 0 for c in args.log_caps.split(",")],
                args.reps, True, work)
    print_tables(out)
    (ROOT / "reports").mkdir(exist_ok=True)
    slim = json.loads(json.dumps(out, default=str))
    for r in slim.get("runs", {}).values():
        r.pop("gate", None)
    name = "benchmark-sick.json" if args.sick else "benchmark.json"
    (ROOT / "reports" / name).write_text(json.dumps(slim, indent=2))
    return 0


def print_tables(out: dict[str, Any]) -> None:
    _print_suite_tables(out)
    if out.get("logs"):
        logs_bench.print_logs_table(out["logs"])


def _print_suite_tables(out: dict[str, Any]) -> None:
    runs = out.get("runs", {})
    if runs:
        print("| run | wall time (median ± half-range) | checks | checks/s |\n|---|---|---|---|")
        for name, r in runs.items():
            med = statistics.median(r["walls"])
            print(f"| {name} | {stats(r['walls'])} | {r['checks']} | {r['checks'] / med:.0f} |")
        seq = runs.get("full, -n 0", {}).get("gate")
        if seq:
            suites, slow = per_suite(seq)
            print("\n| suite | time in checks (-n 0) |\n|---|---|")
            for s, t in sorted(suites.items(), key=lambda kv: -kv[1]):
                print(f"| {s} | {t:.2f} s |")
            print("\nslowest checks: " + "; ".join(f"{n} {t:.2f} s" for t, n in slow))
    shell = out.get("shell")
    if shell:
        sw = statistics.median(shell["walls"])
        line = f"\nshell way: {shell['checks']} checks in {stats(shell['walls'])}"
        if runs.get("full, -n auto"):
            ours = statistics.median(runs["full, -n auto"]["walls"])
            ours_checks = runs["full, -n auto"]["checks"]
            per_shell = sw / max(1, shell["checks"])
            per_ours = ours / max(1, ours_checks)
            line += (f"; per check {per_shell * 1000:.0f} ms vs ours {per_ours * 1000:.1f} ms"
                     f" → {per_shell / per_ours:.0f}× faster per check; the shell way over"
                     f" {shell['checks']} checks takes {sw / ours:.1f}× our full run of"
                     f" {ours_checks}")
        print(line)
    sick_out = out.get("sick")
    if sick_out:
        healthy = statistics.median(sick_out["healthy"]["walls"])
        print(f"\nhealthy full run (-n auto), same session: {stats(sick_out['healthy']['walls'])}"
              f" over {len(sick_out['healthy']['walls'])} runs, failed "
              f"{sick_out['healthy']['failed']}")
        print("\n| fault | wall time | paired healthy run | ratio | checks failed | "
              "slowest check |\n|---|---|---|---|---|---|")
        for name, r in sick_out["faults"].items():
            failed = sorted(r["failed"])[len(r["failed"]) // 2]
            slow = r["slowest"][0] if r["slowest"] else (0.0, "-")
            print(f"| `{name}` | {stats(r['walls'])} | {stats(r['paired_healthy'])} | "
                  f"{statistics.median(r['ratios']):.2f}× | {failed} | {slow[0]:.1f} s |")
        worst = max(sick_out["faults"].items(), key=lambda kv: statistics.median(kv[1]["ratios"]),
                    default=None)
        if worst:
            print(f"\nworst: {worst[0]} at {statistics.median(worst[1]['ratios']):.2f}× its "
                  f"paired healthy run; session median healthy {healthy:.2f} s")
    sc = out.get("scale")
    if sc:
        print("\n| application services | checks | wall time (-n auto, generic suites) |\n"
              "|---|---|---|")
        for size, r in sc.items():
            print(f"| {size} | {r['checks']} | {stats(r['walls'])} |")
        sizes = sorted(sc, key=int)
        first = statistics.median(sc[sizes[0]]["walls"])
        last = statistics.median(sc[sizes[-1]]["walls"])
        print(f"\n{sizes[-1]} services take {last / first:.2f}× the time of {sizes[0]}")


if __name__ == "__main__":
    raise SystemExit(main())
