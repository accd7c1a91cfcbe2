"""What every test report carries: masked text and the cause as data.

Runs where the report is made (in the xdist worker), so only masked reports
with their category travel to the controller, and again where reports are
consumed (idempotent), for reports made by other plugins.
"""

from __future__ import annotations

import pytest

from bizosaas_acceptance.outcome import CAUSE_PROPERTY, Diagnosed
from bizosaas_acceptance.probes.snapshot import shared_if_present
from bizosaas_acceptance.secrets import MASKER, mask_report
from bizosaas_acceptance.state import RUN_ID

_LEARNED = pytest.StashKey[bool]()


def learn_container_secrets(config: pytest.Config) -> None:
    """Learn the containers' secret env values once the run's Docker snapshot exists.

    Every process must know them before its first report: a check in a worker
    that never used ``docker_state`` can still quote a container secret (a
    health body echoing its configuration, a log line).
    """
    if config.stash.get(_LEARNED, False) or RUN_ID not in config.stash:
        return
    try:
        raw = shared_if_present(config.stash[RUN_ID], "docker-snapshot")
    except (OSError, ValueError):
        return  # unreadable: try again at the next report
    if raw is None:
        return  # not taken (yet): docker_state learns it when it takes it
    for attrs in (raw.get("containers") or {}).values():
        if attrs:
            MASKER.add_env((attrs.get("Config") or {}).get("Env") or [])
    config.stash[_LEARNED] = True


def finish_report(item: pytest.Item, call: pytest.CallInfo[None],
                  report: pytest.TestReport) -> None:
    """Put the diagnosed cause on the report as data, then mask everything it carries."""
    excinfo = call.excinfo
    if excinfo is not None and isinstance(excinfo.value, Diagnosed):
        report.user_properties.append((CAUSE_PROPERTY, excinfo.value.cause))
    learn_container_secrets(item.config)
    mask_report(report)
