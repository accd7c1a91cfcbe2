"""The logs suite's bounded window (issue 17): what it reads, what it still catches.

- ``--logs-since``: durations and timestamps parse; a bad value is one line,
  exit 4, naming the option (or its environment variable) and the fix;
- the window rule (container start, previous run, logs.since) and the run
  history it reads;
- the prefilter that keeps scanning cheap never hides a matching line;
- against real throwaway containers (``bizosaas-logtest-*``, no network, their
  own synthetic output; the reference stack is not touched): the byte cap
  keeps the most recent part, the window drops what is older, startup lines
  are still found from the start, and the deadline holds;
- end to end: an error line written just before a run, after the previous run
  of the same target, is caught.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bizosaas_acceptance.probes import logs as probe
from bizosaas_acceptance.probes.docker import docker_time
from selftest.hostile import write_manifest
from selftest.stackrun import run_suite

IMAGE = "local/bizosaas-base:1"
ERRORS = [re.compile(r"(?i)\b(error|critical|traceback|panic)\b")]


# --------------------------------------------------------------------------- --logs-since


@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800), ("2h", 7200), ("90s", 90), ("1h30m", 5400), ("7d", 604800), ("0.5h", 1800),
])
def test_durations_parse(text: str, seconds: float) -> None:
    since = probe.parse_since(text)
    assert since.seconds == seconds and since.at is None
    assert since.start(10_000_000) == 10_000_000 - seconds


def test_timestamps_parse() -> None:
    assert probe.parse_since("2024-05-01T03:10:00Z").at == 1714533000
    assert probe.parse_since("2024-05-01T05:10:00+02:00").at == 1714533000
    # No zone: local time, as `docker logs --since` reads it.
    naive = probe.parse_since("2024-05-01T03:10:00").at
    assert naive is not None and abs(naive - 1714533000) <= 14 * 3600


@pytest.mark.parametrize("bad", ["30x", "", "5", "0s", "soon", "2099-01-01T00:00:00Z", "-2h"])
def test_bad_values_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        probe.parse_since(bad)


@pytest.mark.parametrize(("source", "value", "where", "why"), [
    ("cli", "30x", "--logs-since", "neither a duration nor an ISO 8601 timestamp"),
    ("env", "yesterday", "$BIZOSAAS_LOGS_SINCE", "neither a duration nor an ISO 8601 timestamp"),
    ("cli", "2099-01-01T00:00:00Z", "--logs-since", "the timestamp is in the future"),
])
def test_bad_logs_since_is_one_line_exit_4(pytester: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch, source: str,
                                           value: str, where: str, why: str) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    args = ["-p", "no:cacheprovider"]
    if source == "cli":
        args.append(f"--logs-since={value}")
    else:
        monkeypatch.setenv("BIZOSAAS_LOGS_SINCE", value)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if line.strip()]
    output = "\n".join(result.outlines + result.errlines)
    assert len(lines) == 1, output
    assert lines[0].startswith(f"ERROR: {where}: invalid value '{value}' for --logs-since: "
                               f"{why}"), lines[0]
    assert "30m" in lines[0] and "ISO 8601" in lines[0], lines[0]  # the fix: what to write
    assert "Traceback" not in output


def test_good_logs_since_is_accepted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--logs-since=1h30m",
                                           "--gate-json=gate.json")
    assert result.ret == 0, "\n".join(result.outlines + result.errlines)


# --------------------------------------------------------------------------- the window rule


def test_window_takes_the_latest_start() -> None:
    now, started = 1_000_000.0, 990_000.0
    w = probe.choose_window(started=started, now=now, bound_s=86400)
    assert w.start == started - probe.START_SLACK_S and "start" in w.reason and w.covers_start
    w = probe.choose_window(started=started, now=now, bound_s=86400, previous=999_000.0)
    assert w.start == 999_000.0 - probe.HISTORY_SLACK_S and "previous run" in w.reason
    assert not w.covers_start
    w = probe.choose_window(started=started, now=now, bound_s=600, previous=995_000.0)
    assert w.start == now - 600 and "logs.since" in w.reason
    # The engine's clock runs 30 s ahead: the previous run's time is moved with it.
    w = probe.choose_window(started=started, now=now, previous=999_000.0, offset=30)
    assert w.start == 999_030.0 - probe.HISTORY_SLACK_S
    # The previous run began moments after the container started: the window
    # starts after the container's first lines (its startup lines), so it does
    # not cover the start, and the startup lines are looked for from the start.
    w = probe.choose_window(started=started, now=now, previous=started + 0.7
                            + probe.HISTORY_SLACK_S)
    assert "previous run" in w.reason and not w.covers_start, w


def test_logs_since_decides_alone_but_not_before_the_start() -> None:
    now, started = 1_000_000.0, 990_000.0
    w = probe.choose_window(started=started, now=now, since=probe.parse_since("3h"),
                            previous=999_999.0, bound_s=60)
    assert w.start == started - probe.START_SLACK_S  # 3 h back is before the start
    w = probe.choose_window(started=started, now=now, since=probe.parse_since("30m"),
                            previous=999_999.0, bound_s=60)
    assert w.start == now - 1800 and w.reason == "--logs-since 30m"
    # since_start: false (manifest) reads into earlier starts of the container.
    w = probe.choose_window(started=started, now=now, since=probe.parse_since("1d"),
                            since_start=False)
    assert w.start == now - 86400


def _entry(path: Path, **doc: object) -> None:
    path.write_text(json.dumps(doc))


def test_previous_run_from_history(tmp_path: Path) -> None:
    h = tmp_path / "history"
    h.mkdir()
    stack, target = "bizosaas-staging", "127.0.0.1"
    assert probe.previous_run(h, stack, [target]) is None
    assert probe.previous_run(tmp_path / "absent", stack, [target]) is None
    _entry(h / "a.json", stack=stack, target=target, started="2026-01-01T10:00:00+00:00",
           finished="2026-01-01T10:00:10+00:00", per_suite={"logs": {}, "health": {}})
    _entry(h / "b.json", stack=stack, target=target, started="2026-01-01T11:00:00+00:00",
           finished="2026-01-01T11:00:10+00:00", per_suite={"logs": {}})
    _entry(h / "c.json", stack="other", target=target, finished="2026-01-01T12:00:00+00:00")
    _entry(h / "d.json", stack=stack, target="staging.example", finished="2026-01-01T12:00:00Z")
    # A later run without the logs suite read no log: it does not move the window.
    _entry(h / "e.json", stack=stack, target=target, started="2026-01-01T12:30:00+00:00",
           finished="2026-01-01T12:30:05+00:00", per_suite={"health": {}})
    (h / "f.json").write_text("{not json")
    # The run that finished last; its start (a line written during it may have
    # come after its scan).
    assert probe.previous_run(h, stack, [target]) == 1767265200.0  # 11:00:00 UTC
    # Only a finished time: that one.
    _entry(h / "g.json", stack=stack, target=target, finished="2026-01-01T13:00:00Z")
    assert probe.previous_run(h, stack, ["x", target]) == 1767272400.0


# --------------------------------------------------------------------------- the prefilter


@pytest.mark.parametrize(("pattern", "line"), [
    (r"(?i)\b(error|critical|traceback|panic)\b", "2024 ERROR: boom"),
    (r"(?i)\b(error|critical|traceback|panic)\b", "Traceback (most recent call last):"),
    (r"^FATAL", "FATAL at start"),
    (r"(?<!\s)oops$", "x-oops"),
    (r"fail(ed|ure)+", "request FAILED? no: failure"),
    (r"[0-9]{3} ERR", "503 ERR"),
    (r"(?i)kelvin", "KELVIN"),
    # Not ASCII: no prefilter, the expression decides (the Kelvin sign is a k to (?i)).
    (r"(?i)\bkelvin\b", "\u212aelvin at 0 \u00b0"),
    (r"(?i)error", "ERROR in \u00fcber-service"),
    (r".*", "anything"),
])
def test_prefilter_never_hides_a_match(pattern: str, line: str) -> None:
    rx = re.compile(pattern)
    assert rx.search(line), "the case itself must match"
    judge = probe.LineJudge([rx], [])
    low = line.lower() if line.isascii() else None
    assert judge.is_error(line, low) == bool(rx.search(line))


def test_prefilter_literals() -> None:
    assert probe.required_literals(ERRORS[0]) == {"error", "critical", "traceback", "panic"}
    assert probe.required_literals(re.compile(r"\d+ ms")) == {" ms"}
    assert probe.required_literals(re.compile(r".*|x")) is None
    judge = probe.LineJudge(ERRORS, [re.compile("benign error")])
    assert not judge.is_error("GET /api/items 200", "get /api/items 200")
    assert not judge.is_error("a benign error", "a benign error")


# --------------------------------------------------------------------------- real containers


def _docker(*args: str, timeout: float = 60) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True,
                          timeout=timeout).stdout


@pytest.fixture
def container() -> Iterator[Callable[[str], str]]:
    """Start throwaway ``bizosaas-logtest-*`` containers (no network); removed afterwards."""
    names: list[str] = []

    def start(script: str) -> str:
        name = f"bizosaas-logtest-{secrets.token_hex(4)}"
        names.append(name)
        _docker("run", "-d", "--name", name, "--network", "none", IMAGE, "python3", "-u",
                "-c", script)
        return name

    yield start
    for name in names:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def _wait_for(name: str, marker: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in _docker("logs", "--tail", "3", name):
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} never printed {marker!r}")


def _stamps(name: str) -> dict[str, float | None]:
    """The engine's timestamp of each line, by its text."""
    out: dict[str, float | None] = {}
    for line in _docker("logs", "-t", name).splitlines():
        ts, _, text = line.partition(" ")
        out.setdefault(text, docker_time(ts))
    return out


def _api():
    import docker

    return docker.from_env(timeout=30).api


def _started(api, name: str) -> float | None:
    return docker_time(api.inspect_container(name)["State"]["StartedAt"])


FILLER = """
import time
print('logtest started', flush=True)
print('ERROR early line', flush=True)
for i in range({n}):
    print(f'filler {{i:07d}} ' + 'x' * 80)
print('ERROR late line', flush=True)
print('logtest done', flush=True)
time.sleep(600)
"""


@pytest.mark.stack
def test_cap_keeps_the_most_recent_part(container) -> None:
    name = container(FILLER.format(n=20000))  # about 1.9 MB
    _wait_for(name, "logtest done")
    api = _api()
    window = probe.choose_window(started=_started(api, name), now=time.time(), bound_s=3600)
    judge = probe.LineJudge(ERRORS, [], ["logtest started"])

    whole = probe.scan_log(api, name, window=window, judge=judge, max_bytes=10 * 2**20)
    assert whole["count"] == 2 and not whole["capped"] and whole["reached_window_start"]
    assert whole["lines"] == 20004 and whole["startup_pass"] is None
    assert [m[1] for m in whole["matches"]] == ["ERROR early line", "ERROR late line"]

    cap = 256 * 1024
    part = probe.scan_log(api, name, window=window, judge=judge, max_bytes=cap)
    assert part["capped"] and part["bytes"] <= cap, part
    assert part["bytes"] > cap * 0.8, part  # the budget is used, not wasted
    # The most recent part, contiguous up to the newest line: the late error is
    # caught, the early one (oldest) is not.
    assert part["last"] == whole["last"], part
    assert part["first"] > whole["first"], part
    assert part["count"] == 1 and part["matches"][0][1] == "ERROR late line"
    # The startup line is older than the part read: found from the start.
    assert part["startup_found"] == ["logtest started"] and part["startup_pass"], part
    text = probe.describe(part)
    assert re.match(r"[\d,]+ lines \(\d+ KB\), \d\d:\d\d:\d\d–\d\d:\d\d:\d\d UTC, "
                    r"capped at 256 KB \(older lines not read\)$", text), text

    # More lines than a first pass: the same answer as a scan without a cap,
    # across several passes.
    small = probe.scan_log(api, name, window=window, judge=judge, max_bytes=10 * 2**20,
                           first_pass=1000)
    assert small["passes"] > 1 and small["lines"] == whole["lines"]
    assert small["count"] == 2 and not small["capped"]


BEFORE_AFTER = """
import time
print('logtest started', flush=True)
print('ERROR before the window', flush=True)
time.sleep(8)
print('mark now', flush=True)
print('ERROR after the mark', flush=True)
time.sleep(600)
"""


@pytest.mark.stack
def test_window_leaves_out_what_is_older(container, tmp_path: Path) -> None:
    name = container(BEFORE_AFTER)
    _wait_for(name, "ERROR after the mark")
    api = _api()
    started = _started(api, name)
    stamps = _stamps(name)
    mark = stamps["mark now"]
    judge = probe.LineJudge(ERRORS, [], ["logtest started"])

    # --logs-since as a timestamp: from the mark on.
    since = probe.parse_since(probe._ts_text(mark - 0.5))
    window = probe.choose_window(started=started, now=time.time(), since=since)
    got = probe.scan_log(api, name, window=window, judge=judge)
    assert got["count"] == 1 and got["matches"][0][1] == "ERROR after the mark", got
    assert got["lines"] == 2 and got["reached_window_start"]
    assert got["startup_found"] == ["logtest started"]  # from the start, not the window

    # The previous run of this target began after the first error: only the new one.
    history = tmp_path / "history"
    history.mkdir()
    when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(mark - 1))
    _entry(history / "prev.json", stack="logtest", target="127.0.0.1", started=when,
           finished=when, per_suite={"logs": {}})
    previous = probe.previous_run(history, "logtest", ["127.0.0.1"])
    window = probe.choose_window(started=started, now=time.time(), previous=previous,
                                 offset=probe.engine_offset(api, 5), bound_s=3600)
    assert "previous run" in window.reason, window
    got = probe.scan_log(api, name, window=window, judge=judge)
    assert got["count"] == 1 and got["matches"][0][1] == "ERROR after the mark", got

    # A duration: the last hour holds both.
    window = probe.choose_window(started=started, now=time.time(),
                                 since=probe.parse_since("1h"))
    assert probe.scan_log(api, name, window=window, judge=judge)["count"] == 2


@pytest.mark.stack
def test_deadline_and_unknown_container(container) -> None:
    name = container(FILLER.format(n=300000))  # about 29 MB: longer than the deadline
    _wait_for(name, "logtest done")
    api = _api()
    window = probe.Window(None, "the log's beginning")
    judge = probe.LineJudge(ERRORS, [], ["logtest started"])
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        probe.scan_log(api, name, window=window, judge=judge, deadline_s=0.0)
    assert time.monotonic() - t0 < 1
    # Cut in the middle of a stream: what was read stands, and says so.
    t0 = time.monotonic()
    part = probe.scan_log(api, name, window=window, judge=judge, deadline_s=0.5)
    took = time.monotonic() - t0
    assert took < 1.5, took
    assert part["deadline"] and 0 < part["lines"] < 300004, part
    # Newest part first: the late error is always in what was read. A later,
    # wider pass may reach the log's beginning before the deadline on a fast
    # engine (then the early error stands too), never the other way round.
    found = [m[1] for m in part["matches"]]
    assert found[-1:] == ["ERROR late line"] and set(found) <= {
        "ERROR early line", "ERROR late line"}, found
    assert "stopped at the 0.5 s deadline" in probe.describe(part)
    with pytest.raises(probe.LogReadError, match="404"):
        probe.scan_log(api, "bizosaas-logtest-no-such-container", window=window, judge=judge)


INJECTED = """
import time
print('Connected to PostgreSQL', flush=True)
print('Connected to Redis', flush=True)
print('ERROR an old incident, reported by the previous run', flush=True)
time.sleep(600)
"""


@pytest.mark.stack
def test_error_written_just_before_the_run_is_caught(container, tmp_path: Path) -> None:
    """After a previous run of the same stack and target, a new error line, then a run."""
    name = container(INJECTED)
    _wait_for(name, "old incident")
    time.sleep(probe.HISTORY_SLACK_S + 5)  # so the previous run is later than the start
    out = tmp_path / "out"
    (out / "history").mkdir(parents=True)
    now = time.time()
    _entry(out / "history" / "prev.json", stack="logtest", target="127.0.0.1",
           started=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - 2)),
           finished=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - 1)),
           per_suite={"logs": {}})
    manifest = write_manifest(
        tmp_path / "logtest.yaml",
        {"logtest": {"container": name, "port": 8080, "healthcheck": False,
                     "startup_lines": ["Connected to PostgreSQL", "Connected to Redis"]}},
        name="logtest", logs={"error_patterns": [ERRORS[0].pattern]})
    _docker("exec", name, "sh", "-c",
            "echo 'ERROR payment worker crashed just now' > /proc/1/fd/1")
    run = run_suite(out, "tests/test_logs.py", f"--stack={manifest}", "-n", "0",
                    timeout=120)
    checks = {c["nodeid"].split("::")[-1]: c for c in run.gate.get("checks", [])}
    err = checks["test_log_free_of_errors[logtest]"]
    assert err["outcome"] == "failed", run.summary()
    msg = err["message"]
    assert "ERROR payment worker crashed just now" in msg, msg
    assert "old incident" not in msg, msg  # before the previous run: not read again
    assert "1 error line(s) in 1 line (" in msg, msg
    assert "window from this target's previous run" in msg, msg
    assert "cause:" in msg and "next:" in msg and "docker logs --since" in msg, msg
    # The startup lines are older than the window, and still found.
    assert checks["test_startup_lines[logtest]"]["outcome"] == "passed", run.summary()

    # Without the history (the run above archived itself there too): from the
    # container's start, both incidents.
    shutil.rmtree(out / "history")
    run = run_suite(out, "tests/test_logs.py", f"--stack={manifest}", "-n", "0",
                    timeout=120)
    msg = next(c["message"] for c in run.failed()
               if c["nodeid"].endswith("test_log_free_of_errors[logtest]"))
    assert "2 error line(s)" in msg and "window from the container's start" in msg, msg
