"""The pipeline's output is pinned: optimisations must not change a single ledger byte.

The digest below was taken from the straightforward single-process pipeline (before the
parallel one) for the same two manifests: a first import, then a larger one that repeats
it, revises every 97th row and adds new rows.
"""

from __future__ import annotations

import pytest

from ledger.bench.manifest import HEADER, generate_rows
from ledger.db import import_decisions as decisions
from ledger.db.pool import connect
from ledger.testing import Api
from ledger.testing.content import digest, ledger_content

PINNED = "3559053c1f065d937e7dea6e2fcd589327e38a3ed8f9c86fdec7bd3b2488dea7"


def manifests() -> tuple[bytes, bytes]:
    rows = [",".join(r) for r in generate_rows(4_000, seed=1)]
    first = "\n".join([HEADER, *rows[:3_000]]) + "\n"
    revised = list(rows)
    for i in range(0, len(revised), 97):
        cells = revised[i].split(",")
        cells[3] = str(int(cells[3]) + 1) if cells[3].isdigit() else cells[3]
        revised[i] = ",".join(cells)
    second = "\n".join([HEADER, *revised]) + "\n"
    return first.encode(), second.encode()


@pytest.fixture
def batch_rows() -> int:
    return 1_000


@pytest.mark.parametrize("set_based_rows_min", [10_000, 0], ids=["default-plans", "no-nested-loops"])
async def test_ledger_content_is_pinned(
    api: Api, database_url: str, set_based_rows_min: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both plans of the decide statement (the guard of big imports, and the planner's own).
    monkeypatch.setattr(decisions, "SET_BASED_ROWS_MIN", set_based_rows_min)
    first, second = manifests()
    a = await api.run(first, lab="chem-lab")
    b = await api.run(second, lab="chem-lab")
    assert a["status"] == b["status"] == "done", (a, b)
    conn = await connect(database_url)
    try:
        content = await ledger_content(conn)
    finally:
        await conn.close()
    assert (await api.get("/audit/verify")).json()["ok"]
    assert a["rows_committed"] > 2_900 and b["rows_duplicate"] > 2_900
    assert any(e[6] == 2 for e in content["entries"])  # revisions were made
    assert len(content["batches"]) > 6
    assert digest(content) == PINNED
