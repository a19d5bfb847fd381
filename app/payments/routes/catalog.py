"""GET /api/products (?q= for full-text search) and GET /api/products/{slug}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from payments.catalog import cache, queries
from payments.catalog.search import normalize_query
from payments.errors import ApiError


async def load_product_list(request: Request, query: str | None) -> tuple[list[dict], bool]:
    """(products, cache hit): shared by the API and the HTML pages."""
    state = request.app.state

    async def load() -> list[dict]:
        async with state.db.connection() as conn:
            if query:
                return await queries.search_products(conn, query)
            return await queries.list_products(conn)

    name = f"products:search:{query}" if query else "products:all"
    return await cache.cached(state.redis, name, state.settings.catalog_cache_ttl_seconds, load)


async def load_product(request: Request, slug: str) -> tuple[dict | None, bool]:
    state = request.app.state

    async def load() -> dict | None:
        async with state.db.connection() as conn:
            return await queries.get_product(conn, slug)

    return await cache.cached(state.redis, f"product:{slug}", state.settings.catalog_cache_ttl_seconds, load)


def _cache_header(hit: bool) -> dict[str, str]:
    return {"X-Cache": "hit" if hit else "miss"}


async def list_products(request: Request) -> JSONResponse:
    query = normalize_query(request.query_params.get("q"))
    products, hit = await load_product_list(request, query)
    return JSONResponse({"products": products}, headers=_cache_header(hit))


async def get_product(request: Request) -> JSONResponse:
    slug = request.path_params["slug"]
    if len(slug) > 100:
        raise ApiError(404, "product_not_found", "No such product.")
    product, hit = await load_product(request, slug)
    if product is None:
        raise ApiError(404, "product_not_found", "No such product.")
    return JSONResponse({"product": product}, headers=_cache_header(hit))


routes = [
    Route("/api/products", list_products, methods=["GET"]),
    Route("/api/products/{slug}", get_product, methods=["GET"]),
]
