"""The incremental cursor: how values compare, which records at the saved value are skipped
(those the last sync committed) and which are kept (new ones at the same instant), and the
state the next sync starts from."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.connectors.window import CursorState, Window, as_value, compare


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # Instants, whatever the offset they are written in.
        ("2024-01-01T01:00:00+01:00", "2024-01-01T00:00:00Z", 0),
        ("2024-01-01T00:00:00z", "2024-01-01T00:00:00+00:00", 0),
        ("2024-01-01T00:59:59+01:00", "2024-01-01T00:00:00Z", -1),
        ("2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00Z", 1),
        ("2023-12-31T23:00:00-02:00", "2024-01-01T00:30:00Z", 1),  # later, though its text sorts first
        # Numbers, not their text.
        ("9", "10", -1),
        ("10", "9", 1),
        ("1e1", "10", 0),
        ("1700000000.5", "1700000000", 1),
        ("-2", "-10", 1),
        # Text otherwise: a time without an offset is not an instant.
        ("2024-01-01T00:00:00", "2024-01-01 00:00:00", 1),
        ("abc", "abd", -1),
        ("v2", "v2", 0),
        ("10", "abc", -1),
    ],
)
def test_compare(a: str, b: str, expected: int) -> None:
    assert compare(a, b) == expected
    assert compare(b, a) == -expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        (17, "17"),
        (Decimal("1700000000.25"), "1700000000.25"),  # how the fetcher decodes a JSON fraction
        (True, None),
        (None, None),
        ({"at": 1}, None),
        ([1], None),
    ],
)
def test_as_value(raw: object, expected: str | None) -> None:
    assert as_value(raw) == expected


T1, T2, T3 = "2024-03-01T10:00:00Z", "2024-03-01T11:00:00Z", "2024-03-01T12:00:00Z"


def test_the_first_sync_starts_at_start_and_skips_nothing() -> None:
    w = Window(None, T1)
    assert w.since == T1
    assert not w.already_committed("1", T1)
    assert w.end() == CursorState(T1, [])  # nothing read: the next sync starts there again
    w.observe("1", T1)
    assert w.end() == CursorState(T1, ["1"])


def test_without_start_or_state_everything_is_asked_for() -> None:
    w = Window(None, None)
    assert w.since is None and w.end() is None
    w.observe("a", None)  # a record without the field moves nothing
    assert w.end() is None


def test_committed_records_at_the_saved_value_are_skipped_new_ones_kept() -> None:
    w = Window(CursorState(T2, ["2", "3"]), "2020-01-01T00:00:00Z")
    assert w.since == T2  # the saved value wins over start
    assert w.already_committed("2", T2)
    assert w.already_committed("3", "2024-03-01T12:00:00+01:00")  # the same instant, another offset
    assert not w.already_committed("4", T2)  # reached the upstream after the last sync read it
    assert not w.already_committed("2", T3)  # changed since: its new state is wanted
    assert not w.already_committed("2", None)


def test_end_is_the_highest_value_with_every_key_at_it() -> None:
    w = Window(CursorState(T2, ["2", "3"]), None)
    w.observe("4", T2)
    assert w.end() == CursorState(T2, ["2", "3", "4"])  # the boundary grows, the earlier keys stay
    w.observe("5", T3)
    w.observe("6", T1)  # an older value changes nothing
    w.observe("7", "2024-03-01T13:00:00+01:00")  # T3 again
    assert w.end() == CursorState(T3, ["5", "7"])


def test_an_empty_saved_state_is_no_state() -> None:
    w = Window(CursorState(None, []), T1)
    assert w.since == T1 and w.saved is None


def test_numeric_values() -> None:
    w = Window(CursorState("1700000000.5", ["9"]), None)
    assert w.already_committed("9", "1700000000.50")
    w.observe("10", "1700000001")
    w.observe("11", "999")  # fewer digits, but earlier
    assert w.end() == CursorState("1700000001", ["10"])


def test_a_sync_that_did_not_read_every_page_moves_the_cursor_only_if_in_order() -> None:
    w = Window(CursorState(T1, ["1"]), None)
    for key, value in (("2", T1), ("3", T2), ("4", T2), ("5", T3)):
        w.observe(key, value)
    assert w.end(complete=False) == w.end() == CursorState(T3, ["5"])

    w = Window(CursorState(T1, ["1"]), None)
    for key, value in (("2", T3), ("3", T2)):  # an older record after a newer one
        w.observe(key, value)
    assert w.end(complete=False) is None  # a record not read may sort before T3
    assert w.end() == CursorState(T3, ["2"])  # every page read: nothing can be missing
