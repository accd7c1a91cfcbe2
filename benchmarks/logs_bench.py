"""Benchmark the logs suite as logs grow: time and peak memory at 1x, 10x, 100x volume.

    python benchmarks/logs_bench.py                          # 1x, 10x, 100x; 3 repetitions
    python benchmarks/logs_bench.py --factors 1,10,100,300 --caps 50M,5M --reps 3
    python benchmarks/bench.py --only logs                   # the same, from the main benchmark

The reference volume is the largest current log among the reference stack's
application services (read with the suite's own reader), but at least what
issue 17 measured after 30 minutes of test traffic (2.1 MB, 10,800 lines): a
freshly started stack has almost nothing to scan.

For each factor a throwaway container (``bizosaas-logbench-<factor>x-<hex>``,
image ``local/bizosaas-base:1``, no network) prints that many lines of the
reference's average length to its stdout: a startup line, an ERROR canary at
the start, the filler, an ERROR canary at the end. The reference stack's own
containers are never written to. The logs suite (``tests/test_logs.py``) then
runs in a subprocess against a manifest naming only that container, at each
byte cap (``logs.max_bytes``); wall time from outside, time in checks from its
gate.json, peak memory (``ru_maxrss`` of the pytest process, from ``wait4``)
and what it read from the failure message. ``--before`` also runs the reader
this replaced (whole log since start, no cap: ``git show <rev>:tests/test_logs.py``).
The container is removed afterwards.

This is a measurement script, not a test: it never fails on a slow number.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bizosaas_acceptance.model.manifest import load_manifest, parse_size  # noqa: E402
from bizosaas_acceptance.probes import logs as probe  # noqa: E402
from bizosaas_acceptance.probes.docker import docker_time  # noqa: E402
from selftest.stackrun import clean_env  # noqa: E402

IMAGE = "local/bizosaas-base:1"
PREFIX = "bizosaas-logbench-"
#: Issue 17: one application service after 30 minutes of test traffic.
ISSUE_BYTES, ISSUE_LINES = int(2.1 * 1024 * 1024), 10_800
#: The reader this replaced (streamed since start, no window, no cap).
BEFORE_REV = "4090a78"

GENERATOR = r"""
import sys, time
n, width = int(sys.argv[1]), int(sys.argv[2])
w = sys.stdout.write
w('{"level": "info", "msg": "logbench started"}\n')
w('{"level": "error", "msg": "ERROR logbench canary early"}\n')
head = ('{"ts": "2026-01-01T00:00:00.000Z", "level": "info", "service": "logbench", '
        '"msg": "GET /api/items/')
pad = max(0, width - len(head) - 40)
for i in range(n):
    w(head + str(i) + ' 200 4.1ms", "request_id": "' + ('r%08d' % i) + '", "pad": "'
      + 'x' * pad + '"}\n')
w('{"level": "error", "msg": "ERROR logbench canary late"}\n')
w('logbench done\n')
sys.stdout.flush()
time.sleep(3600)
"""


def reference_volume() -> dict[str, Any]:
    """The largest application service log of the running reference stack."""
    import docker

    api = docker.from_env(timeout=30).api
    stack = load_manifest()
    judge = probe.LineJudge([], [])
    best = {"service": None, "bytes": 0, "lines": 0}
    for svc in stack.apps:
        try:
            r = probe.scan_log(api, svc.container, window=probe.Window(None, "all"),
                               judge=judge, max_bytes=2**40, deadline_s=120)
        except Exception:  # noqa: BLE001, S112 - a service that is down has no volume
            continue
        if r["bytes"] > best["bytes"]:
            best = {"service": svc.key, "bytes": r["bytes"], "lines": r["lines"]}
    ref = dict(best)
    if ref["bytes"] < ISSUE_BYTES:
        ref.update(bytes=ISSUE_BYTES, lines=ISSUE_LINES, floor=True)
    ref["width"] = max(80, round(ref["bytes"] / max(1, ref["lines"])) - 1)
    ref["measured"] = best
    return ref


def _docker(*args: str, timeout: float = 120) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True,
                          timeout=timeout).stdout


def start_container(lines: int, width: int, label: str) -> str:
    """A container that prints ``lines`` lines of about ``width`` bytes, then sleeps."""
    name = f"{PREFIX}{label}-{secrets.token_hex(3)}"
    _docker("run", "-d", "--name", name, "--network", "none", "--log-driver", "json-file",
            "--label", "org.bizosaas.benchmark=logs", IMAGE, "python3", "-c", GENERATOR,
            str(lines), str(width))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if "logbench done" in _docker("logs", "--tail", "1", name):
            return name
        time.sleep(0.5)
    raise SystemExit(f"{name}: the generator did not finish within 600 s")


def manifest(path: Path, container: str, cap: int) -> Path:
    staging = yaml.safe_load((ROOT / "stacks" / "bizosaas-staging.yaml").read_text())
    doc = {"version": 1, "name": "logbench",
           "logs": {**staging["logs"], "max_bytes": cap},
           "services": {"logbench": {"container": container, "port": 8080,
                                     "healthcheck": False,
                                     "startup_lines": ["logbench started"]}}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_logs_suite(test_file: Path, stack: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """The logs suite in a subprocess: wall time, peak RSS, its gate.json."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
           f"--stack={stack}", f"--gate-json={out / 'gate.json'}",
           f"--html={out / 'r.html'}", f"--junitxml={out / 'j.xml'}", *extra, str(test_file)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    gate = json.loads((out / "gate.json").read_text()) if (out / "gate.json").exists() else {}
    checks = gate.get("checks", [])
    msgs = {c["nodeid"].split("::")[-1].split("[")[0]: c for c in checks}
    errors = msgs.get("test_log_free_of_errors", {})
    message = errors.get("message") or ""
    read = re.search(r"read: ([\d,]+) lines? \(([^)]*)\)(.*?); window", message)
    return {
        "wall": wall, "in_checks": sum(float(c.get("duration") or 0) for c in checks),
        "rss_mb": usage.ru_maxrss / 1024, "ret": proc.returncode,
        "late": "canary late" in message, "early": "canary early" in message,
        "startup": (msgs.get("test_startup_lines") or {}).get("outcome"),
        "lines": int(read.group(1).replace(",", "")) if read else None,
        "bytes": read.group(2) if read else None,
        "capped": bool(read and "capped" in read.group(3)),
    }


def _reader_time(container: str, cap: int) -> float:
    import docker

    api = docker.from_env(timeout=30).api
    staging = load_manifest().logs
    judge = probe.LineJudge([re.compile(p) for p in staging["error_patterns"]],
                            [re.compile(p) for p in staging.get("allow") or []],
                            ["logbench started"])
    start = docker_time(api.inspect_container(container)["State"]["StartedAt"])
    window = probe.choose_window(started=start, now=time.time(), bound_s=86400)
    t0 = time.perf_counter()
    probe.scan_log(api, container, window=window, judge=judge, max_bytes=cap, deadline_s=120)
    return time.perf_counter() - t0


def before_file(work: Path) -> Path:
    """The replaced logs suite, from git, runnable beside the current plugin."""
    src = subprocess.run(["git", "show", f"{BEFORE_REV}:tests/test_logs.py"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    path = work / "before" / "test_logs_before.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(src)
    return path


def bench_logs(factors: list[int], caps: list[int], reps: int, before: bool,
               work: Path) -> dict[str, Any]:
    ref = reference_volume()
    print(f"reference volume: {probe.size_text(ref['bytes'])}, {ref['lines']:,} lines"
          + (f" (issue 17's figure; the largest current log is {ref['measured']['service']}: "
             f"{probe.size_text(ref['measured']['bytes'])})" if ref.get("floor") else
             f" ({ref['service']})"), file=sys.stderr)
    variants: list[tuple[str, Path, list[str], int | None]] = [
        (f"cap {probe.size_text(cap)}", ROOT / "tests" / "test_logs.py", [], cap)
        for cap in caps]
    if before:
        plugins = ["-p", "fixtures.stack", "-p", "fixtures.clients", "-p", "fixtures.api",
                   f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml")]
        variants.append(("before (whole log)", before_file(work), plugins, None))
    rows: list[dict[str, Any]] = []
    for factor in factors:
        lines = factor * ref["lines"]
        name = start_container(lines, ref["width"], f"{factor}x")
        try:
            for n, (label, test_file, extra, cap) in enumerate(variants):
                stack = manifest(work / f"m-{factor}-{n}.yaml", name,
                                 cap or probe.DEFAULT_MAX_BYTES)
                runs = [run_logs_suite(test_file, stack, work / f"o-{factor}-{i}", extra)
                        for i in range(reps)]
                # The same reader alone, in this process: the scan's own time.
                reader = [_reader_time(name, cap) for _ in range(reps)] if cap else []
                row = {"factor": factor, "variant": label, "log_lines": lines + 4,
                       "log_bytes": (lines * (ref["width"] + 1)),
                       "wall": [r["wall"] for r in runs],
                       "in_checks": [r["in_checks"] for r in runs],
                       "rss_mb": max(r["rss_mb"] for r in runs), "reader": reader,
                       "last": runs[-1]}
                rows.append(row)
                last = runs[-1]
                alone = f"{statistics.median(reader):6.2f} s" if reader else "     -"
                print(f"  {factor:4d}x {label:20s} wall {statistics.median(row['wall']):6.2f} s"
                      f"  reader {alone}"
                      f"  checks {statistics.median(row['in_checks']):6.2f} s"
                      f"  peak {row['rss_mb']:5.0f} MB  read {last['lines']} ({last['bytes']})"
                      f"  late {last['late']} early {last['early']} startup {last['startup']}",
                      file=sys.stderr)
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)
    return {"reference": ref, "rows": rows}


def print_logs_table(res: dict[str, Any]) -> None:
    ref = res["reference"]
    print(f"\nlogs suite as logs grow (reference {probe.size_text(ref['bytes'])}, "
          f"{ref['lines']:,} lines per service; one container, -n 0; median wall time)\n")
    print("| volume | log | reader | suite wall time | time in checks | reader alone | "
          "peak memory | read | canaries caught |\n|---|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        last = r["last"]
        caught = ", ".join(k for k in ("early", "late") if last[k]) or "none"
        read = (f"{last['lines']:,} lines ({last['bytes']})" if last["lines"] is not None
                else "whole log") + (", capped" if last["capped"] else "")
        print(f"| {r['factor']}x | {probe.size_text(r['log_bytes'])}, {r['log_lines']:,} lines"
              f" | {r['variant']} | {_stat(r['wall'])} | {_stat(r['in_checks'])} | "
              f"{_stat(r['reader']) if r['reader'] else '-'} | "
              f"{r['rss_mb']:.0f} MB | {read} | {caught} |")


def _stat(values: list[float]) -> str:
    med = statistics.median(values)
    spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{med:.2f} s ± {spread:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factors", default="1,10,100")
    ap.add_argument("--caps", default="50M", help="byte caps (logs.max_bytes) to run at")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-before", action="store_true",
                    help="skip the replaced whole-log reader")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bizosaas-logbench-") as tmp:
        res = bench_logs([int(f) for f in args.factors.split(",")],
                         [parse_size(c) or 0 for c in args.caps.split(",")], args.reps,
                         not args.no_before, Path(tmp))
    print_logs_table(res)
    (ROOT / "reports").mkdir(exist_ok=True)
    (ROOT / "reports" / "benchmark-logs.json").write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
