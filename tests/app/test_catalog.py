"""Catalog: upserts from Stripe objects, search, the Redis cache and its invalidation,
seed and sync-catalog (against localstripe behind the Stripe stub)."""

from __future__ import annotations

import asyncio

from payments.catalog import cache, seed, store
from payments.catalog.sync import sync_catalog
from tests.support.services import free_port


def product(stripe_id="prod_1", name="Blue Mug", description="A ceramic mug", updated=1_700_000_100, **extra):
    return {"id": stripe_id, "name": name, "description": description, "active": True,
            "images": [], "metadata": {}, "updated": updated, **extra}


def price(stripe_id="price_1", product_id="prod_1", unit_amount=1500, created=1_700_000_100, **extra):
    return {"id": stripe_id, "product": product_id, "unit_amount": unit_amount, "currency": "usd",
            "active": True, "recurring": None, "created": created, **extra}


async def write(app, *objects):
    async with app.state.db.connection() as conn:
        for obj in objects:
            if obj["id"].startswith("prod_"):
                await store.upsert_product(conn, obj)
            else:
                await store.upsert_price(conn, obj)


async def test_api_lists_active_products_with_their_prices(app, client):
    await write(app, product(), price(), product("prod_2", "Old Mug", active=False))
    response = await client.get("/api/products")
    assert response.status_code == 200
    products = response.json()["products"]
    assert [p["slug"] for p in products] == ["blue-mug"]
    assert products[0]["prices"] == [
        {"id": "price_1", "unit_amount": 1500, "currency": "usd", "recurring_interval": None}]


async def test_catalog_is_read_from_postgres_while_redis_is_down(app, settings, client_for):
    await write(app, product(), price())
    client = await client_for(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")

    listing = await client.get("/api/products")
    one = await client.get("/api/products/blue-mug")

    assert listing.status_code == 200
    assert listing.headers["x-cache"] == "miss"
    assert [p["slug"] for p in listing.json()["products"]] == ["blue-mug"]
    assert (one.status_code, one.json()["product"]["name"]) == (200, "Blue Mug")


async def test_product_by_slug_and_unknown_slug_is_404(app, client):
    await write(app, product(), price())
    response = await client.get("/api/products/blue-mug")
    assert response.status_code == 200
    assert response.json()["product"]["name"] == "Blue Mug"
    missing = await client.get("/api/products/no-such-thing")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "product_not_found", "message": "No such product."}}


async def test_older_stripe_version_does_not_overwrite_newer(app):
    await write(app, product(name="New Name", updated=2_000))
    await write(app, product(name="Stale Name", updated=1_000))
    async with app.state.db.connection() as conn:
        row = await (await conn.execute("SELECT name FROM products WHERE stripe_product_id = 'prod_1'")).fetchone()
    assert row["name"] == "New Name"


async def test_price_arriving_before_its_product_is_kept(app, client):
    await write(app, price(product_id="prod_late"))
    assert (await client.get("/api/products")).json()["products"] == []  # placeholder stays hidden
    await write(app, product("prod_late", "Late Lamp"))
    await cache.invalidate(app.state.redis)
    products = (await client.get("/api/products")).json()["products"]
    assert [p["slug"] for p in products] == ["late-lamp"]
    assert products[0]["prices"][0]["id"] == "price_1"


async def test_same_name_gets_a_distinct_slug(app):
    await write(app, product("prod_a", "Mug"), product("prod_b", "Mug"))
    async with app.state.db.connection() as conn:
        rows = await (await conn.execute("SELECT slug FROM products ORDER BY id")).fetchall()
    slugs = [row["slug"] for row in rows]
    assert slugs[0] == "mug" and slugs[1].startswith("mug-") and len(set(slugs)) == 2


async def test_search_matches_name_and_description_best_first(app, client):
    await write(app,
                product("prod_1", "Fountain Pen", "Writes with ink"),
                product("prod_2", "Notebook", "Paper that loves a fountain pen"),
                product("prod_3", "Desk Lamp", "Warm light"))
    response = await client.get("/api/products", params={"q": "fountain pen"})
    assert response.status_code == 200
    assert [p["name"] for p in response.json()["products"]] == ["Fountain Pen", "Notebook"]
    assert (await client.get("/api/products", params={"q": "bicycle"})).json()["products"] == []


async def test_search_accepts_operator_characters_without_error(app, client):
    await write(app, product())
    for query in ['"blue mug', "mug & | !", "-", "(("]:
        response = await client.get("/api/products", params={"q": query})
        assert response.status_code == 200, query


async def test_overlong_search_text_is_400(client):
    response = await client.get("/api/products", params={"q": "x" * 201})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_query"


async def test_list_is_served_from_cache_until_invalidated(app, client):
    await write(app, product())
    first = await client.get("/api/products")
    assert first.headers["x-cache"] == "miss"
    await write(app, product(name="Renamed Mug", updated=1_800_000_000))
    cached = await client.get("/api/products")
    assert cached.headers["x-cache"] == "hit"
    assert cached.json()["products"][0]["name"] == "Blue Mug"
    await cache.invalidate(app.state.redis)
    fresh = await client.get("/api/products")
    assert fresh.headers["x-cache"] == "miss"
    assert fresh.json()["products"][0]["name"] == "Renamed Mug"


async def test_entry_loaded_while_the_catalog_changed_is_not_served(app):
    redis = app.state.redis
    loads = []

    async def load_during_a_change():
        loads.append("old")
        await cache.invalidate(redis)  # a product event commits while this read loads
        return [{"slug": "old-rows"}]

    async def load_again():
        loads.append("new")
        return [{"slug": "new-rows"}]

    body, hit = await cache.cached_json(redis, "products:race", 60, load_during_a_change)
    assert (body, hit) == (b'[{"slug":"old-rows"}]', False)
    # Stored under the generation it was loaded in, so the next read loads again.
    body, hit = await cache.cached_json(redis, "products:race", 60, load_again)
    assert (body, hit) == (b'[{"slug":"new-rows"}]', False)
    body, hit = await cache.cached_json(redis, "products:race", 60, load_again)
    assert (body, hit) == (b'[{"slug":"new-rows"}]', True)
    assert loads == ["old", "new"]


async def test_memo_answers_recent_hits_and_sees_another_process_invalidate_after_its_age(app):
    """Two workers (two Memos on one Redis): another process's invalidation (here a bare
    INCR, as sync-catalog in its own process does) reaches this worker once its copy is
    older than the memo's age, and never before a read of Redis."""
    redis = app.state.redis
    memo = cache.Memo(max_age_seconds=0.2)
    rows = [[{"slug": "first"}]]

    async def load():
        return rows[0]

    assert await cache.cached_json(redis, "products:memo", 60, load, memo) == (b'[{"slug":"first"}]', False)
    # The first hit comes from Redis and is kept; the next from memory.
    assert await cache.cached_json(redis, "products:memo", 60, load, memo) == (b'[{"slug":"first"}]', True)
    rows[0] = [{"slug": "second"}]
    await redis.incr(cache.GENERATION_KEY)  # not this process's invalidate(): the memo is not told
    assert await cache.cached_json(redis, "products:memo", 60, load, memo) == (b'[{"slug":"first"}]', True)
    await asyncio.sleep(0.25)
    assert await cache.cached_json(redis, "products:memo", 60, load, memo) == (b'[{"slug":"second"}]', False)


async def test_invalidate_empties_the_memos_of_its_process_at_once(app, client):
    await write(app, product())
    await client.get("/api/products")
    assert (await client.get("/api/products")).headers["x-cache"] == "hit"  # now in the app's memo
    await write(app, product(name="Renamed Mug", updated=1_800_000_000))
    await cache.invalidate(app.state.redis)
    fresh = await client.get("/api/products")
    assert fresh.headers["x-cache"] == "miss"
    assert fresh.json()["products"][0]["name"] == "Renamed Mug"


def test_memo_is_bounded():
    memo = cache.Memo()
    for n in range(cache.MEMO_MAX_ENTRIES + 1):
        memo.put(f"products:search:{n}", b"[]")
    assert memo.get(f"products:search:{cache.MEMO_MAX_ENTRIES}") == b"[]"
    assert memo.get("products:search:0") is None  # a full memo started again empty


async def test_seed_writes_demo_catalog_without_stripe_and_is_repeatable(app, client):
    assert await seed.seed_local(app.state.db, app.state.redis) == 4
    assert await seed.seed_local(app.state.db, app.state.redis) == 4
    products = (await client.get("/api/products")).json()["products"]
    assert len(products) == 4
    assert all(p["stripe_product_id"].startswith("prod_demo_") for p in products)
    recurring = [p for p in products if p["prices"][0]["recurring_interval"] == "month"]
    assert [p["slug"] for p in recurring] == ["pro-membership"]
    assert products[0]["featured"] is True  # featured first


async def test_sync_catalog_pages_through_stripe_products_and_prices(app, client, monkeypatch):
    stripe = app.state.stripe
    created = []
    for n in range(3):
        item = await stripe.v1.products.create_async({"name": f"Synced Item {n}", "description": "from stripe"})
        await stripe.v1.prices.create_async({"product": item.id, "unit_amount": 100 + n, "currency": "eur"})
        created.append(item.id)
    from payments.catalog import sync as sync_module

    monkeypatch.setattr(sync_module, "PAGE_SIZE", 2)  # three of each: more than one page
    result = await sync_catalog(app.state.db, stripe, app.state.redis)
    assert result.products >= 3 and result.prices >= 3
    products = {p["stripe_product_id"]: p for p in (await client.get("/api/products")).json()["products"]}
    for stripe_id in created:
        assert products[stripe_id]["prices"][0]["currency"] == "eur"


async def test_sync_overwrites_a_price_changed_by_an_earlier_event(app, client):
    stripe = app.state.stripe
    item = await stripe.v1.products.create_async({"name": "Repriced Item"})
    live = await stripe.v1.prices.create_async({"product": item.id, "unit_amount": 500, "currency": "usd"})
    # A webhook applied an older state of this price, stamped with its event time
    # (after the price's creation); the sync runs a minute later.
    async with app.state.db.connection() as conn:
        await store.upsert_product(conn, store.as_dict(item))
        await store.upsert_price(conn, {**store.as_dict(live), "unit_amount": 400}, updated_at=live.created + 5)
    await sync_catalog(app.state.db, stripe, app.state.redis, clock=lambda: live.created + 60)
    product = (await client.get("/api/products/repriced-item")).json()["product"]
    assert product["prices"][0]["unit_amount"] == 500
