"""What one run knows, kept in ``config.stash`` (never as attributes on config).

A leaf module: everything may import it, it imports nothing of ours but types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    pass

#: Every resolved option (bizosaas_acceptance.options.resolve_all).
SETTINGS = pytest.StashKey[dict[str, Any]]()
#: This run's id (the controller's, handed to xdist workers).
RUN_ID = pytest.StashKey[str]()
#: The stack model (manifest or compose-derived, environment applied).
STACK = pytest.StashKey["Stack"]()
#: Where the stack answers and with which credentials.
TARGET = pytest.StashKey["Target"]()
#: The gate's final verdict, frozen at session finish.
VERDICT = pytest.StashKey["Verdict"]()
