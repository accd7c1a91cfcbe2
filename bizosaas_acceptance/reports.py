"""What every test report carries: a diagnosed message, masked, and the cause as data.

Runs where the report is made (in the xdist worker), so only masked reports
with their category travel to the controller, and again where reports are
consumed (idempotent), for reports made by other plugins.

Every failure is shown as its message only (:mod:`.guard`): a diagnosed one
as it is, an undiagnosed one of this suite diagnosed after the fact (a
transport error naming the call, else a labelled suite bug). No report carries
a traceback with locals or arguments, whatever ``--tb``, ``-l`` or
``--fulltrace`` say.
"""

from __future__ import annotations

import time

import pytest
from _pytest.outcomes import Failed

from bizosaas_acceptance import guard
from bizosaas_acceptance.outcome import CAUSE_PROPERTY, Diagnosed
from bizosaas_acceptance.probes.snapshot import shared_if_present
from bizosaas_acceptance.secrets import MASKER, mask_report
from bizosaas_acceptance.state import RUN_ID

_LEARNED = pytest.StashKey[bool]()
#: Until when reports may wait for the run's snapshot (one bounded wait per process).
_WAIT_UNTIL = pytest.StashKey[float]()


def learn_container_secrets(config: pytest.Config) -> None:
    """Learn the containers' secret env values once the run's Docker snapshot exists.

    Every process must know them before its first report: a check in a worker
    that never used ``docker_state`` can still quote a container secret (a
    health body echoing its configuration, a log line).
    """
    if config.stash.get(_LEARNED, False) or RUN_ID not in config.stash:
        return
    if _WAIT_UNTIL not in config.stash:
        # The snapshot's producer is bounded (probes.docker.snapshot_budget); reports
        # wait for it once, in all at most that long, never once per report.
        from bizosaas_acceptance.probes.docker import snapshot_budget
        from bizosaas_acceptance.state import SETTINGS

        timeout = float(config.stash.get(SETTINGS, {}).get("connect_timeout") or 5)
        config.stash[_WAIT_UNTIL] = time.monotonic() + snapshot_budget(timeout) + timeout
    wait = max(0.0, config.stash[_WAIT_UNTIL] - time.monotonic())
    try:
        raw = shared_if_present(config.stash[RUN_ID], "docker-snapshot", wait=wait)
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
    """Diagnose the failure, put its cause on the report as data, then mask the report."""
    excinfo = call.excinfo
    if excinfo is not None and report.failed:
        # Duck-typed as well: pytester's in-process runs may hold another copy of the
        # module (sys.modules is restored between runs), hence another Diagnosed class.
        value = excinfo.value
        is_diagnosed = isinstance(value, Diagnosed) or (
            isinstance(value, Failed) and isinstance(getattr(value, "cause", None), str))
        diagnosed = value if is_diagnosed else guard.diagnose(item, call.when, excinfo)
        if diagnosed is not None:
            report.longrepr = guard.value_repr(diagnosed)
            report.user_properties.append((CAUSE_PROPERTY, diagnosed.cause))
        else:
            report.longrepr = guard.short_repr(excinfo)
    learn_container_secrets(item.config)
    mask_report(report)
