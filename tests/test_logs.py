"""Suite 9: logs. Per container, over a bounded window: no line matching the
manifest's ``logs.error_patterns`` outside ``logs.allow``; and the expected
startup lines (``services.<key>.startup_lines``) present since it last started.

The window (``bizosaas_acceptance.probes.logs``): from the container's start,
or from this target's previous run when that is later (the run history beside
gate.json, ``reports/history/``), at most ``logs.since`` (24h) back;
``--logs-since`` (a duration or a timestamp) replaces that rule. At most
``logs.max_bytes`` (50 MB) of it is read, the most recent part, streamed and
never held whole, and every Docker call ends within the suite's deadline.
Every message says what was read ("12,345 lines (2.1 MB), 03:10:05–03:40:12
UTC, capped at 50 MB").

Each container's log is read once per run and the verdict shared by every
worker. Quoted lines are cut short and masked: container environment secrets,
the suite's credentials, and values a log announces itself (Vault's dev mode
prints its unseal key and root token) never reach a report.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from bizosaas_acceptance.model.manifest import Service, Stack, parse_size
from bizosaas_acceptance.model.target import Target
from bizosaas_acceptance.outcome import Cause, check, fail
from bizosaas_acceptance.probes import logs as probe
from bizosaas_acceptance.probes.docker import STREAM_FACTOR, docker_time
from bizosaas_acceptance.probes.snapshot import shared
from bizosaas_acceptance.secrets import MASKER, clip
from bizosaas_acceptance.state import SETTINGS

pytestmark = [pytest.mark.logs]

QUOTE_LINES = 5
QUOTE_CHARS = 200
INDENT = "\n            "
CAUSE_WORDS = (
    (re.compile(r"(?i)postgres|database|psycopg|sql"), Cause.DATABASE),
    (re.compile(r"(?i)redis|cache"), Cause.REDIS),
    (re.compile(r"(?i)vault|openbao"), Cause.VAULT),
    (re.compile(r"(?i)temporal|workflow"), Cause.TEMPORAL),
    (re.compile(r"(?i)api[ _-]?key|unauthori[sz]ed|stripe|paypal|openai|anthropic"),
     Cause.API_KEY),
    (re.compile(r"(?i)out of memory|oom|memoryerror"), Cause.MEMORY),
)


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


def history_dir(config: pytest.Config) -> Path:
    """Where the run history lives: ``history/`` beside gate.json (reports/history),
    a relative --gate-json taken from where pytest was invoked (as the gate does)."""
    raw = str(config.stash[SETTINGS].get("gate_json") or "reports/gate.json")
    path = Path(os.path.expandvars(raw)).expanduser()
    return (path if path.is_absolute() else config.invocation_params.dir / path).parent \
        / "history"


def window_for(api: Any, stack: Stack, target: Target, settings: dict[str, Any],
               attrs: dict[str, Any]) -> probe.Window:
    """This container's window: --logs-since, else start / previous run / logs.since."""
    started = docker_time((attrs.get("State") or {}).get("StartedAt"))
    since = settings.get("logs_since")
    previous = None
    if since is None:
        previous = probe.previous_run(settings["_history_dir"], stack.name,
                                      (target.host, target.docker_host or "",
                                       target.docker_display()))
    offset = (probe.engine_offset(api, target.connect_timeout)
              if previous is not None or since is not None else 0.0)
    bound = probe.parse_duration(str(stack.logs.get("since") or probe.DEFAULT_SINCE))
    return probe.choose_window(started=started, now=time.time(), since=since, bound_s=bound,
                               previous=previous, offset=offset,
                               since_start=bool(stack.logs.get("since_start", True)))


def _log_scan(svc: Service, docker_client: Any, docker_state: Any, stack: Stack,
              target: Target, settings: dict[str, Any], run_id: str) -> dict[str, Any]:
    __tracebackhide__ = True
    attrs = docker_state.log_attrs(svc)  # Swarm: from the task, on any node
    if attrs is None:
        fail(f"[LOGS] {svc.key}: container {svc.container} not found",
             expected=f"a container named {svc.container}", seen="no such container",
             cause=Cause.WONT_START, next_cmd=f"docker ps -a --filter name={svc.container}")
    MASKER.add_env((attrs.get("Config") or {}).get("Env") or [])
    patterns, allow = compiled(stack, "error_patterns"), compiled(stack, "allow")
    judge = probe.LineJudge(patterns, allow, svc.startup_lines, announce=MASKER.add)
    max_bytes = parse_size(stack.logs.get("max_bytes")) or probe.DEFAULT_MAX_BYTES
    # The suite's bound for a Docker stream: STREAM_FACTOR connect timeouts in all.
    deadline_s = STREAM_FACTOR * target.connect_timeout

    def produce() -> dict[str, Any]:
        window = window_for(docker_client.api, stack, target, settings, attrs)
        result = probe.scan_log(docker_client.api, svc.container, window=window, judge=judge,
                                max_bytes=max_bytes, deadline_s=deadline_s,
                                connect_timeout=target.connect_timeout,
                                tty=bool((attrs.get("Config") or {}).get("Tty")),
                                # A Swarm task's log is read as its service's log
                                # (every task, any node).
                                service=swarm_service(attrs))
        # Masked here, after the scan: a value announced anywhere it read counts.
        result["matches"] = [[ts, MASKER.mask(line)] for ts, line in result["matches"]]
        return result

    try:
        return shared(run_id, f"logs-{svc.container}", produce)
    except Exception as exc:  # noqa: BLE001 - the Docker API's errors vary by transport
        fail(f"[LOGS] {svc.key}: cannot read the log of {svc.container}",
             expected=f"the container's log through the Docker API within {deadline_s:g} s",
             seen=f"{type(exc).__name__}: {clip(exc, 200)}", cause=Cause.WONT_START,
             next_cmd=f"{logs_cmd(swarm_service(attrs))} --tail 50 {svc.container}")


def _cause(lines: list[str]) -> tuple[str, str]:
    for rx, cause in CAUSE_WORDS:
        if any(rx.search(line) for line in lines):
            return cause, "the quoted lines name it"
    return Cause.APP, "the service logs errors in the window read"


def swarm_service(attrs: dict[str, Any]) -> str | None:
    """The Swarm service whose task this container is (None: a plain container)."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    return labels.get("com.docker.swarm.service.name") or None


def logs_cmd(service: str | None) -> str:
    """``docker logs``, or ``docker service logs`` for a Swarm task."""
    return "docker service logs" if service else "docker logs"


def _grep_cmd(svc: Service, result: dict[str, Any], patterns: list[str]) -> str:
    words = "|".join(re.sub(r"\(\?i\)|\\b|[()]", "", p) for p in patterns) or "error"
    return (f"{logs_cmd(result.get('service'))} --since {probe.since_arg(result)} "
            f"{svc.container} 2>&1 "
            f"| grep -Ei '{words}'")


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The run's resolved options (--logs-since, ...) and where its history is."""
    return {**pytestconfig.stash[SETTINGS], "_history_dir": history_dir(pytestconfig)}


def test_log_free_of_errors(service: Service, docker_client, docker_state, stack: Stack,
                            target: Target, settings: dict[str, Any], run_id: str) -> None:
    result = _log_scan(service, docker_client, docker_state, stack, target, settings, run_id)
    texts = [line for _, line in result["matches"]]
    quoted = [(m if len(m) <= QUOTE_CHARS else m[:QUOTE_CHARS - 3] + "...")
              for m in texts[:QUOTE_LINES]]
    cause, why = _cause(texts)
    more = result["count"] - len(quoted)
    scanned = probe.describe(result)
    check(result["count"] == 0,
          f"[LOGS] {service.key}: {result['count']} error line(s) in {scanned}",
          expected="no line matching " + " or ".join(stack.logs.get("error_patterns") or [])
                   + " outside the allow-list (manifest logs.allow)",
          seen=INDENT + INDENT.join(quoted)
               + (f"{INDENT}... and {more} more" if more > 0 else "")
               + f"{INDENT}read: {scanned}; {probe.window_text(result)}",
          cause=cause, why=why,
          next_cmd=_grep_cmd(service, result, stack.logs.get("error_patterns") or []))


def test_startup_lines(startup_service: Service, docker_client, docker_state, stack: Stack,
                       target: Target, settings: dict[str, Any], run_id: str) -> None:
    svc = startup_service
    result = _log_scan(svc, docker_client, docker_state, stack, target, settings, run_id)
    missing = result["startup_missing"]
    text = " ".join(missing).lower()
    cause = (Cause.DATABASE if "postgres" in text else Cause.REDIS if "redis" in text
             else Cause.TEMPORAL if "temporal" in text else Cause.WONT_START)
    extra = result.get("startup_pass")
    read = probe.describe(result) + f"; {probe.window_text(result)}"
    if extra:
        read += (f"; and from the container's start: {extra['lines']:,} lines "
                 f"({probe.size_text(extra['bytes'])}, {extra['status']})")
    started = probe.clock(result.get("started"), date=True)
    since = probe.since_arg({"window_start": result.get("started")})
    check(not missing, f"[LOGS] {svc.key}: startup line(s) missing: {', '.join(missing)}",
          expected=f"since the container's start ({started}): "
                   + ", ".join(repr(w) for w in svc.startup_lines),
          seen="found " + (", ".join(repr(w) for w in result["startup_found"])
                            or "none of them") + f"{INDENT}read: {read}",
          cause=cause, why="the service did not (yet) connect to a dependency it needs",
          next_cmd=[f"{logs_cmd(result.get('service'))} --since {since} {svc.container} 2>&1 "
                    "| head -30",
                    f"docker service ps --no-trunc {svc.container}" if result.get("service")
                    else f"docker inspect --format '{{{{.State.StartedAt}}}}' {svc.container}"])
