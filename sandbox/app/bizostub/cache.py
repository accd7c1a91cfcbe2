"""Redis: response cache, hit/miss counters, rate-limit counters, carts."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .logs import describe, log

CACHE_TTL = 30
#: Cached responses are namespaced by process start, so a restarted or
#: recreated service starts cold instead of serving what an earlier run cached
#: (otherwise a fault such as an unreachable database would hide behind warm
#: entries for up to CACHE_TTL, depending on what ran just before).
BOOT = uuid.uuid4().hex[:8]
HITS = "stats:cache_hits"
MISSES = "stats:cache_misses"


class Cache:
    """Thin wrapper that degrades to 'no cache' while Redis is away."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.client: aioredis.Redis | None = (
            aioredis.from_url(
                url,
                socket_connect_timeout=1,
                socket_timeout=1,
                health_check_interval=15,
                decode_responses=True,
            )
            if url
            else None
        )

    async def connect_loop(self) -> None:
        """PING until Redis answers; log once."""
        if self.client is None:
            log("warning", "REDIS_URL is not set; caching disabled")
            return
        delay, warned = 0.5, False
        while True:
            try:
                await self.client.ping()
                log("info", "Connected to Redis")
                return
            except (TimeoutError, RedisError, OSError) as exc:
                if not warned:
                    log(
                        "warning", "Redis unavailable, retrying in background", reason=describe(exc)
                    )
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def ping(self, timeout: float = 1.0) -> bool:
        """Live PING for health checks."""
        if self.client is None:
            return False
        try:
            return bool(await asyncio.wait_for(self.client.ping(), timeout))
        except (TimeoutError, RedisError, OSError):
            return False

    async def get_cached(self, key: str) -> str | None:
        """Cached body or None; counts the hit or miss."""
        if self.client is None:
            return None
        try:
            value = await self.client.get(f"{BOOT}:{key}")
            await self.client.incr(HITS if value is not None else MISSES)
            return value
        except (TimeoutError, RedisError, OSError):
            return None

    async def set_cached(self, key: str, body: str, ttl: int = CACHE_TTL) -> None:
        """Store a body for ``ttl`` seconds (best effort)."""
        if self.client is None:
            return
        try:
            await self.client.set(f"{BOOT}:{key}", body, ex=ttl)
        except (TimeoutError, RedisError, OSError):
            pass

    async def invalidate(self, namespace: str) -> None:
        """Drop every cached response under ``cache:<namespace>:``."""
        if self.client is None:
            return
        try:
            keys = [
                k
                async for k in self.client.scan_iter(match=f"{BOOT}:cache:{namespace}:*", count=200)
            ]
            if keys:
                await self.client.delete(*keys)
        except (TimeoutError, RedisError, OSError):
            pass

    async def hit_rate(self) -> float:
        """hits / (hits + misses) from the Redis counters, 0 when none."""
        if self.client is None:
            return 0.0
        try:
            hits, misses = await self.client.mget(HITS, MISSES)
        except (TimeoutError, RedisError, OSError):
            return 0.0
        h, m = int(hits or 0), int(misses or 0)
        return round(h / (h + m), 4) if h + m else 0.0

    async def rate_count(self, client_id: str) -> tuple[int, int] | None:
        """Count one request; return (count this minute, reset_epoch) or None without Redis."""
        if self.client is None:
            return None
        window = int(time.time()) // 60
        key = f"ratelimit:{client_id}:{window}"
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 61)
            count, _ = await pipe.execute()
        except (TimeoutError, RedisError, OSError):
            return None
        return int(count), (window + 1) * 60

    async def get_json(self, key: str) -> Any:
        """Read a JSON value (carts); raises RedisError when Redis is down."""
        if self.client is None:
            raise ConnectionError("REDIS_URL is not set")
        raw = await self.client.get(key)
        return json.loads(raw) if raw else None

    async def set_json(self, key: str, value: Any, ttl: int) -> None:
        """Write a JSON value (carts)."""
        if self.client is None:
            raise ConnectionError("REDIS_URL is not set")
        await self.client.set(key, json.dumps(value), ex=ttl)

    async def delete(self, key: str) -> int:
        """Delete a key; number removed."""
        if self.client is None:
            raise ConnectionError("REDIS_URL is not set")
        return int(await self.client.delete(key))

    async def close(self) -> None:
        """Close the client pool."""
        if self.client is not None:
            await self.client.close()
