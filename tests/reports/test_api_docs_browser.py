"""Swagger UI and ReDoc work offline: both are served by the project (the pinned
drf-spectacular-sidecar package), so with every other host blocked they still render every
operation of the schema, and they never try to reach another host."""

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect, sync_playwright
from rest_framework.test import APIClient

from tests.reports.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    # The live server runs in another thread; the migrations' rows are restored after the flush.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def operations() -> list[dict]:
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    return [
        {"path": path, "method": method, "operation_id": operation["operationId"]}
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def failed(request, errors: list[str]) -> None:
    """ReDoc's bundle shows a CDN logo in its sidebar; the page's Content-Security-Policy stops
    it inside the browser (it never reaches the network, so the route above never sees it)."""
    if request.failure not in ("csp", "net::ERR_BLOCKED_BY_CSP"):
        errors.append(f"failed: {request.url} ({request.failure})")


@pytest.fixture
def offline_page(live_server, monkeypatch):
    """A page whose requests to any host but the live server's are aborted, and recorded."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    server = urlsplit(live_server.url).netloc
    elsewhere: list[str] = []
    errors: list[str] = []

    def only_the_live_server(route):
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == server:
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        context = browser.new_context()
        context.route("**/*", only_the_live_server)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on("requestfailed", lambda request: failed(request, errors))
        page.base = live_server.url
        page.elsewhere = elsewhere
        page.errors = errors
        yield page
        browser.close()


def test_swagger_ui_renders_every_operation_offline(offline_page, operations):
    offline_page.goto(offline_page.base + "/api/schema/swagger/")

    blocks = offline_page.locator(".opblock")
    expect(blocks.first).to_be_visible(timeout=20_000)
    expect(blocks).to_have_count(len(operations))
    for operation in operations:
        block = f".opblock-{operation['method']} [data-path='{operation['path']}']"
        expect(offline_page.locator(block)).to_have_count(1)
    expect(offline_page.locator(".title")).to_contain_text("Creditdesk API")
    assert offline_page.elsewhere == []
    assert offline_page.errors == []


def test_redoc_renders_every_operation_offline(offline_page, operations):
    offline_page.goto(offline_page.base + "/api/schema/redoc/")

    for operation in operations:
        section = offline_page.locator(
            f"[data-section-id$='/operation/{operation['operation_id']}']"
        )
        expect(section).to_have_count(1, timeout=20_000)
    expect(offline_page.locator("h1").first).to_contain_text("Creditdesk API")
    assert offline_page.elsewhere == []
    assert offline_page.errors == []


def test_without_the_sidecar_the_pages_would_load_a_cdn(client):
    """What the test above guards against: the pages link only the project's static files."""
    for page in ("/api/schema/swagger/", "/api/schema/redoc/"):
        html = client.get(page).content.decode()
        assert "/static/drf_spectacular_sidecar/" in html
        # Every src and href is the project's own path; a CSP nonce may spell anything.
        assert re.findall(r'(?:src|href)="(?!/)([^"]*)"', html) == []
