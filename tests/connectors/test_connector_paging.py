"""The four paginators, fed bodies and headers by hand (they do no I/O): which request comes
next, the incremental value and the page size on every request, the end of the pages, a
repeated cursor or link as a loop, a link that leaves the upstream's origin, and the Link
header's rel="next"."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ledger.connectors.paging import PageRequest, Paginator, PagingError, next_link, paginator_for
from tests.connectors.helpers import URL, definition

SINCE = "2024-05-01T00:00:00Z"
INCREMENTAL = {"field": "updated_at", "param": "updated_since", "start": "2024-01-01T00:00:00Z"}


def query(request: PageRequest) -> dict[str, list[str]]:
    assert request.url.startswith(URL + "?")
    return parse_qs(urlsplit(request.url).query)


def make(pagination: dict[str, Any], since: str | None = SINCE, **overrides: Any) -> Paginator:
    return paginator_for(definition(pagination, incremental=INCREMENTAL, **overrides), since)


def test_page_numbers_from_first_page_with_since_and_size_on_every_request() -> None:
    p = make({"type": "page", "page_param": "p", "first_page": 0, "page_size_param": "per_page", "page_size": 25})
    assert p.parallel
    requests = [p.first(), *(p.nth(i) for i in range(1, 4))]
    assert [r.index for r in requests] == [0, 1, 2, 3]
    assert [r.cursor for r in requests] == ["0", "1", "2", "3"]
    for number, request in enumerate(requests):
        assert query(request) == {"updated_since": [SINCE], "per_page": ["25"], "p": [str(number)]}


def test_page_numbers_start_at_one_by_default() -> None:
    p = make({"type": "page", "page_size_param": "limit", "page_size": 10})
    assert query(p.first())["page"] == ["1"]
    assert query(p.nth(9))["page"] == ["10"]


def test_offsets_step_by_the_page_size() -> None:
    p = make({"type": "offset", "offset_param": "skip", "page_size_param": "take", "page_size": 50})
    assert p.parallel
    assert [query(p.nth(i))["skip"] for i in range(3)] == [["0"], ["50"], ["100"]]
    assert all(query(p.nth(i))["take"] == ["50"] and query(p.nth(i))["updated_since"] == [SINCE] for i in range(3))


def test_a_short_page_is_the_last() -> None:
    p = make({"type": "offset", "page_size_param": "limit", "page_size": 50})
    assert not p.is_last(50)
    assert p.is_last(49) and p.is_last(0)


def test_no_since_param_when_there_is_no_value_yet() -> None:
    p = make({"type": "page", "page_size_param": "limit", "page_size": 10}, since=None)
    assert "updated_since" not in query(p.first())
    no_incremental = paginator_for(definition({"type": "page", "page_size_param": "limit", "page_size": 10}), SINCE)
    assert "updated_since" not in query(no_incremental.first())


def test_a_query_in_the_resource_is_kept_on_every_request() -> None:
    p = make({"type": "page", "page_size_param": "limit", "page_size": 10}, resource="/inventory?site=north")
    assert parse_qs(urlsplit(p.nth(2).url).query) == {
        "site": ["north"],
        "updated_since": [SINCE],
        "limit": ["10"],
        "page": ["3"],
    }


def test_cursor_from_the_body_until_it_is_absent_null_or_empty() -> None:
    p = make({"type": "cursor", "cursor_path": "meta.next_cursor", "cursor_param": "after", "page_size_param": "n"})
    assert not p.parallel
    first = p.first()
    assert first.cursor is None and query(first) == {"updated_since": [SINCE], "n": ["100"]}
    second = p.after(first, {"meta": {"next_cursor": "c2"}}, {})
    assert second is not None and (second.index, second.cursor) == (1, "c2")
    assert query(second) == {"updated_since": [SINCE], "n": ["100"], "after": ["c2"]}
    third = p.after(second, {"meta": {"next_cursor": 3}}, {})  # a number is a cursor too
    assert third is not None and (third.index, third.cursor) == (2, "3")
    ends: list[dict[str, Any]] = [{"meta": {}}, {"meta": {"next_cursor": None}}, {"meta": {"next_cursor": ""}}, {}]
    for end in ends:
        assert p.after(third, end, {}) is None


def test_cursor_from_a_header_whatever_its_case() -> None:
    p = make({"type": "cursor", "cursor_header": "X-Next-Cursor"})
    second = p.after(p.first(), {"data": {"items": []}}, {"x-next-cursor": "abc=="})
    assert second is not None and query(second)["cursor"] == ["abc=="]
    assert p.after(second, {}, {"content-type": "application/json"}) is None


@pytest.mark.parametrize("bad", [True, {"id": 1}, [1], 1.5])
def test_a_cursor_that_is_not_a_string_or_number_is_refused(bad: Any) -> None:
    p = make({"type": "cursor", "cursor_path": "next"})
    with pytest.raises(PagingError) as caught:
        p.after(p.first(), {"next": bad}, {})
    assert caught.value.code == "bad_cursor"


def test_a_repeated_cursor_is_a_loop() -> None:
    p = make({"type": "cursor", "cursor_path": "next"})
    a = p.after(p.first(), {"next": "a"}, {})
    assert a is not None
    with pytest.raises(PagingError) as caught:
        p.after(a, {"next": "a"}, {})  # the same cursor straight back
    assert caught.value.code == "pagination_loop"
    assert "'a'" in str(caught.value)

    p = make({"type": "cursor", "cursor_path": "next"})
    request: PageRequest | None = p.first()
    for cursor in ("a", "b", "c"):
        assert request is not None
        request = p.after(request, {"next": cursor}, {})
    assert request is not None
    with pytest.raises(PagingError) as caught:
        p.after(request, {"next": "b"}, {})  # back to one seen two pages ago
    assert caught.value.code == "pagination_loop"
    assert "page 4" in str(caught.value)


def test_link_header_with_relative_and_absolute_urls() -> None:
    p = make({"type": "link"}, since=None)
    first = p.first()
    assert first.url == URL
    second = p.after(first, [], {"Link": '<?page=2&limit=10>; rel="next", </api/v2/inventory?page=9>; rel="last"'})
    assert second is not None and second.url == URL + "?page=2&limit=10" and second.index == 1
    assert second.cursor is None
    third = p.after(second, [], {"link": "<page3>; rel=next"})
    assert third is not None and third.url == "http://127.0.0.1:8999/api/v2/page3"
    fourth = p.after(third, [], {"link": '<http://127.0.0.1:8999/other/p4>; rel="next"'})
    assert fourth is not None and fourth.url == "http://127.0.0.1:8999/other/p4"
    assert p.after(fourth, [], {"link": '<http://127.0.0.1:8999/x>; rel="prev"'}) is None
    assert p.after(fourth, [], {}) is None


def test_link_from_the_body() -> None:
    p = make({"type": "link", "link_path": "links.next"}, since=None)
    second = p.after(p.first(), {"links": {"next": "/api/v2/inventory?after=k9"}}, {"link": '<elsewhere>; rel="next"'})
    assert second is not None and second.url == URL + "?after=k9"  # the body wins over the header
    assert p.after(second, {"links": {"next": None}}, {}) is None
    with pytest.raises(PagingError) as caught:
        p.after(second, {"links": {"next": 7}}, {})
    assert caught.value.code == "bad_cursor"


@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.1:8999/api/v2/inventory?page=2",  # another scheme
        "http://127.0.0.1:9000/api/v2/inventory?page=2",  # another port
        "http://wms.example.edu/api/v2/inventory?page=2",  # another host
        "//evil.example/steal",  # scheme-relative
    ],
)
def test_a_link_off_the_origin_is_refused(target: str) -> None:
    p = make({"type": "link", "link_path": "next"})
    with pytest.raises(PagingError) as caught:
        p.after(p.first(), {"next": target}, {})
    assert caught.value.code == "link_off_origin"


def test_the_default_port_is_the_same_origin() -> None:
    p = paginator_for(definition({"type": "link", "link_path": "next"}, base_url="https://wms.example.edu/api"), None)
    following = p.after(p.first(), {"next": "https://WMS.example.edu:443/api/inventory?page=2"}, {})
    assert following is not None


def test_a_link_back_to_a_page_already_read_is_a_loop() -> None:
    p = make({"type": "link", "link_path": "next"}, since=None)
    first = p.first()
    second = p.after(first, {"next": "?page=2"}, {})
    assert second is not None
    with pytest.raises(PagingError) as caught:
        p.after(second, {"next": URL}, {})  # back to the first page
    assert caught.value.code == "pagination_loop"
    with pytest.raises(PagingError) as caught:
        p.after(second, {"next": "?page=2"}, {})  # itself
    assert caught.value.code == "pagination_loop"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('<https://a.test/p2>; rel="next"', "https://a.test/p2"),
        ("<https://a.test/p2>; rel=next", "https://a.test/p2"),
        ('<https://a.test/p1>; rel="prev", <https://a.test/p3>; rel="next"', "https://a.test/p3"),
        ('<https://a.test/p3>; rel="next last"', "https://a.test/p3"),
        ('<https://a.test/p3>; title="a page"; REL="Next"', "https://a.test/p3"),
        ('<https://a.test/p1?x=1,2>; rel="first",<https://a.test/p2>;rel="next"', "https://a.test/p2"),
        ('<https://a.test/p1>; rel="prev"', None),
        ('<https://a.test/p1>; rel="nextpage"', None),
        ("", None),
        ("not a link header", None),
    ],
)
def test_next_link(header: str, expected: str | None) -> None:
    assert next_link(header) == expected
