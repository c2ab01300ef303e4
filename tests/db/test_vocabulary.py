"""The enumerations the SQL is made from agree with the schema, and keyset cursors round-trip."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.core import roles
from ledger.db import import_statuses, tables
from ledger.db.cursors import decode_cursor, decode_row_cursor, encode_cursor
from ledger.errors import InvalidRequest


def test_import_statuses_are_the_schemas() -> None:
    assert import_statuses.STATUSES == tables.IMPORT_STATUSES
    assert set(import_statuses.TERMINAL) | set(import_statuses.ACTIVE) == set(import_statuses.STATUSES)
    assert not set(import_statuses.TERMINAL) & set(import_statuses.ACTIVE)
    assert set(import_statuses.RUNNING) < set(import_statuses.ACTIVE)
    assert import_statuses.RETRYING in import_statuses.ACTIVE


def test_status_fragments() -> None:
    assert import_statuses.terminal("i.status") == "i.status IN ('done', 'failed', 'cancelled')"
    assert import_statuses.not_terminal() == "status NOT IN ('done', 'failed', 'cancelled')"
    assert import_statuses.running() == "status IN ('parsing', 'validating', 'loading', 'finalizing')"


async def test_status_fragments_select_what_the_sets_say(db: Any) -> None:
    for status in import_statuses.STATUSES:
        ended = await db.fetchval(f"SELECT {import_statuses.terminal('$1::text')}", status)
        active = await db.fetchval(f"SELECT {import_statuses.active('$1::text')}", status)
        assert ended == (status in import_statuses.TERMINAL) and active == (not ended), status


def test_roles_are_the_schemas() -> None:
    assert tables.ROLES == roles.ROLES
    for allowed in (roles.READERS, roles.SUBMITTERS, roles.ACTORS, roles.AUDITORS, roles.ADMINS):
        assert set(allowed) <= set(roles.ROLES)


def test_cursors_round_trip_and_refuse_what_they_did_not_issue() -> None:
    key = (datetime(2025, 5, 1, 10, 0, 0, 123456, tzinfo=UTC), uuid.uuid4(), 7)
    cursor = encode_cursor([key[0].isoformat(), str(key[1]), key[2]])
    assert "=" not in cursor
    assert decode_cursor(cursor, tuple[datetime, uuid.UUID, int]) == key
    padded = encode_cursor(["CHEM-0042", "NSF-CHE2201234"], padded=True)
    assert decode_cursor(padded, tuple[str, str]) == ("CHEM-0042", "NSF-CHE2201234")
    assert decode_cursor(padded.rstrip("="), tuple[str, str]) == ("CHEM-0042", "NSF-CHE2201234")
    assert decode_row_cursor("12") == 12
    for bad in ("%%%", encode_cursor(["x"]), "bm90IGpzb24"):
        with pytest.raises(InvalidRequest) as refused:
            decode_cursor(bad, tuple[str, str])
        assert refused.value.code == "invalid_cursor"
    with pytest.raises(InvalidRequest):
        decode_row_cursor("x")
