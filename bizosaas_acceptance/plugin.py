"""The pytest plugin (entry point ``pytest11``): options, markers and hook wiring.

Thin by design: every hook hands over to the module that owns the work.

- :mod:`.options` declares and resolves every setting;
- :mod:`.model` loads what should be there (manifest, compose files, API);
- :mod:`.params` parametrizes checks from it; :mod:`.labels` labels them;
- :mod:`.reports` masks every report and carries the cause as data;
- :mod:`.controller` (controller only) counts with :mod:`.gate` and renders
  with :mod:`.render`.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Any

import pytest

from bizosaas_acceptance import guard, hookspecs, options
from bizosaas_acceptance.labels import EXTRA_SUITES, MARKERS, SUITES, label
from bizosaas_acceptance.model.api import load_api
from bizosaas_acceptance.model.manifest import (
    ManifestError,
    Stack,
    apply_environment,
    load_manifest,
)
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.params import parametrize
from bizosaas_acceptance.probes import records
from bizosaas_acceptance.render.html import scrub, scrub_metadata
from bizosaas_acceptance.render.terminal import header_lines
from bizosaas_acceptance.reports import finish_report
from bizosaas_acceptance.secrets import MASKER, label_names, mask_report
from bizosaas_acceptance.state import RUN_ID, SETTINGS, STACK, TARGET


def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def _load_stack(settings: dict[str, Any]) -> tuple[Stack, dict[str, Any]]:
    compose = settings.get("compose") or []
    project = None
    if compose:
        from bizosaas_acceptance.model.compose import load_compose, stack_from_compose

        stack = stack_from_compose(compose, overlay=settings.get("stack"))
        project = load_compose(compose).name
    else:
        stack = load_manifest(settings.get("stack"))
    if settings.get("swarm_stack"):
        from bizosaas_acceptance.model.swarm import apply_swarm

        stack = apply_swarm(stack, settings["swarm_stack"], project)
    return apply_environment(stack, settings.get("environment"))


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def _runs_checks(config: pytest.Config) -> bool:
    opt = config.option
    return not any(getattr(opt, name, False) for name in (
        "collectonly", "help", "markers", "showfixtures", "version"))


def _one_gc_at_exit(config: pytest.Config) -> None:
    """pytest runs five full garbage collections when each process ends (to find
    unraisable exceptions in ``__del__`` of cyclic garbage): about 0.2 s per
    process with the clients loaded, on the controller at the very end of the
    run. One collection finds what matters here."""
    try:
        from _pytest.unraisableexception import gc_collect_iterations_key
    except ImportError:  # another pytest: leave its default
        return
    config.stash.setdefault(gc_collect_iterations_key, 1)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    _one_gc_at_exit(config)
    settings = options.resolve_all(config)
    # Whether --target-host was given at all: an explicit host beats the
    # environment section's and the remote Docker engine's (model/target.py).
    settings["_target_host_default"] = (
        options.lookup(config, options.BY_NAME["target_host"])[1] == "default")
    config.stash[SETTINGS] = settings
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "bizosaas_run_id" in workerinput:
        run_id = workerinput["bizosaas_run_id"]
    else:
        run_id = settings["run_id"] or time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(3)
    config.stash[RUN_ID] = run_id

    try:
        stack, section = _load_stack(settings)
        load_api(stack)  # a bad API description is a usage error too, before any check
    except ManifestError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STACK] = stack
    if settings.get("swarm_stack"):
        from bizosaas_acceptance.outcome import SWARM_SERVICES

        SWARM_SERVICES.update(s.container for s in stack.services.values())
    target = Target.from_settings(settings, stack, section)
    config.stash[TARGET] = target
    # Names first: a credential equal to one is weak, masked only where announced.
    MASKER.protect(label_names(stack, user=target.postgres_user, host=target.host,
                               suite=(*SUITES, *EXTRA_SUITES)))
    MASKER.add(target.postgres_password, target.redis_password, target.vault_token,
               target.api_token)
    scrub_metadata(config)  # again, now that the credentials are known

    if _is_controller(config):
        # Counting and deciding happen on the controller only; xdist re-fires
        # every worker's reports there.
        from bizosaas_acceptance.controller import GatePlugin

        config.pluginmanager.register(GatePlugin(config), "bizosaas-gate")


@pytest.hookimpl(trylast=True, specname="pytest_configure")
def pytest_configure_snapshot(config: pytest.Config) -> None:
    """While collection and workers start, the controller takes the run's Docker
    snapshot and asks every HTTP service's health path once (the breaker's opening probe)."""
    if not (_is_controller(config) and _runs_checks(config)):
        return
    from bizosaas_acceptance.probes.docker import prefetch_snapshot
    from bizosaas_acceptance.probes.preflight import opening_probe

    args = (config.stash[RUN_ID], config.stash[STACK], config.stash[TARGET])
    threading.Thread(target=prefetch_snapshot, daemon=True, name="bizosaas-snapshot",
                     args=args).start()
    # A hung HTTP service costs its one timeout now, while workers start.
    threading.Thread(target=opening_probe, daemon=True, name="bizosaas-opening",
                     args=args).start()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """--soak: soak on the controller before xdist starts its workers (see soakmode)."""
    config = session.config
    if _is_controller(config) and _runs_checks(config) and config.stash[SETTINGS].get("soak"):
        from bizosaas_acceptance.soakmode import maybe_run

        maybe_run(config)


@pytest.hookimpl(optionalhook=True)
def pytest_metadata(metadata: dict[str, Any], config: pytest.Config) -> None:
    """pytest-metadata built its mapping: scrub it in this very process.

    Every xdist worker sends its own mapping to the controller, which merges
    it into the one pytest-html shows; scrubbed here, only masked values travel.
    """
    scrub(metadata)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: hand the controller's run id to every worker."""
    node.workerinput["bizosaas_run_id"] = node.config.stash[RUN_ID]


#: Workers ``-n auto`` starts at least: the checks mostly wait on answers, so
#: on a small runner four workers overlap a slow service's waits where two
#: would queue them (a healthy run takes the same time; see README, Performance).
MIN_AUTO_WORKERS = 4


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """xdist ``-n auto``: one worker per CPU, and at least :data:`MIN_AUTO_WORKERS`
    for a run that includes the suites that wait on answers (``-m verify`` alone
    asks only health paths: there a worker per CPU is quicker).

    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set (xdist reads it).
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own implementation honours it
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if (getattr(config.option, "markexpr", "") or "").strip() == "verify":
        return cpus
    return max(MIN_AUTO_WORKERS, cpus)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return header_lines(config.stash[STACK], config.stash[TARGET])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize(metafunc, metafunc.config.stash[STACK])


#: Suites whose checks talk HTTP to the services (the others ask Docker, the
#: databases, Vault and Temporal).
_HTTP_SUITES = frozenset({"health", "api", "endpoints", "performance", "integration"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _drop_hygiene_without_compose(config, items)
    _drop_by_swarm_mode(config, items)
    for item in items:
        label(item)
    items.sort(key=_schedule_rank)  # stable: module order kept within each group


def _schedule_rank(item: pytest.Item) -> int:
    """Where a check goes in the run (xdist hands checks out in this order).

    0. The load phase (every service's load, side by side): a slow service's
       load takes seconds, and here it overlaps everything that follows.
    1. Checks that ask Docker, the databases, Vault and Temporal. A hung
       service costs its one timeout in the run's opening probe, which starts
       with the run; these checks fill that time instead of waiting on it.
    2. The other HTTP checks.
    3. The checks that compare the stack before and after the load phase:
       they wait for its end, so by now there is nothing left to wait for.
    4. Timed checks, last: they sample a stack no longer under the load.

    Same work, same verdicts; only the waiting overlaps.
    """
    if item.get_closest_marker("load_phase") is not None:
        return 0
    http = (dict(item.user_properties).get("suite") in _HTTP_SUITES
            or item.get_closest_marker("asks_http") is not None)
    if not http:
        return 1
    for rank, marker in ((3, "after_load"), (4, "timed")):
        if item.get_closest_marker(marker) is not None:
            return rank
    return 2


#: Check families that exist only when their option is given (marker: setting).
_ONLY_WITH = {"hygiene": "compose", "soak": "soak"}


def _drop_hygiene_without_compose(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Hygiene checks judge compose files, soak checks a soak: without the option
    (--compose, --soak) they do not exist."""
    settings = config.stash[SETTINGS]
    absent = [m for m, setting in _ONLY_WITH.items() if not settings.get(setting)]
    dropped = [i for i in items if any(i.get_closest_marker(m) for m in absent)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if i not in dropped]


def _drop_by_swarm_mode(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Swarm checks judge a Swarm stack: without --swarm-stack they do not exist.
    With it, checks of what only Compose sets on a container (``compose_only``:
    its restart policy and count, a bridge network) give way to their Swarm
    counterparts, which read the service spec and its tasks."""
    drop = "compose_only" if config.stash[SETTINGS].get("swarm_stack") else "swarm"
    dropped = [i for i in items if i.get_closest_marker(drop)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not i.get_closest_marker(drop)]


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Cause as data, then mask everything the report carries, before anyone sees it.

    Outermost wrapper (tryfirst), so what other plugins add to the report
    (pytest-html extras, properties) is masked too. Under xdist this runs in
    the worker, so only masked reports travel to the controller.
    """
    outcome = yield
    finish_report(item, call, outcome.get_result())


@pytest.hookimpl(tryfirst=True)
def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Mask a collection error (an import-time exception may quote a DSN) before the
    terminal, JUnit, xdist or the gate read it."""
    if report.failed:
        mask_report(report)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Mask again where reports are consumed (idempotent).

    pytest-html may wrap makereport outside of us (plugin order decides) and
    writes extras to its assets from here; a plugin loaded with ``-p`` or a
    report arriving from an xdist worker goes through this too, before the
    JUnit, HTML and gate plugins read it.
    """
    mask_report(report)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout is the last-resort guard: when it fires, the report says it is a
    bug in our bounding and names what the check was waiting on (see :mod:`.guard`)."""
    return guard.set_timer(item, settings)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Mark this run finished, so the next run's sweep may remove what it left."""
    config = session.config
    if _is_controller(config) and config.stash.get(RUN_ID, None):
        records.mark_finished(config.stash[RUN_ID])


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller removes the run's shared snapshot files."""
    if not _is_controller(config) or RUN_ID not in config.stash:
        return
    import shutil

    from bizosaas_acceptance.probes.snapshot import shared_dir

    shutil.rmtree(shared_dir(config.stash[RUN_ID]), ignore_errors=True)
