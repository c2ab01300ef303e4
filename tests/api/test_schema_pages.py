"""The schema's pages load only what the service serves itself (no CDN), under its CSP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ledger.api.schema_pages import REDOC, STATIC_DIR
from ledger.config import Settings
from ledger.testing import Api
from ledger.testing.browser import chromium_path, in_ci
from ledger.testing.checkout import POLICIES_DIR
from ledger.testing.live import serving_api


async def test_swagger_ui_is_served_from_our_own_assets(api: Api) -> None:
    page = await api.client.get("/schema/swagger")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/schema/assets/") for s in sources), sources
    assert "<script>" not in page.text.replace(" ", "")  # no inline script: the CSP forbids it
    policy = page.headers["content-security-policy"]
    assert "script-src" not in policy and "default-src 'self'" in policy and "http" not in policy
    for source in sources:
        asset = await api.client.get(source)
        assert asset.status_code == 200, source
        assert len(asset.content) > 100
        kind = "css" if source.endswith(".css") else "javascript"
        assert kind in asset.headers["content-type"], (source, asset.headers["content-type"])
    schema = await api.client.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/imports" in schema.json()["paths"]
    assert "/schema/assets" not in str(schema.json()["paths"])


async def test_redoc_is_served_from_our_own_assets(api: Api) -> None:
    page = await api.client.get("/schema/redoc")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    scripts = re.findall(r"<script([^>]*)>", page.text)
    # One script, a module of ours, no inline code: the CSP forbids it.
    assert scripts == [' type="module" src="/schema/assets/redoc-init.js"'], scripts
    assert "<script>" not in page.text.replace(" ", "") and "<link" not in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src" not in policy and "default-src 'self'" in policy and "http" not in policy
    init = await api.client.get("/schema/assets/redoc-init.js")
    assert init.status_code == 200 and "javascript" in init.headers["content-type"]
    # It imports the pinned, vendored bundle, relative to itself, and turns telemetry off.
    imported = re.findall(r'^import .* from "\./([^"]+)";$', init.text, re.MULTILINE)
    assert imported == [f"{REDOC}/redoc.standalone.js"], imported
    assert "disableTelemetry: true" in init.text
    bundle = await api.client.get(f"/schema/assets/{imported[0]}")
    assert bundle.status_code == 200 and "javascript" in bundle.headers["content-type"]
    assert f"Version: {REDOC.removeprefix('redoc-')}" in bundle.text[:400]
    licence = (STATIC_DIR / REDOC / "LICENSE").read_text()
    assert "MIT License" in licence and "Redocly" in licence


async def test_the_assets_need_no_token_and_stay_inside_their_folder(api: Api) -> None:
    ok = await api.client.get("/schema/assets/swagger-init.js")
    assert ok.status_code == 200 and "SwaggerUIBundle" in ok.text
    for probe in (
        "/schema/assets/../schema_pages.py",
        "/schema/assets/%2e%2e/schema_pages.py",
        "/schema/assets/nope.js",
    ):
        response = await api.client.get(probe)
        assert response.status_code == 404, (probe, response.status_code)


# ---------------------------------------------------------------- in a browser

# What each page, pinned as it is, tries to load from elsewhere, and the policy blocks (see
# ledger/api/static/README.md): ReDoc's attribution logo. Anything else leaving the service
# fails the test.
BLOCKED_ELSEWHERE = {
    "/schema/swagger": set(),
    "/schema/redoc": {"https://cdn.redoc.ly/redoc/logo-mini-full.svg"},
}


async def _operations(served_url: str) -> list[tuple[str, str, dict[str, Any]]]:
    import httpx

    async with httpx.AsyncClient(base_url=served_url) as client:
        paths = (await client.get("/schema/openapi.json")).json()["paths"]
    return [(method, path, op) for path, item in paths.items() for method, op in item.items()]


@pytest.mark.parametrize("path", sorted(BLOCKED_ELSEWHERE))
async def test_the_pages_render_in_a_browser_under_the_policy(database_url: str, tmp_path: Path, path: str) -> None:
    """Debian's Chromium, as tests/web finds it (ledger.testing.browser): the page draws every
    operation, throws nothing, and every request for anything not the service's own was
    refused by the Content-Security-Policy, never sent."""
    browser_path = chromium_path()
    if browser_path is None:
        message = "no Chromium at /usr/bin/chromium (or LEDGER_CHROMIUM)"
        if in_ci():
            pytest.fail(f"{message}: in CI the browser tests must run")
        pytest.skip(message)
    playwright_api = pytest.importorskip("playwright.async_api")
    settings = Settings(database_url=database_url, home=tmp_path, policies_dir=POLICIES_DIR, import_processes=0)
    with serving_api(settings, database_url) as served:
        operations = await _operations(served.base_url)
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(browser_path), args=["--no-sandbox"])
            page = await browser.new_page(base_url=served.base_url)
            thrown: list[str] = []
            elsewhere: dict[str, str | None] = {}
            page.on("pageerror", lambda error: thrown.append(str(error)))
            page.on(
                "requestfailed",
                lambda request: (
                    elsewhere.update({request.url: request.failure})
                    if not request.url.startswith(served.base_url)
                    else None
                ),
            )
            page.on(
                "requestfinished",
                lambda request: (
                    elsewhere.update({request.url: "sent"}) if not request.url.startswith(served.base_url) else None
                ),
            )
            await page.goto(path)
            if path == "/schema/swagger":
                await page.locator(".opblock").first.wait_for()
                assert await page.locator(".opblock").count() == len(operations)
            else:
                await page.get_by_role("heading", name="ledger (0.1.0)").wait_for()
                # The sidebar names every tag, and lists operations under them (ReDoc draws the
                # sections themselves as they scroll into view).
                await page.get_by_text("/imports/{task_id}/accounting").first.wait_for()
                sidebar = (await page.inner_text("body")).split("\n")
                for tag in sorted({tag for _, _, op in operations for tag in op.get("tags", ())}):
                    assert tag in sidebar, tag
                assert "/imports/{task_id}/accounting" in sidebar
            await page.wait_for_load_state("networkidle")
            await browser.close()
    assert not thrown, thrown
    assert set(elsewhere) == BLOCKED_ELSEWHERE[path], elsewhere
    assert all(reason == "csp" for reason in elsewhere.values()), elsewhere
