"""Hostile and broken files through the HTTP API: each gets a specific answer (a quarantined
row with a rule, a failed import with a code, or a 4xx), never a 500, a hung job or a partial
commit; and every row read is accounted for."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ledger.testing import HEADER, Api, manifest
from ledger.testing.xlsx import xlsx_bytes

GOOD = "EQ-0001,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"


def good(n: int, delimiter: str = ",") -> list[str]:
    return [GOOD.replace("EQ-0001", f"EQ-{i:04d}").replace(",", delimiter) for i in range(1, n + 1)]


def accounted(status: dict[str, Any]) -> None:
    assert status["rows_committed"] + status["rows_duplicate"] + status["rows_quarantined"] == status["rows_total"]


async def failed(api: Api, content: bytes, code: str, **fields: str) -> dict[str, Any]:
    status = await api.run(content, **fields)
    assert status["status"] == "failed", status
    assert status["error"]["code"] == code and status["error"]["message"], status["error"]
    assert status["rows_committed"] == 0 and status["batches"] == []
    assert (await api.get("/assets")).json()["items"] == []
    return status


async def quarantined(api: Api, content: bytes, rule: str, *, committed: int) -> list[dict[str, Any]]:
    status = await api.run(content)
    assert status["status"] == "done", status
    accounted(status)
    assert status["rows_committed"] == committed
    bad = await api.rows(status["task_id"], outcome="quarantined")
    assert bad and all(r["errors"][0]["rule"] == rule for r in bad), bad
    return bad


async def test_mixed_delimiters(api: Api) -> None:
    # In the header: refused, not guessed.
    await failed(api, manifest(*good(1), header=HEADER.replace(",", ";", 3)), "mixed_delimiters")
    # In a row: that row does not split into the header's columns and is quarantined alone.
    rows = good(3, ";")
    rows[1] = rows[1].replace(";", ",")
    bad = await quarantined(api, manifest(*rows, header=HEADER.replace(",", ";")), "cell_count", committed=2)
    assert [r["row"] for r in bad] == [2]


async def test_a_lone_quote_that_swallows_the_rest_of_the_file(api: Api) -> None:
    rows = good(50)
    rows[2] = rows[2].replace("Centrifuge", '"Centrifuge, 2 rotors')
    bad = await quarantined(api, manifest(*rows), "malformed_record", committed=2)
    assert [r["row"] for r in bad] == [3]
    assert "never closed" in bad[0]["errors"][0]["message"] and "48 lines" in bad[0]["errors"][0]["message"]


async def test_a_50_mb_single_line(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "giant.csv"
    with path.open("wb") as out:
        out.write(manifest(*good(1)))
        out.write(b"EQ-0002,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,1.00,")
        block = b"x" * 2**20
        for _ in range(50):
            out.write(block)
        out.write(b"\n" + good(3)[2].encode() + b"\n")
    bad = await quarantined(api, path.read_bytes(), "record_too_long", committed=2)
    assert [r["row"] for r in bad] == [2]


async def test_nul_bytes(api: Api) -> None:
    # In the header a NUL means a binary file, or UTF-16 sent without its byte order mark.
    await failed(api, manifest(*good(1)).decode().encode("utf-16-le"), "not_tabular")
    # In a row it is that row's fault alone.
    rows = [r.encode() for r in good(3)]
    rows[1] = rows[1].replace(b"Centrifuge", b"Centri\x00fuge")
    bad = await quarantined(api, HEADER.encode() + b"\n" + b"\n".join(rows) + b"\n", "nul_byte", committed=2)
    assert [r["row"] for r in bad] == [2]


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


async def test_an_xlsx_that_is_a_zip_of_something_else(api: Api) -> None:
    content = _zip({"manifest.csv": manifest(*good(2)), "readme.txt": b"hello"})
    status = await failed(api, content, "not_tabular", filename="inventory.xlsx")
    assert "'manifest.csv'" in status["error"]["message"]


async def test_a_zip_bomb(api: Api) -> None:
    out = io.BytesIO(xlsx_bytes({"S": [HEADER.split(","), GOOD.split(",")]}))
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as z, z.open("xl/worksheets/sheet2.xml", "w") as part:
        block = b"<row/>" * (2**20 // 6)
        for _ in range(200):  # ~200 MB of XML, compressed to a few hundred KB
            part.write(block)
    assert len(out.getvalue()) < 2**20
    status = await failed(api, out.getvalue(), "zip_bomb", filename="inventory.xlsx")
    assert "sheet2.xml" in status["error"]["message"]


async def test_a_truncated_file(api: Api) -> None:
    workbook = xlsx_bytes({"S": [HEADER.split(","), *[r.split(",") for r in good(20)]]})
    await failed(api, workbook[: len(workbook) * 2 // 3], "corrupt_xlsx")
    # A CSV cut in the middle of a quoted field: the rows before it stand, the cut one is
    # quarantined.
    rows = good(3)
    cut = manifest(*rows, rows[0].replace("EQ-0001", "EQ-0004").replace("Centrifuge", '"Centrifuge, la'))
    bad = await quarantined(api, cut[:-1], "malformed_record", committed=3)
    assert [r["row"] for r in bad] == [4]


async def test_an_encoding_that_lies(api: Api) -> None:
    utf8 = manifest(*good(2))
    # The submitter says UTF-16; the file is UTF-8. Odd length: it does not decode at all.
    odd = utf8 if len(utf8) % 2 else utf8 + b"\n"
    await failed(api, odd, "encoding", encoding="utf-16")
    # Even length: it decodes as UTF-16, to nonsense with no column name in it.
    even = utf8 if len(utf8) % 2 == 0 else utf8 + b"\n"
    await failed(api, even, "encoding", encoding="utf-16")
    # A UTF-16 byte order mark followed by bytes that are not UTF-16.
    await failed(api, b"\xff\xfe" + "asset_id,".encode("utf-16-le") + b"\x00\xdc\x41\x00" * 10, "encoding")
    # A name that is no text encoding at all is refused before anything is queued.
    response = await api.submit(utf8, encoding="rot13")
    assert response.status_code == 422 and response.json()["code"] == "invalid_encoding"


async def test_a_full_spool_answers_507_and_keeps_nothing(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from ledger.ingest import spool

    def disk_full(self: Any) -> None:
        if self._buffer:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool._Receiver, "_flush", disk_full)
    response = await api.submit(manifest("EQ-0001,NIH-R01GM123456,equipment,1,ENG-1004,2024-08-19,,,,"))
    assert response.status_code == 507, response.text
    assert response.json()["code"] == "spool_full" and "no room" in response.json()["message"]
    assert list((tmp_path / "spool").glob("*")) == []  # the partial upload went with the refusal
    imports = await api.get("/assets", role="auditor")
    assert imports.status_code == 200 and imports.json()["items"] == []
