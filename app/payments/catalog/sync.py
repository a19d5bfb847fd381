"""`sync-catalog`: copy every Stripe product and price into PostgreSQL.

Webhooks keep the catalog current; this is the catch-up for a new database or missed
events. It pages through Stripe's lists (100 per page) and upserts each object, so
running it again is harmless.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from payments.catalog import cache, store

PAGE_SIZE = 100


@dataclass
class SyncResult:
    products: int = 0
    prices: int = 0
    skipped_prices: int = 0


async def sync_catalog(pool, stripe, redis=None, *, clock=time.time) -> SyncResult:
    result = SyncResult()
    async with pool.connection() as conn:
        async with conn.transaction():
            products = await stripe.v1.products.list_async({"limit": PAGE_SIZE})
            async for product in products.auto_paging_iter():
                await store.upsert_product(conn, product)
                result.products += 1
            # Prices have no `updated` time in Stripe; the list shows their state as of
            # now, so that is their version (newer than any event already applied).
            fetched_at = int(clock())
            prices = await stripe.v1.prices.list_async({"limit": PAGE_SIZE})
            async for price in prices.auto_paging_iter():
                if store.as_dict(price).get("unit_amount") is None:
                    result.skipped_prices += 1
                    continue
                await store.upsert_price(conn, price, updated_at=fetched_at)
                result.prices += 1
    if redis is not None:
        await cache.invalidate(redis)  # after the commit above
    return result
