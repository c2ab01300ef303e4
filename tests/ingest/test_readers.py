"""The streaming readers against hostile and odd files: a clear answer, bounded memory."""

from __future__ import annotations

import csv
import hashlib
import io
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ledger.ingest.csv_reader import CsvManifestReader, iter_chunks
from ledger.ingest.errors import ManifestError, MultipartError, UploadTooLarge
from ledger.ingest.errors_csv import ErrorReportRow, iter_errors_csv, neutralise_cell
from ledger.ingest.formats import open_manifest
from ledger.ingest.limits import field_bytes_max
from ledger.ingest.spool import receive_multipart


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "m.csv"
    path.write_bytes(content)
    return path


def read(tmp_path: Path, content: bytes) -> tuple[list[str], list[tuple[int, list[str], str | None]]]:
    reader = open_manifest(write(tmp_path, content))
    try:
        return reader.header, [(r.row, r.cells, r.error.rule if r.error else None) for r in reader]
    finally:
        reader.close()


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "empty"),
        (b" \r\n\t\n", "empty"),
        (b"\xef\xbb\xbf", "empty"),
        (b"\n\n,,,\n", "empty"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(64), "not_tabular"),
        (b"%PDF-1.7\n", "not_tabular"),
        (b"\x1f\x8b\x08\x00" + bytes(20), "not_tabular"),
        (b"a\x00,b\n1,2\n", "not_tabular"),
        (b"\xff\xfea\x00,\x00\x00\xd8", "encoding"),
    ],
)
def test_unreadable_files_raise_a_coded_error(tmp_path: Path, content: bytes, code: str) -> None:
    with pytest.raises(ManifestError) as error:
        read(tmp_path, content)
    assert error.value.code == code and error.value.message


def test_rows_are_records_counted_from_one_and_blank_records_skipped(tmp_path: Path) -> None:
    content = b'a,b\r\n1,"x\r\ny"\r\n\r\n,\r\n2,"q ""z"", w"\r\n'
    header, rows = read(tmp_path, content)
    assert header == ["a", "b"]
    assert rows == [(1, ["1", "x\r\ny"], None), (2, ["2", 'q "z", w'], None)]


@pytest.mark.parametrize(
    ("bom", "encoding"), [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")]
)
def test_byte_order_marks_choose_the_encoding(tmp_path: Path, bom: bytes, encoding: str) -> None:
    text = "asset,name\n1,Ünïcødé — ok\n"
    header, rows = read(tmp_path, bom + text.encode(encoding))
    assert header == ["asset", "name"]
    assert rows == [(1, ["1", "Ünïcødé — ok"], None)]


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    assert read(tmp_path, b"a,b\n") == (["a", "b"], [])


def test_an_unclosed_quote_is_one_quarantinable_record_not_swallowed_rows(tmp_path: Path) -> None:
    content = b'a,b\n1,ok\n2,"never closed\n3,x\n4,y\n'
    _, rows = read(tmp_path, content)
    assert rows[0] == (1, ["1", "ok"], None)
    assert rows[1][0] == 2 and rows[1][2] == "malformed_record"
    assert len(rows) == 2


def test_bad_quoting_inside_a_record_is_flagged_and_reading_goes_on(tmp_path: Path) -> None:
    _, rows = read(tmp_path, b'a,b\n1,"ab"c\n2,x\n')
    assert [(r[0], r[2]) for r in rows] == [(1, "malformed_record"), (2, None)]


def _peak_reading(path: Path) -> tuple[int, list[tuple[int, str | None, int]]]:
    tracemalloc.start()
    with CsvManifestReader(path) as reader:
        rows = [(r.row, r.error.rule if r.error else None, sum(map(len, r.cells))) for r in reader]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, rows


@pytest.mark.parametrize("megabytes", [5, 40])
def test_a_giant_line_is_flagged_and_memory_does_not_grow_with_it(tmp_path: Path, megabytes: int) -> None:
    giant = b"3," + b"x" * (megabytes * 2**20) + b"\n"
    peak, rows = _peak_reading(write(tmp_path, b"a,b\n1,ok\n" + giant + b"4,fine\n"))
    assert rows[0][:2] == (1, None) and rows[2][:2] == (3, None)
    assert rows[1][:2] == (2, "record_too_long") and rows[1][2] < 1_000  # cells cut for storage
    assert peak < 6 * field_bytes_max  # bounded by the line cap, not by the line


def test_too_many_cells_is_flagged(tmp_path: Path) -> None:
    _, rows = read(tmp_path, b"a\n" + b",".join([b"x"] * 1_500) + b"\n")
    assert rows[0][2] == "too_many_cells" and len(rows[0][1]) <= 16


def _peak_streaming(path: Path, rows: int) -> int:
    with path.open("w") as out:
        out.write("a,b,c,d\n")
        for i in range(rows):
            out.write(f"AS-{i:08d},NIH-R{i:06d},equipment,{i % 500}\n")
    tracemalloc.start()
    count = 0
    with CsvManifestReader(path) as reader:
        for chunk in iter_chunks(reader, 5_000):
            count += len(chunk)
        assert reader.bytes_read == path.stat().st_size
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == rows
    return peak


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    small = _peak_streaming(tmp_path / "small.csv", 50_000)
    large = _peak_streaming(tmp_path / "large.csv", 200_000)
    assert large < 1.5 * small, (small, large)


async def _chunks(body: bytes, size: int = 7_000) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> tuple[bytes, str]:
    out = io.BytesIO()
    for name, filename, data in parts:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"Content-Disposition: {disposition}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


async def test_multipart_spools_the_file_and_hashes_it_while_receiving(tmp_path: Path) -> None:
    data = b"a,b\n" + b"1,2\n" * 50_000
    body, content_type = _multipart(
        [("lab", None, b"chem-lab"), ("file", "../../etc/m.csv", data), ("dry_run", None, b"true")]
    )
    upload = await receive_multipart(_chunks(body), content_type, tmp_path, max_bytes=10**7)
    assert upload.fields == {"lab": "chem-lab", "dry_run": "true"}
    assert upload.filename == "m.csv"  # no path from the client is trusted
    assert upload.file is not None
    assert Path(upload.file.path).read_bytes() == data
    assert upload.file.sha256_hex == hashlib.sha256(data).hexdigest() and upload.file.size == len(data)


async def test_an_upload_over_the_limit_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    body, content_type = _multipart([("file", "m.csv", b"x" * 10_000)])
    with pytest.raises(UploadTooLarge):
        await receive_multipart(_chunks(body), content_type, tmp_path, max_bytes=5_000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"a,b\n1,2\n", "text/csv"),
        (b"--XyZ\r\nnot a part", "multipart/form-data"),
        (b"garbage", "multipart/form-data; boundary=XyZ"),
    ],
)
async def test_malformed_uploads_are_bad_requests(tmp_path: Path, body: bytes, content_type: str) -> None:
    try:
        upload = await receive_multipart(_chunks(body), content_type, tmp_path, max_bytes=10**6)
    except MultipartError as exc:
        assert exc.code == "bad_multipart"
    else:
        assert upload.file is None  # nothing usable: the service answers missing_file


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_neutralised(value: str) -> None:
    assert neutralise_cell(value) == "'" + value


async def test_error_report_round_trips_through_the_csv_module_without_live_formulas() -> None:
    async def rows() -> AsyncIterator[ErrorReportRow]:
        for i in range(1, 1_200):
            yield ErrorReportRow(
                row=i,
                errors=[{"field": "quantity", "rule": "minimum", "message": "quantity '-3' is below the minimum 0"}],
                cells=["EQ-1", '=HYPERLINK("http://x")', "-3", "@cmd", "plain, with comma", 'quote "q"'],
            )

    text = "".join([chunk async for chunk in iter_errors_csv(["asset_id", "d", "q", "e", "f", "g"], rows())])
    assert text.startswith("\ufeff")
    lines = list(csv.reader(io.StringIO(text[1:])))
    assert lines[0] == ["row", "field", "rule", "message", "asset_id", "d", "q", "e", "f", "g"]
    assert len(lines) == 1_200
    for line in lines[1:]:
        assert all(not cell or cell[0] not in "=+-@\t\r" for cell in line)
        assert line[5] == '\'=HYPERLINK("http://x")' and line[8] == "plain, with comma" and line[9] == 'quote "q"'
