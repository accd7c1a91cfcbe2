"""coreldove-backend stand-in: products, Redis carts, orders, fake Stripe/PayPal."""

from __future__ import annotations

import json
import secrets
from decimal import Decimal
from typing import Any

import psycopg
from aiohttp import web

from ..keys import CONNECTED
from ..web import ApiError, Runtime, cached_json, int_param, json_response, read_json, rt_of

DDL = """
CREATE SCHEMA IF NOT EXISTS commerce;
CREATE TABLE IF NOT EXISTS commerce.products (
    id SERIAL PRIMARY KEY, name TEXT NOT NULL, price NUMERIC(10,2) NOT NULL,
    currency TEXT NOT NULL DEFAULT 'USD',
    in_stock BOOLEAN NOT NULL DEFAULT true, images JSONB NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS commerce.orders (
    order_id TEXT PRIMARY KEY, session_id TEXT, customer_email TEXT NOT NULL DEFAULT '',
    items JSONB NOT NULL, total NUMERIC(12,2) NOT NULL, currency TEXT NOT NULL DEFAULT 'USD',
    status TEXT NOT NULL DEFAULT 'pending', notes TEXT NOT NULL DEFAULT '',
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS commerce.payments (
    id SERIAL PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES commerce.orders(order_id) ON DELETE CASCADE,
    provider TEXT NOT NULL, external_id TEXT NOT NULL, status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now());
"""

PRODUCTS = [
    ("Wireless Earbuds Pro", "49.99", True),
    ("Stainless Steel Water Bottle", "19.95", True),
    ("Ergonomic Office Chair", "189.00", True),
    ("LED Desk Lamp", "34.50", True),
    ("Yoga Mat Premium", "29.99", False),
    ("Bluetooth Smart Scale", "39.99", True),
]
CART_TTL = 24 * 3600
MAX_QTY = 100


async def setup_db(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the commerce schema and seed products once."""
    await conn.execute(DDL)
    if (await (await conn.execute("SELECT count(*) AS n FROM commerce.products")).fetchone())[
        "n"
    ] == 0:
        for i, (name, price, stock) in enumerate(PRODUCTS, 1):
            images = json.dumps([f"https://cdn.stg.coreldove.com/products/{i}/main.jpg"])
            await conn.execute(
                "INSERT INTO commerce.products (name, price, in_stock, images)"
                " VALUES (%s,%s,%s,%s)",
                (name, Decimal(price), stock, images),
            )


async def health_extra(rt: Runtime) -> dict[str, Any]:
    """Stripe and PayPal credentials (format only: no outbound calls)."""
    ks = rt.key_statuses()
    paypal = (
        ks["PAYPAL_CLIENT_ID"]
        if ks["PAYPAL_CLIENT_ID"] != CONNECTED
        else ks["PAYPAL_CLIENT_SECRET"]
    )
    return {"stripe": ks["STRIPE_SECRET_KEY"], "paypal": paypal}


async def list_products(request: web.Request) -> web.Response:
    """Paginated products."""
    db = rt_of(request).db
    page = int_param(request, "page", 1, 1, 100000)
    per_page = int_param(request, "per_page", 20, 1, 100)

    async def build() -> dict[str, Any]:
        total = (await db.fetchone("SELECT count(*) AS n FROM commerce.products"))["n"]
        rows = await db.fetch(
            "SELECT * FROM commerce.products ORDER BY id LIMIT %s OFFSET %s",
            (per_page, (page - 1) * per_page),
        )
        return {"total": total, "page": page, "per_page": per_page, "products": rows}

    return await cached_json(request, "products", build)


async def get_product(request: web.Request) -> web.Response:
    """One product."""
    db = rt_of(request).db
    pid = int(request.match_info["id"])

    async def build() -> dict[str, Any]:
        row = await db.fetchone("SELECT * FROM commerce.products WHERE id = %s", (pid,))
        if row is None:
            raise ApiError(404, f"Product {pid} not found", {"id": pid})
        return row

    return await cached_json(request, "products", build)


def _session_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise ApiError(
            400, "Validation failed", {"session_id": "required string (1-128 characters)"}
        )
    return value.strip()


def _cart_view(session_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum(Decimal(str(i["price"])) * i["quantity"] for i in items)
    return {
        "session_id": session_id,
        "items": items,
        "total": float(round(total, 2)),
        "currency": "USD",
    }


async def get_cart(request: web.Request) -> web.Response:
    """The cart of a session (empty when none)."""
    rt = rt_of(request)
    sid = request.match_info["session_id"]
    items = await rt.cache.get_json(f"cart:{sid}") or []
    return json_response(_cart_view(sid, items))


async def add_to_cart(request: web.Request) -> web.Response:
    """Add a product to a session's cart (Redis)."""
    rt = rt_of(request)
    data = await read_json(request)
    problems: dict[str, str] = {}
    try:
        sid = _session_id(data.get("session_id"))
    except ApiError as exc:
        problems.update(exc.details)
        sid = ""
    pid, qty = data.get("product_id"), data.get("quantity", 1)
    if not isinstance(pid, int) or isinstance(pid, bool):
        problems["product_id"] = "required integer"
    if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= MAX_QTY:
        problems["quantity"] = f"integer between 1 and {MAX_QTY}"
    if problems:
        raise ApiError(400, "Validation failed", problems)
    product = await rt.db.fetchone(
        "SELECT id, price, in_stock FROM commerce.products WHERE id = %s", (pid,)
    )
    if product is None:
        raise ApiError(404, f"Product {pid} not found", {"product_id": pid})
    if not product["in_stock"]:
        raise ApiError(400, "Validation failed", {"product_id": "out of stock"})
    items: list[dict[str, Any]] = await rt.cache.get_json(f"cart:{sid}") or []
    for item in items:
        if item["product_id"] == pid:
            item["quantity"] = min(MAX_QTY, item["quantity"] + qty)
            break
    else:
        items.append({"product_id": pid, "quantity": qty, "price": float(product["price"])})
    await rt.cache.set_json(f"cart:{sid}", items, CART_TTL)
    return json_response(_cart_view(sid, items), 201)


async def delete_cart(request: web.Request) -> web.Response:
    """Drop a session's cart."""
    rt = rt_of(request)
    sid = request.match_info["session_id"]
    if await rt.cache.delete(f"cart:{sid}") == 0:
        raise ApiError(404, f"Cart {sid} not found", {"session_id": sid})
    return web.Response(status=204)


async def _order_items(
    rt: Runtime, data: dict[str, Any]
) -> tuple[list[dict[str, Any]], str | None]:
    """Items from the body, else from the session's cart; priced from the catalogue."""
    sid = data.get("session_id")
    raw = data.get("items")
    if raw is None and sid is not None:
        sid = _session_id(sid)
        raw = await rt.cache.get_json(f"cart:{sid}") or []
        if not raw:
            raise ApiError(400, "Validation failed", {"session_id": "cart is empty"})
    if not isinstance(raw, list) or not raw:
        raise ApiError(
            400,
            "Validation failed",
            {"items": "provide items or a session_id with a non-empty cart"},
        )
    wanted: dict[int, int] = {}
    for n, item in enumerate(raw):
        pid = item.get("product_id") if isinstance(item, dict) else None
        qty = item.get("quantity", 1) if isinstance(item, dict) else None
        if not isinstance(pid, int) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
            raise ApiError(
                400,
                "Validation failed",
                {f"items[{n}]": "needs integer product_id and quantity 1-100"},
            )
        wanted[pid] = wanted.get(pid, 0) + qty
    rows = await rt.db.fetch(
        "SELECT id, price FROM commerce.products WHERE id = ANY(%s)", (list(wanted),)
    )
    prices = {r["id"]: r["price"] for r in rows}
    missing = [p for p in wanted if p not in prices]
    if missing:
        raise ApiError(400, "Validation failed", {"items": f"unknown product ids {missing}"})
    items = [{"product_id": p, "quantity": q, "price": float(prices[p])} for p, q in wanted.items()]
    return items, sid if isinstance(sid, str) else None


async def create_order(request: web.Request) -> web.Response:
    """Create a pending order from items or a cart."""
    rt = rt_of(request)
    data = await read_json(request)
    email = data.get("customer_email", "")
    if email and (not isinstance(email, str) or "@" not in email):
        raise ApiError(400, "Validation failed", {"customer_email": "Enter a valid email address."})
    notes = data.get("notes", "")
    metadata = data.get("metadata", {})
    if not isinstance(notes, str) or not isinstance(metadata, dict):
        raise ApiError(400, "Validation failed", {"notes": "string", "metadata": "object"})
    items, sid = await _order_items(rt, data)
    total = round(sum(Decimal(str(i["price"])) * i["quantity"] for i in items), 2)
    order_id = "ord_" + secrets.token_hex(8)
    await rt.db.execute(
        "INSERT INTO commerce.orders"
        " (order_id, session_id, customer_email, items, total, notes, metadata) "
        "VALUES (%s,%s,%s,%s,%s,%s,%s)",
        (order_id, sid, email or "", json.dumps(items), total, notes, json.dumps(metadata)),
    )
    return json_response(
        {
            "order_id": order_id,
            "status": "pending",
            "total": float(total),
            "currency": "USD",
            "items": items,
            "payment_url": f"https://stg.coreldove.com/checkout/{order_id}",
        },
        201,
    )


async def get_order(request: web.Request) -> web.Response:
    """One order."""
    rt = rt_of(request)
    oid = request.match_info["order_id"]
    row = await rt.db.fetchone("SELECT * FROM commerce.orders WHERE order_id = %s", (oid,))
    if row is None:
        raise ApiError(404, f"Order {oid} not found", {"order_id": oid})
    return json_response(row)


async def delete_order(request: web.Request) -> web.Response:
    """Delete one order (and its payments)."""
    rt = rt_of(request)
    oid = request.match_info["order_id"]
    if await rt.db.execute("DELETE FROM commerce.orders WHERE order_id = %s", (oid,)) == 0:
        raise ApiError(404, f"Order {oid} not found", {"order_id": oid})
    return web.Response(status=204)


async def bulk_delete_orders(request: web.Request) -> web.Response:
    """Delete orders whose notes, metadata or email contain ``?tag=`` (test cleanup)."""
    rt = rt_of(request)
    tag = request.query.get("tag", "").strip()
    if len(tag) < 3:
        raise ApiError(
            400, "Query parameter 'tag' (at least 3 characters) is required", {"tag": tag}
        )
    like = f"%{tag}%"
    n = await rt.db.execute(
        "DELETE FROM commerce.orders WHERE notes LIKE %s OR metadata::text LIKE %s "
        "OR customer_email LIKE %s OR coalesce(session_id, '') LIKE %s",
        (like, like, like, like),
    )
    return json_response({"deleted": n, "tag": tag})


async def _payable_order(rt: Runtime, data: dict[str, Any]) -> dict[str, Any]:
    oid = data.get("order_id")
    if not isinstance(oid, str) or not oid:
        raise ApiError(400, "Validation failed", {"order_id": "This field is required."})
    row = await rt.db.fetchone(
        "SELECT order_id, total, currency, status FROM commerce.orders WHERE order_id = %s", (oid,)
    )
    if row is None:
        raise ApiError(404, f"Order {oid} not found", {"order_id": oid})
    return row


async def stripe_checkout(request: web.Request) -> web.Response:
    """Fake Stripe Checkout session (test mode key required; no outbound call)."""
    rt = rt_of(request)
    order = await _payable_order(rt, await read_json(request))
    word = rt.key_statuses()["STRIPE_SECRET_KEY"]
    if word != CONNECTED:
        raise ApiError(503, "Stripe is not configured", {"stripe": word})
    session = "cs_test_" + secrets.token_hex(16)
    await rt.db.execute(
        "INSERT INTO commerce.payments (order_id, provider, external_id, status) "
        "VALUES (%s,'stripe',%s,'open')",
        (order["order_id"], session),
    )
    return json_response(
        {
            "checkout_session_id": session,
            "url": f"https://checkout.stripe.com/c/pay/{session}",
            "order_id": order["order_id"],
            "amount_total": int(order["total"] * 100),
            "currency": order["currency"].lower(),
            "status": "open",
        }
    )


async def paypal_create_order(request: web.Request) -> web.Response:
    """Fake PayPal order (sandbox approve URL; no outbound call)."""
    rt = rt_of(request)
    order = await _payable_order(rt, await read_json(request))
    ks = rt.key_statuses()
    for name in ("PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET"):
        if ks[name] != CONNECTED:
            raise ApiError(503, "PayPal is not configured", {"paypal": ks[name]})
    pp_id = secrets.token_hex(8).upper()
    await rt.db.execute(
        "INSERT INTO commerce.payments (order_id, provider, external_id, status) "
        "VALUES (%s,'paypal',%s,'CREATED')",
        (order["order_id"], pp_id),
    )
    return json_response(
        {
            "paypal_order_id": pp_id,
            "status": "CREATED",
            "order_id": order["order_id"],
            "approve_url": f"https://www.sandbox.paypal.com/checkoutnow?token={pp_id}",
        },
        201,
    )


def routes() -> list[web.RouteDef]:
    """FastAPI-style paths."""
    return [
        web.get("/api/products", list_products),
        web.get(r"/api/products/{id:\d+}", get_product),
        web.post("/api/cart", add_to_cart),
        web.get("/api/cart/{session_id}", get_cart),
        web.delete("/api/cart/{session_id}", delete_cart),
        web.post("/api/orders", create_order),
        web.delete("/api/orders", bulk_delete_orders),
        web.get("/api/orders/{order_id}", get_order),
        web.delete("/api/orders/{order_id}", delete_order),
        web.post("/api/payments/stripe/checkout", stripe_checkout),
        web.post("/api/payments/paypal/create-order", paypal_create_order),
    ]
