"""GET /api/orders and GET /api/orders/{id}: the signed-in user's own orders."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from payments.accounts.sessions import require_user
from payments.errors import ApiError
from payments.orders import service


async def list_orders(request: Request) -> JSONResponse:
    user = await require_user(request)
    async with request.app.state.db.connection() as conn:
        orders = await service.list_orders(conn, user_id=user["id"])
    return JSONResponse({"orders": [service.order_json(order) for order in orders]})


async def get_order(request: Request) -> JSONResponse:
    user = await require_user(request)
    async with request.app.state.db.connection() as conn:
        # Someone else's order is "not found", not "forbidden": ids are not confirmed.
        order = await service.get_order(conn, request.path_params["order_id"], user_id=user["id"])
    if order is None:
        raise ApiError(404, "order_not_found", "No such order.")
    return JSONResponse({"order": service.order_json(order)})


routes = [
    Route("/api/orders", list_orders, methods=["GET"]),
    Route("/api/orders/{order_id}", get_order, methods=["GET"]),
]
