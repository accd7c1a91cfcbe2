"""Issue 11 §2: writes only where someone asked for them.

- The decision (``model/target.py``): writes are on by default only against the
  reference stack (the built-in manifest at 127.0.0.1 or localhost); anywhere
  else only ``--allow-writes=true`` or an environment section allowing them.
- The header says which, and why.
- Off the reference stack every check that writes, in every suite, is skipped
  before it sends anything, with a reason naming how to allow writes. Proved by
  a real run (``--stack`` pointing at a copy of the manifest, target
  127.0.0.1) with ``selftest/write_recorder.py`` noting every request that
  could write; the same recorder on the reference stack does see the writes.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bizosaas_acceptance.model.api import load_api
from bizosaas_acceptance.model.manifest import DEFAULT_MANIFEST, load_manifest
from bizosaas_acceptance.model.target import Target
from selftest import write_recorder
from selftest.stackrun import PROJECT_ROOT, clean_env, run_suite
from selftest.test_safety_writes import TAG_PREFIX, tagged_keys, tagged_leads, tagged_rows

API = PROJECT_ROOT / "stacks" / "api" / "bizosaas-staging.yaml"
SKIP_REASON = "this check writes; writes not allowed: "
HOW = "--allow-writes=true to allow"
SETTINGS: dict[str, Any] = {
    "docker_host": None, "target_host": "127.0.0.1", "_target_host_default": True,
    "environment": None, "stack": None, "compose": [], "allow_writes": None,
    "postgres_user": "u", "postgres_password": "", "redis_password": "", "vault_token": "",
    "api_token": None, "http_timeout": 1.0, "connect_timeout": 1.0}


def manifest_copy(tmp_path: Path) -> Path:
    """The built-in manifest, copied: same services, same ports, not the reference stack."""
    doc = yaml.safe_load(DEFAULT_MANIFEST.read_text())
    doc["api"] = str(API)  # found by convention beside the original only
    path = tmp_path / "copy-of-staging.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --------------------------------------------------------------------------- the decision


@pytest.mark.parametrize(("change", "section", "allowed", "why"), [
    ({}, {}, True, "reference stack"),
    ({"target_host": "localhost", "_target_host_default": False}, {}, True, "reference stack"),
    ({"target_host": "10.0.0.5", "_target_host_default": False}, {}, False,
     f"target 10.0.0.5 is not the reference stack; {HOW}"),
    ({"target_host": "::1", "_target_host_default": False}, {}, False,
     f"target ::1 is not the reference stack; {HOW}"),
    ({"docker_host": "ssh://deploy@stage.example"}, {}, False,
     f"target stage.example is not the reference stack; {HOW}"),
    ({}, {"target_host": "10.0.0.7"}, False, f"target 10.0.0.7 is not the reference stack; {HOW}"),
    ({"stack": "COPY"}, {}, False, "is not the reference stack; " + HOW),
    ({"stack": str(DEFAULT_MANIFEST)}, {}, True, "reference stack"),
    ({"target_host": "10.0.0.5", "_target_host_default": False, "allow_writes": True}, {},
     True, "--allow-writes"),
    ({"allow_writes": False}, {}, False, "--allow-writes=false"),
    ({"target_host": "10.0.0.5", "_target_host_default": False, "environment": "staging"},
     {"allow_writes": True}, True, "environments.staging.allow_writes"),
    ({"environment": "production"}, {"allow_writes": False}, False,
     "environments.production.allow_writes is false; --allow-writes=true to override"),
    ({"environment": "production"}, {}, False, "environment production is read-only"),
])
def test_writes_decision(change: dict[str, Any], section: dict[str, Any], allowed: bool,
                         why: str, tmp_path: Path) -> None:
    settings = {**SETTINGS, **change}
    if settings["stack"] == "COPY":
        settings["stack"] = str(manifest_copy(tmp_path))
    stack = load_manifest(settings["stack"])
    target = Target.from_settings(settings, stack, section)
    assert target.allow_writes is allowed, target.writes_why
    assert why in target.writes_why
    if not allowed:
        assert "--allow-writes=true" in target.writes_skip_reason


def test_compose_stack_is_not_the_reference_stack() -> None:
    from bizosaas_acceptance.model.target import writes_decision

    stack = load_manifest()
    allowed, why = writes_decision({**SETTINGS, "compose": ["docker-compose.yml"]}, stack, {},
                                   "127.0.0.1")
    assert not allowed and why.startswith("compose project") and HOW in why


# --------------------------------------------------------------------------- the header


def _header(tmp_path: Path, *args: str, **env: str) -> str:
    """The run's header lines (``--co`` prints them; nothing is contacted)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-p", "no:cacheprovider",
         f"--gate-json={tmp_path}/g.json", f"--html={tmp_path}/r.html",
         f"--junitxml={tmp_path}/j.xml", "tests/test_health.py", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, env=clean_env(**env))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("bizosaas: target host")]
    assert len(lines) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return lines[0]


def test_header_says_whether_and_why(tmp_path: Path) -> None:
    assert _header(tmp_path).endswith("writes allowed: reference stack")
    assert _header(tmp_path, BIZOSAAS_HOST="10.0.0.5").endswith(
        "writes not allowed: target 10.0.0.5 is not the reference stack; "
        "--allow-writes=true to allow")
    copy = manifest_copy(tmp_path)
    assert _header(tmp_path, f"--stack={copy}").endswith(
        f"writes not allowed: stack bizosaas-staging ({copy}) is not the reference stack; "
        "--allow-writes=true to allow")
    assert _header(tmp_path, "--allow-writes=true", BIZOSAAS_HOST="10.0.0.5").endswith(
        "writes allowed: --allow-writes")


# --------------------------------------------------------------------------- every check


def expected_write_checks() -> set[str]:
    """Every check that writes, listed from the API description and the suites' flows
    (independently of fixtures/api.py, which decides at run time)."""
    spec = load_api(load_manifest())
    assert spec is not None
    out = {
        "tests/test_integration.py::test_lead_visible_through_gateway",
        "tests/test_integration.py::test_cart_order_checkout",
        "tests/test_integration.py::test_agent_task_runs_on_temporal",
        "tests/test_integration.py::test_no_leftovers_from_earlier_runs",
        "tests/test_infra.py::test_temporal_workflow_round_trip[temporal]",
    }
    for sapi in spec.services.values():
        for ep in sapi.endpoints:
            if not ep.writes:
                continue
            if ep.has_example:
                out |= {f"tests/test_api.py::{name}[{ep.ident}]"
                        for name in ("test_status", "test_content_type", "test_schema")}
            if ep.auth:
                out |= {f"tests/test_api.py::{name}[{ep.ident}]"
                        for name in ("test_auth_required", "test_auth_rejects_wrong_token")}
                out.add(f"tests/test_endpoints.py::test_route_answers[{ep.ident}]")
        bad = sapi.bad_request
        if bad and any(e.writes and e.method == bad.method and e.path == bad.path
                       for e in sapi.endpoints):
            out.add(f"tests/test_api.py::test_error_format_bad_request[{sapi.key}]")
    return out


def _read_only(entry: dict[str, Any], spec: Any) -> bool:
    """A POST that cannot write: a GraphQL query, or an endpoint documented writes: false."""
    body = entry.get("body")
    if isinstance(body, dict) and isinstance(body.get("query"), str):
        doc = body["query"].lstrip()
        if not doc.startswith("mutation"):
            return True
        return any(ep.graphql == body["query"] and not ep.writes for ep in spec.endpoints)
    return False


@pytest.mark.stack
def test_no_write_off_the_reference_stack(tmp_path: Path) -> None:
    """A copied manifest (same stack, same 127.0.0.1 ports): every writing check skips
    before it sends anything; nothing tagged with the run appears on the stack."""
    run_id = f"ro-{secrets.token_hex(4)}"
    log = tmp_path / "writes.jsonl"
    run = run_suite(tmp_path / "run", f"--stack={manifest_copy(tmp_path)}", "-n", "auto",
                    "-p", "selftest.write_recorder", f"--run-id={run_id}",
                    "-m", "api or endpoints or integration or infra",
                    env=clean_env(BIZOSAAS_WRITE_LOG=str(log)))
    # Whatever else fails (a colleague's fault on the shared stack), nothing writes.
    assert run.gate.get("total"), run.stdout[-3000:] + run.stderr[-3000:]
    spec = load_api(load_manifest())
    writes = [e for e in write_recorder.load(str(log)) if not _read_only(e, spec)]
    assert writes == [], writes[:10]
    skipped = {c["nodeid"]: c["message"] for c in run.gate["checks"]
               if c["outcome"] == "skipped"}
    expected = expected_write_checks()
    assert set(skipped) == expected, (sorted(set(skipped) - expected),
                                      sorted(expected - set(skipped)))
    for nodeid, reason in skipped.items():
        assert reason.startswith(SKIP_REASON) and reason.endswith(HOW), (nodeid, reason)
    tag = TAG_PREFIX + run_id
    assert tagged_leads(tag) == [] and tagged_rows(tag) == {} and tagged_keys(run_id) == []


@pytest.mark.stack
def test_recorder_sees_the_writes_on_the_reference_stack(tmp_path: Path) -> None:
    """The counter-proof: the same recorder, the reference stack, writes allowed by
    default; the flows write, and remove everything they wrote."""
    run_id = f"rw-{secrets.token_hex(4)}"
    log = tmp_path / "writes.jsonl"
    run = run_suite(tmp_path / "run", "-n", "0", "-p", "selftest.write_recorder",
                    f"--run-id={run_id}", "-m", "integration",
                    env=clean_env(BIZOSAAS_WRITE_LOG=str(log)))
    assert run.ret == 0, run.summary()
    sent = {(e["method"], e["url"].split("?")[0]) for e in write_recorder.load(str(log))}
    assert ("POST", "http://127.0.0.1:8003/api/leads/") in sent, sorted(sent)
    assert any(m == "DELETE" for m, _ in sent), sorted(sent)
    tag = TAG_PREFIX + run_id
    assert tagged_leads(tag) == [] and tagged_rows(tag) == {} and tagged_keys(run_id) == []
