"""Issue 7: integration writes are tagged and removed, also when the run is interrupted.

The integration suite runs for real against the reference stack in a
subprocess (``-n 0``, so SIGINT reaches the process that holds the
finalizers). As soon as a record tagged with our run id exists (polled in
PostgreSQL: leads, orders, agent tasks), the run gets one SIGINT, like an
operator's Ctrl-C. Afterwards nothing tagged with the run id may be left
anywhere: not in the CRM's lead listing, not in any table of the stand-ins'
database (leads, orders, payments, tasks, ...) and not among coreldove's
Redis keys (carts).
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis
import requests

from bizosaas_acceptance.options import BY_NAME
from selftest.stackrun import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.stack

CRM_LEADS = "http://127.0.0.1:8003/api/leads/?limit=1000"
TAG_PREFIX = "bizosaas-acceptance-"  # fixtures.api.TAG_PREFIX
PG = {"host": "127.0.0.1", "port": 5432, "dbname": "bizosaas_staging", "user": "bizosaas",
      "password": BY_NAME["postgres_password"].default}
REDIS = {"host": "127.0.0.1", "port": 6379, "db": 5,
         "password": BY_NAME["redis_password"].default}


def tagged_leads(tag: str) -> list[dict]:
    reply = requests.get(CRM_LEADS, timeout=5)
    reply.raise_for_status()
    return [lead for lead in reply.json().get("results") or [] if tag in str(lead)]


def tagged_rows(tag: str) -> dict[str, int]:
    """Rows mentioning ``tag`` in any application table (read-only scan)."""
    found: dict[str, int] = {}
    with psycopg.connect(**PG, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SET client_encoding TO 'UTF8'")  # a SQL_ASCII server sends bytes
        conn.read_only = True
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
            "('pg_catalog', 'information_schema', 'public')").fetchall()
        for schema, table in tables:
            ident = psycopg.sql.Identifier(schema, table)
            query = psycopg.sql.SQL("SELECT count(*) FROM {} t WHERE t::text LIKE %s").format(
                ident)
            n = conn.execute(query, (f"%{tag}%",)).fetchone()[0]
            if n:
                found[f"{schema}.{table}"] = n
    return found


def created_yet(conn: psycopg.Connection, tag: str) -> bool:
    """Whether the run has created a record yet (leads, orders or agent tasks)."""
    query = ("SELECT EXISTS (SELECT 1 FROM crm.leads t WHERE t::text LIKE %(p)s) "
             "OR EXISTS (SELECT 1 FROM commerce.orders t WHERE t::text LIKE %(p)s) "
             "OR EXISTS (SELECT 1 FROM ai.tasks t WHERE t::text LIKE %(p)s)")
    return bool(conn.execute(query, {"p": f"%{tag}%"}).fetchone()[0])


def tagged_keys(tag: str) -> list[str]:
    client = redis.Redis(**REDIS, socket_timeout=5)
    return [k.decode() for k in client.scan_iter(match=f"*{tag}*", count=500)]


def test_sigint_mid_run_leaves_nothing_tagged(tmp_path: Path) -> None:
    run_id = f"sigint-{secrets.token_hex(4)}"
    tag = TAG_PREFIX + run_id
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
           "-m", "integration", f"--run-id={run_id}", "--allow-writes=true",
           f"--gate-json={tmp_path / 'gate.json'}", f"--html={tmp_path / 'report.html'}",
           f"--junitxml={tmp_path / 'junit.xml'}"]
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=clean_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    interrupted = False
    try:
        with psycopg.connect(**PG, autocommit=True, connect_timeout=5) as conn:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                if created_yet(conn, tag):
                    proc.send_signal(signal.SIGINT)
                    interrupted = True
                    break
                time.sleep(0.02)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert interrupted, f"no lead tagged {tag} appeared; the run said:\n{out[-3000:]}"
    # Interrupted: the gate fails (its unreported checks are "not run"), exit 1.
    assert proc.returncode == 1, out[-3000:]
    assert "KeyboardInterrupt" in out and "INTERNALERROR" not in out, out[-3000:]
    assert tagged_leads(tag) == []
    assert tagged_rows(tag) == {}, out[-3000:]
    assert tagged_keys(run_id) == []
