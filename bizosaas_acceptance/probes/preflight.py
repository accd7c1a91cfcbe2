"""The run's opening probe: every HTTP service's health path, once, concurrently.

Taken on the controller at configure time (beside the Docker snapshot), so a
hung service costs its one timeout while collection and the xdist workers
start, not in the middle of the checks: when its health path stays silent, the
breaker (:mod:`.breaker`) trips the whole service and every check against it
fails at once, naming this probe as the first failure. A check already waiting
on that service when the probe gives up is released at the same moment.

Nothing is concluded from an answer here: the checks ask again themselves.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bizosaas_acceptance.model.manifest import Stack
from bizosaas_acceptance.model.target import Target

#: How trips found here name their origin in failure messages.
OPENING = "the run's opening probe"


def opening_probe(run_id: str, stack: Stack, target: Target) -> None:
    """GET every health path concurrently through the run's breaker; never raises."""
    try:
        from bizosaas_acceptance.model.api import load_api
        from bizosaas_acceptance.probes.breaker import Breaker
        from bizosaas_acceptance.probes.http import HttpProbe

        services = [s for s in stack.http_services if s.published]
        if not services:
            return
        breaker = Breaker.for_run(run_id, stack, target, load_api(stack))
        probe = HttpProbe(timeout=target.http_timeout, breaker=breaker, origin=OPENING)
        try:
            with ThreadPoolExecutor(max_workers=len(services),
                                    thread_name_prefix="bizosaas-opening") as pool:
                list(pool.map(lambda s: probe.request("GET", target.url(s, s.health_path)),
                              services))
        finally:
            probe.close()
    except Exception:  # noqa: BLE001, S110 - the checks report every failure themselves
        pass
