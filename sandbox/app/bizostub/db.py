"""A small pool of psycopg AsyncConnections with a background (re)connect loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .logs import describe, log

# One lock for every stand-in: the services share a database (separate
# schemas), and concurrent CREATE SCHEMA IF NOT EXISTS can still collide.
DDL_LOCK_KEY = 7_207_001


class DatabaseUnavailable(Exception):
    """Raised when no connection can be had; handlers turn it into a 503."""


class Database:
    """Lazily grown pool (max ``size``) of autocommit connections."""

    def __init__(self, url: str, size: int = 4) -> None:
        self.url = url
        self.size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._count = 0
        self._cond = asyncio.Condition()
        self.ready = asyncio.Event()  # schema created and seeded

    async def _connect(self, timeout: float = 2.0) -> psycopg.AsyncConnection[Any]:
        try:
            return await asyncio.wait_for(
                psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    # A SQL_ASCII database would hand text back as bytes.
                    client_encoding="utf8",
                    row_factory=dict_row,
                    connect_timeout=max(1, int(timeout)),
                ),
                timeout,
            )
        except (TimeoutError, OSError, psycopg.Error) as exc:
            raise DatabaseUnavailable(describe(exc)) from exc

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float = 2.0) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Borrow a connection; a broken one is dropped instead of returned."""
        conn = await self._acquire(timeout)
        broken = False
        try:
            yield conn
        except psycopg.OperationalError as exc:
            broken = True
            raise DatabaseUnavailable(describe(exc)) from exc
        finally:
            await self._release(conn, broken or conn.closed or conn.broken)

    async def _acquire(self, timeout: float) -> psycopg.AsyncConnection[Any]:
        async with self._cond:
            while not self._idle and self._count >= self.size:
                try:
                    await asyncio.wait_for(self._cond.wait(), timeout)
                except TimeoutError as exc:
                    raise DatabaseUnavailable("pool exhausted") from exc
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return await self._connect(timeout)
        except BaseException:
            async with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    async def _release(self, conn: psycopg.AsyncConnection[Any], drop: bool) -> None:
        if drop:
            with contextlib.suppress(Exception):
                await conn.close()
        async with self._cond:
            if drop:
                self._count -= 1
            else:
                self._idle.append(conn)
            self._cond.notify()

    async def fetch(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        """Run a query and return all rows as dicts."""
        async with self.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall() if cur.description else []

    async def fetchone(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        """Run a query and return the first row or None."""
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Any = None) -> int:
        """Run a statement; return the affected row count."""
        async with self.connection() as conn:
            cur = await conn.execute(sql, params)
            return cur.rowcount

    async def ping(self, timeout: float = 1.0) -> bool:
        """Live ``SELECT 1`` with a short timeout (health checks)."""
        try:
            await asyncio.wait_for(self.fetch("SELECT 1 AS ok"), timeout)
            return True
        except (TimeoutError, DatabaseUnavailable, psycopg.Error, OSError):
            return False

    async def initialise(
        self, setup: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
    ) -> None:
        """Connect (retrying forever in the background) and run ``setup`` under the DDL lock."""
        delay = 0.5
        warned = False
        while True:
            try:
                async with self.connection(timeout=3.0) as conn:
                    await conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
                    try:
                        await setup(conn)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK_KEY,))
                log("info", "Connected to PostgreSQL")
                self.ready.set()
                return
            except (DatabaseUnavailable, psycopg.Error, OSError) as exc:
                if not warned:
                    log(
                        "warning",
                        "PostgreSQL unavailable, retrying in background",
                        reason=describe(exc),
                    )
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        """Close idle connections."""
        while self._idle:
            with contextlib.suppress(Exception):
                await self._idle.pop().close()
