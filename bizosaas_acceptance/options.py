"""Every setting of the suite, declared once.

Each :class:`Option` is registered as a command-line option *and* an ini key in
one option group, with one help string. :func:`resolve` is the single place
where a value is looked up, in this order: command line, environment variable,
ini file, default. A bad value raises :class:`pytest.UsageError` naming where it
came from (``--gate-threshold``, ``$BIZOSAAS_GATE_THRESHOLD`` or the ini key),
so pytest exits with status 4 and one line instead of a traceback.

An empty value is a value, never "use the default": ``BIZOSAAS_REDIS_PASSWORD=``
means no password. Where empty is not a valid value (a number, a host, a
token) it is a bad value like any other; unset the variable for the default.
The one exception is ``DOCKER_HOST``, where empty means the local engine, as
it does for Docker itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bizosaas_acceptance.probes.logs import parse_since

GROUP = "bizosaas acceptance"


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}")
        return value

    parse.__name__ = f"number {lo:g}..{hi:g}"
    return parse


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


_positive_float.__name__ = "positive number"


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a whole number greater than 0")
    return value


_positive_int.__name__ = "positive whole number"


def _bool(raw: str) -> bool:
    low = str(raw).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


_bool.__name__ = "true/false"


def _duration(raw: str) -> float:
    from bizosaas_acceptance.probes.soak import parse_duration

    return parse_duration(raw)


_duration.__name__ = "duration such as 60s, 10m or 1h"


def _text(raw: str) -> str:
    return str(raw)


_text.__name__ = "text"


def _stack_name(raw: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", raw):
        raise ValueError("must be a Docker stack name (letters, digits, _ . -; "
                         "as given to docker stack deploy)")
    return raw


_stack_name.__name__ = "stack name"


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    parse.__name__ = "|".join(choices)
    return parse


@dataclass(frozen=True)
class Option:
    """One setting: its flag, environment variable, ini key, default and help."""

    name: str  # ini key and stash name; the flag is --name-with-dashes
    env: str
    default: str | None
    help: str
    parse: Callable[[str], Any] = _text
    secret: bool = False  # never echoed back in errors or headers
    multiple: bool = False  # command line may repeat it
    aliases: tuple[str, ...] = ()  # further flags for the same option (e.g. --env)
    #: What an empty value means: "invalid" (a one-line error), "empty" (the empty
    #: string, e.g. no password) or "unset" (as if not given; DOCKER_HOST only).
    empty: str = "invalid"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "bizosaas_" + self.name


OPTIONS: tuple[Option, ...] = (
    Option("stack", "BIZOSAAS_STACK", None,
           "Stack manifest (YAML) describing the target. Default: the BizOSaaS "
           "Phase 2 staging topology in stacks/bizosaas-staging.yaml."),
    Option("compose", "BIZOSAAS_COMPOSE", None,
           "Derive the stack from a Docker Compose file (repeatable; "
           "environment: paths separated by ':'). --stack then acts as an overlay.",
           multiple=True),
    Option("target_host", "BIZOSAAS_HOST", "127.0.0.1",
           "Host where the services' published ports answer."),
    Option("environment", "BIZOSAAS_ENV", None,
           "Environment to test (--env for short): the manifest's section of that name "
           "switches target host, thresholds and whether writes are allowed "
           "(compose-derived stacks know staging and production; production: no writes).",
           _text, aliases=("--env",)),
    Option("docker_host", "DOCKER_HOST", None,
           "Docker endpoint (unix://, tcp://, ssh://user@host). Default (also when "
           "empty): the local engine.", empty="unset"),
    Option("swarm_stack", "BIZOSAAS_SWARM_STACK", None,
           "Check the Docker Swarm stack NAME (docker stack deploy, as Dokploy's stack "
           "type): the services labelled com.docker.stack.namespace=NAME; manifest "
           "service x is the Swarm service NAME_x. DOCKER_HOST must reach a manager. "
           "Default: containers by name (docker compose).", _stack_name),
    Option("postgres_user", "BIZOSAAS_POSTGRES_USER", "bizosaas",
           "PostgreSQL user the suite connects as (read-only use)."),
    Option("postgres_password", "BIZOSAAS_POSTGRES_PASSWORD", "staging-pg-password",
           "PostgreSQL password (empty for none). Default: the reference stack's.",
           secret=True, empty="empty"),
    Option("redis_password", "BIZOSAAS_REDIS_PASSWORD", "staging-redis-password",
           "Redis password (empty for none). Default: the reference stack's.", secret=True,
           empty="empty"),
    Option("vault_token", "BIZOSAAS_VAULT_TOKEN", "staging-root-token",
           "Vault/OpenBao token with read access to the services' secrets. "
           "Default: the reference stack's.", secret=True),
    Option("api_token", "BIZOSAAS_API_TOKEN", None,
           "Bearer token for protected API endpoints. Default: read from Vault "
           "at the manifest's api_token_path.", secret=True),
    Option("http_timeout", "BIZOSAAS_HTTP_TIMEOUT", "5",
           "Seconds before an HTTP request to a service counts as failed.",
           _positive_float),
    Option("connect_timeout", "BIZOSAAS_CONNECT_TIMEOUT", "5",
           "Seconds to wait for an infrastructure client (PostgreSQL, Redis, "
           "Vault, Temporal, Docker) to become ready before its checks fail.",
           _positive_float),
    Option("run_id", "BIZOSAAS_RUN_ID", None,
           "Id of this run; tags every record integration checks create. "
           "Default: generated."),
    Option("gate_threshold", "BIZOSAAS_GATE_THRESHOLD", "95",
           "Pass rate (percent) the run must exceed for the gate to pass.",
           _float_range(0, 100)),
    Option("gate_critical", "BIZOSAAS_GATE_CRITICAL", "true",
           "Fail the gate when any check of a critical service fails, "
           "whatever the pass rate.", _bool),
    Option("gate_json", "BIZOSAAS_GATE_JSON", "reports/gate.json",
           "Where to write the machine-readable verdict (JSON)."),
    Option("soak", "BIZOSAAS_SOAK", None,
           "Soak for this long (60s, 10m, 1h) before the checks: bounded read-only "
           "traffic on every documented GET, sampled every few seconds; the soak "
           "checks (-m soak) fail on trends (memory slope, connection growth, "
           "error-rate and p95 drift; thresholds in the manifest's soak section). "
           "Ctrl-C ends it early with a verdict on what was measured.",
           _duration),
    Option("baseline", "BIZOSAAS_BASELINE", None,
           "Compare this run with the gate.json at this path (e.g. the last good "
           "production run kept by CI) instead of the previous run against the same "
           "stack and target in reports/history/."),
    Option("history_runs", "BIZOSAAS_HISTORY_RUNS", "50",
           "How many past runs reports/history/ keeps (older ones are pruned).",
           _positive_int),
    Option("perf_samples", "BIZOSAAS_PERF_SAMPLES", "20",
           "Requests per endpoint in the performance suite.", _positive_int),
    Option("perf_concurrency", "BIZOSAAS_PERF_CONCURRENCY", "4",
           "Concurrent clients in the performance suite's error-rate check.",
           _positive_int),
    Option("allow_writes", "BIZOSAAS_ALLOW_WRITES", None,
           "Allow checks to create (and remove) tagged records on the target "
           "(--allow-writes=true). Default: the environment section's allow_writes "
           "(--env); without one, writes are on only against the reference stack "
           "(the built-in manifest at 127.0.0.1 or localhost).", _bool),
    Option("logs_since", "BIZOSAAS_LOGS_SINCE", None,
           "How far back the logs suite reads each container's log: a duration (30m, 2h, "
           "90s) or an ISO 8601 timestamp, never before the container's start. Default: "
           "from the container's start or this target's previous run, whichever is later, "
           "at most the manifest's logs.since back.", parse_since),
)

BY_NAME = {opt.name: opt for opt in OPTIONS}


def ini_name(opt: Option) -> str:
    """Ini key of an option: gate_*/perf_* keep their name, the rest get a prefix."""
    return opt.name if opt.name.startswith(("gate_", "perf_")) else "bizosaas_" + opt.name


def addoption(parser: pytest.Parser) -> None:
    """Register every option and its ini key in one group."""
    group = parser.getgroup("bizosaas", GROUP)
    for opt in OPTIONS:
        extra = f" [env: {opt.env}]"
        if opt.default is not None and not opt.secret:
            extra += f" [default: {opt.default}]"
        group.addoption(
            opt.flag,
            *opt.aliases,
            dest=opt.dest,
            action="append" if opt.multiple else "store",
            default=None,
            metavar=opt.name.upper(),
            help=opt.help + extra,
        )
        parser.addini(
            ini_name(opt),
            opt.help,
            type="linelist" if opt.multiple else "string",
            default=[] if opt.multiple else None,
        )


def lookup(config: pytest.Config, opt: Option) -> tuple[Any, str]:
    """Return the raw value and the place it came from."""
    cli = config.getoption(opt.dest, None)
    if cli is not None and cli != []:
        return cli, opt.flag
    # Set but empty is a value (see the module's docstring), not "unset".
    env = os.environ.get(opt.env)
    if env is not None:
        if opt.multiple:
            return [p for p in env.split(os.pathsep) if p], f"${opt.env}"
        return env, f"${opt.env}"
    try:
        ini = config.getini(ini_name(opt))  # None when the key is absent
    except ValueError:
        ini = None
    if ini is not None and ini != []:
        return ini, f"ini key '{ini_name(opt)}'"
    if opt.default is None:
        return ([] if opt.multiple else None), "default"
    return opt.default, "default"


def resolve(config: pytest.Config, name: str) -> Any:
    """Resolve one setting: command line, environment, ini, default.

    Raises :class:`pytest.UsageError` with the source and the fix for a bad value.
    """
    opt = BY_NAME[name]
    raw, where = lookup(config, opt)
    if raw is None:
        return None
    if opt.multiple:
        return list(raw)
    if isinstance(raw, str) and raw == "" and where != "default":
        if opt.empty == "empty":
            return ""
        if opt.empty == "unset":
            return None if opt.default is None else opt.parse(opt.default)
        default = ("" if opt.default is None or opt.secret else f" ({opt.default})")
        kind = getattr(opt.parse, "__name__", "text")
        raise pytest.UsageError(
            f"{where}: empty value for {opt.flag} (expected "
            f"{'a non-empty value' if kind == 'text' else kind}); give a value, or unset "
            f"{where if where.startswith('$') else 'it'} for the default{default}")
    try:
        return opt.parse(raw)
    except (TypeError, ValueError) as exc:
        shown = "<hidden>" if opt.secret else repr(raw)
        raise pytest.UsageError(
            f"{where}: invalid value {shown} for {opt.flag}: {exc} "
            f"(expected {getattr(opt.parse, '__name__', 'text')})"
        ) from None


def resolve_all(config: pytest.Config) -> dict[str, Any]:
    """Resolve every option once (at configure time, so errors exit 4 early)."""
    return {opt.name: resolve(config, opt.name) for opt in OPTIONS}
