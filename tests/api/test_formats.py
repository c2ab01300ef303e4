"""One import per accepted format, through the HTTP API. The upload is always named
manifest.csv and sent as text/csv: the format is detected from the content alone."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest

from ledger.testing import HEADER, Api
from ledger.testing.xlsx import Raw, xlsx_bytes

COLUMNS = HEADER.split(",")
EQUIPMENT = ["EQ-0001", "NIH-R01GM1", "equipment", "1", "CHM-204", "2024-01-15", "", "", "10.00", "Centrifuge"]
CHEMICAL = [
    "CHEM-0042",
    "NSF-CHE2201234",
    "chemical",
    "12",
    "CHM-204-A",
    "2024-05-02",
    "64-17-5",
    "flammable",
    "18.50",
    'Ethanol; "200 proof",\tdenatured\nsecond line',
]


def delimited(*rows: list[str], delimiter: str = ",", newline: str = "\n") -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline)
    writer.writerows([COLUMNS, *rows])
    return out.getvalue()


def accounted(status: dict[str, Any]) -> None:
    assert status["rows_committed"] + status["rows_duplicate"] + status["rows_quarantined"] == status["rows_total"]


async def done(api: Api, content: bytes, committed: int, **fields: str) -> dict[str, Any]:
    status = await api.run(content, **fields)
    assert status["status"] == "done", status
    accounted(status)
    assert status["rows_committed"] == committed, status
    return status


async def asset(api: Api, asset_id: str) -> dict[str, Any]:
    revisions = (await api.get(f"/assets/{asset_id}/history")).json()["revisions"]
    data: dict[str, Any] = revisions[-1]["data"]
    return data


@pytest.mark.parametrize(("delimiter", "name"), [(",", "comma"), (";", "semicolon"), ("\t", "tab")])
async def test_delimited_text_with_a_sniffed_delimiter(api: Api, delimiter: str, name: str) -> None:
    status = await done(api, delimited(EQUIPMENT, CHEMICAL, delimiter=delimiter).encode(), 2)
    assert status["format"] == {"type": "csv", "encoding": "utf-8", "delimiter": delimiter}, name
    assert status["warnings"] == []
    assert (await asset(api, "CHEM-0042"))["description"] == CHEMICAL[-1]


async def test_quoted_fields_with_embedded_delimiters_quotes_and_newlines(api: Api) -> None:
    description = 'a;b, "quoted"\r\nand a new line'
    rows = [[*EQUIPMENT[:-1], description], CHEMICAL]
    status = await done(api, delimited(*rows, delimiter=";").encode(), 2)
    assert status["rows_total"] == 2
    assert (await asset(api, "EQ-0001"))["description"] == description


async def test_crlf_line_endings(api: Api) -> None:
    content = delimited(EQUIPMENT, CHEMICAL, newline="\r\n").encode()
    assert content.count(b"\r\n") == 3
    await done(api, content, 2)
    assert (await asset(api, "EQ-0001"))["description"] == "Centrifuge"


async def test_utf8_with_a_byte_order_mark(api: Api) -> None:
    row = [*EQUIPMENT[:-1], "Étuve à 37 °C — ½ shelf"]
    status = await done(api, b"\xef\xbb\xbf" + delimited(row).encode(), 1)
    assert status["format"]["encoding"] == "utf-8"
    assert (await asset(api, "EQ-0001"))["description"] == row[-1]


@pytest.mark.parametrize(("bom", "codec"), [(b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")])
async def test_utf16_with_a_byte_order_mark(api: Api, bom: bytes, codec: str) -> None:
    row = [*EQUIPMENT[:-1], "Étuve à 37 °C — ½ shelf"]
    status = await done(api, bom + delimited(row, CHEMICAL, delimiter="\t", newline="\r\n").encode(codec), 2)
    assert status["format"] == {"type": "csv", "encoding": codec, "delimiter": "\t"}
    assert (await asset(api, "EQ-0001"))["description"] == row[-1]


async def test_windows_1252_is_read_with_a_warning_on_the_import(api: Api) -> None:
    row = [*EQUIPMENT[:-1], "Étuve à 37 °C – 5 € “shelf”"]
    content = delimited(CHEMICAL, row, delimiter=";").encode("cp1252")
    status = await done(api, content, 2)
    assert status["format"] == {"type": "csv", "encoding": "windows-1252", "delimiter": ";"}
    assert [w["code"] for w in status["warnings"]] == ["encoding_fallback"]
    assert "line" in status["warnings"][0]["message"] and "offset" in status["warnings"][0]["message"]
    assert (await asset(api, "EQ-0001"))["description"] == row[-1]


async def test_an_explicit_encoding_overrides_detection(api: Api) -> None:
    row = [*EQUIPMENT[:-1], "Ÿ–€"]
    content = delimited(row).encode("cp1252")
    status = await done(api, content, 1, encoding="latin-1")
    assert status["format"]["encoding"] == "iso8859-1" and status["warnings"] == []
    assert (await asset(api, "EQ-0001"))["description"] == "\x9f\x96\x80"  # latin-1, as told
    # The same bytes again without the field are another reading: not answered from the first.
    second = await api.run(content)
    assert second["task_id"] != status["task_id"] and second["format"]["encoding"] == "windows-1252"


async def test_an_unknown_encoding_is_refused_at_submission(api: Api) -> None:
    response = await api.submit(delimited(EQUIPMENT).encode(), encoding="klingon-8")
    assert response.status_code == 422 and response.json()["code"] == "invalid_encoding"


def _sheet(*rows: list[Any]) -> list[list[Any]]:
    return [COLUMNS, *rows]


XLSX_EQUIPMENT = [
    "EQ-0001",
    "NIH-R01GM1",
    "equipment",
    1,
    "CHM-204",
    dt.date(2024, 1, 15),
    None,
    None,
    10.0,
    "Centrifuge",
]


async def test_xlsx_first_sheet(api: Api) -> None:
    workbook = {"Inventory": _sheet(XLSX_EQUIPMENT), "Notes": [["not", "a", "manifest"]]}
    status = await done(api, xlsx_bytes(workbook), 1, filename="inventory.csv")
    assert status["format"] == {"type": "xlsx", "sheet": "Inventory"}
    data = await asset(api, "EQ-0001")
    assert (data["quantity"], data["acquisition_date"], data["unit_cost"]) == (1, "2024-01-15", "10.00")


async def test_xlsx_named_sheet(api: Api) -> None:
    workbook = {"Cover": [["Annual inventory 2024"]], "Data": _sheet(XLSX_EQUIPMENT)}
    status = await done(api, xlsx_bytes(workbook), 1, sheet="Data")
    assert status["format"] == {"type": "xlsx", "sheet": "Data"}
    missing = await api.run(xlsx_bytes(workbook), sheet="Inventaire")
    assert missing["status"] == "failed" and missing["error"]["code"] == "sheet_not_found"
    assert "'Cover', 'Data'" in missing["error"]["message"]


async def test_xlsx_date_cells_and_text_dates(api: Api) -> None:
    def row(asset_id: str, when: Any) -> list[Any]:
        return [asset_id, *XLSX_EQUIPMENT[1:5], when, *XLSX_EQUIPMENT[6:]]

    rows = [
        row("EQ-0001", dt.date(2024, 3, 15)),
        row("EQ-0002", dt.datetime(2024, 3, 16, 0, 0)),  # a datetime at midnight is a date
        row("EQ-0003", "2024-03-17"),  # text: judged by the policy, accepted
        row("EQ-0004", "17/03/2024"),  # text: judged by the policy, refused
    ]
    status = await done(api, xlsx_bytes({"S": _sheet(*rows)}), 3)
    assert status["rows_quarantined"] == 1
    assert [(await asset(api, f"EQ-000{i}"))["acquisition_date"] for i in (1, 2, 3)] == [
        "2024-03-15",
        "2024-03-16",
        "2024-03-17",
    ]
    bad = await api.rows(status["task_id"], outcome="quarantined")
    assert bad[0]["row"] == 4 and [e["field"] for e in bad[0]["errors"]] == ["acquisition_date"]


async def test_xlsx_numbers_without_float_artefacts(api: Api) -> None:
    # As Excel stores them: a whole number, and a cost computed by a formula (266.78 + 533.54)
    # whose float artefact the policy (at most 2 decimal places) would refuse if it leaked.
    row = [*XLSX_EQUIPMENT[:3], Raw("12"), *XLSX_EQUIPMENT[4:8], Raw("800.3199999999999"), "Bench"]
    await done(api, xlsx_bytes({"S": _sheet(row)}), 1)
    data = await asset(api, "EQ-0001")
    assert (data["quantity"], data["unit_cost"]) == (12, "800.32")


async def test_json_lines(api: Api) -> None:
    lines = [
        '{"asset_id": "EQ-0001", "grant_code": "NIH-R01GM1", "category": "equipment", "quantity": 1, '
        '"location": "CHM-204", "acquisition_date": "2024-01-15", "unit_cost": 800.32, "description": null}',
        "",
        '{"grant_code": "NSF-CHE2201234", "asset_id": "CHEM-0042", "category": "chemical", "quantity": 12, '
        '"location": "CHM-204-A", "acquisition_date": "2024-05-02", "cas_number": "64-17-5"}',
        '{"asset_id": "EQ-0002", "grant_code": "NIH-R01GM1", "category": "equipment", "quantity": 1, '
        '"location": "CHM-204", "acquisition_date": "2024-01-15", "colour": "red"}',
    ]
    status = await api.run(("\n".join(lines) + "\n").encode())
    assert status["status"] == "done" and status["format"] == {"type": "jsonl", "encoding": "utf-8"}
    accounted(status)
    # The first object sets the columns: cas_number and colour are not among them.
    rows = await api.rows(status["task_id"])
    assert [r["outcome"] for r in rows] == ["committed", "quarantined", "quarantined"]
    assert [[e["rule"] for e in r["errors"]] for r in rows[1:]] == [["unknown_field"], ["unknown_field"]]
    assert (await asset(api, "EQ-0001"))["unit_cost"] == "800.32"


async def test_an_escaped_nul_in_a_json_lines_cell_quarantines_the_row_not_the_import(api: Api) -> None:
    """A ``\\u0000`` escape decodes to a character PostgreSQL's text and jsonb cannot hold:
    it used to fail the whole import as ``internal`` at the decide step."""
    lines = [
        '{"asset_id": "EQ-0001", "grant_code": "NIH-R01GM1", "category": "equipment", "quantity": 1, '
        '"location": "CHM-204", "acquisition_date": "2024-01-15", "description": "ok"}',
        '{"asset_id": "EQ-0002", "grant_code": "NIH-R01GM1", "category": "equipment", "quantity": 1, '
        '"location": "CHM-204", "acquisition_date": "2024-01-15", "description": "a\\u0000b"}',
    ]
    status = await done(api, ("\n".join(lines) + "\n").encode(), 1)
    rows = await api.rows(status["task_id"])
    assert [r["outcome"] for r in rows] == ["committed", "quarantined"]
    assert [e["rule"] for e in rows[1]["errors"]] == ["nul_byte"]


async def test_an_escaped_nul_in_an_xlsx_cell_quarantines_the_row_not_the_import(api: Api) -> None:
    broken = [*XLSX_EQUIPMENT[:-1], "Centri\x00fuge"]
    broken[0] = "EQ-0002"
    status = await done(api, xlsx_bytes({"Inventory": _sheet(XLSX_EQUIPMENT, broken)}), 1)
    rows = await api.rows(status["task_id"])
    assert [r["outcome"] for r in rows] == ["committed", "quarantined"]
    assert [e["rule"] for e in rows[1]["errors"]] == ["nul_byte"]
