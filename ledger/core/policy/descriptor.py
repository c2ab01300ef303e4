"""Reading a policy descriptor (Frictionless Table Schema v2 + ``x-ledger-*`` extensions) into
checked, plain field specifications. Every problem names the file, the field and the key."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from ledger.core.policy.checkdigits import CHECK_DIGITS
from ledger.core.policy.errors import PolicyError
from ledger.core.policy.headers import normalise_header

__all__ = ["FIELD_TYPES", "FieldSpec", "PolicySpec", "RequiredWhen", "parse_descriptor"]

FIELD_TYPES = ("string", "integer", "number", "date")
NORMALIZERS = ("upper", "lower", "none")
_FIELD_EXTENSIONS = {
    "x-ledger-normalize",
    "x-ledger-prefixes",
    "x-ledger-required-when",
    "x-ledger-check-digit",
    "x-ledger-decimal-places",
    "x-ledger-aliases",
}
_TOP_EXTENSIONS = {"x-ledger-unknown-columns"}
_CONSTRAINTS = {"required", "pattern", "enum", "minimum", "maxLength"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RequiredWhen(msgspec.Struct, frozen=True):
    field: str
    values: tuple[str, ...]


class FieldSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str
    required: bool = False
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    minimum: int | float | None = None
    max_length: int | None = None
    normalize: str = "none"
    prefixes: tuple[str, ...] | None = None
    required_when: RequiredWhen | None = None
    check_digit: str | None = None
    decimal_places: int | None = None
    aliases: tuple[str, ...] = ()


class PolicySpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    title: str | None
    fields: tuple[FieldSpec, ...]
    primary_key: tuple[str, ...]
    descriptor: dict[str, Any]


def _fail(source: str, where: str, problem: str) -> PolicyError:
    return PolicyError(f"{source}: {where}: {problem}")


def parse_descriptor(raw: bytes, *, source: str) -> PolicySpec:
    try:
        descriptor = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(descriptor, dict):
        raise PolicyError(f"{source}: the policy must be a JSON object")
    for key in descriptor:
        if key.startswith("x-ledger") and key not in _TOP_EXTENSIONS:
            raise _fail(source, key, f"unknown extension (known: {', '.join(sorted(_TOP_EXTENSIONS))})")
    name, version = descriptor.get("name"), descriptor.get("version")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", name):
        raise _fail(source, "name", "required: lower-case letters, digits and dashes")
    if not isinstance(version, str) or not version.strip():
        raise _fail(source, "version", "required: a non-empty string")
    title = descriptor.get("title")
    if title is not None and not isinstance(title, str):
        raise _fail(source, "title", "must be a string")
    unknown_columns = descriptor.get("x-ledger-unknown-columns", "refuse")
    if unknown_columns != "refuse":
        raise _fail(source, "x-ledger-unknown-columns", "only 'refuse' is supported")
    raw_fields = descriptor.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise _fail(source, "fields", "required: a non-empty list")
    fields = tuple(_field(source, i, f) for i, f in enumerate(raw_fields))
    names = [f.name for f in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(source, "fields", f"duplicate field names: {', '.join(duplicates)}")
    headers = [*names, *(a for f in fields for a in f.aliases)]
    clashes = sorted({h for h in headers if headers.count(h) > 1})
    if clashes:
        raise _fail(source, "x-ledger-aliases", f"names used by more than one field: {', '.join(clashes)}")
    for i, f in enumerate(fields):
        if f.required_when is not None and f.required_when.field not in names:
            raise _fail(
                source,
                f"fields[{i}] ({f.name}).x-ledger-required-when",
                f"refers to unknown field {f.required_when.field!r}",
            )
    primary_key = descriptor.get("primaryKey", [])
    if isinstance(primary_key, str):
        primary_key = [primary_key]
    if not isinstance(primary_key, list) or not all(isinstance(k, str) for k in primary_key):
        raise _fail(source, "primaryKey", "must be a field name or a list of field names")
    for key in primary_key:
        if key not in names:
            raise _fail(source, "primaryKey", f"names unknown field {key!r}")
        if not next(f for f in fields if f.name == key).required:
            raise _fail(source, "primaryKey", f"field {key!r} must be required to be part of the key")
    return PolicySpec(
        name=name,
        version=version,
        title=title,
        fields=fields,
        primary_key=tuple(primary_key),
        descriptor=descriptor,
    )


def _field(source: str, index: int, raw: Any) -> FieldSpec:
    name = _field_name(source, index, raw)
    where = f"fields[{index}] ({name})"
    for key in raw:
        if key.startswith("x-ledger") and key not in _FIELD_EXTENSIONS:
            raise _fail(source, f"{where}.{key}", f"unknown extension (known: {', '.join(sorted(_FIELD_EXTENSIONS))})")
    ftype = _field_type(source, where, raw)
    constraints = _constraints(source, where, raw, ftype)
    normalize = raw.get("x-ledger-normalize", "none")
    if normalize not in NORMALIZERS:
        raise _fail(source, f"{where}.x-ledger-normalize", f"must be one of {', '.join(NORMALIZERS)}")
    prefixes = raw.get("x-ledger-prefixes")
    if prefixes is not None and (
        not isinstance(prefixes, list) or not prefixes or not all(isinstance(p, str) and p for p in prefixes)
    ):
        raise _fail(source, f"{where}.x-ledger-prefixes", "must be a non-empty list of strings")
    when = _required_when(source, where, raw, required=constraints.required)
    check_digit = _check_digit(source, where, raw, pattern=constraints.pattern)
    places = _decimal_places(source, where, raw, ftype)
    aliases = raw.get("x-ledger-aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise _fail(source, f"{where}.x-ledger-aliases", "must be a list of header names")
    return FieldSpec(
        name=name,
        type=ftype,
        required=constraints.required,
        pattern=constraints.pattern,
        enum=constraints.enum,
        minimum=constraints.minimum,
        max_length=constraints.max_length,
        normalize=normalize,
        prefixes=None if prefixes is None else tuple(prefixes),
        required_when=when,
        check_digit=check_digit,
        decimal_places=places,
        aliases=tuple(normalise_header(a) for a in aliases),
    )


def _field_name(source: str, index: int, raw: Any) -> str:
    """The field's name, checked to be lower-case snake_case, from a field that must be an object."""
    where = f"fields[{index}]"
    if not isinstance(raw, dict):
        raise _fail(source, where, "must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(source, f"{where}.name", "required: lower-case snake_case")
    return name


def _field_type(source: str, where: str, raw: dict[str, Any]) -> str:
    """The field's type (default string), one of FIELD_TYPES; a date only in the default format."""
    ftype: str = raw.get("type", "string")
    if ftype not in FIELD_TYPES:
        raise _fail(source, f"{where}.type", f"unsupported type {ftype!r} (supported: {', '.join(FIELD_TYPES)})")
    if ftype == "date" and raw.get("format", "default") != "default":
        raise _fail(source, f"{where}.format", "only the default date format (YYYY-MM-DD) is supported")
    return ftype


class _Constraints(msgspec.Struct, frozen=True, kw_only=True):
    required: bool
    pattern: str | None
    enum: tuple[str, ...] | None
    minimum: int | float | None
    max_length: int | None


def _constraints(source: str, where: str, raw: dict[str, Any], ftype: str) -> _Constraints:
    """The field's ``constraints`` object, each of its supported keys checked."""
    constraints = raw.get("constraints", {})
    if not isinstance(constraints, dict):
        raise _fail(source, f"{where}.constraints", "must be an object")
    for key in constraints:
        if key not in _CONSTRAINTS:
            raise _fail(
                source,
                f"{where}.constraints.{key}",
                f"unsupported constraint (supported: {', '.join(sorted(_CONSTRAINTS))})",
            )
    required = constraints.get("required", False)
    if not isinstance(required, bool):
        raise _fail(source, f"{where}.constraints.required", "must be true or false")
    pattern = constraints.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise _fail(source, f"{where}.constraints.pattern", "must be a string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _fail(source, f"{where}.constraints.pattern", f"is not a valid regular expression: {exc}") from exc
    enum = constraints.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum or not all(isinstance(e, str) for e in enum)):
        raise _fail(source, f"{where}.constraints.enum", "must be a non-empty list of strings")
    minimum = constraints.get("minimum")
    if minimum is not None and (
        ftype not in ("integer", "number") or isinstance(minimum, bool) or not isinstance(minimum, int | float)
    ):
        raise _fail(source, f"{where}.constraints.minimum", "applies to integer and number fields, as a number")
    max_length = constraints.get("maxLength")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise _fail(source, f"{where}.constraints.maxLength", "must be a positive whole number")
    return _Constraints(
        required=required,
        pattern=pattern,
        enum=None if enum is None else tuple(enum),
        minimum=minimum,
        max_length=max_length,
    )


def _required_when(source: str, where: str, raw: dict[str, Any], *, required: bool) -> RequiredWhen | None:
    """The field's ``x-ledger-required-when`` condition, if any: only on a field not always required."""
    required_when = raw.get("x-ledger-required-when")
    if required_when is None:
        return None
    if (
        not isinstance(required_when, dict)
        or set(required_when) != {"field", "in"}
        or not isinstance(required_when["field"], str)
        or not isinstance(required_when["in"], list)
        or not all(isinstance(v, str) for v in required_when["in"])
    ):
        raise _fail(source, f"{where}.x-ledger-required-when", 'must be {"field": name, "in": [values]}')
    if required:
        raise _fail(source, f"{where}.x-ledger-required-when", "makes no sense on a required field")
    return RequiredWhen(field=required_when["field"], values=tuple(required_when["in"]))


def _check_digit(source: str, where: str, raw: dict[str, Any], *, pattern: str | None) -> str | None:
    """The field's ``x-ledger-check-digit`` algorithm, if any: a known one, on a field with a pattern."""
    check_digit = raw.get("x-ledger-check-digit")
    if check_digit is not None and check_digit not in CHECK_DIGITS:
        raise _fail(source, f"{where}.x-ledger-check-digit", f"unknown algorithm (known: {', '.join(CHECK_DIGITS)})")
    if check_digit is not None and pattern is None:
        raise _fail(source, f"{where}.x-ledger-check-digit", "needs a constraints.pattern that fixes the shape")
    return check_digit


def _decimal_places(source: str, where: str, raw: dict[str, Any], ftype: str) -> int | None:
    """The field's ``x-ledger-decimal-places``: required on a number field, allowed on no other."""
    places = raw.get("x-ledger-decimal-places")
    if places is not None and (
        ftype != "number" or isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= 12
    ):
        raise _fail(source, f"{where}.x-ledger-decimal-places", "applies to number fields, 0 to 12")
    if ftype == "number" and places is None:
        raise _fail(
            source, f"{where}.x-ledger-decimal-places", "number fields need it: values are hashed as fixed-point text"
        )
    return places
