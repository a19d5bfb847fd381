"""Catalog writes, shared by the webhooks, `sync-catalog` and `seed`.

Both upserts take a Stripe object (or a dict shaped like one) and keep the newest
version: Stripe does not deliver events in order, so a row is only overwritten by data
at least as recent as what it holds (`stripe_updated_at`). Pass `updated_at` (the
event's `created`) from a webhook; otherwise the object's own `updated`/`created` is used.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Mapping

from psycopg.types.json import Jsonb

SLUG_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
TRUE_WORDS = {"1", "true", "yes", "on"}


def as_dict(obj: Any) -> dict:
    """Stripe objects are not dicts (since stripe-python 13); webhook payloads are."""
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:80].strip("-") or "product"


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(int(value), tz=timezone.utc)


async def _free_slug(conn, wanted: str, stripe_product_id: str) -> str:
    """`wanted`, or `wanted-<id suffix>` when another product already has it."""
    cursor = await conn.execute(
        "SELECT 1 FROM products WHERE slug = %s AND stripe_product_id <> %s", (wanted, stripe_product_id))
    if await cursor.fetchone() is None:
        return wanted
    return f"{wanted}-{slugify(stripe_product_id[-8:])}"


async def upsert_product(conn, product: Mapping[str, Any], *, updated_at: Any = None) -> int | None:
    """Insert or update one product; returns its row id, or None if the stored row is newer."""
    product = as_dict(product)
    stripe_id = product["id"]
    metadata = dict(product.get("metadata") or {})
    explicit_slug = metadata.get("slug") if SLUG_PATTERN.match(metadata.get("slug") or "") else None
    slug = await _free_slug(conn, explicit_slug or slugify(product.get("name") or stripe_id), stripe_id)
    images = product.get("images") or []
    version = _timestamp(updated_at or product.get("updated") or product.get("created")) or datetime.now(timezone.utc)
    cursor = await conn.execute(
        """
        INSERT INTO products (stripe_product_id, slug, name, description, image_url, active,
                              featured, metadata, stripe_updated_at)
        VALUES (%(stripe_id)s, %(slug)s, %(name)s, %(description)s, %(image_url)s, %(active)s,
                %(featured)s, %(metadata)s, %(version)s)
        ON CONFLICT (stripe_product_id) DO UPDATE SET
            -- A slug is part of public URLs: keep it unless metadata sets one or the row
            -- is a placeholder.
            slug = CASE WHEN products.stripe_updated_at IS NULL OR %(explicit)s
                        THEN EXCLUDED.slug ELSE products.slug END,
            name = EXCLUDED.name,
            description = EXCLUDED.description,
            image_url = EXCLUDED.image_url,
            active = EXCLUDED.active,
            featured = EXCLUDED.featured,
            metadata = EXCLUDED.metadata,
            stripe_updated_at = EXCLUDED.stripe_updated_at,
            updated_at = now()
        WHERE products.stripe_updated_at IS NULL
           OR products.stripe_updated_at <= EXCLUDED.stripe_updated_at
        RETURNING id
        """,
        {
            "stripe_id": stripe_id,
            "slug": slug,
            "name": product.get("name") or stripe_id,
            "description": product.get("description") or "",
            "image_url": images[0] if images else None,
            "active": bool(product.get("active", True)) and not product.get("deleted", False),
            "featured": str(metadata.get("featured", "")).lower() in TRUE_WORDS,
            "metadata": Jsonb(metadata),
            "version": version,
            "explicit": explicit_slug is not None,
        },
    )
    row = await cursor.fetchone()
    return _row_id(row)


async def deactivate_product(conn, stripe_product_id: str, *, deleted_at: Any = None) -> None:
    """For product.deleted: hide the product and its prices, keep the rows for old orders.

    A deleted product never comes back in Stripe: the rows' versions move up to the
    deletion time, so an older product.* or price.* event delivered late cannot show it
    again (a hidden placeholder is kept when the deletion arrives first).
    """
    version = _timestamp(deleted_at) or datetime.now(timezone.utc)
    await conn.execute(
        """
        INSERT INTO products (stripe_product_id, slug, name, active, stripe_updated_at)
        VALUES (%s, %s, %s, false, %s)
        ON CONFLICT (stripe_product_id) DO UPDATE SET
            active = false,
            stripe_updated_at = GREATEST(products.stripe_updated_at, EXCLUDED.stripe_updated_at),
            updated_at = now()
        """,
        (stripe_product_id, await _free_slug(conn, slugify(stripe_product_id), stripe_product_id),
         stripe_product_id, version),
    )
    await conn.execute(
        """UPDATE prices SET active = false, stripe_updated_at = GREATEST(stripe_updated_at, %s),
                  updated_at = now()
           WHERE product_id = (SELECT id FROM products WHERE stripe_product_id = %s)""",
        (version, stripe_product_id))


async def _product_row_id(conn, stripe_product_id: str) -> int:
    """The product's row id; a hidden placeholder when the price arrived first."""
    await conn.execute(
        """
        INSERT INTO products (stripe_product_id, slug, name, active, stripe_updated_at)
        VALUES (%s, %s, %s, false, NULL)
        ON CONFLICT (stripe_product_id) DO NOTHING
        """,
        (stripe_product_id, await _free_slug(conn, slugify(stripe_product_id), stripe_product_id), stripe_product_id),
    )
    cursor = await conn.execute("SELECT id FROM products WHERE stripe_product_id = %s", (stripe_product_id,))
    return _row_id(await cursor.fetchone())


async def upsert_price(conn, price: Mapping[str, Any], *, updated_at: Any = None) -> int | None:
    """Insert or update one price; returns its row id, or None when skipped.

    Prices without a fixed `unit_amount` (tiered, pay-what-you-want) are skipped: the
    shop only sells fixed prices.
    """
    price = as_dict(price)
    if price.get("unit_amount") is None:
        return None
    product = price["product"]
    stripe_product_id = product if isinstance(product, str) else product["id"]
    product_id = await _product_row_id(conn, stripe_product_id)
    recurring = price.get("recurring") or None
    version = _timestamp(updated_at or price.get("updated") or price.get("created")) or datetime.now(timezone.utc)
    cursor = await conn.execute(
        """
        INSERT INTO prices (stripe_price_id, product_id, unit_amount, currency,
                            recurring_interval, active, stripe_updated_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (stripe_price_id) DO UPDATE SET
            product_id = EXCLUDED.product_id,
            unit_amount = EXCLUDED.unit_amount,
            currency = EXCLUDED.currency,
            recurring_interval = EXCLUDED.recurring_interval,
            active = EXCLUDED.active,
            stripe_updated_at = EXCLUDED.stripe_updated_at,
            updated_at = now()
        WHERE prices.stripe_updated_at <= EXCLUDED.stripe_updated_at
        RETURNING id
        """,
        (
            price["id"],
            product_id,
            int(price["unit_amount"]),
            str(price["currency"]).lower(),
            recurring["interval"] if recurring else None,
            bool(price.get("active", True)) and not price.get("deleted", False),
            version,
        ),
    )
    return _row_id(await cursor.fetchone())


def _row_id(row) -> int | None:
    if row is None:
        return None
    return row["id"] if isinstance(row, Mapping) else row[0]
