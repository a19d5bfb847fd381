"""The Content-Security-Policy the load balancer ships, read from the roles and inventories,
and what a page must look like to pass it.

`shipped_policy(env)` renders `nginx_lb_content_security_policy` the way Ansible does:
roles/nginx_lb/defaults/main.yml (yaml, then Jinja2), overridden by what the inventory's
group_vars set for the load balancer. `Deployment` is one inventory's view of the site
(public base URL, where Stripe.js comes from). `page_problems(html, ...)` lists everything
in a page that the policy would block: inline scripts, inline styles, `on…=` handlers,
`javascript:` URLs, and scripts, stylesheets, images and form targets from origins the
policy does not allow.

Only the parts of CSP level 3 this site uses are implemented: 'self', 'none', scheme
sources (`data:`), host sources with `*.` wildcards, ports and paths, and the fallback to
default-src.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import jinja2
import yaml

from payments.config import DEFAULT_STRIPE_JS_URL

REPO = Path(__file__).resolve().parents[2]
LB_DEFAULTS = REPO / "roles/nginx_lb/defaults/main.yml"
INVENTORIES = ("production", "staging", "lab")
DEFAULT_PORTS = {"http": 80, "https": 443}


def _load(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def _render(value, variables: dict):
    """One value as Ansible would template it (lists and plain strings pass through)."""
    if not isinstance(value, str) or "{{" not in value:
        return value
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(value).render(**variables)


def inventory_vars(env: str) -> dict:
    """group_vars/all of one inventory (main.yml; the vault is not read)."""
    return _load(REPO / "inventories" / env / "group_vars/all/main.yml")


def shipped_policy(env: str | None = None) -> str:
    """The CSP header value the LB sends: the role's default, with the nginx_lb_* values an
    inventory sets (group_vars/all, group_vars/lb.yml) in place of the defaults."""
    variables = _load(LB_DEFAULTS)
    if env is not None:
        for path in (REPO / "inventories" / env / "group_vars/all/main.yml",
                     REPO / "inventories" / env / "group_vars/lb.yml"):
            variables.update({k: v for k, v in _load(path).items() if k.startswith("nginx_lb_")})
    return " ".join(_render(variables["nginx_lb_content_security_policy"], variables).split())


@dataclass(frozen=True)
class Deployment:
    env: str
    public_base_url: str  # what PUBLIC_BASE_URL is there: the page's origin
    stripe_js_url: str  # what STRIPE_JS_URL is there

    @property
    def origin(self) -> str:
        parts = urlsplit(self.public_base_url)
        return f"{parts.scheme}://{parts.netloc}"


def deployment(env: str) -> Deployment:
    variables = inventory_vars(env)
    stripe_js_url = variables.get("stripe_js_url") or DEFAULT_STRIPE_JS_URL
    return Deployment(env, _render(variables["public_base_url"], variables), _render(stripe_js_url, variables))


# -- the policy ---------------------------------------------------------------------------


def parse_policy(policy: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        tokens = part.split()
        if tokens and tokens[0].lower() not in directives:  # the first one of a name counts
            directives[tokens[0].lower()] = tokens[1:]
    return directives


def sources_for(policy: dict[str, list[str]], directive: str) -> list[str]:
    if directive in policy:
        return policy[directive]
    return policy.get("default-src", ["*"])


def _port(parts) -> int | None:
    return parts.port or DEFAULT_PORTS.get(parts.scheme)


def _scheme_matches(source_scheme: str, url_scheme: str) -> bool:
    # CSP3: an http source also matches https (and ws/wss likewise).
    return url_scheme == source_scheme or (source_scheme, url_scheme) in {("http", "https"), ("ws", "wss")}


def source_allows(source: str, url: str, page_origin: str) -> bool:
    """Whether one source expression allows an absolute URL on a page of `page_origin`."""
    target = urlsplit(url)
    page = urlsplit(page_origin)
    lowered = source.lower()
    if lowered == "'self'":
        return (_scheme_matches(page.scheme, target.scheme) and target.hostname == page.hostname
                and (_port(target) == _port(page)
                     or (page.scheme == "http" and target.scheme == "https" and _port(target) == 443)))
    if lowered.startswith("'"):
        return False  # 'none', 'unsafe-inline', nonces, hashes: no URL matches them
    if lowered == "*":
        return target.scheme not in {"data", "blob", "filesystem"}
    if lowered.endswith(":") and "/" not in lowered:
        return target.scheme == lowered[:-1]
    if "://" not in lowered:
        lowered = f"{page.scheme}://{lowered}"
    expected = urlsplit(lowered)
    if not _scheme_matches(expected.scheme, target.scheme):
        return False
    host = expected.hostname or ""
    if host.startswith("*."):
        if not (target.hostname or "").endswith(host[1:]):
            return False
    elif target.hostname != host:
        return False
    port_text = expected.netloc.rsplit(":", 1)[1] if expected.netloc.count(":") == 1 else None
    if port_text == "*":
        pass
    elif port_text is not None:
        if _port(target) != int(port_text):
            return False
    elif _port(target) != DEFAULT_PORTS.get(expected.scheme) and not (
            expected.scheme == "http" and target.scheme == "https" and _port(target) == 443):
        return False
    path = expected.path
    if path and path != "/":
        return target.path.startswith(path) if path.endswith("/") else target.path == path
    return True


def allows(policy: dict[str, list[str]], directive: str, url: str, page_origin: str) -> bool:
    return any(source_allows(source, url, page_origin) for source in sources_for(policy, directive))


# -- the page -----------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self._open_script: dict | None = None
        self.inline_scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "script" and not attributes.get("src"):
            self._open_script = {"text": ""}

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        if self._open_script is not None:
            self._open_script["text"] += data

    def handle_endtag(self, tag):
        if tag == "script" and self._open_script is not None:
            self.inline_scripts.append(self._open_script["text"].strip()[:80])
            self._open_script = None


def _fetch_of(tag: str, attributes: dict) -> tuple[str, str] | None:
    """(directive, attribute) of a URL the element makes the browser fetch or submit to."""
    rel = (attributes.get("rel") or "").lower().split() if tag == "link" else []
    if "stylesheet" in rel:
        return "style-src", "href"
    if "icon" in rel:
        return "img-src", "href"
    if tag == "form":
        return "form-action", "action"  # no action: the page's own URL
    directive = {"script": "script-src", "img": "img-src", "iframe": "frame-src"}.get(tag)
    if directive and attributes.get("src"):
        return directive, "src"
    return None


def _parse(html: str) -> _Collector:
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return parser


def fetched_urls(html: str, page_url: str) -> list[tuple[str, str]]:
    """(directive, absolute URL) of every script, stylesheet, image, frame and form target."""
    found = []
    for tag, attributes in _parse(html).elements:
        fetch = _fetch_of(tag, attributes)
        if fetch:
            directive, attribute = fetch
            found.append((directive, urljoin(page_url, attributes.get(attribute) or "")))
    return found


def page_problems(html: str, *, policy: dict[str, list[str]], page_url: str) -> list[str]:
    """What in `html` (served at `page_url`) the policy would block, one line each."""
    parser = _parse(html)
    page_origin = "{0.scheme}://{0.netloc}".format(urlsplit(page_url))
    problems = [f"inline <script> ({text!r}): script-src allows no inline script"
                for text in parser.inline_scripts]
    for tag, attributes in parser.elements:
        if tag == "style":
            problems.append("<style> element: style-src allows no inline style")
        for name, value in attributes.items():
            if name == "style":
                problems.append(f"<{tag} style={value!r}>: style-src allows no inline style attribute")
            elif name.startswith("on"):
                problems.append(f"<{tag} {name}=...>: inline event handlers are inline scripts")
            elif value and value.strip().lower().startswith("javascript:"):
                problems.append(f"<{tag} {name}={value!r}>: javascript: URLs are inline scripts")
    for directive, url in fetched_urls(html, page_url):
        if not allows(policy, directive, url, page_origin):
            problems.append(f"{url}: not allowed by {directive} {' '.join(sources_for(policy, directive))}")
    return problems


def with_sources(policy: str, directives: tuple[str, ...], source: str) -> str:
    """`policy` with `source` added to each of `directives` (which must be in it)."""
    parsed = parse_policy(policy)
    for directive in directives:
        if directive not in parsed:
            raise KeyError(f"{directive} is not in the policy: {policy}")
        parsed[directive] = parsed[directive] + [source]
    return "; ".join(" ".join([name, *sources]) for name, sources in parsed.items())
