"""The run's opening probe: every health path and documented GET, once, concurrently.

Taken on the controller at configure time (beside the Docker snapshot), so a
hung target costs its one timeout while collection and the xdist workers
start, not in the middle of the checks. Silence here trips the breaker
(:mod:`.breaker`) like anywhere else: a silent health path trips the whole
service, a silent route (a locked table) that route; every check against it
then fails at once, naming this probe as the first failure. A check already
waiting on that target when the probe gives up is released at the same moment,
and one that asks a route the probe is still waiting on waits for the probe's
outcome instead of sending another request (single flight).

Nothing is concluded from an answer here: the checks ask again themselves.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bizosaas_acceptance.model.manifest import Stack
from bizosaas_acceptance.model.target import Target

if TYPE_CHECKING:
    from bizosaas_acceptance.model.api import ApiSpec

#: How trips found here name their origin in failure messages.
OPENING = "the run's opening probe"
#: Requests in flight at once (a hung target holds one thread for the budget).
MAX_THREADS = 16


def opening_urls(stack: Stack, target: Target, spec: ApiSpec | None) -> list[str]:
    """Health paths first, then every documented GET that needs no run-time value
    (gateway paths included) and every documented not-found path."""
    urls = [target.url(s, s.health_path) for s in stack.http_services if s.published]
    for sapi in (spec.services.values() if spec else ()):
        svc = stack.services.get(sapi.key)
        if svc is None or not svc.published:
            continue
        paths = [e.path for e in sapi.endpoints
                 if e.method == "GET" and e.has_example and "{" not in e.path]
        if sapi.not_found:
            paths.append(sapi.not_found)
        urls += [target.url(svc, p) for p in paths]
    return list(dict.fromkeys(urls))


def opening_probe(run_id: str, stack: Stack, target: Target) -> None:
    """GET every opening URL concurrently through the run's breaker; never raises."""
    try:
        from bizosaas_acceptance.model.api import load_api
        from bizosaas_acceptance.probes.breaker import Breaker
        from bizosaas_acceptance.probes.http import HttpProbe

        spec = load_api(stack)
        urls = opening_urls(stack, target, spec)
        if not urls:
            return
        breaker = Breaker.for_run(run_id, stack, target, spec)
        probe = HttpProbe(timeout=target.http_timeout, breaker=breaker, origin=OPENING)
        try:
            with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(urls)),
                                    thread_name_prefix="bizosaas-opening") as pool:
                list(pool.map(lambda url: probe.request("GET", url), urls))
        finally:
            probe.close()
    except Exception:  # noqa: BLE001, S110 - the checks report every failure themselves
        pass
