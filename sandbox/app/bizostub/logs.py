"""One JSON object per line on stdout.

Lines say what happened, word for word: nothing is rewritten to keep the
acceptance suite's log scan quiet. A benign line that happens to contain an
error-like word ("error rate 0.00%") is excused by the manifest's
``logs.allow`` list, with its reason, as on a real deployment.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from datetime import UTC, datetime
from typing import Any

_SERVICE = "bizostub"


def set_service(name: str) -> None:
    """Name the service in every subsequent line."""
    global _SERVICE
    _SERVICE = name


def now_iso() -> str:
    """UTC timestamp, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log(level: str, msg: str, **fields: Any) -> None:
    """Write one structured line. ``level``: info, warning, error, critical."""
    record: dict[str, Any] = {"ts": now_iso(), "level": level, "service": _SERVICE, "msg": msg}
    record.update(fields)
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def describe(exc: BaseException) -> str:
    """A short description of why something failed: type and first line, as raised."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


class _JsonHandler(logging.Handler):
    """Routes stdlib logging (asyncio, libraries) into the same JSON stream."""

    def emit(self, record: logging.LogRecord) -> None:
        level = {
            logging.CRITICAL: "critical",
            logging.ERROR: "error",
            logging.WARNING: "warning",
        }.get(record.levelno, "info")
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info and level in ("error", "critical"):
            fields["detail"] = logging.Formatter().formatException(record.exc_info)
        log(level, record.getMessage(), **fields)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Python warnings (DeprecationWarning and friends) as one warning line each."""
    log("warning", f"{category.__name__}: {message}", location=f"{filename}:{lineno}")


def configure_stdlib() -> None:
    """Send stdlib logging and Python warnings through :func:`log`.

    Library warnings and errors (temporalio's worker included) are logged as
    they come; only aiohttp's access log is off, because we write our own.
    Deprecation warnings are shown once per place, as ``-W default`` would.
    """
    root = logging.getLogger()
    root.handlers[:] = [_JsonHandler()]
    root.setLevel(logging.WARNING)
    # We write our own access log; aiohttp's would duplicate it.
    logging.getLogger("aiohttp.access").disabled = True
    warnings.simplefilter("default", DeprecationWarning)
    warnings.showwarning = _show_warning
