"""wagtail-cms stand-in: the Wagtail v2 read API (pages, documents, images)."""

from __future__ import annotations

from typing import Any

import psycopg
from aiohttp import web

from ..web import ApiError, cached_json, int_param, rt_of

DDL = """
CREATE SCHEMA IF NOT EXISTS cms;
CREATE TABLE IF NOT EXISTS cms.pages (
    id SERIAL PRIMARY KEY, title TEXT NOT NULL, slug TEXT NOT NULL UNIQUE,
    page_type TEXT NOT NULL, body TEXT NOT NULL DEFAULT '',
    first_published_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS cms.documents (
    id SERIAL PRIMARY KEY, title TEXT NOT NULL, file_name TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS cms.images (
    id SERIAL PRIMARY KEY, title TEXT NOT NULL, file_name TEXT NOT NULL,
    width INT NOT NULL, height INT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""

PAGES = [
    (
        "Home",
        "home",
        "home.HomePage",
        "Welcome to Bizoholic, marketing automation for small business.",
    ),
    ("About Us", "about-us", "home.StandardPage", "Who we are and why we built BizOSaaS."),
    (
        "Services",
        "services",
        "services.ServiceIndexPage",
        "SEO, paid ads, content and CRM services.",
    ),
    ("Blog", "blog", "blog.BlogIndexPage", "News, guides and case studies."),
    ("Contact", "contact", "home.ContactPage", "Reach the team at hello@bizoholic.com."),
]
DOCUMENTS = [
    ("Pricing sheet 2024", "pricing-2024.pdf"),
    ("Onboarding guide", "onboarding.pdf"),
    ("Terms of service", "terms.pdf"),
]
IMAGES = [
    ("Hero banner", "hero.jpg", 1920, 1080),
    ("Team photo", "team.jpg", 1200, 800),
    ("Logo", "logo.png", 512, 512),
    ("Dashboard screenshot", "dashboard.png", 1440, 900),
]


async def setup_db(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the cms schema and seed it once."""
    await conn.execute(DDL)
    if (await (await conn.execute("SELECT count(*) AS n FROM cms.pages")).fetchone())["n"] == 0:
        for title, slug, ptype, body in PAGES:
            await conn.execute(
                "INSERT INTO cms.pages (title, slug, page_type, body) VALUES (%s,%s,%s,%s)",
                (title, slug, ptype, body),
            )
    if (await (await conn.execute("SELECT count(*) AS n FROM cms.documents")).fetchone())["n"] == 0:
        for title, fname in DOCUMENTS:
            await conn.execute(
                "INSERT INTO cms.documents (title, file_name) VALUES (%s,%s)", (title, fname)
            )
    if (await (await conn.execute("SELECT count(*) AS n FROM cms.images")).fetchone())["n"] == 0:
        for title, fname, w, h in IMAGES:
            await conn.execute(
                "INSERT INTO cms.images (title, file_name, width, height) VALUES (%s,%s,%s,%s)",
                (title, fname, w, h),
            )


def _page(row: dict[str, Any], detail: bool = False) -> dict[str, Any]:
    url = "/" if row["slug"] == "home" else f"/{row['slug']}/"
    item: dict[str, Any] = {
        "id": row["id"],
        "title": row["title"],
        "slug": row["slug"],
        "url": url,
        "meta": {
            "type": row["page_type"],
            "slug": row["slug"],
            "html_url": f"https://stg.bizoholic.com{url}",
            "detail_url": f"/api/v2/pages/{row['id']}/",
            "first_published_at": row["first_published_at"],
        },
    }
    if detail:
        item["body"] = row["body"]
    return item


def _paging(request: web.Request) -> tuple[int, int]:
    return int_param(request, "limit", 20, 1, 100), int_param(request, "offset", 0, 0, 100000)


async def list_pages(request: web.Request) -> web.Response:
    """List pages (Wagtail v2 listing)."""
    db = rt_of(request).db
    limit, offset = _paging(request)

    async def build() -> dict[str, Any]:
        total = (await db.fetchone("SELECT count(*) AS n FROM cms.pages"))["n"]
        rows = await db.fetch(
            "SELECT * FROM cms.pages ORDER BY id LIMIT %s OFFSET %s", (limit, offset)
        )
        return {"meta": {"total_count": total}, "items": [_page(r) for r in rows]}

    return await cached_json(request, "pages", build)


async def get_page(request: web.Request) -> web.Response:
    """One page by id."""
    db = rt_of(request).db
    page_id = int(request.match_info["id"])

    async def build() -> dict[str, Any]:
        row = await db.fetchone("SELECT * FROM cms.pages WHERE id = %s", (page_id,))
        if row is None:
            raise ApiError(404, f"Page {page_id} not found", {"id": page_id})
        return _page(row, detail=True)

    return await cached_json(request, "pages", build)


async def list_documents(request: web.Request) -> web.Response:
    """List documents."""
    db = rt_of(request).db
    limit, offset = _paging(request)

    async def build() -> dict[str, Any]:
        total = (await db.fetchone("SELECT count(*) AS n FROM cms.documents"))["n"]
        rows = await db.fetch(
            "SELECT * FROM cms.documents ORDER BY id LIMIT %s OFFSET %s", (limit, offset)
        )
        items = [
            {
                "id": r["id"],
                "title": r["title"],
                "meta": {
                    "type": "wagtaildocs.Document",
                    "download_url": f"/documents/{r['id']}/{r['file_name']}",
                },
            }
            for r in rows
        ]
        return {"meta": {"total_count": total}, "items": items}

    return await cached_json(request, "documents", build)


async def list_images(request: web.Request) -> web.Response:
    """List images."""
    db = rt_of(request).db
    limit, offset = _paging(request)

    async def build() -> dict[str, Any]:
        total = (await db.fetchone("SELECT count(*) AS n FROM cms.images"))["n"]
        rows = await db.fetch(
            "SELECT * FROM cms.images ORDER BY id LIMIT %s OFFSET %s", (limit, offset)
        )
        items = [
            {
                "id": r["id"],
                "title": r["title"],
                "width": r["width"],
                "height": r["height"],
                "meta": {
                    "type": "wagtailimages.Image",
                    "download_url": f"/media/original_images/{r['file_name']}",
                },
            }
            for r in rows
        ]
        return {"meta": {"total_count": total}, "items": items}

    return await cached_json(request, "images", build)


def routes() -> list[web.RouteDef]:
    """Wagtail's v2 API paths (trailing slashes, Django style)."""
    return [
        web.get("/api/v2/pages/", list_pages),
        web.get(r"/api/v2/pages/{id:\d+}/", get_page),
        web.get("/api/v2/documents/", list_documents),
        web.get("/api/v2/images/", list_images),
    ]
