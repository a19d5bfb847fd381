"""Catalog reads: what the API and the pages show (active products, active prices)."""

from __future__ import annotations

# One row per product, its active prices folded into a JSON list (cheapest first).
_PRODUCT_SELECT = """
    SELECT p.slug, p.name, p.description, p.image_url, p.featured,
           p.stripe_product_id AS stripe_product_id,
           coalesce((
               SELECT json_agg(json_build_object(
                          'id', pr.stripe_price_id,
                          'unit_amount', pr.unit_amount,
                          'currency', pr.currency,
                          'recurring_interval', pr.recurring_interval)
                      ORDER BY pr.unit_amount, pr.id)
               FROM prices pr
               WHERE pr.product_id = p.id AND pr.active
           ), '[]'::json) AS prices
    FROM products p
"""


async def list_products(conn) -> list[dict]:
    cursor = await conn.execute(_PRODUCT_SELECT + " WHERE p.active ORDER BY p.featured DESC, p.name")
    return await cursor.fetchall()


async def get_product(conn, slug: str) -> dict | None:
    cursor = await conn.execute(_PRODUCT_SELECT + " WHERE p.active AND p.slug = %s", (slug,))
    return await cursor.fetchone()


async def search_products(conn, query: str) -> list[dict]:
    """Full-text search over name (weighted higher) and description, best match first.

    `websearch_to_tsquery` accepts anything people type ("pen -ink", quoted phrases)
    without syntax errors, and the GIN index on `products.search` serves the match.
    """
    cursor = await conn.execute(
        _PRODUCT_SELECT
        + """
        , websearch_to_tsquery('english', %(q)s) AS query
        WHERE p.active AND p.search @@ query
        ORDER BY ts_rank(p.search, query) DESC, p.name
        """,
        {"q": query},
    )
    return await cursor.fetchall()
