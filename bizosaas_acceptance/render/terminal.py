"""The terminal: the run's header lines and the one verdict line."""

from __future__ import annotations

from bizosaas_acceptance.gate import Verdict, format_rate
from bizosaas_acceptance.model.manifest import Stack
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.secrets import MASKER


def verdict_line(verdict: Verdict) -> str:
    """The one terminal line: verdict, rate vs threshold, counts, critical failures."""
    if verdict.pass_rate is None:
        rate = "no checks ran"
    else:
        rate = (f"pass rate {format_rate(verdict.pass_rate, verdict.threshold)} "
                f"{verdict.comparison} {format_rate(verdict.threshold)}")
    crit = "none"
    if verdict.critical_failures:
        shown = ", ".join(verdict.critical_failures[:3])
        more = len(verdict.critical_failures) - 3
        crit = f"{len(verdict.critical_failures)} ({shown}{f', +{more} more' if more > 0 else ''})"
        if not verdict.critical_enforced:
            crit += " [not enforced]"
    text = (f"bizosaas gate: {verdict.verdict}  {rate}  ({verdict.counts_text()})  "
            f"critical failures: {crit}")
    extra = [r for r in verdict.reasons
             if r.startswith("run incomplete") or " did not load: " in r]
    return text + ("  " + "; ".join(extra) if extra else "")


def header_lines(stack: Stack, target: Target) -> list[str]:
    """What the run is about: the stack, where it answers, whether it may write and why
    (``writes allowed: reference stack``; ``writes not allowed: target 10.0.0.5 is not
    the reference stack; --allow-writes to allow``)."""
    apps = len(stack.apps)
    return [
        f"bizosaas: stack {stack.name} ({stack.source}): {len(stack.services)} services "
        f"({apps} application, {len(stack.services) - apps} infrastructure)",
        f"bizosaas: target host {target.host}, docker {MASKER.mask(target.docker_display())}, "
        f"environment {target.environment or '-'}, {target.writes_text}",
    ] + ([f"bizosaas: Docker Swarm stack {target.swarm_stack} (manifest service x = Swarm "
          f"service {target.swarm_stack}_x)"] if target.swarm_stack else [])
