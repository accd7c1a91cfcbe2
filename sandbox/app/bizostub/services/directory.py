"""business-directory-api stand-in: businesses, search, categories, reviews."""

from __future__ import annotations

from typing import Any

import psycopg
from aiohttp import web

from ..web import ApiError, cached_json, int_param, rt_of

DDL = """
CREATE SCHEMA IF NOT EXISTS directory;
CREATE TABLE IF NOT EXISTS directory.categories (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS directory.businesses (
    id SERIAL PRIMARY KEY, name TEXT NOT NULL,
    category_id INT NOT NULL REFERENCES directory.categories(id),
    location TEXT NOT NULL, rating NUMERIC(2,1) NOT NULL, phone TEXT NOT NULL,
    website TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS directory.reviews (
    id SERIAL PRIMARY KEY,
    business_id INT NOT NULL REFERENCES directory.businesses(id) ON DELETE CASCADE,
    rating INT NOT NULL, comment TEXT NOT NULL, author TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""

CATEGORIES = ["Restaurants", "Home Services", "Health & Wellness"]
BUSINESSES = [
    (
        "Bella Napoli Trattoria",
        "Restaurants",
        "Austin, TX",
        4.6,
        "+1-512-555-0110",
        "https://bellanapoli.example",
    ),
    (
        "Sakura Sushi Bar",
        "Restaurants",
        "Seattle, WA",
        4.4,
        "+1-206-555-0111",
        "https://sakurasushi.example",
    ),
    (
        "The Green Fork",
        "Restaurants",
        "Austin, TX",
        4.2,
        "+1-512-555-0112",
        "https://greenfork.example",
    ),
    (
        "Reliable Plumbing Co",
        "Home Services",
        "Denver, CO",
        4.8,
        "+1-303-555-0113",
        "https://reliableplumbing.example",
    ),
    (
        "Spark Electric",
        "Home Services",
        "Seattle, WA",
        4.5,
        "+1-206-555-0114",
        "https://sparkelectric.example",
    ),
    (
        "Evergreen Lawn Care",
        "Home Services",
        "Portland, OR",
        4.1,
        "+1-503-555-0115",
        "https://evergreenlawn.example",
    ),
    (
        "Harbor Yoga Studio",
        "Health & Wellness",
        "Portland, OR",
        4.9,
        "+1-503-555-0116",
        "https://harboryoga.example",
    ),
    (
        "Peak Physio Clinic",
        "Health & Wellness",
        "Denver, CO",
        4.7,
        "+1-303-555-0117",
        "https://peakphysio.example",
    ),
]
REVIEWS = [
    (5, "Excellent service, would recommend.", "Jordan M."),
    (4, "Friendly staff and fair prices.", "Casey L."),
]

COLUMNS = (
    "b.id, b.name, c.name AS category, b.location, b.rating, b.phone, b.website "
    "FROM directory.businesses b JOIN directory.categories c ON c.id = b.category_id"
)


async def setup_db(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the directory schema and seed it once."""
    await conn.execute(DDL)
    if (await (await conn.execute("SELECT count(*) AS n FROM directory.businesses")).fetchone())[
        "n"
    ]:
        return
    for name in CATEGORIES:
        await conn.execute(
            "INSERT INTO directory.categories (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,)
        )
    for name, cat, loc, rating, phone, site in BUSINESSES:
        cur = await conn.execute(
            "INSERT INTO directory.businesses"
            " (name, category_id, location, rating, phone, website) "
            "SELECT %s, id, %s, %s, %s, %s FROM directory.categories WHERE name = %s RETURNING id",
            (name, loc, rating, phone, site, cat),
        )
        bid = (await cur.fetchone())["id"]
        for stars, comment, author in REVIEWS:
            await conn.execute(
                "INSERT INTO directory.reviews (business_id, rating, comment, author) "
                "VALUES (%s,%s,%s,%s)",
                (bid, stars, comment, author),
            )


async def list_businesses(request: web.Request) -> web.Response:
    """Paginated businesses."""
    db = rt_of(request).db
    page = int_param(request, "page", 1, 1, 100000)
    per_page = int_param(request, "per_page", 20, 1, 100)

    async def build() -> dict[str, Any]:
        total = (await db.fetchone("SELECT count(*) AS n FROM directory.businesses"))["n"]
        rows = await db.fetch(
            f"SELECT {COLUMNS} ORDER BY b.id LIMIT %s OFFSET %s", (per_page, (page - 1) * per_page)
        )
        return {"total": total, "page": page, "per_page": per_page, "businesses": rows}

    return await cached_json(request, "businesses", build)


async def search_businesses(request: web.Request) -> web.Response:
    """Filter by q (name/category), category and location; at least one is required."""
    db = rt_of(request).db
    q = request.query.get("q", "").strip()
    category = request.query.get("category", "").strip()
    location = request.query.get("location", "").strip()
    if not (q or category or location):
        raise ApiError(
            400,
            "At least one of q, category, location is required",
            {"q": "missing", "category": "missing", "location": "missing"},
        )
    page = int_param(request, "page", 1, 1, 100000)
    per_page = int_param(request, "per_page", 20, 1, 100)

    async def build() -> dict[str, Any]:
        where, params = [], []
        if q:
            where.append("(b.name ILIKE %s OR c.name ILIKE %s)")
            params += [f"%{q}%", f"%{q}%"]
        if category:
            where.append("(c.name ILIKE %s OR c.id::text = %s)")
            params += [f"%{category}%", category]
        if location:
            where.append("b.location ILIKE %s")
            params.append(f"%{location}%")
        rows = await db.fetch(f"SELECT {COLUMNS} WHERE {' AND '.join(where)} ORDER BY b.id", params)
        start = (page - 1) * per_page
        return {
            "total": len(rows),
            "page": page,
            "per_page": per_page,
            "query": {"q": q, "category": category, "location": location},
            "businesses": rows[start : start + per_page],
        }

    return await cached_json(request, "businesses", build)


async def get_business(request: web.Request) -> web.Response:
    """One business."""
    db = rt_of(request).db
    bid = int(request.match_info["id"])

    async def build() -> dict[str, Any]:
        row = await db.fetchone(f"SELECT {COLUMNS} WHERE b.id = %s", (bid,))
        if row is None:
            raise ApiError(404, f"Business {bid} not found", {"id": bid})
        return row

    return await cached_json(request, "businesses", build)


async def business_reviews(request: web.Request) -> web.Response:
    """Reviews of one business."""
    db = rt_of(request).db
    bid = int(request.match_info["id"])

    async def build() -> dict[str, Any]:
        if await db.fetchone("SELECT id FROM directory.businesses WHERE id = %s", (bid,)) is None:
            raise ApiError(404, f"Business {bid} not found", {"id": bid})
        rows = await db.fetch(
            "SELECT id, rating, comment, author, created_at FROM directory.reviews "
            "WHERE business_id = %s ORDER BY id",
            (bid,),
        )
        return {"business_id": bid, "total": len(rows), "reviews": rows}

    return await cached_json(request, "reviews", build)


async def categories(request: web.Request) -> web.Response:
    """Categories with business counts."""
    db = rt_of(request).db

    async def build() -> dict[str, Any]:
        rows = await db.fetch(
            "SELECT c.id, c.name, count(b.id)::int AS count FROM directory.categories c "
            "LEFT JOIN directory.businesses b ON b.category_id = c.id GROUP BY c.id ORDER BY c.id"
        )
        return {"categories": rows}

    return await cached_json(request, "categories", build)


def routes() -> list[web.RouteDef]:
    """FastAPI-style paths (no trailing slash); search before the id route."""
    return [
        web.get("/api/businesses", list_businesses),
        web.get("/api/businesses/search", search_businesses),
        web.get(r"/api/businesses/{id:\d+}", get_business),
        web.get(r"/api/businesses/{id:\d+}/reviews", business_reviews),
        web.get("/api/categories", categories),
    ]
