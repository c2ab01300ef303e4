"""Output a hostile input cannot turn against its reader: formula cells neutralised as
spreadsheets see them, bounded echoes of input in messages, one verification at a time, and
one charset in the errors CSV's Content-Type."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ledger.core.verify import VerifyReport
from ledger.ingest.errors_csv import neutralise_cell
from ledger.services import verification
from ledger.testing import HEADER, Api

# What spreadsheets evaluate: = + - @ after leading whitespace, and their full-width forms.
FORMULAS = [
    " =1+1",
    "  +1",
    '\n=HYPERLINK("http://x")',
    "\r\n-2",
    "\t@SUM(A1)",
    "＝1+1",
    "＋1",
    "－1",
    "＠SUM(A1)",
    " \u3000＝1",
]
PLAIN = ["plain", "1-2", "a=b", "", "   ", "EQ-1"]


@pytest.mark.parametrize("value", FORMULAS)
def test_formula_cells_after_whitespace_or_in_full_width_are_neutralised(value: str) -> None:
    assert neutralise_cell(value) == "'" + value


@pytest.mark.parametrize("value", PLAIN)
def test_other_cells_are_left_alone(value: str) -> None:
    assert neutralise_cell(value) == value


def _live_formula(cell: str) -> bool:
    import unicodedata

    rest = cell.lstrip()
    return bool(rest) and unicodedata.normalize("NFKC", rest[0]) in "=+-@"


def _manifest(descriptions: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER.split(","))
    for i, text in enumerate(descriptions, start=1):
        # quantity -3 breaks the minimum: every row is quarantined with its description.
        writer.writerow([f"EQ-{i:04d}", "NIH-R01GM1", "equipment", "-3", "CHM-204", "2024-01-15", "", "", "1.00", text])
    return out.getvalue().encode()


async def test_no_csv_export_carries_a_live_formula(api: Api) -> None:
    status = await api.run(_manifest(FORMULAS))
    task = status["task_id"]
    assert status["rows_quarantined"] == len(FORMULAS)
    errors = await api.get(f"/imports/{task}/errors", role="manager")
    export = await api.get("/quarantine/export.csv", role="officer", params={"task_id": task})
    for response in (errors, export):
        assert response.status_code == 200
        lines = list(csv.reader(io.StringIO(response.text.lstrip("\ufeff"))))
        descriptions = {line[lines[0].index("description")] for line in lines[1:]}
        assert descriptions == {"'" + f for f in FORMULAS}
        for line in lines[1:]:
            assert not any(_live_formula(cell) for cell in line), line


async def test_the_csv_exports_name_their_charset_once(api: Api) -> None:
    task = (await api.run(_manifest(["x"])))["task_id"]
    errors = await api.get(f"/imports/{task}/errors", role="manager")
    export = await api.get("/quarantine/export.csv", role="officer", params={"task_id": task})
    assert errors.headers["content-type"] == export.headers["content-type"] == "text/csv; charset=utf-8"


@pytest.mark.parametrize(
    "path", ["/imports/{}", "/imports/{}/rows", "/quarantine/{}", "/quarantine/{}:1", "/assets/{}/history"]
)
async def test_a_huge_path_segment_is_not_echoed_back(api: Api, path: str) -> None:
    segment = "A" * 60_000  # near httpx's limit on a URL (the finding sent 100 kB)
    response = await api.get(path.format(segment), role="officer")
    assert response.status_code == 404
    message = response.json()["message"]
    assert len(response.content) < 1_000 and "A" * 61 not in message
    assert "A" * 60 + "…" in message


async def test_a_short_id_is_still_quoted_whole(api: Api) -> None:
    response = await api.get("/imports/no-such-import", role="officer")
    assert response.json() == {"code": "not_found", "message": "no import 'no-such-import'"}


class _Pool:
    """Enough of a pool for verification.verify: acquire() as an async context."""

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[object]:
        yield object()


async def test_concurrent_verifications_share_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second GET /audit/verify while one runs waits for it and gets its report, rather than
    starting VERIFY_WORKERS more verifier processes. (Called below the HTTP layer: the test
    client serves one request at a time.)"""
    calls = 0
    release = asyncio.Event()
    report = VerifyReport(ok=True, batches_checked=0, records_checked=0, first_failure=None)

    async def slow(pool: Any, database_url: str) -> VerifyReport:
        nonlocal calls
        calls += 1
        await release.wait()
        return report

    # The verification itself runs in a process of its own; what is shared is the API's wait.
    monkeypatch.setattr(verification, "_verify", slow)
    pool: Any = _Pool()
    runs = [asyncio.ensure_future(verification.verify(pool, "postgresql://x")) for _ in range(4)]
    await asyncio.sleep(0.05)
    assert calls == 1
    runs[0].cancel()  # one caller going away does not cancel the others' verification
    release.set()
    results = await asyncio.gather(*runs[1:])
    assert all(r is report for r in results)
    release.clear()
    later = asyncio.ensure_future(verification.verify(pool, "postgresql://x"))
    await asyncio.sleep(0.05)
    assert calls == 2  # once it has ended, the next call runs a fresh verification
    release.set()
    assert await later is report


async def test_the_verify_route_still_answers(api: Api) -> None:
    response = await api.get("/audit/verify", role="auditor")
    assert response.status_code == 200 and response.json()["ok"] is True
