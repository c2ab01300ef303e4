"""The source definition: a TOML file that says where an upstream's records are and how they map
onto a policy's columns (docs/connectors.md). Unknown keys are refused, so a misspelt setting
never silently falls back to its default."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from ledger.connectors.paths import parse_path

__all__ = [
    "DefinitionError",
    "Incremental",
    "Pagination",
    "SourceDefinition",
    "check_columns",
    "load_definition",
    "parse_definition",
]

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# The header names a variable may have (POSIX), and those an HTTP header may have (RFC 9110).
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class DefinitionError(ValueError):
    """The definition cannot be used; ``problems`` name each key that is wrong, and why."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


class Pagination(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: Literal["page", "offset", "cursor", "link"]
    # page: the page number's parameter and the first page's number; offset: the offset's.
    page_param: str = "page"
    first_page: int = 1
    offset_param: str = "offset"
    # cursor: where the next cursor is (a dotted path in the body, or a response header), and the
    # query parameter that carries it.
    cursor_path: str | None = None
    cursor_header: str | None = None
    cursor_param: str = "cursor"
    # link: the next page's URL, from a dotted path in the body, else the Link header (rel=next).
    link_path: str | None = None
    page_size_param: str | None = None
    page_size: int = 100


class Incremental(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    field: str  # dotted path of the upstream field holding the change time
    param: str  # the query parameter that asks for records changed since a value
    start: str | None = None  # the first sync's value; None asks for everything


class SourceDefinition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    lab: str
    policy: str
    base_url: str
    records: str
    key: str
    pagination: Pagination
    map: dict[str, str]
    resource: str = ""
    auth_header: str | None = None
    auth_env: str | None = None
    max_in_flight: int = 4
    schedule: str | None = None
    incremental: Incremental | None = None
    # Limits: one request, one response's bytes, pages a sync may take (a cursor that never ends
    # is stopped here), and the retries of a transient failure before the sync ends partial.
    timeout_seconds: float = 30.0
    response_bytes_max: int = 64 * 1024 * 1024
    pages_max: int = 100_000
    attempts: int = 6
    max_wait_seconds: float = 300.0

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + ("/" + self.resource.lstrip("/") if self.resource else "")

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


def parse_definition(text: str, *, source: str = "definition") -> SourceDefinition:
    """The definition in ``text`` (TOML), or DefinitionError naming every problem found."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(source, [f"not valid TOML: {exc}"]) from None
    return from_builtins(raw, source=source)


def load_definition(path: str, *, source: str | None = None) -> SourceDefinition:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(source or path, [f"cannot read it: {exc}"]) from None
    return parse_definition(text, source=source or path)


def from_builtins(raw: Any, *, source: str = "definition") -> SourceDefinition:
    """A definition from decoded TOML or JSON (the server stores the validated definition)."""
    try:
        definition = msgspec.convert(raw, SourceDefinition)
    except msgspec.ValidationError as exc:
        raise DefinitionError(source, [_readable(str(exc))]) from None
    problems = list(_problems(definition))
    if problems:
        raise DefinitionError(source, problems)
    return definition


def check_columns(definition: SourceDefinition, columns: Iterable[str], required: Iterable[str]) -> None:
    """Refuse a map naming a column the policy does not know, or leaving out one it requires:
    either would refuse every manifest the source makes, so it is refused when the source is
    loaded instead, with the names."""
    known = list(columns)
    problems = [
        f"map.{name}: the policy {definition.policy!r} has no column {name!r} (its columns: {', '.join(known)})"
        for name in definition.map
        if name not in known
    ]
    missing = [name for name in required if name not in definition.map]
    if missing:
        needed = ", ".join(missing)
        problems.append(f"map: the policy {definition.policy!r} requires {needed}, which the map leaves out")
    if problems:
        raise DefinitionError(definition.name, problems)


def _readable(message: str) -> str:
    # msgspec says "Object contains unknown field `x` - at `$.pagination`"; name the key as written.
    found = re.match(r"(.*) - at `\$\.?(.*)`$", message)
    if found:
        problem, where = found.groups()
        return f"{where}: {problem}" if where else problem
    return message


def _problems(d: SourceDefinition) -> Iterable[str]:
    if not NAME.match(d.name):
        yield "name: lower-case letters, digits, '-' and '_', at most 63 characters"
    if not NAME.match(d.lab):
        yield "lab: a lab name as registered (lower-case letters, digits, '-' and '_')"
    if not d.policy:
        yield "policy: required"
    url = urlsplit(d.base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        yield "base_url: an http:// or https:// URL with a host"
    if url.query or url.fragment or url.username or url.password:
        yield "base_url: no query, fragment or credentials (the secret goes in auth_env)"
    if (d.auth_header is None) != (d.auth_env is None):
        yield "auth_header and auth_env: both or neither (the header's value is read from the variable)"
    if d.auth_header is not None and not HEADER_NAME.match(d.auth_header):
        yield "auth_header: an HTTP header name"
    if d.auth_env is not None and not ENV_NAME.match(d.auth_env):
        yield "auth_env: the name of an environment variable (never the secret itself)"
    for key, value in (("records", d.records), ("key", d.key), *((f"map.{k}", v) for k, v in d.map.items())):
        if (error := _path_error(value)) is not None:
            yield f"{key}: {error}"
    if not d.map:
        yield "map: at least one column"
    if not 1 <= d.max_in_flight <= 64:
        yield "max_in_flight: between 1 and 64"
    if d.schedule is not None and not _valid_cron(d.schedule):
        yield f"schedule: not a cron expression: {d.schedule!r}"
    if not 0 < d.timeout_seconds <= 600:
        yield "timeout_seconds: more than 0, at most 600"
    if not 1024 <= d.response_bytes_max <= 1024**3:
        yield "response_bytes_max: between 1 KiB and 1 GiB"
    if not 1 <= d.pages_max <= 10_000_000:
        yield "pages_max: between 1 and 10,000,000"
    if not 1 <= d.attempts <= 20:
        yield "attempts: between 1 and 20"
    if not 0 <= d.max_wait_seconds <= 86_400:
        yield "max_wait_seconds: between 0 and 86,400"
    yield from _pagination_problems(d.pagination)
    if d.incremental is not None:
        if (error := _path_error(d.incremental.field)) is not None:
            yield f"incremental.field: {error}"
        if not d.incremental.param:
            yield "incremental.param: required"


def _pagination_problems(p: Pagination) -> Iterable[str]:
    if not 1 <= p.page_size <= 100_000:
        yield "pagination.page_size: between 1 and 100,000"
    if p.type in ("page", "offset") and p.page_size_param is None:
        # Without it the paginator cannot know a short page is the last one.
        yield f"pagination.page_size_param: required for type {p.type!r}"
    if p.type == "cursor":
        if (p.cursor_path is None) == (p.cursor_header is None):
            yield "pagination: type 'cursor' needs cursor_path or cursor_header (one of them)"
        if p.cursor_path is not None and (error := _path_error(p.cursor_path)) is not None:
            yield f"pagination.cursor_path: {error}"
    if p.link_path is not None and (error := _path_error(p.link_path)) is not None:
        yield f"pagination.link_path: {error}"


def _path_error(path: str) -> str | None:
    try:
        parse_path(path)
    except ValueError as exc:
        return str(exc)
    return None


def _valid_cron(expression: str) -> bool:
    # croniter comes with pgqueuer, whose scheduler reads the same expressions.
    import croniter

    return bool(croniter.croniter.is_valid(expression))
