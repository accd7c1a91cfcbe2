"""Pure functions of the application stand-ins (sandbox/app/bizostub); no stack needed."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sandbox" / "app"))

from bizostub import config, keys, logs  # noqa: E402

LOG_SCAN = re.compile(r"(?i)error|critical|traceback|panic|exception")


@pytest.mark.parametrize(
    ("name", "value", "word"),
    [
        ("OPENROUTER_API_KEY", "sk-or-v1-abc", "connected"),
        ("OPENAI_API_KEY", "sk-proj-abc", "connected"),
        ("ANTHROPIC_API_KEY", "sk-ant-api03-x", "connected"),
        ("STRIPE_SECRET_KEY", "sk_test_51abc", "connected"),
        ("STRIPE_SECRET_KEY", "sk_live_51abc", "invalid_credentials"),
        ("OPENROUTER_API_KEY", "sk-abc", "invalid_credentials"),
        ("AMAZON_ACCESS_KEY", "AKIAEXAMPLE", "connected"),
        ("AMAZON_ACCESS_KEY", "your-amazon-access-key-here", "placeholder"),
        ("OPENAI_API_KEY", "your-openai-api-key-here", "placeholder"),
        ("PAYPAL_CLIENT_ID", "", "missing"),
        ("PAYPAL_CLIENT_ID", None, "missing"),
        ("STRIPE_SECRET_KEY", " sk_test_x", "malformed"),
        ("STRIPE_SECRET_KEY", '"sk_test_x"', "malformed"),
        ("OPENAI_API_KEY", "sk-x\n", "malformed"),
    ],
)
def test_key_status(name: str, value: str | None, word: str) -> None:
    assert keys.key_status(name, value) == word


def test_combined_status_reports_first_problem() -> None:
    assert keys.combined_status({"A": "connected", "B": "connected"}) == "connected"
    assert keys.combined_status({"A": "connected", "B": "placeholder"}) == "placeholder"


def test_service_table_matches_the_spec() -> None:
    ports = {k: s.port for k, s in config.SERVICES.items()}
    assert ports == {
        "brain-api": 8001,
        "wagtail-cms": 8002,
        "django-crm": 8003,
        "business-directory-api": 8004,
        "coreldove-backend": 8005,
        "ai-agents": 8010,
        "amazon-sourcing": 8085,
        "saleor-api": 8000,
    }
    assert [s.redis_db for s in config.SERVICES.values()] == [1, 2, 3, 4, 5, 6, 7, 8]
    django = {k for k, s in config.SERVICES.items() if s.django}
    assert django == {"wagtail-cms", "django-crm", "saleor-api"}
    for spec in config.SERVICES.values():
        assert spec.health_path == ("/health/" if spec.django else "/health")


def test_upstreams_default_and_override() -> None:
    default = config.parse_upstreams(None)
    assert default["cms"] == "http://bizosaas-wagtail-staging:8002"
    assert default["sourcing"] == "http://amazon-sourcing-staging:8085"
    assert len(default) == 7
    pairs = config.parse_upstreams("cms=http://x:1/, bogus=http://y")
    assert pairs["cms"] == "http://x:1" and "bogus" not in pairs
    js = config.parse_upstreams(json.dumps({"crm": "http://c:3"}))
    assert js["crm"] == "http://c:3" and js["cms"] == default["cms"]


def test_settings_fatal_gaps() -> None:
    with pytest.raises(ValueError, match="DATABASE_URL is not set"):
        config.load_settings({"SERVICE": "django-crm"})
    with pytest.raises(KeyError):
        config.load_settings({"SERVICE": "nope", "DATABASE_URL": "postgresql://x"})
    s = config.load_settings(
        {
            "SERVICE": "ai-agents",
            "DATABASE_URL": "postgresql://x",
            "FAULT_SLOW_MS": "250",
            "RATE_LIMIT_PER_MIN": "junk",
        }
    )
    assert s.port == 8010 and s.fault_slow_ms == 250 and s.rate_limit == 10000


def test_log_lines_are_never_rewritten(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 11 §5: the stand-ins do not hide error-like words from the log scan.

    A benign line that contains one is written as is; the manifest's log
    allow-list (with a reason) is what excuses it, as on a real deployment.
    """
    logs.log("warning", "request rejected", path="/api/error/Exception", reason="OperationalError")
    logs.log("info", "Traceback panic CRITICAL", nested={"error_count": ["exception"]})
    out = capsys.readouterr().out
    assert out.count("\n") == 2
    records = [json.loads(line) for line in out.splitlines()]
    for record in records:
        assert {"ts", "level", "service", "msg"} <= set(record)
    assert records[0]["path"] == "/api/error/Exception"
    assert records[0]["reason"] == "OperationalError"
    assert records[1]["msg"] == "Traceback panic CRITICAL"
    assert records[1]["nested"] == {"error_count": ["exception"]}
    assert LOG_SCAN.search(out)
    assert logs.describe(RuntimeError("connection error\nmore")) == \
        "RuntimeError: connection error"


def test_python_warnings_become_one_warning_line(capsys: pytest.CaptureFixture[str]) -> None:
    import logging
    import warnings

    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    saved = (warnings.showwarning, warnings.filters[:], root.handlers[:], root.level,
             access.disabled)
    try:
        logs.configure_stdlib()
        warnings.warn("'format_error' is deprecated.", DeprecationWarning, stacklevel=1)
    finally:
        warnings.showwarning, warnings.filters[:], root.handlers[:] = saved[:3]
        root.setLevel(saved[3])
        access.disabled = saved[4]
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["level"] == "warning"
    assert record["msg"] == "DeprecationWarning: 'format_error' is deprecated."
    path, _, line = record["location"].rpartition(":")
    assert path.endswith("test_standins_unit.py") and line.isdigit()


def test_error_lines_keep_their_words(capsys: pytest.CaptureFixture[str]) -> None:
    logs.log("error", "Unhandled exception in request handler", detail="Traceback ...")
    assert LOG_SCAN.search(capsys.readouterr().out)


def test_upstream_path_mapping() -> None:
    pytest.importorskip("aiohttp")
    pytest.importorskip("psycopg")
    from bizostub.services.brain import upstream_path

    assert upstream_path("cms", "/pages") == "/api/v2/pages/"
    assert upstream_path("cms", "/pages/3/") == "/api/v2/pages/3/"
    assert upstream_path("crm", "/clients") == "/api/clients/"
    assert upstream_path("commerce", "/orders") == "/api/orders"
    assert upstream_path("ai", "/agents/task/t1") == "/api/agents/task/t1"
    assert upstream_path("saleor", "/graphql") == "/graphql/"


def test_lead_validation() -> None:
    pytest.importorskip("aiohttp")
    pytest.importorskip("psycopg")
    from bizostub.services.crm import validate_lead

    clean, problems = validate_lead({"name": " Ana ", "email": "ana@x.io", "notes": "run-1"})
    assert problems == {} and clean["name"] == "Ana" and clean["phone"] == ""
    _, problems = validate_lead({"email": "nope", "phone": 5})
    assert set(problems) == {"name", "email", "phone"}
