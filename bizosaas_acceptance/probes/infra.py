"""The infrastructure services' roles in a stack, and a thread-hosted event loop
for temporalio's async client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from concurrent.futures import Future
from typing import TypeVar

import pytest

from bizosaas_acceptance.model.manifest import Service, Stack

T = TypeVar("T")


def _infra(stack: Stack, protocol: str, what: str) -> Service:
    svc = stack.by_protocol(protocol)
    if svc is None:
        pytest.fail(f"the stack manifest ({stack.source}) has no service with protocol "
                    f"{protocol!r}; {what} checks need one", pytrace=False)
    return svc


def vault_service(stack: Stack) -> Service:
    """The Vault service: the one whose health path is Vault's /v1/sys/health."""
    svc = next((s for s in stack.services.values() if s.health_path == "/v1/sys/health"), None)
    if svc is None:
        pytest.fail(f"the stack manifest ({stack.source}) has no Vault service "
                    "(a service with health_path /v1/sys/health)", pytrace=False)
    return svc



class AsyncRunner:
    """A private event loop in a thread, so sync checks can await temporalio calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="bizosaas-async")
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
