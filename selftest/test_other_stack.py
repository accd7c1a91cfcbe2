"""The generic suites on a stack they have never seen: no code change, only --compose.

Starts a second, differently named compose project ("acmeshop": a JSON web app,
an API and a Redis, other container names, ports 18501-18503 on 127.0.0.1, its
own network acme-net, healthchecks and limits) from the local base image (no
registry), runs containers/health/resources/network (and logs, when present)
against it through ``--compose`` in a subprocess, and expects the gate to pass.
The project is removed afterwards (``down -v``), also when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "acmeshop"
BASE_IMAGE = "local/bizosaas-base:1"
GENERIC = ["tests/test_containers.py", "tests/test_health.py", "tests/test_resources.py",
           "tests/test_network.py", "tests/test_logs.py"]

#: A tiny JSON web server: /healthz (or $HEALTH) answers {"status": "ok"} and, like
#: a real health view, what it finds of each dependency in $DEPS (host:port ...):
#: the health suite requires a service that depends on something to say so.
SERVER = """\
import http.server, json, os, socket
PORT, HEALTH = int(os.environ["PORT"]), os.environ.get("HEALTH", "/healthz")
DEPS = [d.rsplit(":", 1) for d in os.environ.get("DEPS", "").split()]
def deps():
    out = {}
    for host, port in DEPS:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            out[host] = "connected"
        except OSError:
            out[host] = "disconnected"
    return out
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == HEALTH
        found = deps() if ok else {}
        status = "ok" if all(v == "connected" for v in found.values()) else "degraded"
        body = json.dumps({"status": status, "dependencies": found} if ok
                          else {"detail": "not found"}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        print("acme:", fmt % args, flush=True)
print("acme: listening on", PORT, flush=True)
http.server.ThreadingHTTPServer(("", PORT), H).serve_forever()
"""


def compose_text() -> str:
    """The acmeshop compose file (Compose v2 syntax, several styles on purpose)."""
    server = "\n".join("        " + line for line in SERVER.replace("$", "$$").splitlines())
    return f"""\
name: {PROJECT}
x-server: &server
  image: {BASE_IMAGE}
  restart: unless-stopped
  stop_grace_period: 1s
  command:
    - python3
    - -c
    - |
{server}
services:
  web:
    <<: *server
    container_name: acme-web
    environment: {{PORT: "8080", SHOP_NAME: acme, DEPS: "acme-cache:6379 acme-api:9000"}}
    ports: ["127.0.0.1:18501:8080"]
    healthcheck:
      test: ["CMD", "curl", "-fsS", "http://localhost:8080/healthz"]
      interval: 2s
      timeout: 2s
      retries: 10
    depends_on:
      cache: {{condition: service_healthy}}
      api: {{condition: service_healthy}}
    networks: [shop]
    deploy: {{resources: {{limits: {{memory: 96M, cpus: "0.25"}}}}}}
  api:
    <<: *server
    container_name: acme-api
    environment:
      - PORT=9000
      - HEALTH=/api/v1/health
      - DEPS=acme-cache:6379
    ports:
      - target: 9000
        published: 18503
        host_ip: 127.0.0.1
    healthcheck:
      test: wget -qO- http://127.0.0.1:9000/api/v1/health || curl -fsS http://127.0.0.1:9000/api/v1/health
      interval: 2s
      retries: 10
    depends_on: [cache]
    networks: [shop]
    mem_limit: 96m
    cpus: 0.25
  cache:
    image: {BASE_IMAGE}
    container_name: acme-cache
    restart: unless-stopped
    stop_grace_period: 1s
    command: ["redis-server", "--port", "6379", "--save", "", "--appendonly", "no"]
    ports: ["127.0.0.1:18502:6379"]
    healthcheck:
      test: ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
      interval: 2s
      retries: 10
    networks: [shop]
    deploy: {{resources: {{limits: {{memory: 64M, cpus: "0.25"}}}}}}
networks:
  shop:
    name: acme-net
"""


def _compose_cmd() -> list[str]:
    exe = shutil.which("docker-compose")
    if exe:
        return [exe]
    if shutil.which("docker"):
        return ["docker", "compose"]
    pytest.skip("no docker-compose / docker compose here (./run selftest installs it)")


def _engine_ok() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def acmeshop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Start the acmeshop project; remove it (containers, network, volumes) afterwards."""
    if not shutil.which("docker") or not _engine_ok():
        pytest.fail("no Docker engine: start one (./run setup)", pytrace=False)
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE],
                      capture_output=True).returncode != 0:
        pytest.fail(f"{BASE_IMAGE} missing: build it with `python -m sandbox up`",
                    pytrace=False)
    compose_file = tmp_path_factory.mktemp("acmeshop") / "compose.yaml"
    compose_file.write_text(compose_text())
    base = [*_compose_cmd(), "-p", PROJECT, "-f", str(compose_file)]
    down = [*base, "down", "-v", "--remove-orphans", "-t", "1"]
    subprocess.run(down, capture_output=True, timeout=120)  # leftovers of a killed run
    try:
        up = subprocess.run([*base, "up", "-d", "--wait", "--wait-timeout", "120"],
                            capture_output=True, text=True, timeout=240)
        assert up.returncode == 0, f"acmeshop did not start:\n{up.stdout}\n{up.stderr}"
        yield compose_file
    finally:
        subprocess.run(down, capture_output=True, timeout=120)


def run_suites(compose_file: Path, reports: Path, *extra: str,
               env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                          dict]:
    """Run the generic suites against ``compose_file``; return the process and gate.json."""
    suites = [s for s in GENERIC if (ROOT / s).exists()]
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("BIZOSAAS_")}
    run_env.pop("DOCKER_HOST", None)
    run_env.update(env or {})
    run_env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run(
        [sys.executable, "-m", "pytest", *suites, "--compose", str(compose_file), *extra,
         f"--html={reports}/report.html", f"--junitxml={reports}/junit.xml",
         f"--gate-json={reports}/gate.json", "-p", "no:randomly"],
        cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=600)
    gate_file = reports / "gate.json"
    gate = json.loads(gate_file.read_text()) if gate_file.exists() else {}
    return res, gate


def failures(gate: dict) -> list[str]:
    return [f"{c['nodeid']}: {(c.get('message') or '').splitlines()[:1]}"
            for c in gate.get("checks", []) if c["outcome"] in ("failed", "error")]


def test_generic_suites_pass_on_a_stack_never_seen(acmeshop: Path, tmp_path: Path) -> None:
    res, gate = run_suites(acmeshop, tmp_path, "-n", "2")
    assert res.returncode == 0 and not failures(gate), (
        "\n".join(failures(gate)) + "\n" + res.stdout[-4000:] + res.stderr[-2000:])
    checks = gate["checks"]
    services = {c["service"] for c in checks}
    assert {"web", "api", "cache"} <= services  # every compose service was checked
    suites = {c["suite"] for c in checks if c["outcome"] == "passed"}
    assert {"containers", "health", "resources", "network"} <= suites
    ran = {c["nodeid"].split("::")[-1] for c in checks if c["outcome"] == "passed"}
    # The facts that only the compose file knows were derived and checked for real.
    assert {"test_published_port[api]", "test_health_status_200[api]",
            "test_dependency_reachable[web->cache]", "test_attached[cache]",
            "test_memory_limit_configured[web]", "test_network_exists"} <= ran, sorted(ran)


def test_wrong_compose_fact_is_caught(acmeshop: Path, tmp_path: Path) -> None:
    """The same run fails where the compose file and the engine disagree (not a rubber stamp)."""
    lying = tmp_path / "lying.yaml"
    lying.write_text(acmeshop.read_text().replace('"127.0.0.1:18501:8080"',
                                                  '"127.0.0.1:18509:8080"'))
    res, gate = run_suites(lying, tmp_path / "reports", "-n", "0", "-k", "web")
    failed = {c["nodeid"].split("::")[-1] for c in gate["checks"]
              if c["outcome"] in ("failed", "error")}
    assert res.returncode == 1
    assert "test_published_port[web]" in failed and "test_port_answers_from_host[web]" in failed
    assert all("[web" in f or "web->" in f for f in failed), failed
