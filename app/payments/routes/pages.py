"""Server-rendered pages: catalog, product, account, and the checkout result pages.

The embedded checkout page (/checkout/{slug}) belongs to routes/checkout.py.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from payments.accounts import csrf
from payments.accounts.sessions import current_user
from payments.catalog.search import normalize_query
from payments.errors import ApiError
from payments.routes.catalog import load_product, load_product_list
from payments.subscriptions.service import list_for_customer


async def render(request: Request, template: str, context: dict | None = None, status_code: int = 200) -> Response:
    """A page with the signed-in user and a CSRF token (for the sign-out form) in its context."""
    token, new_cookie = csrf.issue_token(request)
    context = {"user": await current_user(request), "csrf_token": token, **(context or {})}
    response = request.app.state.templates.TemplateResponse(request, template, context, status_code=status_code)
    csrf.set_csrf_cookie(response, new_cookie, secure=not request.app.state.settings.is_dev)
    return response


async def home(request: Request) -> Response:
    query = normalize_query(request.query_params.get("q"))
    products, _ = await load_product_list(request, query)
    return await render(request, "index.html", {"products": products, "query": query or ""})


async def product_page(request: Request) -> Response:
    slug = request.path_params["slug"]
    product, _ = await load_product(request, slug) if len(slug) <= 100 else (None, False)
    if product is None:
        raise ApiError(404, "product_not_found", "No such product.")
    return await render(request, "product.html", {"product": product})


async def account(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return RedirectResponse("/sign-in?next=/account", status_code=303)
    async with request.app.state.db.connection() as conn:
        subscriptions = await list_for_customer(conn, user["stripe_customer_id"])
    return await render(request, "account.html", {"subscriptions": subscriptions})


async def success(request: Request) -> Response:
    # Payment is confirmed by the webhook, never by this page: it only says thank you.
    return await render(request, "success.html")


async def cancel(request: Request) -> Response:
    return await render(request, "cancel.html")


routes = [
    Route("/", home, methods=["GET"]),
    Route("/products/{slug}", product_page, methods=["GET"]),
    Route("/account", account, methods=["GET"]),
    Route("/success", success, methods=["GET"]),
    Route("/cancel", cancel, methods=["GET"]),
]
