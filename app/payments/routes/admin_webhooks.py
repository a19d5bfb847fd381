"""Failed Stripe webhooks for administrators (payments/webhooks/operator.py):

- GET  /api/admin/webhooks/failed            {"events": [{id, type, error, attempts, age_seconds, ...}]}
- POST /api/admin/webhooks/{event_id}/replay  run its handler again on the stored payload
- POST /api/admin/webhooks/{event_id}/ignore  {"reason": "..."}: settle it without applying it

Protected like the refunds endpoint: an administrator's session, and the POSTs only as
application/json (what keeps cross-site forms out). Every action is audited with the
administrator's id and address.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from payments.accounts.sessions import require_admin
from payments.errors import ApiError
from payments.http import client_ip, read_json, require_json_content_type
from payments.webhooks import operator

_STATUS = {
    operator.EventNotFound: 404,
    operator.EventAlreadySettled: 409,
    operator.ReasonRequired: 400,
    # The handler raised again: the cause is ours (a bug, a backing service), not the request's.
    operator.ReplayFailed: 500,
}


def _api_error(exc: operator.OperatorError) -> ApiError:
    return ApiError(_STATUS.get(type(exc), 400), exc.code, exc.message)


def _actor(request: Request, admin: dict) -> operator.Actor:
    return operator.Actor(via="api", user_id=admin["id"], ip=client_ip(request), name=admin.get("email"))


async def failed_webhooks(request: Request) -> JSONResponse:
    await require_admin(request)
    async with request.app.state.db.connection() as conn:
        events = await operator.list_failed(conn)
    return JSONResponse({"events": [event.as_json() for event in events]})


async def replay_webhook(request: Request) -> JSONResponse:
    require_json_content_type(request)  # no body needed; the type keeps cross-site forms out
    admin = await require_admin(request)
    state = request.app.state
    try:
        settled = await operator.replay(state.db, request.path_params["event_id"], actor=_actor(request, admin),
                                        redis=state.redis, stripe=state.stripe)
    except operator.OperatorError as exc:
        raise _api_error(exc) from None
    return JSONResponse(settled.as_json())


async def ignore_webhook(request: Request) -> JSONResponse:
    require_json_content_type(request)  # before the session, as for refunds
    admin = await require_admin(request)
    body = await read_json(request)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ApiError(400, "reason_required", "`reason` must be a string.")
    try:
        settled = await operator.ignore(request.app.state.db, request.path_params["event_id"], reason=reason,
                                        actor=_actor(request, admin))
    except operator.OperatorError as exc:
        raise _api_error(exc) from None
    return JSONResponse(settled.as_json())


routes = [
    Route("/api/admin/webhooks/failed", failed_webhooks, methods=["GET"]),
    Route("/api/admin/webhooks/{event_id}/replay", replay_webhook, methods=["POST"]),
    Route("/api/admin/webhooks/{event_id}/ignore", ignore_webhook, methods=["POST"]),
]
