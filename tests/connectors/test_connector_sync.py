"""One sync end to end against an upstream played by respx: every paginator, the JSON Lines
manifest and the provenance of every page, the equal-timestamp boundary across two syncs, a
record listed twice, records that cannot be mapped, and how a sync ends (ok, partial, failed)
for each fault of the issue. stamina's testing mode is on, so no retry sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import stamina

from ledger.connectors.definition import SourceDefinition
from ledger.connectors.sync import VALUE_CHARS_MAX, RecordProblem, SyncError, SyncResult, run_sync
from ledger.connectors.window import CursorState, compare
from tests.connectors.helpers import URL, Streamed, VirtualClock, body, definition, record, upstream_client

INCREMENTAL = {"field": "updated_at", "param": "updated_since"}


@pytest.fixture(autouse=True)
def no_sleeping() -> Iterator[None]:
    with stamina.set_testing(True, attempts=20, cap=True):
        yield


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as r:
        yield r


@pytest.fixture
async def client(router: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with upstream_client() as c:
        yield c


def at(minute: int) -> str:
    return f"2024-03-01T10:{minute:02d}:00Z"


class Upstream:
    """An inventory API: records in (updated_at, id) order, those changed at or after
    ``updated_since`` if asked, ``limit`` at a time by page number, offset, cursor (in the body)
    or Link header. It keeps the bytes it served for each URL, and the most requests it had in
    flight at once."""

    def __init__(self, records: list[dict[str, Any]], mode: str, *, size: int = 10) -> None:
        self.records, self.mode, self.size = records, mode, size
        self.served: dict[str, bytes] = {}
        self.asked: list[httpx.URL] = []
        self.fail: Callable[[httpx.Request, int], httpx.Response | None] = lambda request, start: None
        self.in_flight = self.in_flight_max = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url)
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            # A request takes a few turns of the loop, so the sync's others can be in flight.
            for _ in range(5):
                await asyncio.sleep(0)
            return self.answer(request)
        finally:
            self.in_flight -= 1

    def answer(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        listed = self.records
        if "updated_since" in params:
            listed = [r for r in listed if compare(r["updated_at"], params["updated_since"]) >= 0]
        size = int(params.get("limit", self.size))
        if self.mode == "page":
            start = (int(params["page"]) - 1) * size
        elif self.mode == "offset":
            start = int(params["offset"])
        else:
            start = int(params.get("cursor", "c0")[1:])
        failure = self.fail(request, start)
        if failure is not None:
            return failure
        end = start + size
        more = end < len(listed)
        content = body(listed[start:end], meta={"next_cursor": f"c{end}" if more else None})
        self.served[str(request.url)] = content
        headers = {"Link": f'<?limit={size}&cursor=c{end}>; rel="next"'} if more and self.mode == "link" else {}
        return httpx.Response(200, content=content, headers=headers)


PAGINATION = {
    "page": {"type": "page", "page_size_param": "limit", "page_size": 10},
    "offset": {"type": "offset", "page_size_param": "limit", "page_size": 10},
    "cursor": {"type": "cursor", "cursor_path": "meta.next_cursor", "page_size_param": "limit", "page_size": 10},
    "link": {"type": "link", "page_size_param": "limit", "page_size": 10},
}


def source(mode: str, **overrides: Any) -> SourceDefinition:
    pagination = {**PAGINATION[mode], **overrides.pop("pagination", {})}
    return definition(pagination, **overrides)


def records(n: int, first: int = 0) -> list[dict[str, Any]]:
    return [record(i, updated_at=at(i)) for i in range(first, first + n)]


def rows(result: SyncResult) -> list[dict[str, Any]]:
    assert result.manifest is not None
    data = result.manifest.read_bytes()
    assert result.manifest_sha256 == hashlib.sha256(data).hexdigest()
    assert result.manifest_bytes == len(data)
    return [json.loads(line) for line in data.splitlines()]


def tags(result: SyncResult) -> list[str]:
    return [row["asset_id"] for row in rows(result)]


async def sync(
    d: SourceDefinition, client: httpx.AsyncClient, tmp_path: Path, saved: CursorState | None = None
) -> SyncResult:
    return await run_sync(d, saved=saved, directory=tmp_path / "spool", client=client, env={}, clock=VirtualClock())


def assert_nothing_spooled(tmp_path: Path) -> None:
    assert list((tmp_path / "spool").iterdir()) == []


async def test_100_records_over_pages_of_10(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    upstream = Upstream(records(100), "page")
    router.get(URL).mock(side_effect=upstream)
    result = await sync(source("page", max_in_flight=4), client, tmp_path)

    assert result.status == "ok" and result.errors == [] and result.problems == []
    assert (result.records, result.fetched, result.skipped, result.superseded) == (100, 100, 0, 0)
    assert rows(result) == [{"asset_id": f"A-{n:05d}", "grant_code": f"NIH-R{n:04d}"} for n in range(100)]
    # Ten full pages, then the short (empty) page that says there is no more: each as served.
    assert [p.records for p in result.pages] == [10] * 10 + [0]
    assert [p.cursor for p in result.pages] == [str(n) for n in range(1, 12)]
    assert [p.next for p in result.pages] == [str(n) for n in range(2, 12)] + [None]
    for n, page in enumerate(result.pages, start=1):
        assert page.url == f"{URL}?limit=10&page={n}" and page.error is None
        assert page.sha256 == hashlib.sha256(upstream.served[page.url]).hexdigest()
    assert result.in_flight_max == upstream.in_flight_max == 4
    assert result.requests == len(upstream.asked) <= 11 + 4  # pages asked ahead of the end, at most
    assert result.cursor_from is None and result.cursor_to is None  # no incremental field
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [result.manifest.name]  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["offset", "cursor", "link"])
async def test_every_paginator_reads_every_record_once(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path, mode: str
) -> None:
    upstream = Upstream(records(25), mode)
    router.get(url__startswith=URL).mock(side_effect=upstream)
    result = await sync(source(mode), client, tmp_path)
    assert result.status == "ok"
    assert tags(result) == [f"A-{n:05d}" for n in range(25)]
    assert [p.records for p in result.pages] == [10, 10, 5]
    for page in result.pages:
        assert page.sha256 == hashlib.sha256(upstream.served[page.url]).hexdigest()
    if mode == "offset":
        assert [p.cursor for p in result.pages] == ["0", "10", "20"]
    if mode == "cursor":
        assert [p.cursor for p in result.pages] == [None, "c10", "c20"]
        assert [p.next for p in result.pages] == ["c10", "c20", None]
        assert [u.params.get("cursor") for u in upstream.asked] == [None, "c10", "c20"]
    if mode == "link":
        assert [p.url for p in result.pages] == [
            f"{URL}?limit=10",
            f"{URL}?limit=10&cursor=c10",
            f"{URL}?limit=10&cursor=c20",
        ]
        assert [p.next for p in result.pages] == [result.pages[1].url, result.pages[2].url, None]


@pytest.mark.parametrize("mode", ["page", "cursor"])
async def test_the_equal_timestamp_boundary_across_two_syncs(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path, mode: str
) -> None:
    # Three records share the last timestamp, across a page boundary (pages of 2).
    same = at(30)
    listed = [record(1, updated_at=at(10)), record(2, updated_at=at(20))]
    listed += [record(n, updated_at=same) for n in (3, 4, 5)]
    upstream = Upstream(listed, mode)
    router.get(url__startswith=URL).mock(side_effect=upstream)
    d = source(mode, incremental=INCREMENTAL, pagination={"page_size": 2})

    first = await sync(d, client, tmp_path)
    assert first.status == "ok" and first.cursor_from is None
    assert tags(first) == ["A-00001", "A-00002", "A-00003", "A-00004", "A-00005"]
    assert first.cursor_to == CursorState(same, ["3", "4", "5"])

    # After the first sync read them, one more record lands at the same instant, and one later.
    listed += [record(6, updated_at=same), record(7, updated_at=at(40))]
    upstream.asked.clear()
    second = await sync(d, client, tmp_path, saved=first.cursor_to)
    assert all(u.params["updated_since"] == same for u in upstream.asked)  # inclusive: asked again
    assert second.status == "ok" and second.cursor_from == same
    assert (second.fetched, second.skipped) == (5, 3)  # 3, 4 and 5 came back and were skipped
    assert tags(second) == ["A-00006", "A-00007"]
    assert second.cursor_to == CursorState(at(40), ["7"])

    # Together: every record once, none lost, none doubled.
    together = tags(first) + tags(second)
    assert sorted(together) == [f"A-{n:05d}" for n in range(1, 8)]

    # Nothing new: no manifest, and the cursor stays.
    third = await sync(d, client, tmp_path, saved=second.cursor_to)
    assert third.status == "ok" and (third.fetched, third.skipped, third.records) == (1, 1, 0)
    assert third.manifest is None and third.cursor_to == second.cursor_to


async def test_a_fractional_epoch_cursor(router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path) -> None:
    listed = [record(n, updated_at=1700000000.5 + n) for n in range(3)]
    router.get(url__startswith=URL).mock(return_value=httpx.Response(200, content=body(listed)))
    result = await sync(source("cursor", incremental=INCREMENTAL), client, tmp_path)
    assert result.status == "ok" and result.records == 3
    assert result.cursor_to == CursorState("1700000002.5", ["2"])


async def test_a_record_listed_twice_is_one_row_the_later(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Record 2 changed while the sync paged through: it moved to the end of the listing.
    changed = record(2, updated_at=at(50), grant={"code": "NSF-CHANGED"})
    page_one = body([record(1, updated_at=at(1)), record(2, updated_at=at(2))], meta={"next_cursor": "b"})
    page_two = body([record(3, updated_at=at(3)), changed], meta={})
    router.get(URL, params={"cursor": "b"}).mock(return_value=httpx.Response(200, content=page_two))
    router.get(URL).mock(return_value=httpx.Response(200, content=page_one))
    result = await sync(source("cursor", incremental=INCREMENTAL), client, tmp_path)
    assert result.status == "ok"
    assert (result.fetched, result.superseded, result.records) == (4, 1, 3)
    assert rows(result) == [
        {"asset_id": "A-00001", "grant_code": "NIH-R0001"},
        {"asset_id": "A-00003", "grant_code": "NIH-R0003"},
        {"asset_id": "A-00002", "grant_code": "NSF-CHANGED"},
    ]
    assert result.cursor_to == CursorState(at(50), ["2"])


async def test_records_that_cannot_be_mapped_are_rows_with_their_problem(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    listed: list[Any] = [
        record(1),
        record(2, grant={"code": {"agency": "NIH", "number": "R01"}}),  # an object where a value goes
        {"tag": "A-00003", "grant": {"code": "NIH-R0003"}},  # no upstream key
        "A-00004",  # not an object at all
        record(5, grant={"code": ["NIH-1", "NIH-2"]}),
        record(6, grant={"code": "COST"}, tag=None),  # a number keeps its digits; null is empty
    ]
    served = body(listed).replace(b'"COST"', b"12.50")
    router.get(url__startswith=URL).mock(return_value=httpx.Response(200, content=served))
    result = await sync(source("page"), client, tmp_path)
    assert result.status == "ok" and result.records == 6
    written = rows(result)
    assert written[1] == {"asset_id": "A-00002", "grant_code": {"agency": "NIH", "number": "R01"}}
    assert written[3] == {"asset_id": "", "grant_code": ""}
    assert written[5] == {"asset_id": "", "grant_code": "12.50"}
    assert result.problems == [
        RecordProblem(
            row=2,
            upstream_id="2",
            field="grant_code",
            rule="not_a_value",
            message="grant.code holds a JSON dict, not a single value",
        ),
        RecordProblem(
            row=3,
            upstream_id=None,
            field="id",
            rule="key_missing",
            message="the record has no upstream key at 'id'",
        ),
        RecordProblem(
            row=4,
            upstream_id=None,
            field="record",
            rule="not_an_object",
            message="the record is a JSON str, not an object",
        ),
        RecordProblem(
            row=4, upstream_id=None, field="id", rule="key_missing", message="the record has no upstream key at 'id'"
        ),
        RecordProblem(
            row=5,
            upstream_id="5",
            field="grant_code",
            rule="not_a_value",
            message="grant.code holds a JSON list, not a single value",
        ),
    ]
    assert result.problems_total == 5


@pytest.mark.parametrize("mode", ["page", "cursor"])
async def test_a_page_failing_after_its_retries_ends_partial(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path, mode: str
) -> None:
    upstream = Upstream(records(50), mode)
    upstream.fail = lambda request, start: httpx.Response(503) if start == 20 else None
    router.get(url__startswith=URL).mock(side_effect=upstream)
    result = await sync(source(mode, incremental=INCREMENTAL, attempts=3), client, tmp_path)

    assert result.status == "partial"
    assert tags(result) == [f"A-{n:05d}" for n in range(20)]  # the pages before the failed one
    [error] = result.errors
    assert (error.code, error.page) == ("retries_exhausted", 3) and "503" in error.message
    assert [(p.records, p.error) for p in result.pages] == [(10, None), (10, None), (0, "retries_exhausted")]
    assert result.pages[2].sha256 is None
    # The cursor ends where the data is complete: the last record of page 2.
    assert result.cursor_to == CursorState(at(19), ["19"])


async def test_a_partial_sync_out_of_order_keeps_the_saved_cursor(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    # An upstream that does not list in the order of the field: a record on the page never read
    # may be older than the newest one read, so the cursor cannot move past it.
    listed = records(30)
    listed[3], listed[12] = listed[12], listed[3]
    upstream = Upstream(listed, "cursor")
    upstream.fail = lambda request, start: httpx.Response(503) if start == 20 else None
    router.get(url__startswith=URL).mock(side_effect=upstream)
    saved = CursorState(at(0), ["0"])
    result = await sync(source("cursor", incremental=INCREMENTAL, attempts=2), client, tmp_path, saved=saved)
    assert result.status == "partial" and result.records == 19  # record 0 was committed before
    assert result.cursor_to is None  # the saved cursor stays

    upstream.fail = lambda request, start: None
    whole = await sync(source("cursor", incremental=INCREMENTAL), client, tmp_path, saved=saved)
    assert whole.status == "ok" and whole.cursor_to == CursorState(at(29), ["29"])  # all read: it moves


async def test_a_partial_sync_resumes_where_its_data_ended(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    upstream = Upstream(records(30), "cursor")
    upstream.fail = lambda request, start: httpx.Response(503) if start == 10 else None
    router.get(url__startswith=URL).mock(side_effect=upstream)
    d = source("cursor", incremental=INCREMENTAL, attempts=2)
    first = await sync(d, client, tmp_path)
    assert first.status == "partial" and first.records == 10

    upstream.fail = lambda request, start: None
    second = await sync(d, client, tmp_path, saved=first.cursor_to)
    assert second.status == "ok" and second.skipped == 1  # record 9, at the saved value
    assert second.manifest != first.manifest  # the first's manifest, not yet imported, is kept
    assert sorted(tags(first) + tags(second)) == [f"A-{n:05d}" for n in range(30)]


@pytest.mark.parametrize("mode", ["page", "cursor"])
async def test_the_first_page_failing_ends_failed_with_no_manifest(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path, mode: str
) -> None:
    route = router.get(url__startswith=URL).mock(side_effect=httpx.ConnectError("connection refused"))
    result = await sync(source(mode, incremental=INCREMENTAL, attempts=4), client, tmp_path)
    assert result.status == "failed" and result.manifest is None and result.records == 0
    assert result.errors == [SyncError(code="retries_exhausted", message=result.errors[0].message, page=1)]
    assert "ConnectError: connection refused" in result.errors[0].message
    assert result.cursor_to is None
    assert route.call_count >= 4
    assert_nothing_spooled(tmp_path)


def html() -> httpx.Response:
    return httpx.Response(200, html="<!doctype html><html><body>Sign in</body></html>")


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (html, "not_json"),
        (lambda: httpx.Response(200, json={"data": {"rows": []}}), "records_missing"),
        (lambda: httpx.Response(200, json={"data": {"items": {"1": {"id": 1}}}}), "records_not_list"),
        (lambda: httpx.Response(404, json={"detail": "not found"}), "http_error"),
        (lambda: httpx.Response(200, content=b"x" * 4096), "response_too_large"),
    ],
    ids=["html", "records-missing", "records-not-list", "404", "too-large"],
)
@pytest.mark.parametrize("mode", ["page", "cursor"])
async def test_an_answer_that_cannot_be_trusted_fails_the_sync_without_a_manifest(
    router: respx.MockRouter,
    client: httpx.AsyncClient,
    tmp_path: Path,
    mode: str,
    answer: Callable[[], httpx.Response],
    code: str,
) -> None:
    # The bad answer comes on the third page, after two good ones: still nothing is committed.
    upstream = Upstream(records(50), mode)
    upstream.fail = lambda request, start: answer() if start == 20 else None
    router.get(url__startswith=URL).mock(side_effect=upstream)
    result = await sync(source(mode, incremental=INCREMENTAL, response_bytes_max=2048), client, tmp_path)
    assert result.status == "failed" and result.manifest is None and result.cursor_to is None
    [error] = result.errors
    assert (error.code, error.page) == (code, 3)
    assert [p.error for p in result.pages] == [None, None, code]
    assert_nothing_spooled(tmp_path)


async def test_html_on_the_first_page(router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path) -> None:
    router.get(url__startswith=URL).mock(side_effect=lambda request: html())
    result = await sync(source("page"), client, tmp_path)
    assert result.status == "failed"
    assert [(e.code, e.message) for e in result.errors] == [
        ("not_json", "the response is not JSON (text/html, 48 bytes)")
    ]


async def test_a_body_that_does_not_decode_fails_the_sync(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    router.get(url__startswith=URL).mock(
        return_value=httpx.Response(200, stream=Streamed(b"not gzip"), headers={"Content-Encoding": "gzip"})
    )
    result = await sync(source("cursor"), client, tmp_path)
    assert result.status == "failed" and [e.code for e in result.errors] == ["bad_encoding"]
    assert_nothing_spooled(tmp_path)


async def test_a_repeated_cursor_fails_the_sync(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    cursors = {None: "a", "a": "b", "b": "a"}
    route = router.get(url__startswith=URL).mock(
        side_effect=lambda request: httpx.Response(
            200, content=body([record(len(cursors))], meta={"next_cursor": cursors[request.url.params.get("cursor")]})
        )
    )
    # pages_max: were the loop missed, the test would end with too_many_pages, not hang.
    result = await sync(source("cursor", pages_max=50), client, tmp_path)
    assert result.status == "failed" and result.manifest is None
    [error] = result.errors
    assert (error.code, error.page) == ("pagination_loop", 3) and "'a'" in error.message
    assert route.call_count == 3
    assert_nothing_spooled(tmp_path)


async def test_a_cursor_that_never_ends_stops_at_pages_max(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    served = 0

    def forever(request: httpx.Request) -> httpx.Response:
        nonlocal served
        served += 1
        return httpx.Response(200, content=body([record(served)], meta={"next_cursor": f"c{served}"}))

    router.get(url__startswith=URL).mock(side_effect=forever)
    result = await sync(source("cursor", pages_max=5), client, tmp_path)
    assert result.status == "failed" and result.manifest is None
    assert [(e.code, e.message) for e in result.errors] == [("too_many_pages", "more than 5 pages (pages_max)")]
    assert served == 5 and result.requests == 5
    assert_nothing_spooled(tmp_path)


async def test_pages_that_never_end_short_stop_at_pages_max(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    route = router.get(url__startswith=URL).mock(
        side_effect=lambda request: httpx.Response(200, content=body(records(10)))
    )
    result = await sync(source("page", pages_max=3), client, tmp_path)
    assert result.status == "failed" and [e.code for e in result.errors] == ["too_many_pages"]
    assert route.call_count == 3


async def test_a_missing_auth_variable_fails_before_any_request(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    route = router.get(url__startswith=URL).mock(return_value=httpx.Response(200, content=body([])))
    d = source("page", auth_header="Authorization", auth_env="CHEM_WMS_TOKEN")
    result = await run_sync(d, saved=None, directory=tmp_path / "spool", client=client, env={})
    assert result.status == "failed" and [e.code for e in result.errors] == ["auth_env_missing"]
    assert route.call_count == 0

    ok = await run_sync(
        d, saved=None, directory=tmp_path / "spool", client=client, env={"CHEM_WMS_TOKEN": "Bearer t0k"}
    )
    assert ok.status == "ok" and ok.manifest is None  # an empty upstream: nothing to import
    assert route.calls.last.request.headers["authorization"] == "Bearer t0k"


async def test_a_10_mb_record_is_one_row_with_its_head(
    router: respx.MockRouter, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    big = "x" * (10 * 1024 * 1024)
    listed = [record(1, description=big), record(2, description="y" * VALUE_CHARS_MAX)]
    router.get(url__startswith=URL).mock(return_value=httpx.Response(200, content=body(listed)))
    d = source("page", map={"asset_id": "tag", "grant_code": "grant.code", "description": "description"})
    result = await sync(d, client, tmp_path)
    assert result.status == "ok" and result.records == 2
    # The record is a row the import will quarantine: its value's head, never a cut value as
    # though it were whole, and never a line the manifest's reader would refuse.
    first, second = rows(result)
    assert first == {"asset_id": "A-00001", "grant_code": "NIH-R0001", "description": {"value_too_long": "x" * 4096}}
    assert second["description"] == "y" * VALUE_CHARS_MAX  # at the limit: whole
    assert result.problems == [
        RecordProblem(
            row=1,
            upstream_id="1",
            field="description",
            rule="value_too_long",
            message=f"description is {len(big)} characters (at most {VALUE_CHARS_MAX})",
        )
    ]
    assert result.manifest_bytes < 2 * VALUE_CHARS_MAX
