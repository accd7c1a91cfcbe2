"""Read KV v2 secrets from Vault/OpenBao over plain HTTP (no hvac in the image)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from .logs import describe, log


class Vault:
    """Holds the shared API token and this service's secrets once loaded."""

    def __init__(self, addr: str | None, token: str | None, service: str) -> None:
        self.addr = addr
        self.token = token
        self.service = service
        self.api_token: str | None = None
        self.service_secrets: dict[str, str] = {}
        self.loaded = asyncio.Event()

    async def _read(self, session: aiohttp.ClientSession, path: str) -> dict[str, Any] | None:
        """KV v2 read; None when the path does not exist."""
        async with session.get(
            f"{self.addr}/v1/secret/data/{path}",
            headers={"X-Vault-Token": self.token or ""},
            timeout=aiohttp.ClientTimeout(total=2),
        ) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise RuntimeError(f"vault answered {resp.status} for {path}")
            body = await resp.json()
            return dict(body.get("data", {}).get("data", {}) or {})

    async def load_loop(self, attempts: int = 60) -> None:
        """Read the secrets with retries (Vault may start a little after us)."""
        if not self.addr:
            log("warning", "VAULT_ADDR is not set; protected endpoints will refuse writes")
            return
        warned = False
        for attempt in range(attempts):
            try:
                async with aiohttp.ClientSession() as session:
                    shared = await self._read(session, "bizosaas/shared") or {}
                    own = await self._read(session, f"bizosaas/{self.service}") or {}
                token = shared.get("api_token")
                if not token:
                    raise RuntimeError("secret/bizosaas/shared has no api_token")
                self.api_token = str(token)
                self.service_secrets = {k: str(v) for k, v in own.items()}
                # Names only: never the values.
                log(
                    "info",
                    "Loaded secrets from Vault",
                    paths=["bizosaas/shared", f"bizosaas/{self.service}"],
                    service_secret_names=sorted(self.service_secrets),
                )
                self.loaded.set()
                return
            except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError, ValueError) as exc:
                if not warned:
                    log("warning", "Vault unavailable, retrying", reason=describe(exc))
                    warned = True
                await asyncio.sleep(0.5 if attempt < 10 else 5.0)
        log("warning", "Vault secrets not loaded; giving up retries")

    async def health(self, session: aiohttp.ClientSession, timeout: float = 1.0) -> str:
        """``connected``, ``sealed``, ``uninitialized``, ``standby`` or ``disconnected``."""
        if not self.addr:
            return "disconnected"
        try:
            async with session.get(
                f"{self.addr}/v1/sys/health", timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                if resp.status == 200:
                    return "connected"
                return {503: "sealed", 501: "uninitialized", 429: "standby"}.get(
                    resp.status, "disconnected"
                )
        except (TimeoutError, aiohttp.ClientError, OSError):
            return "disconnected"
