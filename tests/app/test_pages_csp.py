"""Every page the app serves passes the load balancer's Content-Security-Policy as shipped.

The policy is read from roles/nginx_lb/defaults/main.yml and rendered (yaml, then Jinja2)
with what each inventory sets, so this fails when the pages and the policy drift apart:
an inline `<script>`, a `style=` attribute, a `<style>` element, an `on…=` handler or a
`javascript:` URL anywhere, or a script, stylesheet, image or form target from an origin
the policy does not list. Each inventory's own STRIPE_JS_URL and PUBLIC_BASE_URL are used
(production and staging load Stripe.js from js.stripe.com; the lab from its own origin).
"""

from __future__ import annotations

import re

import pytest

from payments.catalog import seed
from payments.templating import TEMPLATES_DIR
from tests.app import csp
from tests.app.payments_support import query, sign_in  # noqa: F401  (fixture)

HTML = {"Accept": "text/html"}


@pytest.fixture(params=csp.INVENTORIES)
def deployment(request) -> csp.Deployment:
    return csp.deployment(request.param)


@pytest.fixture
def settings_env(settings_env, deployment):
    return {**settings_env, "STRIPE_JS_URL": deployment.stripe_js_url,
            "PUBLIC_BASE_URL": deployment.public_base_url}


@pytest.fixture
def templates_used(app, monkeypatch) -> set[str]:
    """Names of the templates the app renders from here on."""
    used: set[str] = set()
    original = app.state.templates.TemplateResponse

    def recording(request, name, *args, **kwargs):
        used.add(name)
        return original(request, name, *args, **kwargs)

    monkeypatch.setattr(app.state.templates, "TemplateResponse", recording)
    return used


async def every_page(app, client, sign_in) -> dict[str, str]:
    """{what: html} for each page and state of a page a visitor can reach."""
    await seed.seed_local(app.state.db, app.state.redis)
    pages = {}

    async def get(name, http, path, status=200):
        response = await http.get(path, headers=HTML)
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith("text/html"), name
        pages[name] = (path, response.text)

    await get("home", client, "/")
    await get("home, search without results", client, "/?q=nothing-matches-this")
    await get("product", client, "/products/notebook")
    await get("sign-in", client, "/sign-in?next=/account")
    await get("sign-up", client, "/sign-up")
    await get("success", client, "/success?session_id=cs_test_1")
    await get("cancel", client, "/cancel")
    await get("404, unknown product", client, "/products/no-such-product", status=404)
    await get("404, unknown page", client, "/no-such-page", status=404)
    await get("404, checkout of an unknown product", client, "/checkout/no-such-product", status=404)

    # The sign-in form again, with its error (a wrong password).
    form = (await client.get("/sign-in")).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    failed = await client.post("/sign-in", data={"csrf_token": token, "email": "nobody@example.com",
                                                 "password": "wrong password", "next": "/account"},
                               headers=HTML)
    assert failed.status_code == 401 and 'class="error"' in failed.text, failed.text[:300]
    pages["sign-in, failed"] = ("/sign-in", failed.text)

    user, signed_in = await sign_in()
    await get("account, no Stripe customer", signed_in, "/account")
    await get("checkout, one-time price", signed_in, "/checkout/notebook?price=price_demo_notebook")
    await get("checkout, recurring price", signed_in, "/checkout/pro-membership?price=price_demo_pro_membership")
    await get("home, signed in", signed_in, "/")
    await query(app, "UPDATE users SET stripe_customer_id = 'cus_csp_test' WHERE id = %s RETURNING id",
                (user["id"],))
    await get("account, with a Stripe customer", signed_in, "/account")
    assert "Manage billing" in pages["account, with a Stripe customer"][1]
    assert "Manage billing" not in pages["account, no Stripe customer"][1]
    return pages


async def test_every_page_passes_the_load_balancers_policy(app, client, sign_in, deployment, templates_used):
    policy = csp.parse_policy(csp.shipped_policy(deployment.env))
    pages = await every_page(app, client, sign_in)

    problems = [f"{name} ({path}): {problem}"
                for name, (path, html) in pages.items()
                for problem in csp.page_problems(html, policy=policy, page_url=deployment.origin + path)]
    assert problems == [], f"{deployment.env}'s policy blocks:\n" + "\n".join(problems)

    # Every template was rendered above: a new page must be added here to pass.
    templates = {path.name for path in TEMPLATES_DIR.glob("*.html")} - {"base.html"}
    assert templates - templates_used == set(), "pages not rendered by this test"


async def test_page_scripts_and_styles_are_served_as_the_browser_needs_them(app, client, sign_in, deployment):
    """Same-origin scripts and stylesheets answer 200 with a type nginx's `nosniff` accepts."""
    pages = await every_page(app, client, sign_in)
    expected = {"script-src": "javascript", "style-src": "text/css"}
    checked = set()
    for path, html in pages.values():
        for directive, url in csp.fetched_urls(html, deployment.origin + path):
            if directive in expected and url.startswith(deployment.origin + "/static/") and url not in checked:
                checked.add(url)
                response = await client.get(url.removeprefix(deployment.origin))
                assert response.status_code == 200, url
                assert expected[directive] in response.headers["content-type"], (url, response.headers)
    assert {u.split("?")[0].rsplit("/", 1)[1] for u in checked} == {"site.css", "checkout.js", "account.js"}


def test_the_checker_finds_what_the_policy_blocks():
    """The check above cannot pass by finding nothing: each kind of violation is reported."""
    policy = csp.parse_policy(csp.shipped_policy("production"))
    page = """<!doctype html><html><head>
      <link rel="stylesheet" href="https://cdn.example.com/x.css">
      <style>p { color: red }</style>
      <script src="https://js.stripe.com/v3/"></script>
      <script src="/static/checkout.js"></script>
      <script src="https://evil.example/x.js"></script>
      <script>const priceId = "price_1";</script>
    </head><body>
      <p style="color: red">x</p>
      <button onclick="pay()">Pay</button>
      <a href="javascript:pay()">Pay</a>
      <img src="https://files.stripe.com/x.png"> <img src="https://images.example.com/x.png">
      <form action="https://evil.example/steal"></form> <form method="post"></form>
    </body></html>"""
    problems = csp.page_problems(page, policy=policy, page_url="https://shop.example.com/checkout/x")
    assert len(problems) == 9, "\n".join(problems)
    for expected in ("inline <script>", "<style> element", "<p style=", "<button onclick",
                     "javascript: URLs", "https://cdn.example.com/x.css", "https://evil.example/x.js",
                     "https://images.example.com/x.png", "https://evil.example/steal"):
        assert any(expected in problem for problem in problems), expected


@pytest.mark.parametrize("source, url, allowed", [
    ("'self'", "https://shop.example.com/static/a.js", True),
    ("'self'", "https://shop.example.com:8443/static/a.js", False),
    ("'self'", "http://shop.example.com/static/a.js", False),
    ("https://js.stripe.com", "https://js.stripe.com/v3/", True),
    ("https://js.stripe.com", "http://js.stripe.com/v3/", False),
    ("https://js.stripe.com", "https://js.stripe.com:444/v3/", False),
    ("https://*.js.stripe.com", "https://a.js.stripe.com/x.js", True),
    ("https://*.js.stripe.com", "https://js.stripe.com/x.js", False),
    ("https://*.stripe.com", "https://evilstripe.com/x.png", False),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000/js.stripe.com/v3/", True),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9001/js.stripe.com/v3/", False),
    ("https://a.example/v3/", "https://a.example/v3/x.js", True),
    ("https://a.example/v3/", "https://a.example/v4/x.js", False),
    ("data:", "data:image/png;base64,AAAA", True),
    ("'none'", "https://shop.example.com/", False),
    ("'unsafe-inline'", "https://shop.example.com/", False),
])
def test_source_matching(source, url, allowed):
    assert csp.source_allows(source, url, "https://shop.example.com") is allowed


def test_the_lab_loads_stripe_js_from_its_own_origin():
    """The lab's fake Stripe.js is 'self' there (through the LB), so the policy needs no lab entry."""
    lab = csp.deployment("lab")
    assert lab.stripe_js_url.startswith(lab.origin + "/")
    assert "'unsafe-inline'" not in csp.shipped_policy("lab")
