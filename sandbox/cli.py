"""`python -m sandbox`: build, start, inspect and break the reference stack."""

from __future__ import annotations

import argparse
import sys

from sandbox import faults, stack
from sandbox.stack import Progress, SandboxError


def _status() -> int:
    rows = stack.status_rows()
    print(stack.format_table(rows))
    current = faults.active()
    if current:
        print(f"\nactive fault: {current} (python -m sandbox heal)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="The BizOSaaS reference stack: a local replica of the staging deployment.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="build what is missing, start everything, wait until healthy")
    p_up.add_argument("--rebuild", action="store_true", help="rebuild every image")
    p_up.add_argument("--timeout", type=int, default=240, help="seconds to wait for health")
    sub.add_parser("build", help="build the images that are missing or changed")
    p_down = sub.add_parser("down", help="remove containers and network")
    p_down.add_argument("--volumes", action="store_true", help="also remove the data volumes")
    sub.add_parser("status", help="print services, URLs and state")
    sub.add_parser("faults", help="list the faults that can be switched on")
    p_fault = sub.add_parser("fault", help="switch one fault on")
    p_fault.add_argument("name")
    sub.add_parser("heal", help="switch the active fault off and restore the healthy stack")
    args = parser.parse_args(argv)
    say = Progress()
    try:
        if args.cmd == "up":
            stack.up(say, build_force=args.rebuild, timeout=args.timeout)
            return _status()
        if args.cmd == "build":
            stack.build_images(stack.docker_client(), say)
            return 0
        if args.cmd == "down":
            stack.down(volumes=args.volumes)
            say("stack removed" + (" with its volumes" if args.volumes else ""))
            return 0
        if args.cmd == "status":
            return _status()
        if args.cmd == "faults":
            rows = faults.describe()
            width = max(len(r[0]) for r in rows)
            cat_w = max(len(r[1]) for r in rows)
            for name, category, service, summary in rows:
                print(f"{name.ljust(width)}  {category.ljust(cat_w)}  {service}: {summary}")
            return 0
        if args.cmd == "fault":
            faults.switch_on(args.name, say)
            return 0
        if args.cmd == "heal":
            faults.heal(say)
            return _status()
    except SandboxError as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sandbox: interrupted", file=sys.stderr)
        return 130
    return 2
