"""Entry point: ``SERVICE=<key> python3 -m bizostub``."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from types import ModuleType
from typing import Any

from aiohttp import web

from .cache import Cache
from .config import Settings, load_settings
from .db import Database
from .logs import configure_stdlib, log, set_service
from .vault import Vault
from .web import (
    MIDDLEWARES,
    OPENAPI_EXTRA_KEY,
    RT_KEY,
    Runtime,
    health_handler,
    openapi_handler,
    version_handler,
)

MODULES = {
    "brain-api": "brain",
    "wagtail-cms": "wagtail",
    "django-crm": "crm",
    "business-directory-api": "directory",
    "coreldove-backend": "coreldove",
    "ai-agents": "ai_agents",
    "amazon-sourcing": "amazon",
    "saleor-api": "saleor",
}

# Held for the life of the process (FAULT_MEMORY_MB).
_BALLAST: list[bytearray] = []
STARTUP_WAIT_S = 1.5
LEAK_EVERY_S = 4
STATS_EVERY_S = 60


def anon_rss_mb() -> int:
    """This process's anonymous resident memory in MiB (what a cgroup limit counts)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def hold_memory(target_mb: int) -> None:
    """FAULT_MEMORY_MB: grow RSS to about ``target_mb`` MiB and hold it.

    The knob is a target for the whole process, not an increment, so that
    "215 of a 256 MB limit" means 84% and not 84% plus the interpreter
    (which would put the container on the edge of an OOM kill).
    """
    extra = max(0, target_mb - anon_rss_mb())
    block = bytearray(extra * 1024 * 1024)
    for i in range(0, len(block), 4096):  # touch every page so it is resident
        block[i] = 1
    _BALLAST.append(block)
    log("warning", "Fault knob: holding memory", target_mb=target_mb, anon_rss_mb=anon_rss_mb())


async def leak_memory_fault(mb_per_min: float, max_mb: int) -> None:
    """FAULT_LEAK_MB_PER_MIN: a slow leak, a little every few seconds, capped.

    Blocks are kept (and every page touched) like a cache that is never
    evicted. The cap keeps the container well under its limit for the life of
    a soak: 15 MB/min with the default 128 MB cap on a 256 MB container peaks
    near 160 MB (about 62%) after 8.5 minutes, so a plain run (which judges
    the level against 80%) does not see it; only the slope gives it away.
    """
    leaked = 0.0
    step = mb_per_min * LEAK_EVERY_S / 60
    log("warning", "Fault knob: leaking memory", mb_per_min=mb_per_min, max_mb=max_mb,
        every_s=LEAK_EVERY_S)
    while leaked + step <= max_mb:
        block = bytearray(int(step * 1024 * 1024))
        for i in range(0, len(block), 4096):
            block[i] = 1
        _BALLAST.append(block)
        leaked += step
        await asyncio.sleep(LEAK_EVERY_S)
    log("warning", "Fault knob: leak reached its cap; holding", leaked_mb=round(leaked, 1),
        anon_rss_mb=anon_rss_mb())


async def request_stats(rt: Runtime) -> None:
    """Every STATS_EVERY_S (and once at start): requests and failures since the last line.

    "Failed" counts what the access log logs at level error (a 5xx the service
    produced itself, not 502/503/504), so the rate is 0.00% exactly when no
    such line was written. The manifest's log allow-list excuses only the zero
    case; any other rate is a real error line.
    """
    while True:
        total, failed = rt.window_requests, rt.window_failed
        rt.window_requests = rt.window_failed = 0
        rate = 100.0 * failed / total if total else 0.0
        log("info", f"request stats (last {STATS_EVERY_S} s): {total} requests, "
                    f"error rate {rate:.2f}% ({failed} of {total})")
        await asyncio.sleep(STATS_EVERY_S)


async def error_log_fault() -> None:
    """FAULT_ERROR_LOG: an error line every 5 s (what the log scan must catch)."""
    while True:
        log(
            "error",
            "Unhandled exception in request handler",
            detail="Traceback (most recent call last): RuntimeError: simulated failure"
            " (FAULT_ERROR_LOG)",
        )
        await asyncio.sleep(5)


def build_app(rt: Runtime, module: ModuleType) -> web.Application:
    """Assemble routes: common ones plus the service module's."""
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=1024 * 1024)
    app[RT_KEY] = rt
    spec = rt.settings.spec
    health = health_handler(
        getattr(module, "health_extra", None), getattr(module, "HEALTH_NESTED", False)
    )
    app.router.add_get(spec.health_path, health)
    app.router.add_get("/version", version_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    app.router.add_routes(module.routes())
    if hasattr(module, "openapi_paths"):
        app[OPENAPI_EXTRA_KEY] = module.openapi_paths()
    return app


async def serve(settings: Settings) -> None:
    """Start dependencies in the background, serve, and wait for SIGTERM."""
    module = importlib.import_module(f".services.{MODULES[settings.spec.key]}", __package__)
    rt = Runtime(
        settings=settings,
        db=Database(settings.database_url),
        cache=Cache(settings.redis_url),
        vault=Vault(settings.vault_addr, settings.vault_token, settings.spec.key),
    )
    app = build_app(rt, module)
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(rt.db.initialise(module.setup_db)),
        asyncio.create_task(rt.cache.connect_loop()),
        asyncio.create_task(rt.vault.load_loop()),
    ]
    waited = list(tasks)
    if hasattr(module, "start"):
        tasks.append(asyncio.create_task(module.start(rt)))
        waited.append(asyncio.create_task(rt.module_ready.wait()))
    if settings.fault_error_log:
        tasks.append(asyncio.create_task(error_log_fault()))
    if settings.fault_leak_mb_per_min > 0:
        tasks.append(asyncio.create_task(
            leak_memory_fault(settings.fault_leak_mb_per_min, settings.fault_leak_max_mb)))
    # With dependencies up, the "Connected to ..." lines come before
    # "Service started"; with them down we serve anyway (health says 503).
    await asyncio.wait(waited, timeout=STARTUP_WAIT_S)
    rt.extra["background"] = tasks

    async def report_keys() -> None:
        await asyncio.wait_for(rt.vault.loaded.wait(), timeout=30)
        if settings.spec.api_keys:
            # Names and verdicts only; values never leave the process.
            log("info", "API key check", api_keys=rt.key_statuses())

    if settings.spec.api_keys:
        tasks.append(asyncio.create_task(_quiet(report_keys())))

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "0.0.0.0",  # noqa: S104 - container port, published by compose
        settings.port,
        reuse_address=True,
    )
    await site.start()
    log("info", "Service started", port=settings.port, version=__import__("bizostub").__version__)
    tasks.append(asyncio.create_task(request_stats(rt)))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log("info", "Service stopping")
    if hasattr(module, "stop"):
        await module.stop(rt)
    for task in tasks:
        task.cancel()
    await runner.cleanup()
    await rt.cache.close()
    await rt.db.close()


async def _quiet(coro: Any) -> None:
    try:
        await coro
    except TimeoutError:
        pass


def main() -> int:
    """Parse settings (fatal gaps exit 1), apply fault knobs, serve."""
    configure_stdlib()
    set_service(os.environ.get("SERVICE", "").strip() or "bizostub")
    try:
        settings = load_settings()
    except (KeyError, ValueError) as exc:
        log("critical", str(exc).strip("'\""))
        return 1
    set_service(settings.spec.key)
    if settings.fault_memory_mb:
        hold_memory(settings.fault_memory_mb)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
