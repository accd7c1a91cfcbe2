"""Temporal client helpers (brain and ai-agents only; imported lazily)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.runtime import Runtime as TemporalRuntime
from temporalio.runtime import TelemetryConfig

from .logs import describe, log

NAMESPACE = "default"
_RUNTIME: TemporalRuntime | None = None


def runtime() -> TemporalRuntime:
    """A Temporal runtime whose Rust core logs nothing to stderr (we log ourselves)."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = TemporalRuntime(telemetry=TelemetryConfig(logging=None, metrics=None))
    return _RUNTIME


async def connect_loop(address: str | None, holder: dict[str, object]) -> Client | None:
    """Connect with retries; store the client in ``holder['temporal']``; log once."""
    if not address:
        log("warning", "TEMPORAL_ADDRESS is not set")
        return None
    delay, warned = 0.5, False
    while True:
        try:
            client = await asyncio.wait_for(
                Client.connect(address, namespace=NAMESPACE, runtime=runtime()), timeout=5
            )
            holder["temporal"] = client
            log("info", "Connected to Temporal", address=address, namespace=NAMESPACE)
            return client
        except Exception as exc:  # noqa: BLE001 - temporalio raises RuntimeError and friends
            if not warned:
                log("warning", "Temporal unavailable, retrying in background", reason=describe(exc))
                warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def ping(client: Client | None, timeout: float = 1.0) -> str:
    """``connected`` when GetSystemInfo answers within ``timeout``."""
    if client is None:
        return "disconnected"
    try:
        await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=timeout)
        )
        return "connected"
    except Exception:  # noqa: BLE001 - any RPC failure means unreachable
        return "disconnected"
