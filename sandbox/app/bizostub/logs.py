"""One JSON object per line on stdout.

The logs suite greps for error-ish words, so info/warning lines are scrubbed
of them: a client asking for ``/api/error`` must not look like a failure.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_SERVICE = "bizostub"
_BAD = re.compile(r"(?i)error|critical|traceback|panic|exception")
_SOFT = {"error": "err", "critical": "crit", "traceback": "tb", "panic": "pnc", "exception": "exc"}


def set_service(name: str) -> None:
    """Name the service in every subsequent line."""
    global _SERVICE
    _SERVICE = name


def now_iso() -> str:
    """UTC timestamp, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def scrub(text: str) -> str:
    """Replace the words the log scan looks for (only used on benign levels)."""
    return _BAD.sub(lambda m: _SOFT[m.group(0).lower()], text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def log(level: str, msg: str, **fields: Any) -> None:
    """Write one structured line. ``level``: info, warning, error, critical."""
    record: dict[str, Any] = {"ts": now_iso(), "level": level, "service": _SERVICE, "msg": msg}
    record.update(fields)
    if level in ("info", "warning", "debug"):
        record = _clean(record)
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def describe(exc: BaseException) -> str:
    """A short, scrubbed description of why something failed (for warnings)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {text}"[:300])


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


def configure_stdlib() -> None:
    """Send stdlib logging through :func:`log`; silence chatty libraries."""
    root = logging.getLogger()
    root.handlers[:] = [_JsonHandler()]
    root.setLevel(logging.WARNING)
    # We write our own access log; aiohttp's would duplicate it.
    logging.getLogger("aiohttp.access").disabled = True
    # Worker poll hiccups while Temporal restarts are not our failures.
    logging.getLogger("temporalio").setLevel(logging.CRITICAL)
