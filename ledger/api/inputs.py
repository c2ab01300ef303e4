"""Strict input, shared by the controllers: text parameters without control characters,
integers within what the database stores, opaque cursors whose numbers are in range, and
JSON bodies that say they are JSON and nest no deeper than a bound.

Parameters are declared with the ``Annotated`` aliases below, so Litestar checks them after
the guards (a refused role is a 403 before any parameter is looked at) and the OpenAPI schema
documents the constraint. A refusal is a 400 ``invalid_request`` whose message names the
parameter (``validation_error``, registered by the app).
"""

from __future__ import annotations

import base64
import re
from typing import Annotated, Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.params import PathParameter, QueryParameter

from ledger.errors import InvalidRequest, ServiceError

__all__ = [
    "BODY_TEXT_PATTERN",
    "INT64_MAX",
    "JSON_DEPTH_MAX",
    "Count",
    "OptionalCount",
    "PathId",
    "PathText",
    "QueryText",
    "UnsupportedMediaType",
    "check_cursor",
    "check_item_id",
    "check_item_ids",
    "json_body",
    "validation_error",
]

# What a BIGINT holds: row numbers, entry ids, tree sizes.
INT64_MAX = 2**63 - 1
# A request body's JSON may nest this deep (the bodies we take nest 3 levels at most).
JSON_DEPTH_MAX = 32
# Any character but the C0 controls (tab aside) and DEL.
TEXT_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# In a JSON body, line breaks are text (a note may have several lines); the rest is not.
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The text _BODY_CONTROL lets through, as the API schema states it for body strings.
BODY_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_PATTERN_HINT = "must not contain NUL or other control characters (tab aside)"

QueryText = Annotated[str | None, QueryParameter(pattern=TEXT_PATTERN)]
PathText = Annotated[str, PathParameter(pattern=TEXT_PATTERN)]
Count = Annotated[int, QueryParameter(ge=0, le=INT64_MAX)]
OptionalCount = Annotated[int | None, QueryParameter(ge=0, le=INT64_MAX)]
PathId = Annotated[int, PathParameter(ge=0, le=INT64_MAX)]


class BadParameter(InvalidRequest):
    status = 400


class UnsupportedMediaType(ServiceError):
    status = 415
    default_code = "unsupported_media_type"


def _in_range(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return 0 <= value <= INT64_MAX
    if isinstance(value, list):
        return all(_in_range(v) for v in value)
    return True


def check_cursor(name: str, cursor: str | None) -> None:
    """A cursor is opaque, but the numbers it carries go to the database: a forged one with
    a number past a BIGINT is refused here rather than failing there. Anything else that is
    not a cursor we issued is left to the service, which says so."""
    if cursor is None:
        return
    if _CONTROL.search(cursor):
        raise BadParameter("invalid_cursor", f"{name} {_PATTERN_HINT}", parameter=name)
    # isdecimal, not isdigit: int() refuses digits such as '¹' that isdigit accepts.
    if cursor.removeprefix("-").isdecimal():
        if len(cursor) > 20 or not _in_range(int(cursor)):
            raise BadParameter("invalid_cursor", f"{name} is out of range", parameter=name)
        return
    try:
        decoded = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, msgspec.DecodeError):
        return
    if not _in_range(decoded):
        raise BadParameter("invalid_cursor", f"{name} is out of range", parameter=name)


def check_item_id(name: str, raw: str) -> None:
    """``<task_id>:<row>``: a row number past a BIGINT is refused (an id that does not parse
    at all is simply not found, as before)."""
    _, sep, row = raw.partition(":")
    if sep and row.strip().isdecimal() and (len(row.strip()) > 20 or int(row) > INT64_MAX):
        raise BadParameter("invalid_item_id", f"{name}: the row number of {raw[:80]!r} is out of range", parameter=name)


def check_item_ids(ids: list[str] | None) -> None:
    for i, raw in enumerate(ids or ()):
        if _BODY_CONTROL.search(raw):
            raise InvalidRequest("invalid_field", f"ids[{i}] {_PATTERN_HINT}", field=f"ids[{i}]")
        check_item_id(f"ids[{i}]", raw)


# ---------------------------------------------------------------- JSON bodies


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of ``body`` nest (strings skipped), without decoding."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _control_in(value: Any, where: str) -> str | None:
    """The path of the first string (key or value) holding a control character."""
    if isinstance(value, str):
        return where if _BODY_CONTROL.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and _BODY_CONTROL.search(key):
                return here
            if found := _control_in(item, here):
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if found := _control_in(item, f"{where}[{i}]"):
                return found
    return None


async def json_body(request: Request[Any, Any, Any]) -> None:
    """``before_request`` of the handlers that take a JSON body (it runs after the guards):
    415 unless the body is declared JSON, 422 when it nests too deep or a string in it holds a
    control character. What is not JSON at all is left to the body's own decoding (400)."""
    if not _is_json(request.headers.get("content-type", "")):
        raise UnsupportedMediaType(
            "unsupported_media_type", "send the body as JSON, with Content-Type: application/json"
        )
    body = await request.body()
    if json_depth(body) > JSON_DEPTH_MAX:
        raise InvalidRequest("json_too_deep", f"the JSON body nests deeper than {JSON_DEPTH_MAX} levels")
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return
    if where := _control_in(decoded, ""):
        raise InvalidRequest("invalid_field", f"{where or 'the body'} {_PATTERN_HINT}", field=where)


# ---------------------------------------------------------------- the answer


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's parameter validation failures, in our shape, naming each parameter (and
    never echoing the request's URL, which may be long or hold the offending bytes)."""
    problems: list[dict[str, Any]] = []
    for problem in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(problem, dict):
            continue
        message = str(problem.get("message", ""))
        if "matching regex" in message and "x00" in message:
            message = _PATTERN_HINT
        problems.append({**problem, "message": message})
    named = [f"{p['key']}: {p['message']}" for p in problems if p.get("key")]
    message = "; ".join(named) if named else str(exc.detail)[:200]
    body: dict[str, Any] = {"code": "invalid_request", "message": message}
    if problems:
        body["problems"] = problems
    elif exc.extra:
        body["problems"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)
