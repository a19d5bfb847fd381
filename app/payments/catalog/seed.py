"""`seed`: a small demo catalog (three one-time products, one monthly subscription).

By default the rows are written straight to PostgreSQL with stable fake Stripe ids
(`prod_demo_*`, `price_demo_*`), so a development database needs no Stripe at all.
With `push_to_stripe` the products and prices are created in Stripe (or the fake
Stripe server) first and the rows carry Stripe's real ids.
"""

from __future__ import annotations

from payments.catalog import cache, store

# A fixed timestamp, so seeding twice writes the same version and changes nothing.
SEED_TIMESTAMP = 1_700_000_000

DEMO_CATALOG = [
    {
        "key": "notebook",
        "name": "Field Notebook",
        "description": "A pocket notebook with 96 dot-grid pages and a water-resistant cover.",
        "featured": True,
        "price": {"unit_amount": 1200, "currency": "usd"},
    },
    {
        "key": "fountain-pen",
        "name": "Fountain Pen",
        "description": "A steel-nib fountain pen that writes smoothly on any paper; refillable ink converter included.",
        "featured": False,
        "price": {"unit_amount": 4500, "currency": "usd"},
    },
    {
        "key": "desk-lamp",
        "name": "Desk Lamp",
        "description": "A dimmable LED desk lamp with a warm light for late-night writing.",
        "featured": False,
        "price": {"unit_amount": 8900, "currency": "usd"},
    },
    {
        "key": "pro-membership",
        "name": "Pro Membership",
        "description": "Monthly subscription: a new notebook every quarter and free shipping on everything.",
        "featured": True,
        "price": {"unit_amount": 900, "currency": "usd", "recurring": {"interval": "month"}},
    },
]


def _demo_product(item: dict) -> dict:
    return {
        "id": f"prod_demo_{item['key'].replace('-', '_')}",
        "name": item["name"],
        "description": item["description"],
        "active": True,
        "images": [],
        "metadata": {"slug": item["key"], "featured": str(item["featured"]).lower()},
        "updated": SEED_TIMESTAMP,
    }


def _demo_price(item: dict, product_id: str) -> dict:
    return {
        "id": f"price_demo_{item['key'].replace('-', '_')}",
        "product": product_id,
        "active": True,
        "created": SEED_TIMESTAMP,
        **item["price"],
    }


async def seed_local(pool, redis=None) -> int:
    """Write the demo catalog without calling Stripe; returns the number of products."""
    async with pool.connection() as conn:
        async with conn.transaction():
            for item in DEMO_CATALOG:
                product = _demo_product(item)
                await store.upsert_product(conn, product)
                await store.upsert_price(conn, _demo_price(item, product["id"]))
    if redis is not None:
        await cache.invalidate(redis)
    return len(DEMO_CATALOG)


async def _existing_demo_products(stripe) -> dict[str, object]:
    """Demo products already in Stripe, by key, so seeding twice creates no duplicates."""
    found = {}
    page = await stripe.v1.products.list_async({"limit": 100})
    async for product in page.auto_paging_iter():
        key = (store.as_dict(product).get("metadata") or {}).get("demo_key")
        if key:
            found[key] = product
    return found


async def seed_stripe(pool, stripe, redis=None) -> int:
    """Create the demo catalog in Stripe, then store what Stripe returned."""
    existing = await _existing_demo_products(stripe)
    created = []
    for item in DEMO_CATALOG:
        product = existing.get(item["key"])
        if product is None:
            product = await stripe.v1.products.create_async(
                {
                    "name": item["name"],
                    "description": item["description"],
                    "metadata": {"slug": item["key"], "featured": str(item["featured"]).lower(),
                                 "demo_key": item["key"]},
                },
                {"idempotency_key": f"seed-product-{item['key']}"},
            )
        prices = await stripe.v1.prices.list_async({"product": product["id"], "limit": 100})
        price = next((p for p in prices.data if store.as_dict(p).get("active", True)), None)
        if price is None:
            price = await stripe.v1.prices.create_async(
                {"product": product["id"], **item["price"]},
                {"idempotency_key": f"seed-price-{item['key']}"},
            )
        created.append((product, price))
    async with pool.connection() as conn:
        async with conn.transaction():
            for product, price in created:
                await store.upsert_product(conn, product)
                await store.upsert_price(conn, price)
    if redis is not None:
        await cache.invalidate(redis)
    return len(created)
