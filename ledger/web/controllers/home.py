"""/ui/: what the signed-in role can do here (the sections of ledger.web.nav it may use)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.response import Template

from ledger.web.nav import HOME
from ledger.web.pages import Page

__all__ = ["HomePage"]


class HomePage(Controller):
    path = "/"
    include_in_schema = False
    guards = [HOME.access]

    @get("/")
    async def home(self, page: NamedDependency[Page]) -> Template:
        return page.render("home.html", title=HOME.title, sections=[s for s in page.nav if s is not HOME])
