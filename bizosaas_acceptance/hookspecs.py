"""Hook specifications of the BizOSaaS acceptance plugin.

Other plugins (a conftest, a CI notifier) implement these to act on the gate's
outcome without reaching into our internals. All of them run on the xdist
controller only (or in the single process of a run without xdist).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from bizosaas_acceptance.gate import Verdict

hookspec = pytest.hookspec


@hookspec
def pytest_bizosaas_verdict(config: pytest.Config, verdict: Verdict) -> None:
    """Called once, when the gate's verdict is final.

    ``verdict`` is the same frozen :class:`bizosaas_acceptance.gate.Verdict` that decided
    the exit status, the terminal line, the HTML summary and gate.json. The
    exit status has already been set on the session when this is called.
    """


@hookspec
def pytest_bizosaas_gate_json(config: pytest.Config, data: dict[str, Any]) -> None:
    """Called with the gate.json document just before it is written.

    Implementations may add keys (e.g. a build URL); they should not change
    the verdict fields, which must agree with the exit status.
    """
