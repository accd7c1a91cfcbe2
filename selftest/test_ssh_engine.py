"""``DOCKER_HOST=ssh://user@host`` through a real sshd in front of the local engine.

A throwaway sshd (``/usr/sbin/sshd`` from Debian's openssh-server) listens on
127.0.0.1 at a free port from 2222, with a fresh host key, one authorized
client key, no passwords. The inner runs get ``DOCKER_HOST=ssh://root@127.0.0.1:PORT``
and a private ``HOME`` whose ``.ssh/config`` names the client key and whose
``known_hosts`` pins the host key, exactly as an operator's workstation would
for a staging VPS; docker-py (paramiko, no ssh binary) does the rest. sshd is
stopped afterwards by its own pid.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"
GENERIC = ["tests/test_containers.py", "tests/test_health.py", "tests/test_resources.py",
           "tests/test_network.py", "tests/test_logs.py"]


@dataclass(frozen=True)
class SshEngine:
    """A running sshd and what a client needs to use it."""

    url: str
    home: Path
    log: Path

    def env(self) -> dict[str, str]:
        """The environment of a client: DOCKER_HOST and a HOME with .ssh/config."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BIZOSAAS_")}
        env.update(DOCKER_HOST=self.url, HOME=str(self.home), PYTHONPATH=str(ROOT))
        return env


def _free_port(start: int = 2222) -> int:
    for port in range(start, start + 100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port in 2222-2321")


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bizosaas-selftest",
                    "-f", str(path)], check=True, capture_output=True)
    return (path.with_suffix(".pub")).read_text().strip()


def _write_config(tmp: Path, port: int) -> Path:
    """sshd_config: loopback only, one key, no passwords, everything under ``tmp``."""
    config = tmp / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {tmp}/host_key
PidFile {tmp}/sshd.pid
AuthorizedKeysFile {tmp}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers root
# the key files live in a temporary directory, not in root's home
StrictModes no
UsePAM no
LogLevel INFO
""")
    return config


def _client_home(tmp: Path, port: int, host_pub: str) -> Path:
    """A HOME whose ~/.ssh/config and known_hosts make paramiko use the throwaway key."""
    home = tmp / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    ssh.chmod(0o700)
    (ssh / "config").write_text(
        f"Host 127.0.0.1\n  User root\n  IdentityFile {tmp}/client_key\n"
        "  IdentitiesOnly yes\n")
    key_type, key = host_pub.split()[:2]
    (ssh / "known_hosts").write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    return home


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited {proc.returncode}: {log.read_text()[-500:]}",
                        pytrace=False)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"sshd not listening on 127.0.0.1:{port}: {log.read_text()[-500:]}",
                pytrace=False)


@pytest.fixture(scope="module")
def ssh_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshEngine]:
    """sshd on 127.0.0.1 in front of the local Docker engine; killed afterwards."""
    if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
        pytest.fail("openssh-server is not installed (apt-get install -y openssh-server; "
                    "./run selftest does it)", pytrace=False)
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("no local Docker engine to put sshd in front of (./run setup)",
                    pytrace=False)
    tmp = tmp_path_factory.mktemp("sshd")
    host_pub = _keygen(tmp / "host_key")
    (tmp / "authorized_keys").write_text(_keygen(tmp / "client_key") + "\n")
    port = _free_port()
    config = _write_config(tmp, port)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    log = tmp / "sshd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, log)
        yield SshEngine(f"ssh://root@127.0.0.1:{port}", _client_home(tmp, port, host_pub), log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_docker_py_talks_through_ssh(ssh_engine: SshEngine) -> None:
    """The suite's own client fixture code path: DockerClient(ssh://, paramiko)."""
    code = ("import docker; c = docker.DockerClient(base_url=__import__('os').environ["
            "'DOCKER_HOST'], use_ssh_client=False, timeout=30); print(c.version()['Version']);"
            " print(len(c.containers.list()))")
    res = subprocess.run([sys.executable, "-c", code], env=ssh_engine.env(), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    local = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                           capture_output=True, text=True).stdout.strip()
    assert res.stdout.split()[0] == local
    assert "Accepted publickey for root" in ssh_engine.log.read_text()


def test_unknown_host_key_is_refused(ssh_engine: SshEngine, tmp_path: Path) -> None:
    """No silent trust: without the host in known_hosts the connection fails, clearly."""
    (ssh_engine.home / ".ssh" / "known_hosts").rename(tmp_path / "kh")
    try:
        res = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/test_containers.py", "-k", "test_exists",
             f"--html={tmp_path}/r.html", f"--junitxml={tmp_path}/j.xml",
             f"--gate-json={tmp_path}/g.json", "--connect-timeout", "1"],
            cwd=ROOT, env=ssh_engine.env(), capture_output=True, text=True, timeout=120)
    finally:
        (tmp_path / "kh").rename(ssh_engine.home / ".ssh" / "known_hosts")
    assert res.returncode == 1
    assert "[DOCKER] engine unreachable at ssh://root@127.0.0.1" in res.stdout
    assert "not found in known_hosts" in res.stdout


def test_generic_suites_through_ssh(ssh_engine: SshEngine, tmp_path: Path) -> None:
    """containers/health/resources/network (and logs) on the reference stack via SSH.

    The addresses default to the engine's host (127.0.0.1 here); the header shows
    which engine was used, and sshd's log shows the suite logged in.
    """
    suites = [s for s in GENERIC if (ROOT / s).exists()]
    before = ssh_engine.log.read_text().count("Accepted publickey")
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "pytest", *suites, "-n", "2", f"--html={tmp_path}/r.html",
         f"--junitxml={tmp_path}/j.xml", f"--gate-json={tmp_path}/g.json"],
        cwd=ROOT, env=ssh_engine.env(), capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - started
    gate = json.loads((tmp_path / "g.json").read_text())
    failed = [f"{c['nodeid']}: {(c.get('message') or '').splitlines()[:1]}"
              for c in gate["checks"] if c["outcome"] in ("failed", "error")]
    assert res.returncode == 0 and not failed, (
        "through SSH (is a sandbox fault on? `python -m sandbox status`):\n"
        + "\n".join(failed) + "\n" + res.stdout[-3000:])
    assert f"docker {ssh_engine.url}" in res.stdout  # the report header
    assert "target host 127.0.0.1" in res.stdout
    assert ssh_engine.log.read_text().count("Accepted publickey") > before
    passed = {c["suite"] for c in gate["checks"] if c["outcome"] == "passed"}
    assert {"containers", "health", "resources", "network"} <= passed
    print(f"generic suites through SSH: {len(gate['checks'])} checks in {elapsed:.1f}s")
