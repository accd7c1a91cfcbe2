"""A pytest plugin for self-tests (``-p selftest.write_recorder``): notes every request
of the suite that could write, *before* it is sent.

Every HTTP request the suite sends goes through
:meth:`bizosaas_acceptance.probes.http.HttpProbe.request`; every Temporal
workflow it starts goes through ``temporalio.client.Client.start_workflow``.
Both are wrapped in each process that loads the plugin (controller and xdist
workers); anything but GET/HEAD/OPTIONS is appended to the JSON-lines file
named by ``$BIZOSAAS_WRITE_LOG``, with the method, URL and JSON body.
"""

from __future__ import annotations

import json
import os
from typing import Any

from bizosaas_acceptance.probes.http import HttpProbe

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _note(entry: dict[str, Any]) -> None:
    path = os.environ.get("BIZOSAAS_WRITE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**entry, "pid": os.getpid()}, default=str) + "\n")


_request = HttpProbe.request


def _recorded_request(self: HttpProbe, method: str, url: str, **kwargs: Any) -> Any:
    if method.upper() not in READ_METHODS:
        _note({"method": method, "url": url, "body": kwargs.get("json_body")})
    return _request(self, method, url, **kwargs)


HttpProbe.request = _recorded_request  # type: ignore[method-assign]

try:
    from temporalio.client import Client

    _start = Client.start_workflow

    async def _recorded_start(self: Client, *args: Any, **kwargs: Any) -> Any:
        _note({"method": "TEMPORAL start_workflow", "url": str(kwargs.get("id")),
               "body": None})
        return await _start(self, *args, **kwargs)

    Client.start_workflow = _recorded_start  # type: ignore[method-assign]
except ImportError:  # pragma: no cover - temporalio is a requirement
    pass


def load(path: str) -> list[dict[str, Any]]:
    """The entries a run noted (none when it sent nothing that could write)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []
