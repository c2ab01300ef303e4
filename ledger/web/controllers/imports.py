"""The lab manager's pages: upload a manifest (/ui/imports/new, through the tus server at
/uploads/), follow one import (/ui/imports/{task_id}) and list them (/ui/imports). Every figure
comes from the services the API answers with (ledger.services.imports, .import_list)."""

from __future__ import annotations

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from ledger.db import import_statuses
from ledger.services import import_list, imports, labs
from ledger.services.access import visible_labs
from ledger.web.forms import Form
from ledger.web.nav import IMPORTS, UPLOAD
from ledger.web.pages import Page

__all__ = ["CHUNK_BYTES_MAX", "ImportPages"]

# The browser sends an upload in chunks of at most this much: a cut connection loses no more
# than a chunk's worth of work, and the server keeps what it received of it anyway.
CHUNK_BYTES_MAX = 8 * 1024 * 1024
# Imports per page of /ui/imports.
PAGE_SIZE = 25
# Where the browser's tus client sends uploads (the tus 1.0 server of the API).
UPLOADS_ENDPOINT = "/uploads/"


class CsrfOnly(msgspec.Struct, frozen=True):
    csrf_token: str = ""


class ImportPages(Controller):
    path = "/imports"
    include_in_schema = False
    guards = [IMPORTS.access]

    @get("/")
    async def list_imports(self, page: NamedDependency[Page], cursor: FromQuery[str | None] = None) -> Template:
        assert page.principal is not None
        listing = await import_list.list_imports(page.ledger.db, page.principal, limit=PAGE_SIZE, cursor=cursor)
        return page.render("imports/list.html", title=IMPORTS.title, listing=listing, first_page=cursor is not None)

    @get("/new", guards=[UPLOAD.access])
    async def new_import(self, page: NamedDependency[Page]) -> Template:
        assert page.principal is not None
        choices = await labs.list_visible(page.ledger.db, visible_labs(page.principal))
        return page.render(
            "imports/new.html",
            title=UPLOAD.title,
            policies=page.ledger.policies.all(),
            labs=choices,
            endpoint=UPLOADS_ENDPOINT,
            chunk_bytes=CHUNK_BYTES_MAX,
            upload_bytes_max=page.ledger.settings.upload_bytes_max,
        )

    @get("/{task_id:str}")
    async def show_import(self, page: NamedDependency[Page], task_id: FromPath[str]) -> Template:
        assert page.principal is not None
        status = await imports.get_status(page.ledger.db, page.principal, task_id)
        return page.render(
            "imports/show.html",
            title=f"Import {status.filename or status.task_id}",
            status=status,
            terminal=status.status in import_statuses.TERMINAL,
            may_cancel=UPLOAD.access.admits(page.principal),
        )

    @post("/{task_id:str}/cancel", guards=[UPLOAD.access], status_code=303)
    async def cancel_import(
        self, page: NamedDependency[Page], task_id: FromPath[str], data: Form[CsrfOnly]
    ) -> Redirect:
        assert page.principal is not None
        cancelled = await imports.cancel(page.ledger.db, page.principal, task_id)
        return page.redirect(f"{IMPORTS.path}/{cancelled.task_id}")
