"""Markers of finished runs, so a later run's sweep may remove what they left."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

FINISHED_DIR = Path(tempfile.gettempdir()) / "bizosaas-acceptance-finished"


def finished_runs(max_age_s: float = 7 * 86400) -> list[str]:
    """Run ids that ended on this host (newest first); old markers are pruned."""
    base = FINISHED_DIR
    if not base.is_dir():
        return []
    out = []
    now = time.time()
    for marker in base.iterdir():
        try:
            age = now - marker.stat().st_mtime
        except OSError:
            continue
        if age > max_age_s:
            marker.unlink(missing_ok=True)
        else:
            out.append((marker.stat().st_mtime, marker.name))
    return [name for _, name in sorted(out, reverse=True)]



def mark_finished(run_id: str) -> None:
    """Record that ``run_id`` ended on this host (best effort)."""
    try:
        FINISHED_DIR.mkdir(parents=True, exist_ok=True)
        (FINISHED_DIR / run_id).touch()
    except OSError:
        pass
