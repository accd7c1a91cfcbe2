"""Run history: archive every gate.json, find the run to compare with, classify changes.

Pure: every function takes plain gate.json documents (dicts) and paths; nothing
here imports pytest or the rest of the plugin. The plugin wires it as follows:

1. ``previous`` (or ``load_baseline`` for ``--baseline PATH``) picks the run to
   compare with, ``recent`` the runs for flakiness, both excluding this run's id;
2. ``compare`` yields the ``changes`` block that goes into gate.json;
3. ``archive`` stores the finished gate.json under ``reports/history/`` and
   prunes the oldest entries beyond the count and size bounds;
4. ``summary_lines`` and ``render_html`` show the changes in the terminal and
   under the HTML report's verdict banner.

Classification of one check (node id), baseline → current:

- *failing*: outcome ``failed`` or ``error`` (or ``not run``);
  *ok*: ``passed`` or ``xpassed``; ``skipped`` and ``xfailed`` are neither.
- ``new_checks`` / ``removed_checks``: present in only one of the two runs.
  Such a check is listed only there, never as fixed or failing.
- ``new_failures``: failing now, not failing in the baseline (ok or skipped).
- ``fixed``: ok now, failing in the baseline.
- ``still_failing``: failing in both.
- ``flaky``: within the last K runs (this one and the K-1 archived before it,
  newest first) the check failed, passed, and failed again: two separate
  stretches of failure with a pass between them, i.e. at least two flips
  pass↔fail and more than a single incident. A single incident (healthy →
  fault → healed) is a new failure and then a fix, not flakiness. Skipped
  runs and runs without the check are ignored. A flaky check also appears
  in whichever of the lists above describes its latest step.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

#: Outcomes that count as failing (``not run`` comes from runs stopped before a check).
FAILING: frozenset[str] = frozenset({"failed", "error", "not run", "not_run"})
#: Outcomes that count as ok.
OK: frozenset[str] = frozenset({"passed", "xpassed"})
#: Default bounds of the archive.
MAX_RUNS = 50
MAX_BYTES = 20 * 1024 * 1024
#: Default number of runs (this one included) in which flakiness is looked for.
FLAKY_WINDOW = 5
#: Node ids shown per list in the terminal line.
SHOWN = 3

#: ``<UTC time>_<run id>.json``: names sort by time.
_NAME = re.compile(r"^(\d{8}T\d{6}Z)_(.+)\.json$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

LISTS: tuple[str, ...] = (
    "new_failures", "fixed", "still_failing", "flaky", "new_checks", "removed_checks",
)


# -- states --------------------------------------------------------------------------


def state(outcome: object) -> str | None:
    """``"fail"``, ``"ok"``, or None (skipped, xfailed, unknown: neither)."""
    if not isinstance(outcome, str):
        return None
    if outcome in FAILING:
        return "fail"
    if outcome in OK:
        return "ok"
    return None


def outcomes(doc: Mapping[str, Any]) -> dict[str, str]:
    """nodeid → outcome of every check in a gate.json document (malformed entries skipped)."""
    out: dict[str, str] = {}
    checks = doc.get("checks")
    if not isinstance(checks, list):
        return out
    for check in checks:
        if isinstance(check, Mapping):
            nodeid, outcome = check.get("nodeid"), check.get("outcome")
            if isinstance(nodeid, str) and isinstance(outcome, str):
                out[nodeid] = outcome
    return out


# -- the archive ---------------------------------------------------------------------


def _stamp(finished: object) -> str:
    """``20261126T050000Z`` from an ISO 8601 time (now when absent or unreadable)."""
    when = _parse_time(finished) or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _parse_time(text: object) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def entry_name(doc: Mapping[str, Any]) -> str:
    """The archive file name of a document: ``<finished, UTC>_<run id>.json``."""
    run_id = _UNSAFE.sub("-", str(doc.get("run_id") or "")).strip("-.")[:80] or "run"
    return f"{_stamp(doc.get('finished'))}_{run_id}.json"


def entries(history_dir: Path | str) -> list[Path]:
    """The archived documents, oldest first (files not named by us are left alone).

    Ordered by the time in the name (when the run finished, to the second),
    then by when the file was written, so runs finishing in the same second
    keep their order.
    """
    root = Path(history_dir)
    try:
        names = [p for p in root.iterdir() if _NAME.match(p.name) and p.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []

    def key(p: Path) -> tuple[str, int, str]:
        try:
            written = p.stat().st_mtime_ns
        except FileNotFoundError:  # pruned by a concurrent run
            written = 0
        return (p.name[:16], written, p.name)

    return sorted(names, key=key)


def archive(
    doc: Mapping[str, Any],
    history_dir: Path | str,
    *,
    max_runs: int = MAX_RUNS,
    max_bytes: int = MAX_BYTES,
) -> Path:
    """Store ``doc`` in ``history_dir``, then prune the oldest entries beyond the bounds.

    Pruning keeps at most ``max_runs`` entries whose sizes add up to at most
    ``max_bytes``; the entry just written is always kept, even when it alone
    is larger. Returns the path written. Raises OSError when the directory
    cannot be written (the caller reports it; the verdict does not change).
    """
    if max_runs < 1 or max_bytes < 1:
        raise ValueError("history bounds must be at least 1 run and 1 byte")
    root = Path(history_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / entry_name(doc)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    prune(root, max_runs=max_runs, max_bytes=max_bytes, keep=path)
    return path


def prune(
    history_dir: Path | str,
    *,
    max_runs: int = MAX_RUNS,
    max_bytes: int = MAX_BYTES,
    keep: Path | None = None,
) -> list[Path]:
    """Delete the oldest entries until both bounds hold; returns the deleted paths."""
    files = entries(history_dir)
    sizes: dict[Path, int] = {}
    for p in files:
        try:
            sizes[p] = p.stat().st_size
        except FileNotFoundError:  # another run pruned it meanwhile
            sizes[p] = 0
    total = sum(sizes.values())
    removed: list[Path] = []
    for p in files:  # oldest first
        if len(files) - len(removed) <= max_runs and total <= max_bytes:
            break
        if keep is not None and p == keep:
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        removed.append(p)
        total -= sizes[p]
    return removed


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # a damaged entry is no run to compare with
    return data if isinstance(data, dict) else None


def _newest_first(history_dir: Path | str) -> Iterator[dict[str, Any]]:
    for path in reversed(entries(history_dir)):
        doc = _load(path)
        if doc is not None:
            yield doc


def _matches(doc: Mapping[str, Any], stack: str | None, target: str | None,
             exclude_run_id: str | None) -> bool:
    if stack is None or target is None:
        return False
    if doc.get("stack") != stack or doc.get("target") != target:
        return False  # documents without the keys never match
    return exclude_run_id is None or doc.get("run_id") != exclude_run_id


def recent(
    history_dir: Path | str,
    *,
    stack: str | None,
    target: str | None,
    exclude_run_id: str | None = None,
    limit: int = FLAKY_WINDOW,
    selection: str | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` archived runs against the same stack and target, newest first.

    With ``selection`` (the run's -m/-k), only runs that selected the same
    checks compare: ``-m soak`` after a full run is not "693 removed checks".
    """
    out: list[dict[str, Any]] = []
    if limit < 1:
        return out
    for doc in _newest_first(history_dir):
        if selection is not None and doc.get("selection", "") != selection:
            continue
        if _matches(doc, stack, target, exclude_run_id):
            out.append(doc)
            if len(out) >= limit:
                break
    return out


def previous(
    history_dir: Path | str,
    *,
    stack: str | None,
    target: str | None,
    exclude_run_id: str | None = None,
) -> dict[str, Any] | None:
    """The most recent archived run against the same stack and target, or None."""
    found = recent(history_dir, stack=stack, target=target,
                   exclude_run_id=exclude_run_id, limit=1)
    return found[0] if found else None


# -- --baseline PATH -----------------------------------------------------------------


def load_baseline(path: Path | str) -> dict[str, Any]:
    """Read the gate.json given by ``--baseline PATH``.

    Raises ValueError with one line naming the file and the fix when it is
    missing, unreadable, not JSON or not a gate.json document.
    """
    p = Path(path)
    fix = "give the gate.json of an earlier run (e.g. a CI artifact) or drop --baseline"
    where = f"--baseline {path}"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file; {fix}") from None
    except IsADirectoryError:
        raise ValueError(f"{where}: is a directory, not a file; {fix}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text; {fix}") from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read ({exc.strerror or exc}); {fix}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        at = f" (line {line})" if line else ""
        raise ValueError(f"{where}: not valid JSON{at}; {fix}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: not a gate.json document (not a JSON object); {fix}")
    checks = doc.get("checks")
    if not isinstance(checks, list):
        raise ValueError(f"{where}: not a gate.json document (no 'checks' list); {fix}")
    for i, check in enumerate(checks):
        if not (isinstance(check, dict) and isinstance(check.get("nodeid"), str)
                and isinstance(check.get("outcome"), str)):
            raise ValueError(f"{where}: checks[{i}] lacks a nodeid or outcome; {fix}")
    return doc


# -- comparing -----------------------------------------------------------------------


def _is_flaky(states: Iterable[str | None]) -> bool:
    """Failed, passed, failed again (in any order of time) among the known states."""
    seq = [s for s in states if s is not None]
    # Known states are only "ok" and "fail": two stretches of failure have a pass between.
    starts = [i for i, s in enumerate(seq) if s == "fail" and (i == 0 or seq[i - 1] != "fail")]
    return len(starts) >= 2


def compare(
    current: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    recent: Sequence[Mapping[str, Any]] = (),
    *,
    flaky_window: int = FLAKY_WINDOW,
    source: str = "history",
) -> dict[str, Any]:
    """The ``changes`` block of gate.json: ``current`` against ``previous``.

    ``recent`` are earlier runs, newest first (``previous`` may be among them;
    ``current`` is skipped if present): flakiness is judged over ``current``
    and the ``flaky_window - 1`` newest of them. ``source`` is ``"history"``
    or ``"--baseline PATH"``. Without a ``previous`` run, ``baseline`` is None
    and every list is empty (nothing to compare with).
    """
    lists: dict[str, list[str]] = {name: [] for name in LISTS}
    changes: dict[str, Any] = {"baseline": None, **lists, "flaky_window": flaky_window}
    now = outcomes(current)
    if previous is not None:
        changes["baseline"] = {
            "run_id": previous.get("run_id"),
            "finished": previous.get("finished"),
            "source": source,
            "verdict": previous.get("verdict"),
            "stack": previous.get("stack"),
            "target": previous.get("target"),
        }
        before = outcomes(previous)
        for nodeid in sorted(now.keys() | before.keys()):
            if nodeid not in before:
                lists["new_checks"].append(nodeid)
                continue
            if nodeid not in now:
                lists["removed_checks"].append(nodeid)
                continue
            was, is_ = state(before[nodeid]), state(now[nodeid])
            if is_ == "fail":
                lists["still_failing" if was == "fail" else "new_failures"].append(nodeid)
            elif is_ == "ok" and was == "fail":
                lists["fixed"].append(nodeid)

    run_id = current.get("run_id")
    window = [now] + [outcomes(d) for d in recent
                      if run_id is None or d.get("run_id") != run_id][: max(flaky_window - 1, 0)]
    if len(window) >= 3:  # fail, pass, fail needs three runs
        for nodeid in sorted(now):
            if _is_flaky(state(run.get(nodeid)) for run in window):
                lists["flaky"].append(nodeid)
    changes.update(lists)
    return changes


# -- showing -------------------------------------------------------------------------


def short_time(text: object) -> str:
    """``2026-11-26T05:00Z`` from an ISO 8601 time; the text itself if unreadable."""
    when = _parse_time(text)
    if when is None:
        return str(text or "time unknown")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one)}"


def _counts(changes: Mapping[str, Any]) -> list[str]:
    n = {name: len(changes.get(name) or []) for name in LISTS}
    parts = [
        _count(n["new_failures"], "new failure", "new failures"),
        _count(n["fixed"], "fixed"),
        _count(n["still_failing"], "still failing"),
        _count(n["flaky"], "flaky"),
    ]
    if n["new_checks"]:
        parts.append(_count(n["new_checks"], "new check", "new checks"))
    if n["removed_checks"]:
        parts.append(_count(n["removed_checks"], "removed check", "removed checks"))
    return parts


def _since(baseline: Mapping[str, Any]) -> str:
    source = str(baseline.get("source") or "history")
    what = "run" if source == "history" else "baseline run"
    run_id = baseline.get("run_id") or "(no run id)"
    text = f"{what} {run_id} ({short_time(baseline.get('finished'))}"
    return text + ("" if source == "history" else f", {source}") + ")"


def summary_lines(changes: Mapping[str, Any]) -> list[str]:
    """One or two terminal lines: the counts, then the first few new failures."""
    baseline = changes.get("baseline")
    if not baseline:
        return ["bizosaas changes: none to show, no earlier run against this stack and "
                "target in the history (or use --baseline PATH)"]
    lines = [f"bizosaas changes since {_since(baseline)}: {', '.join(_counts(changes))}"]
    new = list(changes.get("new_failures") or [])
    if new:
        more = len(new) - SHOWN
        lines.append("  new failures: " + ", ".join(new[:SHOWN])
                     + (f", +{more} more" if more > 0 else ""))
    return lines


_CSS = """
.bz-changes{color:#222;font-size:13px;margin:10px 0 4px;max-width:1300px}
.bz-changes-head{font-weight:600;margin-bottom:4px}
.bz-changes-head code{font-size:12px}
.bz-changes-counts{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0}
.bz-chip{border-radius:10px;padding:1px 9px;border:1px solid #cfd4d9;background:#f5f6f7}
.bz-chip-new_failures{background:#ffcdd2;border-color:#c62828;color:#b71c1c;font-weight:700}
.bz-chip-fixed{background:#c8e6c9;border-color:#2e7d32;color:#1b5e20}
.bz-chip-still_failing{background:#ffe0e0;border-color:#e57373}
.bz-chip-flaky{background:#fff3c4;border-color:#c9a400;color:#8a6d00}
.bz-chip-zero{opacity:.55;font-weight:400}
.bz-changes details{margin:2px 0}
.bz-changes summary{cursor:pointer}
.bz-changes ul{margin:2px 0 4px;padding-left:20px}
.bz-changes li code{font-size:12px}
.bz-changes-none{color:#555}
"""

_TITLES = {
    "new_failures": "New failures",
    "fixed": "Fixed",
    "still_failing": "Still failing",
    "flaky": "Flaky",
    "new_checks": "New checks",
    "removed_checks": "Removed checks",
}


def render_html(changes: Mapping[str, Any]) -> str:
    """A small self-contained HTML block (own ``bz-`` classes) for under the verdict."""
    style = f"<style>{_CSS}</style>"
    baseline = changes.get("baseline")
    if not baseline:
        return (f"{style}<div class='bz-changes' id='bizosaas-changes' data-baseline=''>"
                "<div class='bz-changes-none'>Changes: no earlier run against this stack "
                "and target to compare with.</div></div>")
    window = changes.get("flaky_window", FLAKY_WINDOW)
    chips = []
    for name in LISTS:
        n = len(changes.get(name) or [])
        if name in ("new_checks", "removed_checks") and not n:
            continue
        zero = " bz-chip-zero" if not n else ""
        label = _TITLES[name].lower()
        if n == 1 and label.endswith("s"):
            label = label[:-1]  # "1 new failure", "1 new check"
        chips.append(f"<span class='bz-chip bz-chip-{name}{zero}' data-list='{name}' "
                     f"data-count='{n}'>{n} {escape(label)}</span>")
    sections = []
    for name in LISTS:
        ids = list(changes.get(name) or [])
        if not ids:
            continue
        items = "".join(f"<li><code>{escape(str(i))}</code></li>" for i in ids)
        note = f" (failed, passed and failed again within the last {window} runs)" \
            if name == "flaky" else ""
        is_open = " open" if name == "new_failures" else ""
        sections.append(f"<details class='bz-changes-{name}'{is_open}><summary>"
                        f"{escape(_TITLES[name])}: {len(ids)}{escape(note)}</summary>"
                        f"<ul>{items}</ul></details>")
    return (
        f"{style}<div class='bz-changes' id='bizosaas-changes' "
        f"data-baseline='{escape(str(baseline.get('run_id') or ''))}'>"
        f"<div class='bz-changes-head'>Changes since {escape(_since(baseline))}</div>"
        f"<div class='bz-changes-counts'>{''.join(chips)}</div>"
        + "".join(sections) + "</div>"
    )
