"""amazon-sourcing stand-in: product search, price history, import jobs."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from aiohttp import web

from ..keys import CONNECTED
from ..logs import log
from ..web import ApiError, Runtime, cached_json, int_param, json_response, read_json, rt_of

DDL = """
CREATE SCHEMA IF NOT EXISTS sourcing;
CREATE TABLE IF NOT EXISTS sourcing.products (
    asin TEXT PRIMARY KEY, title TEXT NOT NULL, price NUMERIC(10,2) NOT NULL,
    rating NUMERIC(2,1) NOT NULL,
    reviews_count INT NOT NULL, image_url TEXT NOT NULL, prime BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS sourcing.price_history (
    asin TEXT NOT NULL REFERENCES sourcing.products(asin), day DATE NOT NULL,
    price NUMERIC(10,2) NOT NULL,
    PRIMARY KEY (asin, day));
CREATE TABLE IF NOT EXISTS sourcing.import_jobs (
    job_id TEXT PRIMARY KEY, asins JSONB NOT NULL, status TEXT NOT NULL DEFAULT 'queued',
    count INT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""

PRODUCTS = [
    ("B08N5WRWNW", "Echo Dot (4th Gen) Smart Speaker", "49.99", 4.7, 512340, True),
    ("B07FZ8S74R", "Wireless Earbuds Bluetooth 5.3", "25.99", 4.4, 88213, True),
    ("B09B8V1LZ3", "Stainless Steel Insulated Water Bottle 32oz", "21.95", 4.8, 40122, True),
    ("B0BSHF7WHW", "LED Desk Lamp with USB Charging Port", "32.49", 4.5, 12877, False),
    ("B07PGL2ZSL", "Non-Slip Yoga Mat 6mm", "27.99", 4.6, 30511, True),
]
ASIN = re.compile(r"^[A-Z0-9]{10}$")
SWEEP_EVERY_S = 30


async def setup_db(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the sourcing schema; seed 5 products with 30 days of prices."""
    await conn.execute(DDL)
    if (await (await conn.execute("SELECT count(*) AS n FROM sourcing.products")).fetchone())["n"]:
        return
    today = date.today()
    for n, (asin, title, price, rating, reviews, prime) in enumerate(PRODUCTS):
        await conn.execute(
            "INSERT INTO sourcing.products VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            (
                asin,
                title,
                Decimal(price),
                rating,
                reviews,
                f"https://m.media-amazon.com/images/I/{asin}.jpg",
                prime,
            ),
        )
        for d in range(30, -1, -5):
            # A deterministic wobble around today's price.
            wobble = Decimal(((d * 7 + n * 3) % 11) - 5) / Decimal(10)
            await conn.execute(
                "INSERT INTO sourcing.price_history VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                (asin, today - timedelta(days=d), Decimal(price) + (wobble if d else 0)),
            )


async def health_extra(rt: Runtime) -> dict[str, Any]:
    """Amazon PA-API credentials (format only)."""
    ks = rt.key_statuses()
    word = next((w for w in ks.values() if w != CONNECTED), CONNECTED)
    return {"amazon_api": word}


COLUMNS = "asin, title, price, rating, reviews_count, image_url, prime"


async def search(request: web.Request) -> web.Response:
    """Search products by title words."""
    db = rt_of(request).db
    q = request.query.get("q", "").strip()
    if not q:
        raise ApiError(400, "Query parameter 'q' is required", {"q": "missing"})
    limit = int_param(request, "limit", 20, 1, 100)

    async def build() -> dict[str, Any]:
        words = [w for w in q.split() if w]
        where = " AND ".join(["title ILIKE %s"] * len(words))
        rows = await db.fetch(
            # only placeholders are interpolated; the words go in as parameters
            f"SELECT {COLUMNS} FROM sourcing.products WHERE {where} ORDER BY asin",  # noqa: S608
            [f"%{w}%" for w in words],
        )
        return {"query": q, "total_results": len(rows), "products": rows[:limit]}

    return await cached_json(request, "search", build)


async def get_product(request: web.Request) -> web.Response:
    """One product by ASIN."""
    db = rt_of(request).db
    asin = request.match_info["asin"]

    async def build() -> dict[str, Any]:
        sql = f"SELECT {COLUMNS} FROM sourcing.products WHERE asin = %s"  # noqa: S608 - constant
        row = await db.fetchone(sql, (asin,))
        if row is None:
            raise ApiError(404, f"Product {asin} not found", {"asin": asin})
        return row

    return await cached_json(request, "products", build)


async def price_history(request: web.Request) -> web.Response:
    """Daily price points of one product."""
    db = rt_of(request).db
    asin = request.match_info["asin"]

    async def build() -> dict[str, Any]:
        if await db.fetchone("SELECT asin FROM sourcing.products WHERE asin = %s", (asin,)) is None:
            raise ApiError(404, f"Product {asin} not found", {"asin": asin})
        rows = await db.fetch(
            "SELECT day AS date, price FROM sourcing.price_history WHERE asin = %s ORDER BY day",
            (asin,),
        )
        return {"asin": asin, "currency": "USD", "history": rows}

    return await cached_json(request, "history", build)


async def create_import(request: web.Request) -> web.Response:
    """Queue an import of ASINs."""
    rt = rt_of(request)
    data = await read_json(request)
    asins = data.get("asins")
    if not isinstance(asins, list) or not asins or len(asins) > 100:
        raise ApiError(400, "Validation failed", {"asins": "a list of 1-100 ASINs is required"})
    bad = [a for a in asins if not isinstance(a, str) or not ASIN.match(a)]
    if bad:
        raise ApiError(
            400,
            "Validation failed",
            {"asins": f"not ASINs (10 upper-case letters/digits): {bad[:5]}"},
        )
    tag = data.get("tag", "")
    job_id = "job_" + secrets.token_hex(8)
    await rt.db.execute(
        "INSERT INTO sourcing.import_jobs (job_id, asins, count) VALUES (%s,%s,%s)",
        (
            job_id,
            json.dumps({"asins": asins, "tag": tag if isinstance(tag, str) else ""}),
            len(asins),
        ),
    )
    return json_response({"job_id": job_id, "status": "queued", "count": len(asins)}, 202)


async def get_import(request: web.Request) -> web.Response:
    """One import job."""
    rt = rt_of(request)
    job_id = request.match_info["job_id"]
    row = await rt.db.fetchone(
        "SELECT job_id, asins, status, count, created_at FROM sourcing.import_jobs "
        "WHERE job_id = %s",
        (job_id,),
    )
    if row is None:
        raise ApiError(404, f"Import job {job_id} not found", {"job_id": job_id})
    row["asins"] = row["asins"].get("asins", [])
    return json_response(row)


async def delete_import(request: web.Request) -> web.Response:
    """Delete one import job."""
    rt = rt_of(request)
    job_id = request.match_info["job_id"]
    if await rt.db.execute("DELETE FROM sourcing.import_jobs WHERE job_id = %s", (job_id,)) == 0:
        raise ApiError(404, f"Import job {job_id} not found", {"job_id": job_id})
    return web.Response(status=204)


async def start(rt: Runtime) -> None:
    """Start the import-queue sweeper (it needs nothing else to be ready)."""
    rt.module_ready.set()
    rt.extra["sweeper"] = asyncio.create_task(_sweep_loop())


async def _sweep_loop() -> None:
    """The import queue's retry sweep, once at start and every SWEEP_EVERY_S.

    Jobs stay ``queued`` (the stand-in never calls Amazon), so nothing is ever
    retried and nothing fails: the line says so. It contains the word "error"
    on a healthy service, as real workers' summaries do; the manifest's log
    allow-list excuses exactly the zero case.
    """
    while True:
        log("info", "import retry sweep: 0 job(s) retried, 0 error(s) in last batch")
        await asyncio.sleep(SWEEP_EVERY_S)


async def stop(rt: Runtime) -> None:
    """Stop the sweeper."""
    task = rt.extra.get("sweeper")
    if task is not None:
        task.cancel()


def routes() -> list[web.RouteDef]:
    """FastAPI-style paths."""
    return [
        web.get("/api/search", search),
        web.get("/api/products/{asin}", get_product),
        web.get("/api/products/{asin}/price-history", price_history),
        web.post("/api/import", create_import),
        web.get("/api/import/{job_id}", get_import),
        web.delete("/api/import/{job_id}", delete_import),
    ]
