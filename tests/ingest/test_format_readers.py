"""Content-based format detection and the delimited, JSON Lines and XLSX readers."""

from __future__ import annotations

import datetime as dt
import io
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ledger.ingest import xlsx_reader
from ledger.ingest.errors import ManifestError
from ledger.ingest.formats import ReadOptions, open_manifest
from ledger.ingest.text_reader import first_undecodable
from ledger.ingest.xlsx_reader import cell_text
from ledger.testing.xlsx import Raw, xlsx_bytes

Rows = list[tuple[int, list[str], str | None]]


def read(
    tmp_path: Path, content: bytes, **options: Any
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], Rows]:
    path = tmp_path / "upload.bin"  # never a telling name: detection is by content
    path.write_bytes(content)
    reader = open_manifest(path, ReadOptions(**options))
    try:
        rows = [(r.row, r.cells, r.error.rule if r.error else None) for r in reader]
        return reader.format, reader.warnings, reader.header, rows
    finally:
        reader.close()


def refused(tmp_path: Path, content: bytes, **options: Any) -> ManifestError:
    with pytest.raises(ManifestError) as error:
        read(tmp_path, content, **options)
    assert error.value.message
    return error.value


# -- delimited text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "delimiter"),
    [
        (b"a,b,c\n1,2,3\n", ","),
        (b"a;b;c\n1;2,5;3\n", ";"),  # a decimal comma in a semicolon file is data
        (b"a\tb\tc\n1\t2;x\t3\n", "\t"),
        (b'"a;x",b,c\n1,2,3\n', ","),  # a quoted delimiter in the header does not count
        (b"\n\na;b;c\n1;2;3\n", ";"),
    ],
)
def test_the_delimiter_is_sniffed_from_the_header(tmp_path: Path, content: bytes, delimiter: str) -> None:
    fmt, warnings, header, rows = read(tmp_path, content)
    assert fmt == {"type": "csv", "encoding": "utf-8", "delimiter": delimiter}
    assert warnings == [] and len(header) == 3
    assert len(rows) == 1 and len(rows[0][1]) == 3 and rows[0][2] is None


def test_a_single_column_file_is_comma_delimited(tmp_path: Path) -> None:
    fmt, _, header, rows = read(tmp_path, b"asset_id\nA-1\n")
    assert fmt["delimiter"] == "," and header == ["asset_id"] and rows == [(1, ["A-1"], None)]


def test_a_sheet_named_for_a_text_file_is_a_warning(tmp_path: Path) -> None:
    _, warnings, _, rows = read(tmp_path, b"a,b\n1,2\n", sheet="Data")
    assert [w["code"] for w in warnings] == ["sheet_ignored"] and len(rows) == 1


def test_a_header_with_two_delimiters_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, b"a;b,c\n1;2;3\n")
    assert error.code == "mixed_delimiters" and "comma" in error.message and "semicolon" in error.message


def test_rows_in_another_delimiter_keep_their_row_and_are_not_split(tmp_path: Path) -> None:
    _, _, header, rows = read(tmp_path, b"a;b;c\n1;2;3\n4,5,6\n")
    assert header == ["a", "b", "c"]
    assert rows == [(1, ["1", "2", "3"], None), (2, ["4,5,6"], None)]  # the policy's cell_count judges it


def test_quoted_fields_hold_delimiters_quotes_and_newlines_with_crlf(tmp_path: Path) -> None:
    content = b'a;b;c\r\n1;"x;y";"say ""hi"""\r\n2;"two\r\nlines";\r\n'
    fmt, _, _, rows = read(tmp_path, content)
    assert fmt["delimiter"] == ";"
    assert rows == [(1, ["1", "x;y", 'say "hi"'], None), (2, ["2", "two\r\nlines", ""], None)]


@pytest.mark.parametrize(
    ("bom", "codec", "label"),
    [
        (b"\xef\xbb\xbf", "utf-8", "utf-8"),
        (b"", "utf-8", "utf-8"),
        (b"\xff\xfe", "utf-16-le", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be", "utf-16-be"),
    ],
)
def test_utf8_and_utf16_with_a_byte_order_mark(tmp_path: Path, bom: bytes, codec: str, label: str) -> None:
    fmt, warnings, header, rows = read(tmp_path, bom + "name\tnote\nÉtuve\t€ 5 — ok\n".encode(codec))
    assert fmt == {"type": "csv", "encoding": label, "delimiter": "\t"} and warnings == []
    assert header == ["name", "note"] and rows == [(1, ["Étuve", "€ 5 — ok"], None)]


def test_bytes_not_utf8_anywhere_fall_back_to_windows_1252_with_a_warning(tmp_path: Path) -> None:
    # The only non-UTF-8 byte sits far past the sniffed prefix: the whole file is checked.
    body = b"".join(b"%d,plain\n" % i for i in range(20_000))
    fmt, warnings, _, rows = read(tmp_path, b"n,text\n" + body + b"20000,caf\xe9 \x80 \x81\n")
    assert fmt["encoding"] == "windows-1252"
    assert [w["code"] for w in warnings] == ["encoding_fallback"]
    assert f"offset {7 + len(body) + 9}" in warnings[0]["message"] and "line 20002" in warnings[0]["message"]
    assert rows[-1] == (20_001, ["20000", "café € \x81"], None)


def test_an_explicit_encoding_overrides_detection(tmp_path: Path) -> None:
    content = "a,b\n1,Ÿ\n".encode("cp1252")
    fmt, warnings, _, rows = read(tmp_path, content, encoding="latin-1")
    assert fmt["encoding"] == "iso8859-1" and warnings == []
    assert rows == [(1, ["1", "\x9f"], None)]  # latin-1 as asked, not windows-1252


@pytest.mark.parametrize("encoding", ["utf-16", "UTF-16LE", "utf_16"])
def test_explicit_utf16_reads_a_file_without_a_byte_order_mark(tmp_path: Path, encoding: str) -> None:
    fmt, _, header, rows = read(tmp_path, "asset,name\n1,x\n".encode("utf-16-le"), encoding=encoding)
    assert fmt["encoding"] == "utf-16-le" and header == ["asset", "name"] and rows == [(1, ["1", "x"], None)]


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (b"asset_id,grant_code\n1,2\n", "utf-16"),  # even length: decodes, to nonsense
        (b"asset_id,grant_code\n1,23\n", "utf-16"),  # odd length: does not decode
        (b"asset,name\n1,caf\xe9\n", "utf-8"),  # told UTF-8: no fallback
        (b"\xff\xfea\x00,\x00b\x00\n\x00\x00\xdc1\x00", None),  # a UTF-16 mark, then a lone surrogate
        (b"\xfe\xff\x00a\x00,\x00b\x00", None),  # odd length after the mark: truncated
    ],
)
def test_an_encoding_that_lies_is_refused(tmp_path: Path, content: bytes, encoding: str | None) -> None:
    assert refused(tmp_path, content, encoding=encoding).code == "encoding"


@pytest.mark.parametrize("name", ["klingon", "rot13", "base64"])
def test_an_unknown_or_non_text_encoding_is_refused(tmp_path: Path, name: str) -> None:
    assert refused(tmp_path, b"a\n1\n", encoding=name).code == "invalid_encoding"


def test_a_nul_byte_in_a_data_row_quarantines_that_row(tmp_path: Path) -> None:
    _, _, _, rows = read(tmp_path, b"a;b\n1;x\x00y\n2;ok\n")
    assert rows == [(1, ["1", "xy"], "nul_byte"), (2, ["2", "ok"], None)]


def test_utf16_without_a_mark_is_refused_with_a_hint(tmp_path: Path) -> None:
    error = refused(tmp_path, "a,b\n1,2\n".encode("utf-16-le"))
    assert error.code == "not_tabular" and "encoding=utf-16-le" in error.message


def test_a_single_line_longer_than_the_cap_with_no_header_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, b"a," * 600_000)
    assert error.code == "not_tabular" and "header" in error.message


def test_invalid_utf8_detection_is_chunk_boundary_safe(tmp_path: Path) -> None:
    path = tmp_path / "x"
    # A valid 3-byte character split across the 1 MiB chunk boundary, then a bad byte.
    path.write_bytes(b"a" * (2**20 - 1) + "€".encode() + b"ok\n\xff")
    with path.open("rb") as f:
        bad = first_undecodable(f, 0, "utf-8")
    assert bad is not None and (bad.offset, bad.byte, bad.line) == (2**20 - 1 + 3 + 3, 0xFF, 2)
    path.write_bytes(b"a" * (2**20 - 1) + "€".encode()[:2])  # truncated at the very end
    with path.open("rb") as f:
        bad = first_undecodable(f, 0, "utf-8")
    assert bad is not None and bad.offset == 2**20 - 1


# -- what is not a table ----------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"%PDF-1.7\n%binary", "PDF"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "PNG"),
        (b"\x1f\x8b\x08\x00" + bytes(20), "gzip"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "legacy Office"),
        (_zip({"notes.txt": b"a,b\n1,2\n"}), "ZIP archive of 'notes.txt'"),
        (_zip({"word/document.xml": b"<w/>", "[Content_Types].xml": b"<x/>"}), "Word"),
        (_zip({"mimetype": b"application/vnd.oasis.opendocument.spreadsheet", "content.xml": b"<x/>"}), "OpenDocument"),
        (b"\x00\x01\x02\x03" * 100, "binary"),
        (b"PK\x03\x04" + bytes(200), "damaged ZIP"),
    ],
)
def test_what_is_not_tabular_is_named(tmp_path: Path, content: bytes, says: str) -> None:
    error = refused(tmp_path, content)
    assert error.code == "not_tabular" and says in error.message, error.message


@pytest.mark.parametrize("content", [b"", b"   \r\n\n", b"\xef\xbb\xbf\n"])
def test_empty_files(tmp_path: Path, content: bytes) -> None:
    assert refused(tmp_path, content).code == "empty"


# -- JSON Lines -------------------------------------------------------------------------------


def test_json_lines_map_keys_to_the_first_objects_columns(tmp_path: Path) -> None:
    content = (
        b'\xef\xbb\xbf{"asset_id": "A-1", "quantity": 12, "unit_cost": 800.32, "note": null, "ok": true}\n'
        b"\n"
        b'{"quantity": 1e3, "asset_id": "A-2", "unit_cost": 0.30000000000000004}\r\n'
    )
    fmt, _, header, rows = read(tmp_path, content)
    assert fmt == {"type": "jsonl", "encoding": "utf-8"}
    assert header == ["asset_id", "quantity", "unit_cost", "note", "ok"]
    assert rows == [
        (1, ["A-1", "12", "800.32", "", "true"], None),
        (2, ["A-2", "1e3", "0.30000000000000004", "", ""], None),  # the JSON text, never a float
    ]


def test_json_lines_that_are_not_records_are_quarantined_rows(tmp_path: Path) -> None:
    content = (
        b'{"a": 1, "b": 2}\n{"a": 3, "z": 4}\n[1, 2]\n{"a": {"x": 1}}\n{"a": [1]}\nnot json\n{"a": NaN}\n{"b": 5}\n'
    )
    _, _, _, rows = read(tmp_path, content)
    assert [(r[0], r[2]) for r in rows] == [
        (1, None),
        (2, "unknown_field"),
        (3, "malformed_record"),
        (4, "nested_value"),
        (5, "nested_value"),
        (6, "malformed_record"),
        (7, "malformed_record"),
        (8, None),
    ]
    assert rows[-1][1] == ["", "5"] and rows[5][1] == ["not json"]


def test_json_nested_a_million_deep_is_a_quarantined_row_not_a_crash(tmp_path: Path) -> None:
    deep = b'{"a": ' + b"[" * 500_000 + b"]" * 500_000 + b"}\n"
    _, _, _, rows = read(tmp_path, b'{"a": 1}\n' + deep + b'{"a": 2}\n')
    assert [(r[0], r[2]) for r in rows] == [(1, None), (2, "malformed_record"), (3, None)]


def test_json_lines_whose_first_line_is_no_object_are_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, b'{"a": 1\n{"a": 2}\n').code == "not_tabular"


def test_a_lone_surrogate_escape_is_a_quarantined_row_and_a_pair_is_text(tmp_path: Path) -> None:
    # Read as a lone surrogate, it could be neither stored nor hashed: the import crashed.
    content = b'{"a": 1, "b": "x"}\n{"a": 2, "b": "bad \\ud800"}\n{"\\uDC00": 3}\n{"a": 4, "b": "\\ud83d\\ude00"}\n'
    _, _, _, rows = read(tmp_path, content)
    assert [(r[0], r[2]) for r in rows] == [(1, None), (2, "malformed_record"), (3, "malformed_record"), (4, None)]
    assert rows[3][1] == ["4", "\U0001f600"]
    assert rows[1][1] == ['{"a": 2, "b": "bad \\ud800"}']  # the line as written: text
    assert refused(tmp_path, b'{"a\\ud800": 1}\n').code == "not_tabular"


# -- XLSX -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12.0, "12"),
        (800.3200000000001, "800.32"),
        (266.78 + 533.54, "800.32"),  # 800.3199999999999
        (1.1 * 3, "3.3"),  # 3.3000000000000003
        (0.30000000000000004, "0.3"),
        (1e-7, "0.0000001"),
        (123456789.125, "123456789.125"),
        (-4.5, "-4.5"),
        (2.0**60, "1152921504606850000"),  # 15 digits, as Excel keeps
        (True, "true"),
        (dt.datetime(2024, 3, 15), "2024-03-15"),
        (dt.datetime(2024, 3, 15, 9, 30), "2024-03-15T09:30:00"),
        (dt.date(2024, 3, 15), "2024-03-15"),
        ("15/03/2024", "15/03/2024"),
        ("", ""),
    ],
)
def test_cell_text(value: object, text: str) -> None:
    assert cell_text(value) == text


WORKBOOK: dict[str, list[list[Any]]] = {
    "Inventory": [
        [],
        ["asset_id", "quantity", "unit_cost", "acquisition_date", "text_date", None],
        ["A-1", 12, Raw("800.3199999999999"), dt.date(2024, 3, 15), "2024-03-15"],
        [None, None, None],
        ["A-2", 3.0, 0.1, dt.datetime(2023, 12, 1), "01/12/2023", None],
    ],
    "Second": [["asset_id"], ["B-1"]],
}


def test_xlsx_first_sheet_with_dates_and_numbers(tmp_path: Path) -> None:
    fmt, warnings, header, rows = read(tmp_path, xlsx_bytes(WORKBOOK))
    assert fmt == {"type": "xlsx", "sheet": "Inventory"} and warnings == []
    assert header == ["asset_id", "quantity", "unit_cost", "acquisition_date", "text_date"]
    assert rows == [
        (1, ["A-1", "12", "800.32", "2024-03-15", "2024-03-15"], None),
        (2, ["A-2", "3", "0.1", "2023-12-01", "01/12/2023"], None),
    ]


def test_an_encoding_given_for_a_workbook_is_a_warning(tmp_path: Path) -> None:
    _, warnings, _, rows = read(tmp_path, xlsx_bytes(WORKBOOK), encoding="latin-1")
    assert [w["code"] for w in warnings] == ["encoding_ignored"] and len(rows) == 2


def test_xlsx_named_sheet_and_unknown_sheet(tmp_path: Path) -> None:
    fmt, _, header, rows = read(tmp_path, xlsx_bytes(WORKBOOK), sheet="Second")
    assert fmt["sheet"] == "Second" and header == ["asset_id"] and rows == [(1, ["B-1"], None)]
    error = refused(tmp_path, xlsx_bytes(WORKBOOK), sheet="Nope")
    assert error.code == "sheet_not_found" and "'Inventory', 'Second'" in error.message


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_a_truncated_xlsx_is_corrupt_not_a_crash(tmp_path: Path, keep: float) -> None:
    data = xlsx_bytes(WORKBOOK)
    assert refused(tmp_path, data[: int(len(data) * keep)]).code == "corrupt_xlsx"


def test_an_xlsx_with_a_damaged_part_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(xlsx_bytes(WORKBOOK))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("xl/worksheets/sheet1.xml")
    start = info.header_offset + 30 + len(info.filename)
    data[start : start + 40] = b"\xff" * 40
    assert refused(tmp_path, bytes(data)).code == "corrupt_xlsx"


def _with_padding(size: int) -> bytes:
    out = io.BytesIO(xlsx_bytes(WORKBOOK))
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as z, z.open("xl/media/pad.bin", "w") as member:
        block = bytes(2**20)
        for _ in range(size // 2**20):
            member.write(block)
    return out.getvalue()


def test_a_zip_bomb_is_refused_before_calamine_inflates_it(tmp_path: Path) -> None:
    data = _with_padding(64 * 2**20)
    assert len(data) < 200_000
    started = time.perf_counter()
    error = refused(tmp_path, data)
    assert error.code == "zip_bomb" and "pad.bin" in error.message
    assert time.perf_counter() - started < 1


def test_a_workbook_inflating_past_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx_reader, "xlsx_uncompressed_max", 2**20)
    assert refused(tmp_path, _with_padding(2 * 2**20)).code == "archive_too_large"


def test_a_part_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    data = bytearray(xlsx_bytes({"S": [["a"], ["x" * 50_000]]}))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("xl/worksheets/sheet1.xml")
    struct.pack_into("<I", data, info.header_offset + 22, 100)
    central = bytes(data).rindex(info.filename.encode()) - 46  # the central record's name is last
    struct.pack_into("<I", data, central + 24, 100)
    error = refused(tmp_path, bytes(data))
    assert error.code == "zip_bomb" and "declares 100 bytes" in error.message


def _with_sheet_xml(extra: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(xlsx_bytes({"S": [["a", "b"], ["1", "2"]]})))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"</sheetData>", extra + b"</sheetData>")
            z.writestr(info.filename, data)
    return out.getvalue()


@pytest.mark.parametrize(
    "extra",
    [
        b'<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>',  # one far cell: 17 billion cells
        b"<row r='3'><c t='n' r = 'XFD3'/></row><row r='1048576'><c r='A1048576'/></row>",
        b'<x:row r="1048576"><x:c r="ZZ1048576"><x:v>1</x:v></x:c></x:row>',
        b'<row r="1000000">' + b"<c><v>1</v></c>" * 30 + b"</row>",  # cells placed by position
    ],
)
def test_a_sheet_spanning_a_huge_grid_is_refused_before_calamine_allocates_it(tmp_path: Path, extra: bytes) -> None:
    data = _with_sheet_xml(extra)
    assert len(data) < 4_000
    error = refused(tmp_path, data)
    assert error.code == "sheet_too_large" and "rows by" in error.message


def test_a_cell_reference_calamine_could_read_otherwise_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, _with_sheet_xml(b'<row r="3"><c r="&#88;FD3"><v>1</v></c></row>')).code == "corrupt_xlsx"


def test_a_sheet_with_gaps_and_reordered_attributes_still_reads(tmp_path: Path) -> None:
    extra = b'<row spans="1:2" r="50"><c t="n" r="B50"><v>7</v></c></row>'
    _, _, header, rows = read(tmp_path, _with_sheet_xml(extra))
    assert header == ["a", "b"] and rows == [(1, ["1", "2"], None), (2, ["", "7"], None)]


def test_the_sheet_extent_is_exact_whatever_the_chunking() -> None:
    xml = zipfile.ZipFile(io.BytesIO(xlsx_bytes(WORKBOOK))).read("xl/worksheets/sheet1.xml")
    for size in (7, 64, 2**20):
        extent = xlsx_reader._SheetExtent()
        for i in range(0, len(xml), size):
            extent.feed(xml[i : i + size])
        assert extent.grid == (5, 5), size  # rows 1..5 (the first blank), columns A..E (F is empty)
