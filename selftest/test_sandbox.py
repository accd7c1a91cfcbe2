"""The reference stack itself (sandbox/), against the running stack: real services only."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import hvac
import pytest
import requests
import yaml

from sandbox import stack as sbx
from selftest.stackrun import PROJECT_ROOT, clean_env, sandbox

pytestmark = pytest.mark.stack

COMPOSE = yaml.safe_load((PROJECT_ROOT / "sandbox/compose.yaml").read_text())
VAULT = "http://127.0.0.1:8200"
BRAIN = "http://127.0.0.1:8001"
ROOT_TOKEN = "staging-root-token"  # noqa: S105 - the reference stack's fake dev token


def _health_urls() -> list[tuple[str, str]]:
    out = []
    for key, svc in COMPOSE["services"].items():
        test = svc["healthcheck"]["test"]
        url = next((p for p in test if isinstance(p, str) and p.startswith("http://")), None)
        if url:
            out.append((key, url.replace("localhost", "127.0.0.1")))
    return out


@pytest.fixture(scope="module")
def api_token() -> str:
    client = hvac.Client(url=VAULT, token=ROOT_TOKEN)
    return client.secrets.kv.v2.read_secret_version(
        path="bizosaas/shared", mount_point="secret",
        raise_on_deleted_version=True)["data"]["data"]["api_token"]


def test_status_shows_every_container_healthy() -> None:
    out = sandbox("status").stdout
    rows = [ln for ln in out.splitlines()[1:] if ln.strip() and not ln.startswith("active")]
    assert len(rows) == 12, out
    assert all(" running " in r and " healthy " in r for r in rows), out


def test_up_again_changes_nothing() -> None:
    client = sbx.docker_client()
    sandbox("up")  # settle: sources may have changed since the stack was started
    before = {c.name: c.id for c in client.containers.list()}
    out = sandbox("up").stderr
    after = {c.name: c.id for c in client.containers.list()}
    assert before == after, "a second `up` recreated containers"
    assert "building" not in out, out


@pytest.mark.parametrize(("service", "url"), _health_urls(), ids=[k for k, _ in _health_urls()])
def test_health_endpoint_healthy(service: str, url: str) -> None:
    resp = requests.get(url, timeout=5, allow_redirects=False)
    assert resp.status_code == 200, (service, resp.status_code, resp.text[:200])
    body = resp.json()
    assert body["status"] in ("ok", "healthy"), body


def test_django_style_health_redirects_without_slash() -> None:
    resp = requests.get("http://127.0.0.1:8003/health", timeout=5, allow_redirects=False)
    assert resp.status_code == 301 and resp.headers["Location"].endswith("/health/")


def test_vault_holds_the_service_secrets() -> None:
    client = hvac.Client(url=VAULT, token=ROOT_TOKEN)
    data = client.secrets.kv.v2.read_secret_version(
        path="bizosaas/coreldove-backend", mount_point="secret",
        raise_on_deleted_version=True)["data"]["data"]
    assert data["STRIPE_SECRET_KEY"].startswith("sk_test_")


def test_crm_lead_written_and_read_back(api_token: str) -> None:
    tag = f"selftest-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {api_token}"}
    resp = requests.post("http://127.0.0.1:8003/api/leads/", timeout=5, headers=headers,
                         json={"name": "Ada Lovelace", "email": "ada@example.com",
                               "phone": "+100", "source": "selftest", "notes": tag})
    assert resp.status_code == 201, resp.text
    lead = resp.json()
    try:
        assert lead["status"] == "new" and lead["score"] == 0
        direct = requests.get(f"http://127.0.0.1:8003/api/leads/{lead['id']}/", timeout=5)
        assert direct.json()["notes"] == tag
        via_brain = requests.get(f"{BRAIN}/api/crm/leads/{lead['id']}", timeout=5)
        assert via_brain.status_code == 200 and via_brain.json()["notes"] == tag
    finally:
        gone = requests.delete(f"http://127.0.0.1:8003/api/leads/{lead['id']}/", timeout=5,
                               headers=headers)
        assert gone.status_code == 204


def test_brain_routes_to_each_service(api_token: str) -> None:
    routes = requests.get(f"{BRAIN}/api/routes", timeout=5).json()["routes"]
    targets = {r["target"] for r in routes}
    assert targets == {"wagtail-cms", "django-crm", "business-directory-api",
                       "coreldove-backend", "ai-agents", "amazon-sourcing", "saleor-api"}
    probes = {
        "/api/cms/pages": "http://127.0.0.1:8002/api/v2/pages/",
        "/api/crm/clients": "http://127.0.0.1:8003/api/clients/",
        "/api/directory/businesses": "http://127.0.0.1:8004/api/businesses",
        "/api/commerce/products": "http://127.0.0.1:8005/api/products",
        "/api/ai/models": "http://127.0.0.1:8010/api/models",
        "/api/sourcing/search?q=lamp": "http://127.0.0.1:8085/api/search?q=lamp",
    }
    for via, direct in probes.items():
        a = requests.get(f"{BRAIN}{via}", timeout=5)
        b = requests.get(direct, timeout=5)
        assert a.status_code == b.status_code == 200, (via, a.status_code, b.status_code)
        assert a.json() == b.json(), via
    gql = requests.post(f"{BRAIN}/api/saleor/graphql", timeout=5,
                        headers={"Authorization": f"Bearer {api_token}"},
                        json={"query": "{ products(first: 2) { totalCount } }"})
    assert gql.status_code == 200 and gql.json()["data"]["products"]["totalCount"] >= 1


def test_ai_agents_task_runs_through_temporal(api_token: str) -> None:
    headers = {"Authorization": f"Bearer {api_token}"}
    resp = requests.post("http://127.0.0.1:8010/api/agents/task", timeout=5, headers=headers,
                         json={"agent_type": "general", "payload": {"tag": "selftest"}})
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    try:
        deadline = time.monotonic() + 20
        body = {}
        while time.monotonic() < deadline:
            body = requests.get(f"http://127.0.0.1:8010/api/agents/task/{task_id}",
                                timeout=5).json()
            if body.get("status") != "processing":
                break
            time.sleep(0.3)
        assert body.get("status") == "completed", body
        # The workflow is real: Temporal itself knows it, and it completed.
        proc = subprocess.run(["temporal", "workflow", "describe", "-w", body["workflow_id"],
                               "--address", "127.0.0.1:7233", "-o", "json"],
                              capture_output=True, text=True, timeout=20)
        assert proc.returncode == 0, proc.stderr
        assert "COMPLETED" in proc.stdout
    finally:
        requests.delete(f"http://127.0.0.1:8010/api/agents/task/{task_id}", timeout=5,
                        headers=headers)


def test_faults_are_listed_one_per_category() -> None:
    out = sandbox("faults").stdout
    for category in ("Container Won't Start", "Health Check Failing", "Database Connection",
                     "Redis Connection", "API Key Not Working", "High Memory Usage",
                     "Slow Response Times", "Port Conflicts", "Network Issues", "Build Failures"):
        assert category in out, category


def test_no_engine_is_one_clear_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "sandbox", "status"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60,
                          env=clean_env(DOCKER_HOST="unix:///nonexistent/docker.sock"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Docker engine" in lines[0] and "dockerd" in lines[0], lines
    assert "Traceback" not in proc.stderr


def test_port_taken_names_port_and_owner() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        model = {"services": {"web": {"container_name": "not-ours",
                                      "ports": [{"published": str(port), "host_ip": "127.0.0.1",
                                                 "target": 80}]}}}
        with pytest.raises(sbx.SandboxError) as err:
            sbx.check_ports(sbx.docker_client(), model)
    text = str(err.value)
    assert f"127.0.0.1:{port}" in text and "already in use by" in text and "python" in text


def test_unknown_fault_is_one_clear_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "sandbox", "fault", "no-such-fault"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                          env=clean_env())
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "python -m sandbox faults" in proc.stderr
