"""The API schema's pages, with assets the service serves itself.

Litestar's Swagger and ReDoc pages load their UI from a CDN and start it with an inline script:
blank offline, and blocked by our Content-Security-Policy (ledger/api/headers.py) anyway. These
reference the vendored files under /schema/assets (ledger/api/static/README.md) and start the UI
from a script file of ours.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

__all__ = [
    "ASSETS_PATH",
    "REDOC",
    "STATIC_DIR",
    "SWAGGER_UI",
    "LocalRedocPage",
    "LocalSwaggerPage",
    "assets_router",
    "render_plugins",
]

STATIC_DIR = Path(__file__).resolve().parent / "static"
SWAGGER_UI = "swagger-ui-dist-5.32.0"
REDOC = "redoc-3.0.1"
ASSETS_PATH = "/schema/assets"


def _title(openapi_schema: dict[str, Any]) -> str:
    return html.escape(str(openapi_schema.get("info", {}).get("title", "API")))


class LocalSwaggerPage(OpenAPIRenderPlugin):
    """Swagger UI at /schema/swagger from /schema/assets, no inline script."""

    def __init__(self) -> None:
        super().__init__(path="/swagger")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = _title(openapi_schema)
        ui = f"{ASSETS_PATH}/{SWAGGER_UI}"
        return f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{title}</title>
    <link rel="stylesheet" href="{ui}/swagger-ui.css">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="{ui}/swagger-ui-bundle.js"></script>
    <script src="{ui}/swagger-ui-standalone-preset.js"></script>
    <script src="{ASSETS_PATH}/swagger-init.js"></script>
  </body>
</html>
""".encode()


class LocalRedocPage(OpenAPIRenderPlugin):
    """ReDoc at /schema/redoc from /schema/assets, no inline script. The bundle is an ES module,
    which our own module (redoc-init.js) imports."""

    def __init__(self) -> None:
        super().__init__(path="/redoc")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{_title(openapi_schema)}</title>
  </head>
  <body>
    <div id="redoc"></div>
    <script type="module" src="{ASSETS_PATH}/redoc-init.js"></script>
  </body>
</html>
""".encode()


def render_plugins() -> list[OpenAPIRenderPlugin]:
    return [LocalSwaggerPage(), LocalRedocPage(), JsonRenderPlugin()]


def assets_router() -> Router:
    return create_static_files_router(path=ASSETS_PATH, directories=[STATIC_DIR], include_in_schema=False)
