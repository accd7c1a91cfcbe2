"""The pytest plugin: options, markers, labels and wiring. Logic lives elsewhere.

- :mod:`acceptance.options` declares and resolves every setting;
- :mod:`acceptance.gate` counts outcomes and decides the verdict (its
  ``GatePlugin`` is registered here, on the controller only);
- :mod:`acceptance.report` writes gate.json and extends pytest-html.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from acceptance import options

#: The ten suites, in the order of SPEC §2; each is a marker and a module.
SUITES: tuple[str, ...] = (
    "containers", "health", "api", "infra", "endpoints",
    "performance", "resources", "network", "logs", "integration",
)
#: Check families outside the ten suites, labelled like them in the gate's tables.
EXTRA_SUITES: tuple[str, ...] = ("hygiene",)
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
    "verify": "quick post-deploy subset (containers, health, infra, network, resources)",
    "critical": "check of a critical service: a failure fails the gate",
    "service(key)": "the service a check is about (stack manifest key)",
}

SETTINGS = pytest.StashKey[dict[str, Any]]()
RUN_ID = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from acceptance import hooks

    pluginmanager.add_hookspecs(hooks)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    settings = options.resolve_all(config)
    # Whether --target-host was given at all: an explicit host beats the
    # environment section's and the remote Docker engine's (fixtures/target.py).
    settings["_target_host_default"] = (
        options.lookup(config, options.BY_NAME["target_host"])[1] == "default")
    config.stash[SETTINGS] = settings
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "bizosaas_run_id" in workerinput:
        run_id = workerinput["bizosaas_run_id"]
    else:
        run_id = settings["run_id"] or time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(3)
    config.stash[RUN_ID] = run_id
    if workerinput is None:
        # Counting and deciding happen on the controller only; xdist re-fires
        # every worker's reports there.
        from acceptance.gate import GatePlugin

        config.pluginmanager.register(GatePlugin(config), "bizosaas-gate")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: hand the controller's run id to every worker."""
    node.workerinput["bizosaas_run_id"] = node.config.stash[RUN_ID]


def _label(item: pytest.Item) -> tuple[str, str, bool]:
    suite = next((s for s in (*SUITES, *EXTRA_SUITES) if item.get_closest_marker(s)), "other")
    mark = item.get_closest_marker("service")
    service = str(mark.args[0]) if mark and mark.args else "-"
    return suite, service, item.get_closest_marker("critical") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _drop_hygiene_without_compose(config, items)
    for item in items:
        suite, service, critical = _label(item)
        if suite in VERIFY_SUITES and not item.get_closest_marker("verify"):
            item.add_marker(pytest.mark.verify)
        # user_properties travel with every report (also through xdist), so the
        # controller can attribute outcomes without re-collecting.
        item.user_properties.extend(
            [("suite", suite), ("service", service), ("critical", critical)]
        )


def _drop_hygiene_without_compose(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Hygiene checks judge compose files: without --compose they do not exist."""
    if config.stash[SETTINGS].get("compose"):
        return
    dropped = [i for i in items if i.get_closest_marker("hygiene")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not i.get_closest_marker("hygiene")]


def report_labels(report: pytest.TestReport) -> tuple[str, str, bool]:
    """(suite, service, critical) of a report, as set at collection."""
    # Collection reports have no user_properties (a module that failed to import).
    props = dict(getattr(report, "user_properties", ()))
    return (
        str(props.get("suite", "other")),
        str(props.get("service", "-")),
        bool(props.get("critical", False)),
    )
