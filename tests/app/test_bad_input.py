"""Bad input on this part's endpoints: always a 4xx with the error shape, nothing written."""

from __future__ import annotations

import pytest

MIB = 1024 * 1024
GOOD = {"email": "ada@example.com", "password": "correct horse battery"}


async def user_count(app) -> int:
    async with app.state.db.connection() as conn:
        return (await (await conn.execute("SELECT count(*) AS n FROM users")).fetchone())["n"]


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@pytest.mark.parametrize("path", ["/api/auth/sign-up", "/api/auth/sign-in"])
@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"email": "ada@example.com", ', "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b'{"email": NaN}', "application/json", 400, "invalid_json"),
        (b"\xff\xfe not utf-8", "application/json", 400, "invalid_json"),
        (b'["a list"]', "application/json", 400, "invalid_body"),
        (b"email=ada@example.com", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"email": "ada@example.com"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"email": 5, "password": "correct horse battery"}', "application/json", 422, "invalid_email"),
        (b'{"email": "not-an-email", "password": "correct horse battery"}', "application/json", 422, "invalid_email"),
        (b'{"password": "correct horse battery"}', "application/json", 422, "invalid_email"),
        (b'{"email": "ada@example.com", "password": ["x"]}', "application/json", 422, "invalid_password"),
    ],
)
async def test_bad_auth_bodies_are_rejected(app, client, path, body, content_type, status, code):
    response = await client.post(path, content=body, headers={"Content-Type": content_type})
    assert_error(response, status, code)
    assert await user_count(app) == 0


async def test_json_content_type_with_charset_is_accepted(client):
    import json

    response = await client.post("/api/auth/sign-up", content=json.dumps(GOOD).encode(),
                                 headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 201


@pytest.mark.parametrize(("password", "code"), [("short", "weak_password"), ("x" * 1025, "invalid_password")])
async def test_unacceptable_passwords_are_422(app, client, password, code):
    response = await client.post("/api/auth/sign-up", json={"email": "ada@example.com", "password": password})
    assert_error(response, 422, code)
    assert await user_count(app) == 0


async def test_body_over_one_mib_with_content_length_is_413(app, client):
    padding = "x" * (MIB + 10)
    response = await client.post("/api/auth/sign-up", json={**GOOD, "padding": padding})
    assert_error(response, 413, "body_too_large")
    assert await user_count(app) == 0


async def test_streamed_body_over_one_mib_without_length_is_413(app, client):
    async def chunks():
        yield b'{"email": "ada@example.com", "password": "correct horse battery", "pad": "'
        for _ in range(20):
            yield b"x" * (64 * 1024)
        yield b'"}'

    response = await client.post("/api/auth/sign-up", content=chunks(),
                                 headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body_too_large")
    assert await user_count(app) == 0


async def test_form_post_over_one_mib_is_413(client):
    response = await client.post("/sign-in", data={"email": "x" * (MIB + 1)})
    assert response.status_code == 413


async def test_body_just_under_the_limit_is_read(client):
    padding = "x" * (MIB - 200)
    response = await client.post("/api/auth/sign-up", json={**GOOD, "padding": padding})
    assert response.status_code == 201


async def test_unknown_route_and_wrong_method_use_the_error_shape(client):
    assert_error(await client.get("/api/nothing-here"), 404, "not_found")
    assert_error(await client.delete("/api/products"), 405, "method_not_allowed")


async def test_unknown_product_page_is_html_404_for_browsers(client):
    response = await client.get("/products/nope", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "No such product" in response.text


async def test_invalid_content_length_is_400(client):
    response = await client.post("/api/auth/sign-in", content=b"{}",
                                 headers={"Content-Type": "application/json", "Content-Length": "abc"})
    assert response.status_code == 400
