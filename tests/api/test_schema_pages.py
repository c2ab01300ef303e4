"""The schema's pages load only what the service serves itself (no CDN), under its CSP."""

from __future__ import annotations

import re

from ledger.testing import Api


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
