"""Bounded, streaming reads of a container's log (the logs suite's probe).

The cost of a log scan must follow the window asked for, never the age of the
container. Three bounds hold for every scan:

- **a window**: from the container's start, or from this target's previous run
  when that is later, at most the manifest's ``logs.since`` back (or exactly
  what ``--logs-since`` says) — see :func:`choose_window`;
- **a byte cap** (``logs.max_bytes``, 50 MB by default): past it only the most
  recent part of the window is scanned, and the result says so;
- **a deadline** on every Docker call: connect within the suite's connect
  timeout, and no read may end later than the scan's overall deadline.

The log is streamed line by line; it is never held in memory (a line longer
than 64 KB is cut).

Why the scan walks backwards with ``tail``
------------------------------------------
The Docker API can filter a log by time (``since``) or take its last N lines
(``tail``). With the json-file driver, ``since`` alone makes the engine decode
the whole file from its first line to find the window (measured on this
machine: ``docker logs --since 1s`` of a 260 MB log takes 4.8 s and returns
nothing; ``--tail 10`` takes 0.01 s), so only ``tail`` stays cheap as a
container ages. The reader therefore reads the window newest part first, in
passes (each one HTTP request with ``tail``, ``since`` = window start and
``timestamps``):

1. pass 1 asks for the last 4,096 lines and scans them;
2. each further pass asks for ``tail`` = lines already read + a target (×4 per
   pass, and never more than the remaining byte budget at the average line
   size seen so far), scans only the lines older than the oldest one already
   scanned, and closes the stream when it reaches those (Docker's timestamps
   are fixed-width RFC 3339 with nanoseconds in UTC, so they compare as
   strings);
3. it ends when the window is exhausted: the stream ended with fewer lines
   than asked for (the engine's ``since`` filter or the log's beginning cut
   it), or a pass found nothing older; or when the budget is spent (capped).

A pass that would go past the cap is thrown away and repeated smaller, so what
was scanned is always one contiguous stretch ending at the newest line, never
more than the cap. Lines appended while the scan runs are newer than pass 1
and are not read (the next run's window includes them).

Startup lines are printed at the start, which a later window does not reach:
when some are missing and the scan did not reach the container's start, one
forward read from the start looks for them (it also learns values a log
announces, e.g. Vault's dev-mode root token, before any line is quoted), again
bounded by the cap and the deadline.

This module knows nothing of pytest or of the suite's packages: the Docker API
client, patterns and callbacks are passed in.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

#: Bytes of log text scanned per container at most (manifest ``logs.max_bytes``).
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: How far back a scan reads at most when nothing else says (manifest ``logs.since``).
DEFAULT_SINCE = "24h"
FIRST_PASS_LINES = 4096
GROWTH = 4
#: Lines past the cutoff a pass still reads (count only) to tell whether the
#: window is exhausted without another request.
OVERLAP_COUNT_MAX = 8192
#: A pass smaller than this is not worth a request: the budget counts as spent;
#: so is a budget used but for this fraction (each request costs the engine a seek).
MIN_PASS_LINES = 64
FULL_ENOUGH = 0.1
MAX_PASSES = 40
MAX_RETRIES = 3
MAX_LINE = 64 * 1024
MAX_FRAME = 4 * 1024 * 1024
KEEP_MATCHES = 20
#: What a process prints in its first instant can be stamped before StartedAt.
START_SLACK_S = 1.0
#: The previous run's start is the runner's clock, log timestamps the engine's:
#: the offset between them is measured (:func:`engine_offset`, to a second).
HISTORY_SLACK_S = 5.0
#: Bytes from the container's start read to learn announced secrets.
LEARN_BYTES = 1024 * 1024
TS_LEN = 30  # b"2024-05-01T03:10:05.123456789Z"

#: Lines that announce a secret value: "Root Token: x", "password=x", "api_key: x".
ANNOUNCED = re.compile(r"(?i)\b(?:root token|unseal key|token|password|passwd|secret(?:[ _]key)?|"
                       r"api[ _-]?key)\b\s*[:=]\s*[\"']?(?P<value>[^\s\"',}]{4,})")

#: Every match of ANNOUNCED contains one of these (case-insensitively); chosen by
#: hand: the derived set would contain "api" (from api[ _-]?key), which nearly
#: every access-log line does.
ANNOUNCED_WORDS = ("token", "password", "passwd", "secret", "key")


class LogReadError(Exception):
    """The engine refused a log read or broke it off."""


class _Deadline(Exception):
    """The scan's deadline passed in the middle of a pass."""


# --------------------------------------------------------------------------- the window

_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``7d``, ``1h30m`` -> seconds (> 0); ValueError otherwise."""
    raw = str(text).strip().lower()
    if not _DURATION.fullmatch(raw):
        raise ValueError(f"{text!r} is not a duration (a number and a unit: 90s, 30m, 2h, 7d)")
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(raw))
    if seconds <= 0:
        raise ValueError(f"{text!r} is zero (a window must be longer than 0 s)")
    return seconds


@dataclass(frozen=True)
class Since:
    """A parsed ``--logs-since``: a duration back from now, or a point in time."""

    text: str
    seconds: float | None = None
    at: float | None = None  # epoch seconds

    def start(self, now: float) -> float:
        """The window's start as epoch seconds."""
        return self.at if self.at is not None else now - (self.seconds or 0.0)


def parse_since(raw: str) -> Since:
    """Parse ``--logs-since``: ``30m``/``2h``/``90s`` or an ISO 8601 timestamp.

    A timestamp without a zone is local time, as for ``docker logs --since``.
    """
    text = str(raw).strip()
    if _DURATION.fullmatch(text.lower()):
        return Since(text, seconds=parse_duration(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("neither a duration nor an ISO 8601 timestamp") from None
    if when.tzinfo is None:
        when = when.astimezone()
    at = when.timestamp()
    if at > time.time() + 60:
        raise ValueError("the timestamp is in the future")
    return Since(text, at=at)


parse_since.__name__ = ("a duration such as 30m, 2h, 90s, or an ISO 8601 timestamp such as "
                        "2024-05-01T03:10:00Z")


@dataclass(frozen=True)
class Window:
    """Where a scan starts, and why (for messages)."""

    start: float | None  # epoch seconds; None: the whole log
    reason: str
    started: float | None = None  # the container's start

    @property
    def covers_start(self) -> bool:
        """Whether the window reaches back to the container's start."""
        # Not a second later: a service prints its startup lines within
        # milliseconds of its start, so a window that begins even a moment
        # after it leaves them out (then they are looked for from the start).
        return self.start is None or self.started is None or self.start <= self.started


def choose_window(*, started: float | None, now: float, since: Since | None = None,
                  bound_s: float | None = None, previous: float | None = None,
                  since_start: bool = True, offset: float = 0.0) -> Window:
    """The window to scan.

    ``since`` (``--logs-since``) decides alone, but never before the container's
    start. Otherwise the latest of: the container's start, the previous run of
    this target (``previous``, epoch, minus a few seconds of slack), and
    ``bound_s`` back from now (manifest ``logs.since``). ``since_start=False``
    (manifest) lets a window reach into the container's earlier starts.
    ``now`` and ``previous`` are this machine's clock, ``started`` the engine's;
    ``offset`` (engine minus ours, :func:`engine_offset`) converts.
    """
    floor = started - START_SLACK_S if (since_start and started) else None
    now += offset
    if previous is not None:
        previous += offset
    if since is not None:
        at = since.start(now)
        if floor is not None and floor >= at:
            return Window(floor, "the container's start", started)
        return Window(at, f"--logs-since {since.text}", started)
    candidates: list[tuple[float, str]] = []
    if floor is not None:
        candidates.append((floor, "the container's start"))
    if previous is not None:
        candidates.append((previous - HISTORY_SLACK_S, "this target's previous run"))
    if bound_s:
        candidates.append((now - bound_s, f"{_span(bound_s)} ago (logs.since)"))
    if not candidates:
        return Window(None, "the log's beginning", started)
    at, reason = max(candidates, key=lambda c: c[0])
    return Window(at, reason, started)


def engine_offset(api: Any, timeout: float) -> float:
    """The engine's clock minus this machine's, in seconds (to about one second).

    From the ``Date`` header of one ``GET /_ping`` (bounded by ``timeout``); 0.0
    when the engine does not say. Log timestamps are the engine's clock, the run
    history's times this machine's.
    """
    from email.utils import parsedate_to_datetime

    before = time.time()
    try:
        res = api.get(f"{api.base_url}/_ping", timeout=(timeout, timeout))
        date = res.headers.get("Date")
        res.close()
        after = time.time()
        engine = parsedate_to_datetime(date).timestamp() + 0.5 if date else None
    except Exception:  # noqa: BLE001 - no offset is better than no scan
        return 0.0
    return 0.0 if engine is None else engine - (before + after) / 2


def previous_run(history_dir: Path, stack: str, targets: Iterable[str], *,
                 now: float | None = None, limit: int = 200) -> float | None:
    """When this stack and target's previous run began (epoch), from the run history.

    Reads ``history_dir/*.json`` (top-level ``stack``, ``target``, ``started``,
    ``finished``); the entry that finished last wins. Its ``started`` is used
    when present: a line written while that run was in progress may have come
    after its log scan, and must not fall between two windows. A run that did
    not include the logs suite (``per_suite`` without ``logs``) read no log and
    does not count. Anything unreadable is ignored (None: no previous run).
    """
    wanted = {t for t in targets if t}
    now = time.time() if now is None else now
    try:
        files = sorted(history_dir.glob("*.json"), key=lambda p: p.stat().st_mtime,
                       reverse=True)[:limit]
    except OSError:
        return None
    best: tuple[float, float] | None = None  # (finished, start to use)
    for path in files:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("stack") != stack:
            continue
        target = doc.get("target")
        names = set(map(str, target.values())) if isinstance(target, dict) else {str(target)}
        if not names & wanted:
            continue
        per_suite = doc.get("per_suite")
        if isinstance(per_suite, dict) and per_suite and "logs" not in per_suite:
            continue
        finished = _iso_epoch(doc.get("finished"))
        started = _iso_epoch(doc.get("started"))
        end = finished if finished is not None else started
        if end is None or end > now + HISTORY_SLACK_S:
            continue
        use = started if started is not None else end
        if best is None or end > best[0]:
            best = (end, use)
    return best[1] if best else None


def _iso_epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


# --------------------------------------------------------------------------- judging lines


def required_literals(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Lower-case ASCII strings one of which every match of ``pattern`` contains.

    ``(?i)\\b(error|critical)\\b`` -> {"error", "critical"}. None when no such
    set can be derived (``.*``, character classes only, ...). Used to skip the
    regular expression on ASCII lines that contain none of them, which is exact:
    on ASCII text, lower-casing is the whole of case folding, so a line without
    any of the strings (case-insensitively) cannot match.
    """
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser as parser  # type: ignore[attr-defined]

        tree = parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # noqa: BLE001 - a private module: no prefilter then
        return None

    repeats = {c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)}

    def seq(items: Any) -> frozenset[str] | None:
        best: frozenset[str] | None = None
        run: list[str] = []

        def consider(found: frozenset[str] | None) -> None:
            nonlocal best
            if found and (best is None or min(map(len, found)) > min(map(len, best))):
                best = found

        for op, av in items:
            if op is c.LITERAL and av < 128:
                run.append(chr(av).lower())
                continue
            if run:
                consider(frozenset(["".join(run)]))
                run = []
            if op is c.SUBPATTERN:
                consider(seq(av[-1].data))
            elif op is getattr(c, "ATOMIC_GROUP", None):
                consider(seq(av.data))
            elif op is c.BRANCH:
                alts = [seq(p.data) for p in av[1]]
                if alts and all(alts):
                    consider(frozenset().union(*alts))  # type: ignore[arg-type]
            elif op in repeats and av[0] >= 1:
                consider(seq(av[2].data))
        if run:
            consider(frozenset(["".join(run)]))
        return best

    return seq(tree.data)


def _quick(literals: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(s) for s in sorted(set(literals), key=len,
                                                             reverse=True)))


class LineJudge:
    """What the logs suite looks for in a line.

    Error lines: any of ``patterns`` and none of ``allow``; startup lines:
    substrings that must appear; announced secrets: values handed to
    ``announce`` (for masking) as soon as they are seen.
    """

    def __init__(self, patterns: Sequence[re.Pattern[str]], allow: Sequence[re.Pattern[str]],
                 startup: Sequence[str] = (), announce: Callable[[str], Any] | None = None
                 ) -> None:
        self.patterns = list(patterns)
        self.allow = list(allow)
        self.startup = list(startup)
        self.announce = announce
        lits = [required_literals(p) for p in self.patterns]
        self.error_quick = (_quick(s for found in lits for s in found)  # type: ignore[union-attr]
                            if self.patterns and all(lits) else None)
        self.announce_quick = _quick(ANNOUNCED_WORDS)

    def is_error(self, text: str, low: str | None) -> bool:
        """``low``: the line lower-cased when it is ASCII (enables the prefilter)."""
        if not self.patterns:
            return False
        if low is not None and self.error_quick is not None and \
                self.error_quick.search(low) is None:
            return False
        return any(p.search(text) for p in self.patterns) and \
            not any(a.search(text) for a in self.allow)

    def learn(self, text: str, low: str | None) -> None:
        """Hand values the line announces to ``announce``."""
        if self.announce is None:
            return
        if low is not None and self.announce_quick is not None and \
                self.announce_quick.search(low) is None:
            return
        for m in ANNOUNCED.finditer(text):
            self.announce(m.group("value"))


# --------------------------------------------------------------------------- the stream


def _norm_ts(line: bytes) -> tuple[bytes, int] | None:
    """(fixed-width UTC timestamp, offset of the text) of one timestamped line."""
    if line[TS_LEN - 1:TS_LEN + 1] == b"Z ":
        return line[:TS_LEN], TS_LEN + 1
    space = line.find(b" ")
    head = line[:space] if space > 0 else line
    m = re.fullmatch(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", head)
    if not m:
        return None
    frac = (m.group(2) or b"").ljust(9, b"0")
    if m.group(3) != b"Z":
        at = datetime.fromisoformat((m.group(1) + b"+" + m.group(3)[1:] if m.group(3)[:1] == b"+"
                                     else m.group(1) + m.group(3)).decode()).astimezone(UTC)
        base = at.strftime("%Y-%m-%dT%H:%M:%S").encode()
    else:
        base = m.group(1)
    return base + b"." + frac + b"Z", (space + 1 if space > 0 else len(line))


def _ts_epoch(ts: bytes | str) -> float:
    text = ts.decode() if isinstance(ts, bytes) else ts
    return datetime.fromisoformat(text[:19] + "+00:00").timestamp() + float("0." + text[20:29])


def _ts_text(epoch: float) -> str:
    whole = int(epoch)
    nanos = int(round((epoch - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


class _Request:
    """One ``GET /{source}/logs`` (``containers/<name>`` or ``services/<name>``): its
    lines, its deadline, closing it."""

    def __init__(self, api: Any, source: str, params: dict[str, Any], *, tty: bool,
                 connect_timeout: float, deadline_at: float) -> None:
        self.deadline_at = deadline_at
        self.tty = tty
        left = deadline_at - time.monotonic()
        if left <= 0:
            raise _Deadline()
        kind, _, name = source.partition("/")
        url = f"{api.base_url}/v{api.api_version}/{kind}/{quote(name, safe='')}/logs"
        # Connect within the suite's connect timeout; no read may wait past the deadline.
        self.res = api.get(url, params=params, stream=True,
                           timeout=(min(connect_timeout, left), max(0.05, left)))
        if self.res.status_code != 200:
            try:
                body = self.res.raw.read(2048) or b""
            except Exception:  # noqa: BLE001
                body = b""
            self.close()
            try:
                text = json.loads(body).get("message") or body.decode("utf-8", "replace")
            except (ValueError, AttributeError):
                text = body.decode("utf-8", "replace")
            raise LogReadError(f"HTTP {self.res.status_code}: {text.strip()[:200]}")

    def close(self) -> None:
        try:
            self.res.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken stream
            pass

    def _tighten(self) -> None:
        """Shrink the socket's read timeout to what is left before the deadline."""
        left = self.deadline_at - time.monotonic()
        if left <= 0:
            raise _Deadline()
        try:
            sock = self.res.raw.connection.sock
            sock.settimeout(max(0.05, left))
        except Exception:  # noqa: BLE001, S110 - a transport without a socket: read timeout
            pass

    def _payloads(self) -> Iterator[bytes]:
        chunks = self.res.iter_content(chunk_size=None)
        n = 0
        if self.tty:
            for chunk in chunks:
                n += 1
                if n % 64 == 0:
                    self._tighten()
                yield chunk
            return
        buf = b""
        for chunk in chunks:
            n += 1
            if n % 256 == 0:
                self._tighten()
            if not buf and len(chunk) >= 8 and \
                    len(chunk) == 8 + int.from_bytes(chunk[4:8], "big"):
                yield chunk[8:]  # the usual case: one frame, one chunk
                continue
            buf = buf + chunk if buf else chunk
            pos, end_buf = 0, len(buf)
            while end_buf - pos >= 8:
                size = int.from_bytes(buf[pos + 4:pos + 8], "big")
                if size > MAX_FRAME:
                    raise LogReadError(f"malformed log stream (a frame of {size} bytes)")
                end = pos + 8 + size
                if end > end_buf:
                    break
                yield buf[pos + 8:end]
                pos = end
            buf = buf[pos:]

    def lines(self) -> Iterator[bytes]:
        """Timestamped lines, oldest first, without the newline (cut at MAX_LINE)."""
        pending = b""
        skipping = False
        try:
            for data in self._payloads():
                if not pending and not skipping and data.find(b"\n") == len(data) - 1:
                    yield data[:-1]
                    continue
                if pending:
                    data = pending + data
                parts = data.split(b"\n")
                pending = parts.pop()
                for part in parts:
                    if skipping:
                        skipping = False
                        continue
                    yield part
                if len(pending) > MAX_LINE:
                    if not skipping:
                        yield pending[:MAX_LINE]
                    skipping, pending = True, b""
            if pending and not skipping:
                yield pending
        except _Deadline:
            raise
        except Exception as exc:  # noqa: BLE001 - transports fail in their own ways
            if time.monotonic() >= self.deadline_at:
                raise _Deadline() from None
            raise LogReadError(f"{type(exc).__name__}: {str(exc)[:200]}") from None


# --------------------------------------------------------------------------- the scan


@dataclass
class _Tally:
    """What one pass (or the whole scan) read and found."""

    raw: int = 0  # lines delivered and taken, blank ones included (for tail arithmetic)
    lines: int = 0  # non-blank lines scanned
    bytes: int = 0
    first: bytes | None = None
    last: bytes | None = None
    count: int = 0
    matches: list[tuple[str, str]] = field(default_factory=list)
    found: set[str] = field(default_factory=set)

    def then(self, newer: _Tally) -> _Tally:
        """This (older) stretch followed by ``newer``."""
        firsts = [t for t in (self.first, newer.first) if t is not None]
        lasts = [t for t in (self.last, newer.last) if t is not None]
        return _Tally(self.raw + newer.raw, self.lines + newer.lines, self.bytes + newer.bytes,
                      min(firsts) if firsts else None, max(lasts) if lasts else None,
                      self.count + newer.count, (self.matches + newer.matches)[:KEEP_MATCHES],
                      self.found | newer.found)


def _take(judge: LineJudge, tally: _Tally, ts: bytes, text_bytes: bytes, wanted: list[str]
          ) -> None:
    tally.raw += 1
    tally.bytes += len(text_bytes) + 1
    if tally.first is None or ts < tally.first:
        tally.first = ts
    if tally.last is None or ts > tally.last:
        tally.last = ts
    text = text_bytes.decode("utf-8", "replace").rstrip("\r")
    if not text.strip():
        return
    tally.lines += 1
    low = text.lower() if text.isascii() else None
    judge.learn(text, low)
    if judge.is_error(text, low):
        tally.count += 1
        if len(tally.matches) < KEEP_MATCHES:
            # Cut marked ("..."): the masker then also hides a secret's head left at
            # the cut (mask first, then cut, where the caller masks).
            tally.matches.append((ts.decode(), text if len(text) <= 2000 else text[:2000] + "..."))
    if wanted:
        for w in [w for w in wanted if w in text]:
            tally.found.add(w)
            wanted.remove(w)


_TASK = re.compile(rb"(?:^|,)com\.docker\.swarm\.task\.id=([^,]+)")


def _split_details(body: bytes) -> tuple[bytes, bytes]:
    """(task id, message) of a service log line requested with ``details``."""
    head, _, rest = body.partition(b" ")
    m = _TASK.search(head)
    return (m.group(1), rest) if m else (b"", body)


@dataclass
class _Pass:
    """How one pass ended, per stream: a container's log is one stream (key b""),
    a service's log one per task (they interleave; each is in time order)."""

    tally: _Tally
    status: str  # done | cutoff | overflow | deadline
    delivered: dict[bytes, int] = field(default_factory=dict)
    first: dict[bytes, bytes] = field(default_factory=dict)  # oldest line scanned, per stream
    taken: dict[bytes, int] = field(default_factory=dict)


def _pass(api: Any, source: str, judge: LineJudge, *, params: dict[str, Any],
          cutoffs: dict[bytes, bytes], budget: int, wanted: list[str], tty: bool,
          connect_timeout: float, deadline_at: float, keyed: bool = False,
          overlap_max: int = OVERLAP_COUNT_MAX) -> _Pass:
    """Read one tail; scan the lines older than the cutoff of their stream.

    The pass ends ``done`` (the stream ended), ``cutoff`` (a container's stream
    closed at the lines already scanned), ``overflow`` (the budget would be
    exceeded) or at the ``deadline``; ``delivered`` counts every line a stream
    sent (complete only when ``done``). ``keyed``: a service's log, whose task
    streams interleave: lines are told apart by task and the whole tail is read.
    """
    tally = _Tally()
    wanted = list(wanted)
    req = _Request(api, source, params, tty=tty, connect_timeout=connect_timeout,
                   deadline_at=deadline_at)
    out = _Pass(tally, "done")
    delivered, first, taken = out.delivered, out.first, out.taken
    overlap = n = 0
    last_ts = b""
    key = b""
    try:
        for line in req.lines():
            n += 1
            if n % 1024 == 0 and time.monotonic() >= deadline_at:
                out.status = "deadline"
                break
            norm = _norm_ts(line)
            if norm is None:
                ts, body = last_ts, line
            else:
                ts, body = norm[0], line[norm[1]:]
                last_ts = ts
            if keyed:
                key, body = _split_details(body)
            delivered[key] = delivered.get(key, 0) + 1
            cutoff = cutoffs.get(key)
            if cutoff is not None and ts >= cutoff:
                if keyed:
                    continue
                overlap += 1
                if overlap > overlap_max:
                    out.status = "cutoff"
                    break
                continue
            if tally.bytes + len(body) + 1 > budget:
                out.status = "overflow"
                break
            _take(judge, tally, ts, body, wanted)
            taken[key] = taken.get(key, 0) + 1
            if key not in first or ts < first[key]:
                first[key] = ts
    except _Deadline:
        out.status = "deadline"
    finally:
        req.close()
    return out


def scan_log(api: Any, container: str, *, window: Window, judge: LineJudge,
             max_bytes: int = DEFAULT_MAX_BYTES, deadline_s: float = 30.0,
             connect_timeout: float = 5.0, tty: bool = False,
             first_pass: int = FIRST_PASS_LINES, service: str | None = None
             ) -> dict[str, Any]:
    """Scan ``container``'s log over ``window``, newest part first, within the bounds.

    ``api`` is a docker-py ``APIClient`` (``client.api``). ``service``: read that
    Swarm service's log instead (every task, any node; ``docker service logs``).
    Raises :class:`LogReadError` when nothing could be read at all (or
    TimeoutError when the deadline passed first). The result is
    JSON-serializable; see :func:`describe` for the one-line account of what was
    scanned.
    """
    t0 = time.monotonic()
    deadline_at = t0 + deadline_s
    keyed = service is not None
    source = f"services/{service}" if keyed else f"containers/{container}"
    base: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": 0}
    if keyed:
        base["details"] = 1  # the task of each line: tasks' lines interleave
    if window.start is not None and window.start > 0:
        base["since"] = f"{window.start:.9f}"
    total = _Tally()
    cutoffs: dict[bytes, bytes] = {}  # per stream: its oldest line scanned
    taken: dict[bytes, int] = {}  # per stream: lines taken (tail arithmetic)
    wanted = list(judge.startup)
    target, passes, retries = first_pass, 0, 0
    capped = deadline_hit = exhausted = False
    broken: str | None = None  # a read error after some lines were read
    gap: bytes | None = None  # lines just older than this were not all read (deadline)
    cut: bytes | None = None
    while passes < MAX_PASSES:
        passes += 1
        # A service's tail counts per task: the most any one task gave, and more.
        tail = max(taken.values(), default=0) + target
        try:
            got = _pass(
                api, source, judge, params={**base, "tail": tail}, cutoffs=cutoffs,
                budget=max_bytes - total.bytes, wanted=[w for w in wanted if w not in total.found],
                tty=tty, connect_timeout=connect_timeout, deadline_at=deadline_at, keyed=keyed,
                # Reading on past the cutoff to the stream's end tells whether the
                # window is exhausted; worth it only while that part is short.
                overlap_max=OVERLAP_COUNT_MAX if total.raw <= OVERLAP_COUNT_MAX // 2 else 0)
        except _Deadline:
            got = _Pass(_Tally(), "deadline")
        except LogReadError as exc:
            if total.raw:  # what was read stands; the rest is unknown
                broken = str(exc)
                break
            raise
        acc, status = got.tally, got.status
        if status == "overflow":
            # Throw the pass away (it started too far back) and ask for fewer lines.
            capped = True
            avg = max(acc.bytes / max(1, acc.raw), total.bytes / max(1, total.raw), 1.0)
            smaller = min(int(target * 0.9), int((max_bytes - total.bytes) / avg * 0.9))
            retries += 1
            if smaller < 1 or retries > MAX_RETRIES:
                break
            target = smaller
            continue
        if status == "deadline" and acc.raw and cut is not None:
            # Cut short between its start and the lines already read: what it
            # found stands (detection), the message says a stretch was skipped.
            gap = cut
        total = acc.then(total)
        cutoffs.update(got.first)
        for k, v in got.taken.items():
            taken[k] = taken.get(k, 0) + v
        if acc.first is not None:
            cut = acc.first
        if status == "deadline":
            deadline_hit = True
            break
        # Every stream ended short of the tail asked for: the engine's since filter
        # (or the log's beginning) cut it. Or nothing older was left at all.
        if acc.raw == 0 or (status == "done"
                            and all(d < tail for d in got.delivered.values())):
            exhausted = True
            break
        if capped:
            break  # a smaller retry fitted: the budget is as full as it gets
        avg = max(total.bytes / max(1, total.raw), 1.0)
        fit = int((max_bytes - total.bytes) / avg * 0.9)
        if fit < MIN_PASS_LINES or max_bytes - total.bytes < max_bytes * FULL_ENOUGH:
            capped = keyed or _older_exists(api, source, base, total, cut, tty,
                                            connect_timeout, deadline_at)
            exhausted = not capped
            break
        target = min(target * GROWTH if acc.raw >= target // 2 else target, fit)
    if total.raw == 0 and deadline_hit and not exhausted:
        raise TimeoutError(f"no log line read within the {deadline_s:g} s deadline")
    reached_start = exhausted and window.covers_start
    startup: dict[str, Any] | None = None
    missing = [w for w in judge.startup if w not in total.found]
    # Lines will be quoted: first learn what the log announced at its start.
    learn = bool(total.count and judge.announce is not None)
    if not reached_start and (missing or learn) and time.monotonic() < deadline_at:
        startup = _from_start(api, source, judge, window, base, None if keyed else cut,
                              missing, learn, max_bytes, tty, connect_timeout, deadline_at,
                              keyed)
        total.found |= set(startup.pop("found"))
    return {
        "container": container, "service": service,
        "window_start": window.start, "window_reason": window.reason,
        "started": window.started,
        "lines": total.lines, "bytes": total.bytes,
        "first": total.first.decode() if total.first else None,
        "last": total.last.decode() if total.last else None,
        "capped": capped, "max_bytes": max_bytes, "deadline": deadline_hit,
        "gap_before": gap.decode() if gap else None, "broken": broken,
        "deadline_s": deadline_s, "reached_window_start": exhausted, "passes": passes,
        "count": total.count, "matches": [list(m) for m in total.matches],
        "startup_found": [w for w in judge.startup if w in total.found],
        "startup_missing": [w for w in judge.startup if w not in total.found],
        "startup_pass": startup, "seconds": round(time.monotonic() - t0, 3),
    }


def _older_exists(api: Any, source: str, base: dict[str, Any], total: _Tally,
                  cut: bytes | None, tty: bool, connect_timeout: float,
                  deadline_at: float) -> bool:
    """Whether the window holds lines older than the oldest scanned (one small read)."""
    if cut is None:
        return False
    try:
        req = _Request(api, source, {**base, "tail": total.raw + FIRST_PASS_LINES}, tty=tty,
                       connect_timeout=connect_timeout, deadline_at=deadline_at)
    except (_Deadline, LogReadError):
        return True  # unknown: say capped rather than complete
    try:
        for line in req.lines():
            norm = _norm_ts(line)
            return norm is not None and norm[0] < cut
        return False
    except (_Deadline, LogReadError):
        return True
    finally:
        req.close()


def _from_start(api: Any, source: str, judge: LineJudge, window: Window,
                base: dict[str, Any], cut: bytes | None, missing: list[str], learn: bool,
                max_bytes: int, tty: bool, connect_timeout: float, deadline_at: float,
                keyed: bool = False) -> dict[str, Any]:
    """Read forward from the container's start: startup lines, announced secrets.

    Stops when the lines already scanned are reached, when every missing
    startup line was found (and, when ``learn``, the first LEARN_BYTES were
    read), at the cap or at the deadline.
    """
    params = {k: v for k, v in base.items() if k != "since"}
    params["tail"] = "all"
    if window.started:
        params["since"] = f"{window.started - START_SLACK_S:.9f}"
    wanted = list(missing)
    found: list[str] = []
    read = lines = 0
    status = "to the log's end"
    try:
        req = _Request(api, source, params, tty=tty, connect_timeout=connect_timeout,
                       deadline_at=deadline_at)
    except (_Deadline, LogReadError) as exc:
        return {"found": [], "lines": 0, "bytes": 0, "status": type(exc).__name__}
    try:
        for line in req.lines():
            norm = _norm_ts(line)
            body = line[norm[1]:] if norm else line
            if keyed:
                body = _split_details(body)[1]
            if cut is not None and norm is not None and norm[0] >= cut:
                status = "reached the scanned lines"
                break
            read += len(body) + 1
            if read > max_bytes:
                status = "capped"
                break
            text = body.decode("utf-8", "replace")
            lines += 1
            if learn and read <= LEARN_BYTES:
                judge.learn(text, text.lower() if text.isascii() else None)
            for w in [w for w in wanted if w in text]:
                found.append(w)
                wanted.remove(w)
            if not wanted and (not learn or read > LEARN_BYTES):
                status = "found" if missing else "learnt"
                break
            if lines % 1024 == 0 and time.monotonic() >= deadline_at:
                status = "deadline"
                break
    except _Deadline:
        status = "deadline"
    except LogReadError as exc:
        status = str(exc)
    finally:
        req.close()
    return {"found": found, "lines": lines, "bytes": read, "status": status}


# --------------------------------------------------------------------------- words


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= max(size, 2 * 86400 if unit == "d" else 0) and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def clock(epoch: float | None, *, date: bool = False) -> str:
    """Epoch seconds as 'HH:MM:SS UTC' (with the date when asked)."""
    if epoch is None:
        return "?"
    when = datetime.fromtimestamp(epoch, UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC" if date else "%H:%M:%S UTC")


def size_text(n: float) -> str:
    """Bytes as '512 B', '2.1 MB' (binary units, as the cap is configured)."""
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) \
                else f"{value:.1f} {unit}"
    return f"{int(n)} B"


def describe(result: dict[str, Any]) -> str:
    """What a scan read: '12,345 lines, 03:10:05–03:40:12 UTC, capped at 50 MB'."""
    first, last = result.get("first"), result.get("last")
    if first and last:
        a, b = _ts_epoch(first), _ts_epoch(last)
        same_day = first[:10] == last[:10]
        span = (f"{clock(a).removesuffix(' UTC')}–{clock(b)}" if same_day
                else f"{clock(a, date=True).removesuffix(' UTC')}–{clock(b, date=True)}")
    else:
        span = "no lines in the window"
    n = result["lines"]
    text = f"{n:,} line{'' if n == 1 else 's'} ({size_text(result['bytes'])}), {span}"
    if result.get("capped"):
        text += f", capped at {size_text(result['max_bytes'])} (older lines not read)"
    if result.get("deadline"):
        text += f", stopped at the {result.get('deadline_s', 0):g} s deadline"
        if result.get("gap_before"):
            text += (f" (lines just before {clock(_ts_epoch(result['gap_before']))} "
                     "not all read)")
    if result.get("broken"):
        text += f", cut short by {result['broken'][:120]}"
    return text


def window_text(result: dict[str, Any]) -> str:
    """'from the container's start (03:10:04 UTC)'."""
    start = result.get("window_start")
    return f"window from {result.get('window_reason')}" + (f" ({clock(start)})" if start else "")


def since_arg(result: dict[str, Any]) -> str:
    """A ``docker logs --since`` value for what was (or should be) read."""
    if result.get("capped") and result.get("first"):
        return str(result["first"])
    start = result.get("window_start")
    return _ts_text(start) if start else "10m"
