"""The four paginators as pure state machines: which request comes next, from what the last
response said. No I/O here, so each is tested on its own.

- ``page`` and ``offset`` know every page's request in advance: the fetcher asks for several at
  once (up to max_in_flight); the first page shorter than page_size is the last.
- ``cursor`` and ``link`` learn the next request from the response (a cursor in the body or a
  header; a URL in the body or the Link header), so their pages come one after the other. A
  cursor or URL seen before is a loop: the sync ends with ``pagination_loop`` rather than
  fetching forever.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import msgspec

from ledger.connectors.definition import Pagination, SourceDefinition
from ledger.connectors.paths import MISSING, get_path, parse_path

__all__ = ["PageRequest", "Paginator", "PagingError", "paginator_for"]


class PagingError(Exception):
    """The upstream's pagination cannot be followed (``code``: pagination_loop, link_off_origin,
    bad_cursor)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class PageRequest(msgspec.Struct, frozen=True):
    index: int  # the page's place in the sync, from 0
    url: str  # with its query string: what was asked for, as recorded in the provenance
    cursor: str | None  # what positions the page: its number, offset or cursor (None: the first)


class Paginator:
    """Requests for one sync. ``parallel`` paginators answer ``nth``; the others ``after``."""

    parallel = False

    def __init__(self, definition: SourceDefinition, since: str | None) -> None:
        self.p: Pagination = definition.pagination
        self.base = definition.url
        params: list[tuple[str, str]] = list(parse_qsl(urlsplit(self.base).query))
        if definition.incremental is not None and since is not None:
            params.append((definition.incremental.param, since))
        if self.p.page_size_param is not None:
            params.append((self.p.page_size_param, str(self.p.page_size)))
        self.params = params

    def first(self) -> PageRequest:
        return PageRequest(0, _with_query(self.base, self.params), None)

    def nth(self, index: int) -> PageRequest:
        raise NotImplementedError

    def is_last(self, records: int) -> bool:
        """A parallel paginator's end: a page with fewer records than asked for."""
        return records < self.p.page_size

    def after(self, request: PageRequest, body: Any, headers: Mapping[str, str]) -> PageRequest | None:
        raise NotImplementedError


class _Numbered(Paginator):
    parallel = True

    def _position(self, index: int) -> tuple[str, int]:
        if self.p.type == "page":
            return self.p.page_param, self.p.first_page + index
        return self.p.offset_param, index * self.p.page_size

    def first(self) -> PageRequest:
        return self.nth(0)

    def nth(self, index: int) -> PageRequest:
        name, value = self._position(index)
        return PageRequest(index, _with_query(self.base, [*self.params, (name, str(value))]), str(value))


class _Cursor(Paginator):
    def __init__(self, definition: SourceDefinition, since: str | None) -> None:
        super().__init__(definition, since)
        self.path = parse_path(self.p.cursor_path) if self.p.cursor_path is not None else None
        self.seen: set[str] = set()

    def after(self, request: PageRequest, body: Any, headers: Mapping[str, str]) -> PageRequest | None:
        if self.path is not None:
            found = get_path(body, self.path)
            raw = None if found is MISSING else found
        else:
            raw = _header(headers, self.p.cursor_header or "")
        if raw is None or raw == "":
            return None
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise PagingError("bad_cursor", f"the next cursor is not a string or a number: {type(raw).__name__}")
        cursor = str(raw)
        if cursor in self.seen or cursor == request.cursor:
            raise PagingError(
                "pagination_loop", f"the upstream gave the cursor {cursor[:80]!r} again (page {request.index + 1})"
            )
        self.seen.add(cursor)
        url = _with_query(self.base, [*self.params, (self.p.cursor_param, cursor)])
        return PageRequest(request.index + 1, url, cursor)


class _Link(Paginator):
    def __init__(self, definition: SourceDefinition, since: str | None) -> None:
        super().__init__(definition, since)
        self.path = parse_path(self.p.link_path) if self.p.link_path is not None else None
        self.seen: set[str] = set()
        self.origin = _origin(self.base)

    def first(self) -> PageRequest:
        first = super().first()
        self.seen.add(first.url)
        return first

    def after(self, request: PageRequest, body: Any, headers: Mapping[str, str]) -> PageRequest | None:
        if self.path is not None:
            found = get_path(body, self.path)
            raw = None if found is MISSING else found
        else:
            raw = next_link(_header(headers, "link") or "")
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise PagingError("bad_cursor", f"the next link is not a string: {type(raw).__name__}")
        url = urljoin(request.url, raw)
        if _origin(url) != self.origin:
            # The source's auth header goes with every request: never to another host.
            raise PagingError("link_off_origin", f"the next link leaves {self.origin}: {url[:200]}")
        if url in self.seen:
            raise PagingError("pagination_loop", f"the upstream linked to {url[:200]} again (page {request.index + 1})")
        self.seen.add(url)
        return PageRequest(request.index + 1, url, None)


def paginator_for(definition: SourceDefinition, since: str | None) -> Paginator:
    kind = definition.pagination.type
    if kind in ("page", "offset"):
        return _Numbered(definition, since)
    if kind == "cursor":
        return _Cursor(definition, since)
    return _Link(definition, since)


_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")


def next_link(header: str) -> str | None:
    """The rel="next" target of a Link header (RFC 8288), or None."""
    for target, params in _LINK.findall(header):
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').lower().split():
                return str(target)
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _with_query(url: str, params: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port
