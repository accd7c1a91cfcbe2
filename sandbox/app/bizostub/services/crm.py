"""django-crm stand-in: clients, leads (read/write), contacts."""

from __future__ import annotations

from typing import Any

import psycopg
from aiohttp import web

from ..web import ApiError, cached_json, int_param, json_response, read_json, rt_of

DDL = """
CREATE SCHEMA IF NOT EXISTS crm;
CREATE TABLE IF NOT EXISTS crm.clients (
    id SERIAL PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS crm.leads (
    id SERIAL PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'new',
    score INT NOT NULL DEFAULT 0, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS crm.contacts (
    id SERIAL PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT NOT NULL DEFAULT '',
    company TEXT NOT NULL DEFAULT '', created_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""

CLIENTS = [
    ("Acme Dental Clinic", "office@acmedental.example", "active"),
    ("Green Leaf Landscaping", "info@greenleaf.example", "active"),
    ("Harbor Yoga Studio", "hello@harboryoga.example", "onboarding"),
    ("Metro Auto Repair", "service@metroauto.example", "active"),
    ("Sunrise Bakery", "orders@sunrisebakery.example", "paused"),
]
LEADS = [
    (
        "Priya Shah",
        "priya@shahlaw.example",
        "+1-555-0101",
        "website",
        "Asked about SEO audit",
        "contacted",
        40,
    ),
    (
        "Tom Becker",
        "tom@beckerplumbing.example",
        "+1-555-0102",
        "referral",
        "Wants Google Ads",
        "new",
        10,
    ),
    (
        "Ana Costa",
        "ana@costadesign.example",
        "+1-555-0103",
        "linkedin",
        "Demo booked",
        "qualified",
        75,
    ),
]
CONTACTS = [
    ("Maria Lopez", "maria@acmedental.example", "+1-555-0201", "Acme Dental Clinic"),
    ("James Green", "james@greenleaf.example", "+1-555-0202", "Green Leaf Landscaping"),
    ("Lena Park", "lena@harboryoga.example", "+1-555-0203", "Harbor Yoga Studio"),
    ("Omar Haddad", "omar@metroauto.example", "+1-555-0204", "Metro Auto Repair"),
]

LEAD_FIELDS = ("name", "email", "phone", "source", "notes")
LEAD_COLUMNS = "id, name, email, phone, source, notes, status, score, created_at"
LEAD_SELECT = (
    "SELECT id, name, email, phone, source, notes, status, score, created_at FROM crm.leads"
)


async def setup_db(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the crm schema and seed it once."""
    await conn.execute(DDL)
    if (await (await conn.execute("SELECT count(*) AS n FROM crm.clients")).fetchone())["n"] == 0:
        for row in CLIENTS:
            await conn.execute(
                "INSERT INTO crm.clients (name, email, status) VALUES (%s,%s,%s)", row
            )
    if (await (await conn.execute("SELECT count(*) AS n FROM crm.leads")).fetchone())["n"] == 0:
        for row in LEADS:
            await conn.execute(
                "INSERT INTO crm.leads (name, email, phone, source, notes, status, score) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s)",
                row,
            )
    if (await (await conn.execute("SELECT count(*) AS n FROM crm.contacts")).fetchone())["n"] == 0:
        for row in CONTACTS:
            await conn.execute(
                "INSERT INTO crm.contacts (name, email, phone, company) VALUES (%s,%s,%s,%s)", row
            )


def validate_lead(data: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Return (clean fields, problems per field)."""
    problems: dict[str, str] = {}
    clean: dict[str, str] = {}
    for name in LEAD_FIELDS:
        value = data.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            problems[name] = "must be a string"
            continue
        clean[name] = value.strip()
    for required in ("name", "email"):
        if required not in problems and not clean.get(required):
            problems[required] = "This field is required."
    email = clean.get("email", "")
    if "email" not in problems and (
        "@" not in email or email.startswith("@") or email.endswith("@")
    ):
        problems["email"] = "Enter a valid email address."
    for name in LEAD_FIELDS:
        if name not in problems and len(clean.get(name, "")) > 2000:
            problems[name] = "Ensure this field has no more than 2000 characters."
    return clean, problems


def _listing(namespace: str, sql: str) -> Any:
    async def handle(request: web.Request) -> web.Response:
        db = rt_of(request).db
        limit = int_param(request, "limit", 100, 1, 1000)
        offset = int_param(request, "offset", 0, 0, 10**9)

        async def build() -> dict[str, Any]:
            # namespace is one of our table names, never user input
            count_sql = f"SELECT count(*) AS n FROM crm.{namespace}"  # noqa: S608
            total = (await db.fetchone(count_sql))["n"]
            rows = await db.fetch(sql + " ORDER BY id LIMIT %s OFFSET %s", (limit, offset))
            return {"count": total, "next": None, "previous": None, "results": rows}

        return await cached_json(request, namespace, build)

    handle.__doc__ = f"List {namespace}."
    return handle


def _detail(namespace: str, sql: str, label: str) -> Any:
    async def handle(request: web.Request) -> web.Response:
        db = rt_of(request).db
        item_id = int(request.match_info["id"])

        async def build() -> dict[str, Any]:
            row = await db.fetchone(sql + " WHERE id = %s", (item_id,))
            if row is None:
                raise ApiError(404, f"{label} {item_id} not found", {"id": item_id})
            return row

        return await cached_json(request, namespace, build)

    handle.__doc__ = f"One {label.lower()} by id."
    return handle


async def create_lead(request: web.Request) -> web.Response:
    """Create a lead (status new, score 0)."""
    rt = rt_of(request)
    clean, problems = validate_lead(await read_json(request))
    if problems:
        raise ApiError(400, "Validation failed", problems)
    row = await rt.db.fetchone(
        "INSERT INTO crm.leads (name, email, phone, source, notes) VALUES (%s,%s,%s,%s,%s)"
        " RETURNING id, name, email, phone, source, notes, status, score, created_at",
        tuple(clean.get(f, "") for f in LEAD_FIELDS),
    )
    await rt.cache.invalidate("leads")
    return json_response(row, 201, {"Location": f"/api/leads/{row['id']}/"})


async def delete_lead(request: web.Request) -> web.Response:
    """Delete one lead."""
    rt = rt_of(request)
    lead_id = int(request.match_info["id"])
    if await rt.db.execute("DELETE FROM crm.leads WHERE id = %s", (lead_id,)) == 0:
        raise ApiError(404, f"Lead {lead_id} not found", {"id": lead_id})
    await rt.cache.invalidate("leads")
    return web.Response(status=204)


async def bulk_delete_leads(request: web.Request) -> web.Response:
    """Delete leads whose name, email, source or notes contain ``?tag=`` (test cleanup)."""
    rt = rt_of(request)
    tag = request.query.get("tag", "").strip()
    if len(tag) < 3:
        raise ApiError(
            400, "Query parameter 'tag' (at least 3 characters) is required", {"tag": tag}
        )
    like = f"%{tag}%"
    deleted = await rt.db.execute(
        "DELETE FROM crm.leads"
        " WHERE notes LIKE %s OR source LIKE %s OR name LIKE %s OR email LIKE %s",
        (like, like, like, like),
    )
    await rt.cache.invalidate("leads")
    return json_response({"deleted": deleted, "tag": tag})


def routes() -> list[web.RouteDef]:
    """DRF-style paths with trailing slashes."""
    return [
        web.get(
            "/api/clients/",
            _listing("clients", "SELECT id, name, email, status, created_at FROM crm.clients"),
        ),
        web.get(
            r"/api/clients/{id:\d+}/",
            _detail(
                "clients", "SELECT id, name, email, status, created_at FROM crm.clients", "Client"
            ),
        ),
        web.get("/api/leads/", _listing("leads", LEAD_SELECT)),
        web.post("/api/leads/", create_lead),
        web.delete("/api/leads/", bulk_delete_leads),
        web.get(
            r"/api/leads/{id:\d+}/",
            _detail("leads", LEAD_SELECT, "Lead"),
        ),
        web.delete(r"/api/leads/{id:\d+}/", delete_lead),
        web.get(
            "/api/contacts/",
            _listing(
                "contacts", "SELECT id, name, email, phone, company, created_at FROM crm.contacts"
            ),
        ),
    ]
