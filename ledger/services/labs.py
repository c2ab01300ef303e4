"""The lab registry, shared by the admin API and `ledger lab`: a lab is a name an admin
registered, never a free-form string a request made up."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from ledger.core.policy.rules import echo
from ledger.db import labs as labs_db
from ledger.db.labs import LabRow
from ledger.db.pool import Executor
from ledger.errors import Conflict, InvalidRequest

__all__ = ["LAB_NAME", "AddBody", "LabRow", "add", "check_name", "list_visible", "require_known"]

# Lab names go into URLs, file names of reports, log lines and ledger records: letters, digits
# and a few separators, starting with a letter or digit, short enough to read.
LAB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TITLE_CHARS_MAX = 200


class AddBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /labs."""

    name: str
    title: str | None = None


def check_name(name: str) -> str:
    if not LAB_NAME.fullmatch(name):
        raise InvalidRequest(
            "invalid_lab",
            f"lab {echo(name)} is not a lab name: 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return name


async def add(conn: Executor, name: str, title: str | None = None) -> LabRow:
    check_name(name)
    if title is not None and (len(title) > _TITLE_CHARS_MAX or not title.isprintable()):
        raise InvalidRequest("invalid_title", f"a title is at most {_TITLE_CHARS_MAX} printable characters")
    row = await labs_db.add_lab(conn, name, title)
    if row is None:
        raise Conflict("lab_exists", f"lab {name} is registered already")
    return row


async def list_visible(conn: Executor, labs: Sequence[str] | None) -> list[LabRow]:
    """The registered labs, or those of ``labs`` (a lab manager's) when given."""
    return await labs_db.list_labs(conn, labs)


async def require_known(conn: Executor, labs: Sequence[str]) -> None:
    """InvalidRequest ``unknown_lab`` naming the first of ``labs`` that is not registered."""
    unknown = await labs_db.unknown_labs(conn, labs)
    if unknown:
        raise InvalidRequest(
            "unknown_lab",
            f"lab {echo(unknown[0])} is not registered; an admin adds it with `ledger lab add` or POST /labs",
            labs=unknown,
        )
