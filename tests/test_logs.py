"""Suite 9: logs. Per container, since it last started: no line matching the
manifest's ``logs.error_patterns`` outside ``logs.allow``, and the expected
startup lines (``services.<key>.startup_lines``) present.

Each container's log is read once per run (``docker logs --since <StartedAt>``,
streamed, never held whole) and the verdict shared by every worker. Quoted
lines are cut short and masked: container environment secrets, the suite's
credentials, and values a log announces itself (Vault's dev mode prints its
unseal key and root token) never reach a report.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest

from bizosaas_acceptance.model.manifest import Service, Stack
from bizosaas_acceptance.outcome import Cause, check, fail
from bizosaas_acceptance.probes.docker import log_stream
from bizosaas_acceptance.probes.snapshot import shared
from bizosaas_acceptance.secrets import MASKER, clip

pytestmark = [pytest.mark.logs]

QUOTE_LINES = 5
QUOTE_CHARS = 200
KEEP_MATCHES = 20
#: Lines that announce a secret value: "Root Token: x", "password=x", "api_key: x".
ANNOUNCED = re.compile(r"(?i)\b(?:root token|unseal key|token|password|passwd|secret(?:[ _]key)?|"
                       r"api[ _-]?key)\b\s*[:=]\s*[\"']?(?P<value>[^\s\"',}]{4,})")
CAUSE_WORDS = (
    (re.compile(r"(?i)postgres|database|psycopg|sql"), Cause.DATABASE),
    (re.compile(r"(?i)redis|cache"), Cause.REDIS),
    (re.compile(r"(?i)vault|openbao"), Cause.VAULT),
    (re.compile(r"(?i)temporal|workflow"), Cause.TEMPORAL),
    (re.compile(r"(?i)api[ _-]?key|unauthori[sz]ed|stripe|paypal|openai|anthropic"),
     Cause.API_KEY),
    (re.compile(r"(?i)out of memory|oom|memoryerror"), Cause.MEMORY),
)


def started_epoch(started_at: str) -> float:
    """Docker's RFC 3339 StartedAt (nanoseconds) as epoch seconds."""
    text = started_at.rstrip("Z")
    head, _, frac = text.partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + (float("0." + frac[:6]) if frac else 0.0)


def compiled(stack: Stack, key: str) -> list[re.Pattern[str]]:
    """The manifest's ``logs.<key>`` expressions; a bad one fails with its field."""
    __tracebackhide__ = True
    out = []
    for n, text in enumerate(stack.logs.get(key) or []):
        try:
            out.append(re.compile(text))
        except re.error as exc:
            fail(f"[LOGS] {stack.source}: logs.{key}.{n}: invalid regular expression",
                 expected="a Python regular expression (inline flags like (?i) at the start)",
                 seen=f"{text!r}: {exc}", cause=Cause.CONFIG,
                 why="the manifest's log patterns cannot be used",
                 next_cmd=f"python3 -c 'import re; re.compile({text!r})'")
    return out


def scan(docker_client: Any, svc: Service, attrs: dict[str, Any], stack: Stack,
         patterns: list[re.Pattern[str]], allow: list[re.Pattern[str]]) -> dict[str, Any]:
    """Stream the container's log since its start; keep only what the checks need."""
    started = attrs["State"].get("StartedAt") or ""
    # One second of slack: what a process prints in its first instant can be
    # stamped before State.StartedAt (an immediate crash line must not be missed).
    since = (max(0, int(started_epoch(started)) - 1)
             if stack.logs.get("since_start", True) and started else None)
    wanted = list(svc.startup_lines)
    found: set[str] = set()
    matches: list[str] = []
    count = total = 0

    def consider(raw: bytes) -> None:
        nonlocal count, total
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not line.strip():
            return
        total += 1
        for m in ANNOUNCED.finditer(line):
            MASKER.add(m.group("value"))
        for w in wanted:
            if w not in found and w in line:
                found.add(w)
        if any(p.search(line) for p in patterns) and not any(a.search(line) for a in allow):
            count += 1
            if len(matches) < KEEP_MATCHES:
                # Cut marked: masked below, a secret's head left at the cut goes too.
                matches.append(line if len(line) <= 2000 else line[:2000] + "...")

    kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "stream": True, "follow": False}
    if since is not None:
        kwargs["since"] = since
    pending = b""
    # A Swarm task's log is read as its service's log (every task, any node).
    for chunk in log_stream(docker_client, svc.container, attrs, **kwargs):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            consider(raw)
    if pending:
        consider(pending)
    # Masked here, after the whole log was read: a value announced late still counts.
    return {"started": started, "lines": total, "count": count,
            "matches": [MASKER.mask(m) for m in matches],
            "startup_found": sorted(found), "startup_missing": [w for w in wanted
                                                                if w not in found]}


def _log_scan(svc: Service, docker_client: Any, docker_state: Any, stack: Stack,
              run_id: str) -> dict[str, Any]:
    __tracebackhide__ = True
    attrs = docker_state.log_attrs(svc)  # Swarm: from the task, on any node
    if attrs is None:
        fail(f"[LOGS] {svc.key}: container {svc.container} not found",
             expected=f"a container named {svc.container}", seen="no such container",
             cause=Cause.WONT_START, next_cmd=f"docker ps -a --filter name={svc.container}")
    MASKER.add_env((attrs.get("Config") or {}).get("Env") or [])
    patterns, allow = compiled(stack, "error_patterns"), compiled(stack, "allow")
    try:
        return shared(run_id, f"logs-{svc.container}",
                      lambda: scan(docker_client, svc, attrs, stack, patterns, allow))
    except Exception as exc:  # noqa: BLE001 - the Docker API's errors vary by transport
        fail(f"[LOGS] {svc.key}: cannot read the log of {svc.container}",
             expected="the container's log through the Docker API",
             seen=f"{type(exc).__name__}: {clip(exc, 200)}", cause=Cause.WONT_START,
             next_cmd=f"docker logs --tail 50 {svc.container}")


def _cause(lines: list[str]) -> tuple[str, str]:
    for rx, cause in CAUSE_WORDS:
        if any(rx.search(line) for line in lines):
            return cause, "the quoted lines name it"
    return Cause.APP, "the service logs errors since it started"


def _since_cmd(svc: Service, started: str, patterns: list[str]) -> str:
    words = "|".join(re.sub(r"\(\?i\)|\\b|[()]", "", p) for p in patterns) or "error"
    return f"docker logs --since {started or '10m'} {svc.container} 2>&1 | grep -Ei '{words}'"


def test_log_free_of_errors(service: Service, docker_client, docker_state, stack: Stack,
                            run_id: str) -> None:
    result = _log_scan(service, docker_client, docker_state, stack, run_id)
    quoted = [clip(m, QUOTE_CHARS) for m in result["matches"][:QUOTE_LINES]]
    cause, why = _cause(result["matches"])
    more = result["count"] - len(quoted)
    check(result["count"] == 0,
          f"[LOGS] {service.key}: {result['count']} error line(s) since start "
          f"({result['started'] or '?'})",
          expected="no line matching " + " or ".join(stack.logs.get("error_patterns") or [])
                   + " outside the allow-list (manifest logs.allow)",
          seen="\n            " + "\n            ".join(quoted)
               + (f"\n            ... and {more} more" if more > 0 else ""),
          cause=cause, why=why,
          next_cmd=_since_cmd(service, result["started"], stack.logs.get("error_patterns")
                              or []))


def test_startup_lines(startup_service: Service, docker_client, docker_state, stack: Stack,
                       run_id: str) -> None:
    svc = startup_service
    result = _log_scan(svc, docker_client, docker_state, stack, run_id)
    missing = result["startup_missing"]
    text = " ".join(missing).lower()
    cause = (Cause.DATABASE if "postgres" in text else Cause.REDIS if "redis" in text
             else Cause.TEMPORAL if "temporal" in text else Cause.WONT_START)
    check(not missing, f"[LOGS] {svc.key}: startup line(s) missing: {', '.join(missing)}",
          expected="since start: " + ", ".join(repr(w) for w in svc.startup_lines),
          seen=f"{result['lines']} lines since {result['started'] or '?'}; found "
               + (", ".join(repr(w) for w in result["startup_found"]) or "none of them"),
          cause=cause, why="the service did not (yet) connect to a dependency it needs",
          next_cmd=[f"docker logs --since {result['started'] or '10m'} {svc.container} "
                    "2>&1 | head -30", f"docker inspect --format '{{{{.State.StartedAt}}}}' "
                    f"{svc.container}"])
