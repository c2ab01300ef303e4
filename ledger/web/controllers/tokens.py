"""/ui/tokens (admins): create a token (its secret is shown once, on the answer to the form),
list every token and revoke one, through ledger.services.tokens like the API's /tokens."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from ledger.core import roles
from ledger.errors import InvalidRequest
from ledger.services import labs
from ledger.services import tokens as service
from ledger.web.forms import Form
from ledger.web.nav import TOKENS
from ledger.web.pages import Page

__all__ = ["TokenPages"]


class CreateForm(msgspec.Struct, frozen=True):
    role: str = ""
    # One checkbox ticked arrives as a string, several as a list.
    labs: list[str] | str = []
    label: str = ""
    expires_in_days: str = ""
    never_expires: str = ""
    csrf_token: str = ""

    def lab_names(self) -> list[str]:
        return [self.labs] if isinstance(self.labs, str) else list(self.labs)

    def expiry(self, default_days: int | None) -> int | None:
        if self.never_expires:
            return None
        raw = self.expires_in_days.strip()
        if not raw:
            return default_days
        try:
            return int(raw)
        except ValueError:
            raise InvalidRequest("invalid_expiry", "Expires in (days) must be a whole number of days") from None


class RevokeForm(msgspec.Struct, frozen=True):
    csrf_token: str = ""


class TokenPages(Controller):
    path = "/tokens"
    include_in_schema = False
    guards = [TOKENS.access]

    async def _render(self, page: NamedDependency[Page], *, status_code: int = 200, **context: Any) -> Template:
        values: dict[str, Any] = {"created": None, "error": None, "form": None, **context}
        return page.render(
            "tokens.html",
            title=TOKENS.title,
            status_code=status_code,
            tokens=await service.list_all(page.ledger.db),
            labs=await labs.list_visible(page.ledger.db, None),
            roles=roles.ROLES,
            lab_manager=roles.LAB_MANAGER,
            default_days=page.ledger.settings.token_ttl_days,
            **values,
        )

    @get("/")
    async def list_tokens(self, page: NamedDependency[Page]) -> Template:
        return await self._render(page)

    @post("/", status_code=200)
    async def create_token(self, page: NamedDependency[Page], data: Form[CreateForm]) -> Template:
        try:
            created = await service.create(
                page.ledger.db,
                role=data.role,
                labs=data.lab_names(),
                label=data.label.strip() or None,
                expires_in_days=data.expiry(page.ledger.settings.token_ttl_days),
            )
        except InvalidRequest as exc:
            # The form again, as it was filled in, with what to change.
            return await self._render(page, status_code=422, error=exc, form=data)
        return await self._render(page, status_code=201, created=created)

    @post("/{token_id:str}/revoke", status_code=303)
    async def revoke_token(
        self, page: NamedDependency[Page], token_id: FromPath[str], data: Form[RevokeForm]
    ) -> Redirect:
        await service.revoke(page.ledger.db, token_id)
        return page.redirect(TOKENS.path)
