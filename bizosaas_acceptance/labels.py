"""The suites, their markers, and the labels (suite, service, critical) of a check.

Labels are set once, at collection, as ``user_properties``: they travel with
every report (also from xdist workers), so the controller attributes outcomes
without collecting again.
"""

from __future__ import annotations

import pytest

#: The ten suites, in the order of SPEC §2; each is a marker and a module.
SUITES: tuple[str, ...] = (
    "containers", "health", "api", "infra", "endpoints",
    "performance", "resources", "network", "logs", "integration",
)
#: Check families outside the ten suites, labelled like them in the gate's tables.
EXTRA_SUITES: tuple[str, ...] = ("hygiene", "soak", "swarm")
#: Suites the post-deploy ``verify`` marker selects.
VERIFY_SUITES: frozenset[str] = frozenset({"containers", "health", "infra", "network", "resources"})

MARKERS: dict[str, str] = {
    "containers": "suite 1: container state, restart policy, image, env and secrets",
    "health": "suite 2: health endpoints",
    "api": "suite 3: API response validation",
    "infra": "suite 4: PostgreSQL, Redis, Vault and Temporal connectivity",
    "endpoints": "suite 5: endpoint availability and routing",
    "performance": "suite 6: response times and error rate",
    "resources": "suite 7: memory, CPU and pids against limits and budget",
    "network": "suite 8: Docker network, DNS, reachability, published ports",
    "logs": "suite 9: log error scan and startup lines",
    "integration": "suite 10: cross-service flows (writes tagged data, cleans up)",
    "hygiene": "compose file hygiene (limits, debug flags, literal secrets, dangling "
               "depends_on, missing external networks, exposed databases); only with --compose",
    "soak": "trends over a soak (memory slope, connection growth, error-rate and p95 "
            "drift); only with --soak DURATION",
    "swarm": "Docker Swarm stack: replicas, task failures, update status, restart policy and "
             "limits from the service spec, nodes, overlay networks; only with --swarm-stack",
    "compose_only": "a check of what only Compose sets on a container (restart policy and "
                    "count, bridge network); replaced by its swarm counterpart with --swarm-stack",
    "asks_http": "a check outside the HTTP suites that asks the services over HTTP: "
                 "scheduled with them, after the run's opening probe has found any hang",
    "load_phase": "a check that runs the run's load phase (error rate under load): "
                  "scheduled first, so a slow service's load overlaps the other checks",
    "after_load": "a check that compares the stack before and after the load phase (memory, "
                  "connections): scheduled after the other HTTP checks, before timed ones",
    "timed": "a check that times answers (response time): scheduled last, on a stack "
             "no longer under the load phase",
    "verify": "quick post-deploy subset (containers, health, infra, network, resources)",
    "critical": "check of a critical service: a failure fails the gate",
    "service(key)": "the service a check is about (stack manifest key)",
}


def item_labels(item: pytest.Item) -> tuple[str, str, bool]:
    """(suite, service, critical) of a collected check, from its markers."""
    suite = next((s for s in (*SUITES, *EXTRA_SUITES) if item.get_closest_marker(s)), "other")
    mark = item.get_closest_marker("service")
    service = str(mark.args[0]) if mark and mark.args else "-"
    return suite, service, item.get_closest_marker("critical") is not None


def label(item: pytest.Item) -> None:
    """Put the labels on the item (and ``verify`` on the post-deploy suites)."""
    suite, service, critical = item_labels(item)
    if suite in VERIFY_SUITES and not item.get_closest_marker("verify"):
        item.add_marker(pytest.mark.verify)
    item.user_properties.extend([("suite", suite), ("service", service), ("critical", critical)])


def report_labels(report: pytest.TestReport | pytest.CollectReport) -> tuple[str, str, bool]:
    """(suite, service, critical) of a report, as set at collection."""
    # Collection reports have no user_properties (a module that failed to import).
    props = dict(getattr(report, "user_properties", ()))
    return (
        str(props.get("suite", "other")),
        str(props.get("service", "-")),
        bool(props.get("critical", False)),
    )


def module_suite(path: str) -> str | None:
    """The suite a test module holds, by its file name (``tests/test_api.py`` → ``api``)."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1].split("::", 1)[0]
    stem = name.removeprefix("test_").removesuffix(".py")
    return stem if stem in (*SUITES, *EXTRA_SUITES) else None
