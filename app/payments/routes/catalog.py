"""GET /api/products (?q= for full-text search) and GET /api/products/{slug}.

The list and each product are cached in Redis (catalog/cache.py); search results are not.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from payments.catalog import cache, queries
from payments.catalog.search import normalize_query
from payments.errors import ApiError


async def _load_product_list_json(request: Request, query: str | None) -> tuple[bytes, bool]:
    state = request.app.state
    if query:
        # Free-text results are not cached: the texts are the client's to choose, and each
        # would be an entry in the Redis that holds sessions under noeviction (app/README.md).
        # One query on the GIN index answers them.
        async with state.db.connection() as conn:
            return orjson.dumps(await queries.search_products(conn, query)), False

    async def load() -> list[dict]:
        async with state.db.connection() as conn:
            return await queries.list_products(conn)

    return await cache.cached_json(state.redis, "products:all", state.settings.catalog_cache_ttl_seconds, load,
                                   state.catalog_memo)


async def _load_product_json(request: Request, slug: str) -> tuple[bytes | None, bool]:
    state = request.app.state

    async def load() -> dict | None:
        async with state.db.connection() as conn:
            return await queries.get_product(conn, slug)

    return await cache.cached_json(state.redis, f"product:{slug}", state.settings.catalog_cache_ttl_seconds, load,
                                   state.catalog_memo)


async def load_product_list(request: Request, query: str | None) -> tuple[list[dict], bool]:
    """(products, cache hit): for the HTML pages."""
    body, hit = await _load_product_list_json(request, query)
    return orjson.loads(body), hit


async def load_product(request: Request, slug: str) -> tuple[dict | None, bool]:
    body, hit = await _load_product_json(request, slug)
    return (None if body is None else orjson.loads(body)), hit


def _json_response(key: bytes, body: bytes, hit: bool) -> Response:
    # The cached JSON goes out as it is, wrapped in its key: no decoding and encoding again.
    return Response(b'{"' + key + b'":' + body + b"}", media_type="application/json",
                    headers={"X-Cache": "hit" if hit else "miss"})


async def list_products(request: Request) -> Response:
    # Most requests have no query string: skip parsing one.
    query = normalize_query(request.query_params.get("q")) if request.scope["query_string"] else None
    body, hit = await _load_product_list_json(request, query)
    return _json_response(b"products", body, hit)


async def get_product(request: Request) -> Response:
    slug = request.path_params["slug"]
    if len(slug) > 100:
        raise ApiError(404, "product_not_found", "No such product.")
    body, hit = await _load_product_json(request, slug)
    if body is None:
        raise ApiError(404, "product_not_found", "No such product.")
    return _json_response(b"product", body, hit)


routes = [
    Route("/api/products", list_products, methods=["GET"]),
    Route("/api/products/{slug}", get_product, methods=["GET"]),
]
