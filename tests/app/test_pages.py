"""Server-rendered pages: catalog, product, account, success and cancel."""

from __future__ import annotations

from payments.catalog import seed


async def test_home_lists_seeded_products_with_prices(app, client):
    await seed.seed_local(app.state.db, app.state.redis)
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Field Notebook" in response.text and "12.00 USD" in response.text
    assert "9.00 USD / month" in response.text


async def test_home_search_filters_products(app, client):
    await seed.seed_local(app.state.db, app.state.redis)
    response = await client.get("/", params={"q": "lamp"})
    assert "Desk Lamp" in response.text and "Fountain Pen" not in response.text


async def test_product_page_links_to_checkout_with_the_price(app, client):
    await seed.seed_local(app.state.db, app.state.redis)
    response = await client.get("/products/fountain-pen")
    assert response.status_code == 200
    assert 'href="/checkout/fountain-pen?price=price_demo_fountain_pen"' in response.text


async def test_pages_load_stripe_js_from_the_configured_url(client, settings):
    response = await client.get("/")
    assert f'<script src="{settings.stripe_js_url}"></script>' in response.text


async def test_account_page_redirects_to_sign_in_when_signed_out(client):
    response = await client.get("/account")
    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in?next=/account"


async def test_account_page_shows_the_signed_in_user(client):
    await client.post("/api/auth/sign-up", json={"email": "page@example.com", "password": "correct horse battery"})
    response = await client.get("/account")
    assert response.status_code == 200 and "page@example.com" in response.text


async def test_success_and_cancel_pages_render(client):
    success = await client.get("/success", params={"session_id": "cs_test_123"})
    assert success.status_code == 200 and "Thank you" in success.text
    cancel = await client.get("/cancel")
    assert cancel.status_code == 200 and "Nothing was charged" in cancel.text


async def test_product_text_is_html_escaped(app, client):
    from payments.catalog import cache, store

    async with app.state.db.connection() as conn:
        await store.upsert_product(conn, {"id": "prod_x", "name": "<script>alert(1)</script>",
                                          "description": "", "active": True, "updated": 1})
    await cache.invalidate(app.state.redis)
    response = await client.get("/")
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;" in response.text


async def test_account_page_shows_plan_status_and_renewal_date(app, client):
    await seed.seed_local(app.state.db, app.state.redis)
    user = (await client.post("/api/auth/sign-up", json={"email": "sub@example.com",
                                                         "password": "correct horse battery"})).json()["user"]
    async with app.state.db.connection() as conn:
        await conn.execute("UPDATE users SET stripe_customer_id = 'cus_page' WHERE id = %s", (user["id"],))
        await conn.execute(
            """INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, status, stripe_price_id,
                                          current_period_end, stripe_event_created)
               VALUES ('sub_page', 'cus_page', 'active', 'price_demo_pro_membership',
                       '2031-05-17 12:00:00+00', now())""")
    response = await client.get("/account")
    assert response.status_code == 200
    assert "Pro Membership" in response.text and "9.00 USD / month" in response.text
    assert "active" in response.text
    assert "Renews on" in response.text and "2031-05-17" in response.text
