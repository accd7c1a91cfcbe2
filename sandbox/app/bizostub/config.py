"""Static service table and environment parsing."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

VERSION = "1.0.0"

ALLOWED_ORIGINS = (
    "https://stg.bizoholic.com",
    "https://stg.coreldove.com",
    "http://localhost:3000",
)


@dataclass(frozen=True)
class ServiceSpec:
    """What differs between the eight stand-ins."""

    key: str
    port: int
    health_path: str
    ok_word: str  # the "status" value a healthy service reports
    redis_db: int
    schema: str
    django: bool  # Django-style: APPEND_SLASH redirects
    container: str
    api_keys: tuple[str, ...] = field(default_factory=tuple)


SERVICES: dict[str, ServiceSpec] = {
    s.key: s
    for s in (
        ServiceSpec(
            "brain-api",
            8001,
            "/health",
            "healthy",
            1,
            "brain",
            False,
            "bizosaas-brain-staging",
            ("OPENROUTER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"),
        ),
        ServiceSpec(
            "wagtail-cms", 8002, "/health/", "ok", 2, "cms", True, "bizosaas-wagtail-staging"
        ),
        ServiceSpec(
            "django-crm", 8003, "/health/", "ok", 3, "crm", True, "bizosaas-django-crm-staging"
        ),
        ServiceSpec(
            "business-directory-api",
            8004,
            "/health",
            "healthy",
            4,
            "directory",
            False,
            "bizosaas-directory-api-staging",
        ),
        ServiceSpec(
            "coreldove-backend",
            8005,
            "/health",
            "healthy",
            5,
            "commerce",
            False,
            "coreldove-backend-staging",
            ("STRIPE_SECRET_KEY", "PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET"),
        ),
        ServiceSpec(
            "ai-agents",
            8010,
            "/health",
            "healthy",
            6,
            "ai",
            False,
            "bizosaas-ai-agents-staging",
            ("OPENROUTER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"),
        ),
        ServiceSpec(
            "amazon-sourcing",
            8085,
            "/health",
            "ok",
            7,
            "sourcing",
            False,
            "amazon-sourcing-staging",
            ("AMAZON_ACCESS_KEY", "AMAZON_SECRET_KEY"),
        ),
        ServiceSpec(
            "saleor-api", 8000, "/health/", "ok", 8, "saleor", True, "bizosaas-saleor-staging"
        ),
    )
}

# Brain's routing table: prefix -> target service key.
ROUTE_TARGETS: dict[str, str] = {
    "cms": "wagtail-cms",
    "crm": "django-crm",
    "directory": "business-directory-api",
    "commerce": "coreldove-backend",
    "ai": "ai-agents",
    "sourcing": "amazon-sourcing",
    "saleor": "saleor-api",
}


def default_upstreams() -> dict[str, str]:
    """prefix -> base URL, by container name and port (the compose network)."""
    out = {}
    for prefix, target in ROUTE_TARGETS.items():
        spec = SERVICES[target]
        out[prefix] = f"http://{spec.container}:{spec.port}"
    return out


def parse_upstreams(raw: str | None) -> dict[str, str]:
    """Merge ``UPSTREAMS`` (JSON object or ``cms=http://..,crm=..``) over the defaults."""
    result = default_upstreams()
    if not raw or not raw.strip():
        return result
    raw = raw.strip()
    pairs: dict[str, str]
    if raw.startswith("{"):
        pairs = {str(k): str(v) for k, v in json.loads(raw).items()}
    else:
        pairs = {}
        for item in raw.split(","):
            if "=" in item:
                k, v = item.split("=", 1)
                pairs[k.strip()] = v.strip()
    for k, v in pairs.items():
        if k in ROUTE_TARGETS and v:
            result[k] = v.rstrip("/")
    return result


@dataclass
class Settings:
    """Everything read from the environment at start."""

    spec: ServiceSpec
    port: int
    database_url: str
    redis_url: str | None
    vault_addr: str | None
    vault_token: str | None
    temporal_address: str | None
    rate_limit: int
    build: str
    fault_slow_ms: int
    fault_health_fail: bool
    fault_memory_mb: int
    fault_error_log: bool
    upstreams: dict[str, str]
    # FAULT_LEAK_MB_PER_MIN / FAULT_LEAK_MAX_MB: a slow leak, bounded.
    fault_leak_mb_per_min: float = 0.0
    fault_leak_max_mb: int = 128


def _int(env: dict[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, "") or default)
    except ValueError:
        return default


def _float(env: dict[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, "") or default)
    except ValueError:
        return default


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build :class:`Settings`; raises ``KeyError``/``ValueError`` on a fatal gap."""
    env = dict(os.environ) if env is None else env
    key = env.get("SERVICE", "").strip()
    if key not in SERVICES:
        raise KeyError(f"SERVICE must be one of {', '.join(SERVICES)} (got {key!r})")
    spec = SERVICES[key]
    db = env.get("DATABASE_URL", "").strip()
    if not db:
        raise ValueError("DATABASE_URL is not set")
    return Settings(
        spec=spec,
        port=_int(env, "PORT", spec.port),
        database_url=db,
        redis_url=env.get("REDIS_URL") or None,
        vault_addr=(env.get("VAULT_ADDR") or "").rstrip("/") or None,
        vault_token=env.get("VAULT_TOKEN") or None,
        temporal_address=env.get("TEMPORAL_ADDRESS") or None,
        rate_limit=max(1, _int(env, "RATE_LIMIT_PER_MIN", 10000)),
        build=env.get("BUILD", "") or "local",
        fault_slow_ms=max(0, _int(env, "FAULT_SLOW_MS", 0)),
        fault_health_fail=env.get("FAULT_HEALTH_FAIL", "") in ("1", "true", "yes"),
        fault_memory_mb=max(0, _int(env, "FAULT_MEMORY_MB", 0)),
        fault_error_log=env.get("FAULT_ERROR_LOG", "") in ("1", "true", "yes"),
        upstreams=parse_upstreams(env.get("UPSTREAMS")),
        fault_leak_mb_per_min=max(0.0, _float(env, "FAULT_LEAK_MB_PER_MIN", 0.0)),
        fault_leak_max_mb=max(0, _int(env, "FAULT_LEAK_MAX_MB", 128)),
    )
