"""`python -m sandbox`: build, start, inspect and break the reference stack."""

from __future__ import annotations

import argparse
import sys

from docker.errors import DockerException

from sandbox import faults, stack, swarm
from sandbox.stack import Progress, SandboxError


def _status() -> int:
    rows = stack.status_rows()
    print(stack.format_table(rows))
    current = faults.active()
    if current:
        print(f"\nactive fault: {current} (python -m sandbox heal)")
    return 0


def _swarm_status(nodes: int) -> int:
    rows = [("SERVICE", "TASKS", "NODES", "PORTS"), *swarm.status_rows(nodes)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    try:
        active = __import__("json").loads(swarm.FAULT_STATE.read_text()).get("faults")
    except (FileNotFoundError, ValueError):
        active = None
    if active:
        print(f"\nactive Swarm fault(s): {', '.join(active)} (python -m sandbox heal --swarm)")
    return 0


def _add_swarm(p: argparse.ArgumentParser, nodes: bool = True) -> None:
    p.add_argument("--swarm", action="store_true",
                   help="the reference stack as a Docker Swarm stack (docker stack deploy)")
    if nodes:
        p.add_argument("--nodes", type=int, default=1, choices=(1, 3),
                       help="with --swarm: this engine alone (1) or three Docker-in-Docker "
                            "nodes (3)")


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
    p_status = sub.add_parser("status", help="print services, URLs and state")
    p_faults = sub.add_parser("faults", help="list the faults that can be switched on")
    p_fault = sub.add_parser("fault", help="switch one fault on")
    p_fault.add_argument("name", nargs="+",
                         help="the fault (with --swarm: one or more, on different services)")
    p_heal = sub.add_parser("heal", help="switch the active fault off and restore the healthy "
                                         "stack")
    for p in (p_up, p_down, p_status):
        _add_swarm(p)
    _add_swarm(p_faults, nodes=False)
    _add_swarm(p_fault, nodes=False)
    _add_swarm(p_heal, nodes=False)
    sub.add_parser("swarm-manifests", help="regenerate stacks/bizosaas-swarm*.yaml from "
                                           "stacks/bizosaas-staging.yaml")
    args = parser.parse_args(argv)
    say = Progress()
    try:
        if getattr(args, "swarm", False):
            return _swarm_main(args, say)
        if args.cmd == "swarm-manifests":
            for path in swarm.write_manifests():
                print(path)
            return 0
        if args.cmd == "fault" and len(args.name) > 1:
            parser.error("one fault at a time (several only with --swarm)")
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
            faults.switch_on(args.name[0], say)
            return 0
        if args.cmd == "heal":
            faults.heal(say)
            return _status()
    except SandboxError as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 1
    except DockerException as exc:
        print(f"sandbox: error: the Docker engine refused: {str(exc)[:300]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sandbox: interrupted", file=sys.stderr)
        return 130
    return 2


def _swarm_main(args: argparse.Namespace, say: Progress) -> int:
    """The ``--swarm`` forms of up, down, status, faults, fault and heal."""
    nodes = getattr(args, "nodes", 1)
    if args.cmd == "up":
        swarm.up(say, nodes=nodes, timeout=args.timeout)
        return _swarm_status(nodes)
    if args.cmd == "down":
        swarm.down(say, nodes=nodes, volumes=args.volumes)
        return 0
    if args.cmd == "status":
        return _swarm_status(nodes)
    if args.cmd == "faults":
        rows = swarm.describe_faults()
        width = max(len(r[0]) for r in rows)
        for name, category, where, summary in rows:
            print(f"{name.ljust(width)}  {category}  {where}: {summary}")
        return 0
    if args.cmd == "fault":
        swarm.fault_on(args.name, say)
        return 0
    if args.cmd == "heal":
        swarm.heal(say)
        return 0
    print(f"sandbox: error: {args.cmd} has no --swarm form", file=sys.stderr)
    return 2
