"""What the app mounts for the pages: GET / (to /ui/), the /ui router of page controllers with
its session, CSRF check and HTML errors, the pages' own files under /ui/static, and the
template engine. The API's app factory (ledger.api.app) composes these; nothing here imports
the API."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Router, get
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from ledger.web.controllers.audit import AuditPages
from ledger.web.controllers.home import HomePage
from ledger.web.controllers.imports import ImportPages
from ledger.web.controllers.quarantine import QueuePages
from ledger.web.controllers.quarantine_item import ItemPages
from ledger.web.controllers.sign_in import SignInPages
from ledger.web.controllers.tokens import TokenPages
from ledger.web.errors import exception_handlers
from ledger.web.forms import check_csrf
from ledger.web.nav import HOME
from ledger.web.pages import provide_page
from ledger.web.session_auth import SessionMiddleware

__all__ = ["STATIC_PATH", "template_config", "web_handlers"]

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_PATH = "/ui/static"


@get("/", include_in_schema=False)
async def root() -> Redirect:
    return Redirect(path=HOME.path)


def web_handlers() -> list[ControllerRouterHandler]:
    pages = Router(
        path="/ui",
        route_handlers=[SignInPages, HomePage, ImportPages, QueuePages, ItemPages, AuditPages, TokenPages],
        middleware=[SessionMiddleware],
        dependencies={"page": Provide(provide_page)},
        exception_handlers=exception_handlers,
        before_request=check_csrf,
        include_in_schema=False,
    )
    static = create_static_files_router(
        path=STATIC_PATH, directories=[PACKAGE_DIR / "static"], include_in_schema=False, name="ui-static"
    )
    return [root, pages, static]


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    # Autoescape everywhere: a filename, a cell or a label is text, never markup. A name a
    # template misspells is an error, not an empty string.
    environment = Environment(
        loader=FileSystemLoader(PACKAGE_DIR / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))
