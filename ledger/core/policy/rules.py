"""Compiling field specifications into per-column checkers, and validating rows with them.

A checker takes a trimmed, non-empty cell and returns (normalised value, None) or
(None, [(rule, message), ...]) with every rule the value breaks. Regexes are compiled once;
the happy path allocates nothing but the result.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from decimal import Decimal

import msgspec

from ledger.core.policy.checkdigits import CHECK_DIGITS
from ledger.core.policy.descriptor import FieldSpec
from ledger.core.policy.fastpath import FastPath, compile_fast_path

__all__ = ["Binding", "Checker", "RowResult", "Violation", "compile_field", "echo"]

Value = str | int
Problems = list[tuple[str, str]]
Checker = Callable[[str], tuple[Value | None, Problems | None]]

_INTEGER = re.compile(r"-?[0-9]{1,18}")
_NUMBER = re.compile(r"-?([0-9]{1,15})(?:\.([0-9]{1,30}))?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ECHO_MAX = 60


class Violation(msgspec.Struct, frozen=True):
    field: str
    rule: str
    message: str


class RowResult(msgspec.Struct, frozen=True):
    data: dict[str, Value] | None
    errors: list[Violation]
    key: tuple[str, ...] | None


def _echo(value: str) -> str:
    return repr(value if len(value) <= _ECHO_MAX else value[:_ECHO_MAX] + "…")


echo = _echo  # for the other layers' messages: input quoted back the same bounded way


def compile_field(spec: FieldSpec) -> Checker:
    name = spec.name
    if spec.type == "integer":
        return _integer_checker(spec)
    if spec.type == "number":
        return _number_checker(spec)
    if spec.type == "date":
        return _date_checker(name)
    return _string_checker(spec)


def _string_checker(spec: FieldSpec) -> Checker:
    name = spec.name
    transform: Callable[[str], str] | None = {"upper": str.upper, "lower": str.lower}.get(spec.normalize)
    pattern = re.compile(spec.pattern) if spec.pattern else None
    enum = frozenset(spec.enum) if spec.enum else None
    enum_text = ", ".join(spec.enum) if spec.enum else ""
    prefixes = tuple(p.upper() for p in spec.prefixes) if spec.prefixes else None
    max_length = spec.max_length
    check_digit = CHECK_DIGITS[spec.check_digit] if spec.check_digit else None

    def check(value: str) -> tuple[Value | None, Problems | None]:
        if max_length is not None and len(value) > max_length:
            return None, [("max_length", f"{name} is {len(value)} characters long, more than {max_length}")]
        normal = transform(value) if transform is not None else value
        problems: Problems | None = None
        if prefixes is not None and not normal.upper().startswith(prefixes):
            problems = [("prefix", f"{name} {_echo(value)} does not start with one of {', '.join(prefixes)}")]
        if pattern is not None and pattern.fullmatch(normal) is None:
            (problems := problems or []).append(
                ("pattern", f"{name} {_echo(value)} does not match the pattern {pattern.pattern}")
            )
        elif check_digit is not None and not check_digit(normal):
            (problems := problems or []).append(("check_digit", f"{name} {_echo(value)} has a wrong check digit"))
        if enum is not None and normal not in enum:
            (problems := problems or []).append(("enum", f"{name} {_echo(value)} is not one of {enum_text}"))
        return (None, problems) if problems else (normal, None)

    return check


def _integer_checker(spec: FieldSpec) -> Checker:
    name = spec.name
    minimum = spec.minimum

    def check(value: str) -> tuple[Value | None, Problems | None]:
        if _INTEGER.fullmatch(value) is None:
            return None, [("integer", f"{name} {_echo(value)} is not a whole number written in digits")]
        number = int(value)
        if minimum is not None and number < minimum:
            return None, [("minimum", f"{name} {_echo(value)} is below the minimum {minimum}")]
        return number, None

    return check


def _number_checker(spec: FieldSpec) -> Checker:
    name = spec.name
    minimum = None if spec.minimum is None else Decimal(str(spec.minimum))
    places = spec.decimal_places or 0

    def check(value: str) -> tuple[Value | None, Problems | None]:
        match = _NUMBER.fullmatch(value)
        if match is None:
            return None, [("number", f"{name} {_echo(value)} is not a decimal number")]
        fraction = match.group(2) or ""
        problems: Problems | None = None
        if len(fraction) > places:
            problems = [("decimal_places", f"{name} {_echo(value)} has more than {places} decimal places")]
        if minimum is not None and Decimal(value) < minimum:
            (problems := problems or []).append(("minimum", f"{name} {_echo(value)} is below the minimum {minimum}"))
        if problems:
            return None, problems
        whole = str(int(match.group(1)))
        # Fixed-point text: "12.5" and "12.50" are the same amount and must hash the same.
        return (whole + "." + fraction.ljust(places, "0")) if places else whole, None

    return check


def _date_checker(name: str) -> Checker:
    def check(value: str) -> tuple[Value | None, Problems | None]:
        if _DATE.fullmatch(value) is not None:
            try:
                return dt.date.fromisoformat(value).isoformat(), None
            except ValueError:
                pass
        return None, [("date", f"{name} {_echo(value)} is not a real calendar date YYYY-MM-DD")]

    return check


class Binding:
    """A policy bound to one manifest's header: validates that manifest's rows."""

    __slots__ = ("_checkers", "_conditions", "_key_positions", "_names", "_order", "_required", "columns", "fast")

    def __init__(self, columns: Sequence[str], specs: dict[str, FieldSpec], key_fields: Sequence[str]) -> None:
        """``specs`` in policy order; ``columns`` the field of each header position."""
        self.columns = tuple(columns)
        self._names = self.columns
        self._checkers = tuple(compile_field(specs[c]) for c in self.columns)
        self._required = tuple(specs[c].required for c in self.columns)
        position = {c: i for i, c in enumerate(self.columns)}
        # Conditional requirements hold whether or not the dependent column is in the header:
        # an absent column is an empty one.
        self._conditions = tuple(
            (name, spec.required_when.field, frozenset(spec.required_when.values))
            for name, spec in specs.items()
            if spec.required_when is not None
        )
        self._key_positions = tuple(position[k] for k in key_fields)
        order = {name: i for i, name in enumerate(specs)}
        self._order: Callable[[Violation], int] = lambda v: order.get(v.field, -1)
        # (data, key) of a valid row, without a RowResult; None for any other row, which
        # validate() then explains (fastpath.py).
        self.fast: FastPath = compile_fast_path(self.columns, specs, key_fields)

    def validate(self, cells: Sequence[str]) -> RowResult:
        names = self._names
        if len(cells) != len(names):
            return RowResult(
                None,
                [Violation("row", "cell_count", f"expected {len(names)} cells, found {len(cells)}")],
                None,
            )
        data: dict[str, Value] = {}
        errors: list[Violation] | None = None
        invalid: set[str] | None = None
        for name, checker, required, cell in zip(names, self._checkers, self._required, cells, strict=True):
            value = cell.strip()
            if not value:
                if required:
                    (errors := errors or []).append(Violation(name, "required", f"{name} is required"))
                continue
            normal, problems = checker(value)
            if problems is None:
                data[name] = normal  # type: ignore[assignment]
            else:
                errors = errors or []
                errors.extend(Violation(name, rule, message) for rule, message in problems)
                (invalid := invalid or set()).add(name)
        for name, controller, values in self._conditions:
            if name in data or (invalid is not None and name in invalid):
                continue
            # Judged on the controlling field's normalised value; if that is itself invalid the
            # condition cannot be judged, and its own violation already says so.
            if data.get(controller) in values:
                (errors := errors or []).append(
                    Violation(name, "required_when", f"{name} is required when {controller} is {data[controller]}")
                )
        if errors:
            errors.sort(key=self._order)
            return RowResult(None, errors, None)
        key = tuple(str(data[names[i]]) for i in self._key_positions)
        return RowResult(data, [], key)
