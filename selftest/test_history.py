"""Run history (issue 15): archive, previous run, changes, baseline, terminal and HTML.

Pure unit tests on synthetic gate.json documents; no stack and no inner pytest
run needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bizosaas_acceptance import history

STACK = "bizosaas-staging"
TARGET = "127.0.0.1"

X = "tests/test_health.py::test_health[brain-api]"
Y = "tests/test_api.py::test_list[wagtail-cms]"
Z = "tests/test_db.py::test_pool[postgres]"


def doc(
    run_id: str,
    minute: int,
    outcomes: dict[str, str],
    *,
    stack: str | None = STACK,
    target: str | None = TARGET,
    pad: int = 0,
) -> dict[str, Any]:
    """A gate.json document with the given check outcomes, finished at 05:<minute> UTC."""
    d: dict[str, Any] = {
        "run_id": run_id,
        "started": f"2026-11-26T04:{minute:02d}:00+00:00",
        "finished": f"2026-11-26T05:{minute:02d}:00+00:00",
        "verdict": "FAIL" if any(o in ("failed", "error") for o in outcomes.values()) else "PASS",
        "checks": [{"nodeid": n, "outcome": o, "message": "x" * pad}
                   for n, o in sorted(outcomes.items())],
    }
    if stack is not None:
        d["stack"] = stack
    if target is not None:
        d["target"] = target
    return d


def run_once(hist: Path, current: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """What the plugin does at the end of a run: compare with history, then archive."""
    where = {"stack": current.get("stack"), "target": current.get("target"),
             "exclude_run_id": current["run_id"]}
    prev = history.previous(hist, **where)
    changes = history.compare(current, prev, history.recent(hist, **where), **kw)
    history.archive({**current, "changes": changes}, hist)
    return changes


# -- classification ------------------------------------------------------------------


def test_healthy_fault_healed_is_classified_across_three_runs(tmp_path: Path) -> None:
    hist = tmp_path / "reports" / "history"
    healthy = {X: "passed", Y: "passed", Z: "failed"}

    first = run_once(hist, doc("r1", 1, healthy))
    assert first["baseline"] is None
    assert all(first[name] == [] for name in history.LISTS)

    fault = run_once(hist, doc("r2", 2, {**healthy, X: "failed", Y: "error"}))
    assert fault["baseline"]["run_id"] == "r1"
    assert fault["baseline"]["source"] == "history"
    assert fault["new_failures"] == sorted([X, Y])
    assert fault["still_failing"] == [Z]
    assert fault["fixed"] == fault["flaky"] == fault["new_checks"] == []
    assert fault["removed_checks"] == []

    healed = run_once(hist, doc("r3", 3, healthy))
    assert healed["baseline"] == {"run_id": "r2", "finished": "2026-11-26T05:02:00+00:00",
                                  "source": "history", "verdict": "FAIL",
                                  "stack": STACK, "target": TARGET}
    assert healed["fixed"] == sorted([X, Y])
    assert healed["still_failing"] == [Z]
    # One incident (fault on, then healed) is not flakiness.
    assert healed["new_failures"] == healed["flaky"] == []
    assert len(history.entries(hist)) == 3


def test_outcome_states() -> None:
    assert [history.state(o) for o in ("passed", "xpassed", "failed", "error", "not run",
                                       "skipped", "xfailed", "weird", None)] == [
        "ok", "ok", "fail", "fail", "fail", None, None, None, None]


@pytest.mark.parametrize(
    ("before", "now", "listed"),
    [
        ("passed", "failed", "new_failures"),
        ("passed", "error", "new_failures"),
        ("skipped", "failed", "new_failures"),  # not failing before: a new failure
        ("xfailed", "error", "new_failures"),
        ("passed", "not run", "new_failures"),
        ("failed", "passed", "fixed"),
        ("error", "xpassed", "fixed"),
        ("failed", "error", "still_failing"),
        ("failed", "skipped", None),  # skipped now: neither fixed nor failing
        ("passed", "skipped", None),
        ("passed", "xpassed", None),
        ("skipped", "passed", None),
    ],
)
def test_each_transition(before: str, now: str, listed: str | None) -> None:
    changes = history.compare(doc("b", 2, {X: now}), doc("a", 1, {X: before}))
    for name in history.LISTS:
        assert changes[name] == ([X] if name == listed else []), name


def test_new_and_removed_checks_are_never_fixed_or_failing() -> None:
    prev = doc("a", 1, {X: "passed", Y: "failed"})
    cur = doc("b", 2, {X: "passed", Z: "failed"})
    changes = history.compare(cur, prev)
    assert changes["new_checks"] == [Z]
    assert changes["removed_checks"] == [Y]
    assert changes["new_failures"] == changes["fixed"] == changes["still_failing"] == []


def test_malformed_checks_are_ignored() -> None:
    cur = doc("b", 2, {X: "failed"})
    cur["checks"] += [{"nodeid": 3, "outcome": "failed"}, "junk", {"nodeid": Y}]
    changes = history.compare(cur, {"run_id": "a", "checks": "not a list"})
    assert changes["new_checks"] == [X]


# -- flakiness -----------------------------------------------------------------------


def flaky_after(seq: list[str], window: int = 5) -> list[str]:
    """The flaky list of the last run of a sequence of X's outcomes (oldest first)."""
    runs = [doc(f"r{i}", i, {X: o}) for i, o in enumerate(seq)]
    current, earlier = runs[-1], runs[-2::-1]
    return history.compare(current, earlier[0], earlier, flaky_window=window)["flaky"]


@pytest.mark.parametrize(
    ("seq", "flaky"),
    [
        (["passed", "failed", "passed", "failed"], True),
        (["failed", "passed", "failed"], True),
        (["failed", "passed", "passed", "failed"], True),
        (["failed", "passed", "skipped", "failed"], True),  # skips are ignored
        (["failed", "passed", "failed", "passed"], True),  # flaky even when passing now
        (["passed", "failed", "passed"], False),  # one incident, healed
        (["passed", "failed", "failed", "passed"], False),
        (["failed", "skipped", "failed"], False),  # no pass in between
        (["passed", "passed", "failed"], False),
        (["failed", "failed", "failed"], False),
    ],
)
def test_flaky_means_failed_again_after_passing(seq: list[str], flaky: bool) -> None:
    assert flaky_after(seq) == ([X] if flaky else [])


def test_flaky_window_bounds_how_far_back() -> None:
    seq = ["failed", "passed", "passed", "passed", "failed"]
    assert flaky_after(seq, window=5) == [X]
    assert flaky_after(seq, window=4) == []  # the first failure is out of the window
    assert flaky_after(["failed", "passed", "failed"], window=2) == []


def test_flaky_is_also_in_the_list_of_its_latest_step(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    for i, outcome in enumerate(["passed", "failed", "passed"]):
        run_once(hist, doc(f"r{i}", i, {X: outcome, Y: "passed"}))
    changes = run_once(hist, doc("r3", 3, {X: "failed", Y: "passed"}))
    assert changes["new_failures"] == [X]
    assert changes["flaky"] == [X]
    assert changes["flaky_window"] == history.FLAKY_WINDOW


def test_current_run_in_recent_is_not_counted_twice() -> None:
    cur = doc("r2", 2, {X: "failed"})
    earlier = [doc("r1", 1, {X: "passed"})]
    # Archived already (the caller forgot exclude_run_id): still one run, not two.
    assert history.compare(cur, earlier[0], [cur, *earlier])["flaky"] == []


# -- archive and pruning -------------------------------------------------------------


def test_archive_round_trip_and_sortable_names(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    later = doc("20261126050900-abc123", 9, {X: "passed"})
    earlier = doc("20261126050100-def456", 1, {X: "failed"})
    p_later = history.archive(later, hist)
    p_earlier = history.archive(earlier, hist)  # archived second, finished first
    assert p_later.name == "20261126T050900Z_20261126050900-abc123.json"
    assert json.loads(p_later.read_text()) == later
    assert history.entries(hist) == [p_earlier, p_later]
    assert history.previous(hist, stack=STACK, target=TARGET)["run_id"] == later["run_id"]
    assert not list(hist.glob("*.tmp"))


def test_runs_finishing_in_the_same_second_keep_their_order(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    # Run ids whose names sort the wrong way round: the time written decides.
    history.archive(doc("zzz-first", 1, {X: "passed"}), hist)
    second = history.archive(doc("aaa-second", 1, {X: "failed"}), hist)
    assert history.entries(hist)[-1] == second
    assert history.previous(hist, stack=STACK, target=TARGET)["run_id"] == "aaa-second"


def test_run_id_cannot_escape_the_history_dir(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    path = history.archive(doc("../../etc/passwd x", 1, {}), hist)
    assert path.parent == hist
    assert re.fullmatch(r"20261126T050100Z_[A-Za-z0-9._-]+\.json", path.name)
    assert history.archive({"checks": []}, hist).parent == hist  # no run id, no time


def test_prune_by_count_keeps_the_newest(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    for i in range(8):
        history.archive(doc(f"r{i}", i, {X: "passed"}), hist, max_runs=5)
    kept = [json.loads(p.read_text())["run_id"] for p in history.entries(hist)]
    assert kept == ["r3", "r4", "r5", "r6", "r7"]


def test_prune_by_size(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    paths = [history.archive(doc(f"r{i}", i, {X: "passed"}, pad=1000), hist) for i in range(6)]
    size = paths[0].stat().st_size
    assert 1000 < size < 1400
    history.archive(doc("r6", 6, {X: "passed"}, pad=1000), hist, max_bytes=int(size * 3.5))
    kept = [json.loads(p.read_text())["run_id"] for p in history.entries(hist)]
    assert kept == ["r4", "r5", "r6"]
    assert sum(p.stat().st_size for p in history.entries(hist)) <= size * 3.5


def test_the_run_just_archived_is_kept_even_when_too_big(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    history.archive(doc("r0", 0, {X: "passed"}), hist)
    # An entry archived late but finished earliest sorts first and is still kept.
    late = doc("big", 0, {X: "passed"}, pad=5000) | {"finished": "2026-11-26T04:00:00+00:00"}
    big = history.archive(late, hist, max_bytes=100)
    assert history.entries(hist) == [big]


def test_prune_leaves_foreign_files_alone(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    hist.mkdir()
    (hist / "README.txt").write_text("mine")
    (hist / "notes.json").write_text("{}")
    for i in range(3):
        history.archive(doc(f"r{i}", i, {}), hist, max_runs=1)
    assert sorted(p.name for p in hist.iterdir()) == [
        "20261126T050200Z_r2.json", "README.txt", "notes.json"]


def test_bad_bounds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        history.archive(doc("r", 1, {}), tmp_path, max_runs=0)


def test_empty_or_missing_history(tmp_path: Path) -> None:
    assert history.entries(tmp_path / "nope") == []
    assert history.previous(tmp_path / "nope", stack=STACK, target=TARGET) is None
    assert history.recent(tmp_path, stack=STACK, target=TARGET) == []


# -- previous run: same stack and target only ----------------------------------------


def test_previous_matches_stack_and_target_only(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    history.archive(doc("same-old", 1, {}), hist)
    history.archive(doc("same", 2, {}), hist)
    history.archive(doc("other-stack", 3, {}, stack="other-stack"), hist)
    history.archive(doc("other-target", 4, {}, target="10.0.0.5"), hist)
    history.archive(doc("no-keys", 5, {}, stack=None, target=None), hist)
    history.archive(doc("no-target", 6, {}, target=None), hist)
    (hist / "20261126T050700Z_broken.json").write_text("{ not json")
    (hist / "20261126T050800Z_list.json").write_text("[1, 2]")
    history.archive(doc("current", 9, {}), hist)

    found = history.previous(hist, stack=STACK, target=TARGET, exclude_run_id="current")
    assert found is not None and found["run_id"] == "same"
    assert history.previous(hist, stack=STACK, target=TARGET)["run_id"] == "current"
    assert history.previous(hist, stack="other-stack", target=TARGET)["run_id"] == "other-stack"
    assert history.previous(hist, stack="unknown", target=TARGET) is None
    # A run that does not know its own stack or target matches nothing, not the keyless one.
    assert history.previous(hist, stack=None, target=None) is None
    got = history.recent(hist, stack=STACK, target=TARGET, exclude_run_id="current", limit=5)
    assert [d["run_id"] for d in got] == ["same", "same-old"]
    assert history.recent(hist, stack=STACK, target=TARGET, limit=0) == []


# -- --baseline PATH -----------------------------------------------------------------


def test_load_baseline_reads_a_gate_json(tmp_path: Path) -> None:
    path = tmp_path / "gate.json"
    base = doc("prod-good", 1, {X: "passed", Y: "failed"}, stack=None, target=None)
    path.write_text(json.dumps(base))
    loaded = history.load_baseline(path)
    assert loaded == base
    changes = history.compare(doc("now", 2, {X: "failed", Y: "passed"}), loaded,
                              source=f"--baseline {path}")
    assert changes["baseline"]["source"] == f"--baseline {path}"
    assert changes["new_failures"] == [X] and changes["fixed"] == [Y]
    assert f"--baseline {path}" in history.summary_lines(changes)[0]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "no such file"),
        ("dir", "is a directory"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        ("{ broken", "not valid JSON (line 1)"),
        ("\n\n[1, 2]", "not a JSON object"),
        ('{"run_id": "x"}', "no 'checks' list"),
        ('{"checks": [{"nodeid": "a"}]}', "checks[0] lacks a nodeid or outcome"),
    ],
)
def test_load_baseline_errors_are_one_line(tmp_path: Path, content: Any, why: str) -> None:
    path = tmp_path / "kept" / "gate.json"
    if content == "dir":
        path.mkdir(parents=True)
    elif content is not None:
        path.parent.mkdir()
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    with pytest.raises(ValueError) as err:
        history.load_baseline(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"--baseline {path}: ")
    assert why in message
    assert "give the gate.json of an earlier run" in message
    # No chained traceback for the caller to print.
    exc = err.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


# -- terminal and HTML ---------------------------------------------------------------


def test_summary_lines() -> None:
    prev = doc("r1", 1, {X: "passed", Y: "failed", Z: "failed",
                         **{f"t::n{i}": "passed" for i in range(5)}})
    cur = doc("r2", 2, {X: "failed", Y: "passed", Z: "failed",
                        **{f"t::n{i}": "error" for i in range(5)}, "t::new": "passed"})
    lines = history.summary_lines(history.compare(cur, prev))
    assert lines == [
        "bizosaas changes since run r1 (2026-11-26T05:01Z): 6 new failures, 1 fixed, "
        "1 still failing, 0 flaky, 1 new check",
        "  new failures: t::n0, t::n1, t::n2, +3 more",
    ]
    one = history.summary_lines(history.compare(doc("b", 2, {X: "failed"}),
                                                doc("a", 1, {X: "passed", Y: "passed"})))
    assert one == ["bizosaas changes since run a (2026-11-26T05:01Z): 1 new failure, "
                   "0 fixed, 0 still failing, 0 flaky, 1 removed check",
                   f"  new failures: {X}"]
    quiet = history.summary_lines(history.compare(doc("b", 2, {X: "passed"}),
                                                  doc("a", 1, {X: "passed"})))
    assert len(quiet) == 1 and "0 new failures, 0 fixed" in quiet[0]


def test_summary_without_baseline() -> None:
    lines = history.summary_lines(history.compare(doc("b", 2, {X: "failed"}), None))
    assert len(lines) == 1
    assert "no earlier run against this stack and target" in lines[0]


def test_short_time() -> None:
    assert history.short_time("2026-11-26T07:00:59+02:00") == "2026-11-26T05:00Z"
    assert history.short_time("2026-11-26T05:00:00Z") == "2026-11-26T05:00Z"
    assert history.short_time("yesterday") == "yesterday"
    assert history.short_time(None) == "time unknown"


def test_render_html_escapes_and_uses_only_bz_classes() -> None:
    evil = "tests/test_x.py::test_y[<script>alert('x')</script>]"
    prev = doc("r1<b>", 1, {evil: "passed", Y: "failed"})
    cur = doc("r2", 2, {evil: "failed", Y: "passed", Z: "passed"})
    html = history.render_html(history.compare(cur, prev))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "r1&lt;b&gt;" in html
    assert "id='bizosaas-changes'" in html
    classes = {c for attr in re.findall(r"class='([^']*)'", html) for c in attr.split()}
    assert classes and all(c.startswith("bz-") for c in classes), classes
    css_classes = set(re.findall(r"\.([A-Za-z][\w-]*)", html.split("</style>")[0]))
    assert all(c.startswith("bz-") for c in css_classes), css_classes
    assert "data-list='new_failures' data-count='1'>1 new failure<" in html
    assert "data-list='fixed' data-count='1'" in html
    assert "data-list='new_checks' data-count='1'" in html
    assert "removed_checks" not in html  # empty optional lists are left out
    assert "<details class='bz-changes-new_failures' open>" in html


def test_render_html_without_baseline() -> None:
    html = history.render_html(history.compare(doc("b", 2, {X: "failed"}), None))
    assert "no earlier run against this stack and target" in html
    assert "data-baseline=''" in html


# -- wired into the plugin: three real runs ------------------------------------------------

PLUGIN_ARGS = ("-p", "bizosaas_acceptance.plugin", "-p", "no:benchmark",
               "-W", "ignore::pytest.PytestAssertRewriteWarning")


def test_three_runs_healthy_fault_healed(pytester, monkeypatch, gate_json):
    """History through the plugin: healthy, then a fault, then healed (issue 15)."""
    pytester.makepyfile(
        """
        import os, pytest
        pytestmark = pytest.mark.health
        @pytest.mark.parametrize("i", range(5))
        def test_steady(i):
            pass
        def test_flips():
            assert os.environ.get("FAULT") != "1", "fault on"
        """
    )
    monkeypatch.delenv("FAULT", raising=False)
    assert pytester.runpytest(*PLUGIN_ARGS).ret == 0
    first = gate_json()
    assert first["changes"]["baseline"] is None

    monkeypatch.setenv("FAULT", "1")
    result = pytester.runpytest(*PLUGIN_ARGS)
    assert result.ret == 1
    second = gate_json()["changes"]
    assert second["new_failures"] == ["test_three_runs_healthy_fault_healed.py::test_flips"]
    assert second["baseline"]["run_id"] == first["run_id"]
    result.stdout.fnmatch_lines(["bizosaas changes since *: 1 new failure*"])

    monkeypatch.delenv("FAULT")
    assert pytester.runpytest(*PLUGIN_ARGS).ret == 0
    third = gate_json()["changes"]
    assert third["fixed"] == ["test_three_runs_healthy_fault_healed.py::test_flips"]
    assert third["new_failures"] == [] and third["flaky"] == []
    assert len(list((pytester.path / "reports" / "history").glob("*.json"))) == 3

    # --baseline compares with a chosen run instead (here: the failing one).
    saved = pytester.path / "kept-gate.json"
    saved.write_text((pytester.path / "reports" / "history").joinpath(
        sorted(p.name for p in (pytester.path / "reports" / "history").glob("*.json"))[1]
    ).read_text())
    assert pytester.runpytest(*PLUGIN_ARGS, "--baseline", str(saved)).ret == 0
    assert gate_json()["changes"]["fixed"] == [
        "test_three_runs_healthy_fault_healed.py::test_flips"]


def test_bad_baseline_is_a_usage_error(pytester):
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest(*PLUGIN_ARGS, "--baseline=missing.json")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--baseline*missing.json*no such file*"])
