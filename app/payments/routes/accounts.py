"""Accounts over JSON (/api/auth/*, /api/me) and as HTML forms (/sign-in, /sign-up, /sign-out)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from payments.accounts import auth, csrf, sessions
from payments.accounts.users import public_user
from payments.errors import ApiError
from payments.http import read_json, require_json_content_type


def _secure(request: Request) -> bool:
    return not request.app.state.settings.is_dev


# -- JSON API ----------------------------------------------------------------------------


async def api_sign_up(request: Request) -> JSONResponse:
    body = await read_json(request)
    user, session_id = await auth.sign_up(request, body.get("email"), body.get("password"))
    response = JSONResponse({"user": public_user(user)}, status_code=201)
    sessions.set_session_cookie(response, session_id, secure=_secure(request))
    return response


async def api_sign_in(request: Request) -> JSONResponse:
    body = await read_json(request)
    user, session_id = await auth.sign_in(request, body.get("email"), body.get("password"))
    response = JSONResponse({"user": public_user(user)})
    sessions.set_session_cookie(response, session_id, secure=_secure(request))
    return response


async def api_sign_out(request: Request) -> Response:
    require_json_content_type(request)  # no body, but a cross-site form must not sign anyone out
    await auth.sign_out(request)
    response = Response(status_code=204)
    sessions.clear_session_cookie(response, secure=_secure(request))
    return response


async def api_me(request: Request) -> JSONResponse:
    user = await sessions.require_user(request)
    return JSONResponse({"user": public_user(user)})


# -- HTML forms --------------------------------------------------------------------------


def safe_next(target) -> str:
    """Only same-site paths: `next` must not turn sign-in into an open redirect."""
    if isinstance(target, str) and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/account"


def render_form(request: Request, template: str, *, status_code: int = 200, error: str | None = None,
                email: str = "", next_path: str = "/account", headers: dict | None = None) -> Response:
    token, new_cookie = csrf.issue_token(request)
    response = request.app.state.templates.TemplateResponse(
        request, template,
        {"csrf_token": token, "error": error, "email": email, "next": next_path},
        status_code=status_code, headers=headers,
    )
    csrf.set_csrf_cookie(response, new_cookie, secure=_secure(request))
    return response


async def sign_in_page(request: Request) -> Response:
    return render_form(request, "sign_in.html", next_path=safe_next(request.query_params.get("next")))


async def sign_up_page(request: Request) -> Response:
    return render_form(request, "sign_up.html", next_path=safe_next(request.query_params.get("next")))


async def _submit(request: Request, template: str, action) -> Response:
    form = await request.form()
    csrf.verify(request, form.get(csrf.FORM_FIELD))
    email = form.get("email")
    next_path = safe_next(form.get("next"))
    try:
        _, session_id = await action(request, email, form.get("password"))
    except ApiError as exc:
        return render_form(request, template, status_code=exc.status_code, error=exc.message,
                           email=email if isinstance(email, str) else "", next_path=next_path,
                           headers=exc.headers)
    response = RedirectResponse(next_path, status_code=303)
    sessions.set_session_cookie(response, session_id, secure=_secure(request))
    return response


async def sign_in_submit(request: Request) -> Response:
    return await _submit(request, "sign_in.html", auth.sign_in)


async def sign_up_submit(request: Request) -> Response:
    return await _submit(request, "sign_up.html", auth.sign_up)


async def sign_out_submit(request: Request) -> Response:
    form = await request.form()
    csrf.verify(request, form.get(csrf.FORM_FIELD))
    await auth.sign_out(request)
    response = RedirectResponse("/", status_code=303)
    sessions.clear_session_cookie(response, secure=_secure(request))
    return response


routes = [
    Route("/api/auth/sign-up", api_sign_up, methods=["POST"]),
    Route("/api/auth/sign-in", api_sign_in, methods=["POST"]),
    Route("/api/auth/sign-out", api_sign_out, methods=["POST"]),
    Route("/api/me", api_me, methods=["GET"]),
    Route("/sign-in", sign_in_page, methods=["GET"]),
    Route("/sign-in", sign_in_submit, methods=["POST"]),
    Route("/sign-up", sign_up_page, methods=["GET"]),
    Route("/sign-up", sign_up_submit, methods=["POST"]),
    Route("/sign-out", sign_out_submit, methods=["POST"]),
]
