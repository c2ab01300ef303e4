"""The API schema, made to say what the service really answers.

Litestar documents the success of each handler; left alone it would also document a 400 in its
own error shape ({status_code, detail, extra}), which we never send, and nothing of the errors
we do send, nor of the token every operation but the public ones needs. ``document`` completes
the schema of a built app, once, from what each route really is:

- every operation behind the token middleware: the bearer security scheme, 401 (no, unknown,
  revoked or expired token), 429 (an address throttled after failed authentications) and 503
  (the database is away: the token is looked up in it);
- 403 where a role guard admits fewer than every role; 400 where there are parameters or a
  body to refuse; 404 where the path names something; 413 where there is a body; 415 and 422
  where a JSON body is checked (ledger.api.inputs.json_body);
- and the errors a handler declares for itself (``openapi_opt``): 409, 413, 415, 507...

Every error is the ``Error`` component: what ledger.api.errors and the token middleware send.
A clean, documented schema is what lets a fuzzer (tests/api/test_schema_fuzz.py) hold every
answer to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

from ledger.api.auth import PUBLIC_PATHS
from ledger.api.guards import RoleGuard
from ledger.api.inputs import BODY_TEXT_PATTERN, INT64_MAX, json_body
from ledger.core import roles

__all__ = ["BEARER", "ERROR_SCHEMA", "SSE_EVENT_SCHEMA", "admitted_roles", "document", "openapi_opt", "role_guards"]

BEARER = "bearer"
ERROR = "Error"
_ERROR_REF = Reference(ref=f"#/components/schemas/{ERROR}")
# Keys of a handler's ``opt`` (see openapi_opt).
_ERRORS = "openapi_errors"
_REQUEST_BODY = "openapi_request_body"
_PUBLIC = re.compile("|".join(PUBLIC_PATHS))
_JSON = "application/json"
_SSE = "text/event-stream"

ERROR_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["code", "message"],
    properties={
        "code": Schema(type=OpenAPIType.STRING, description="Stable and machine-readable: branch on this."),
        "message": Schema(type=OpenAPIType.STRING, description="For people; its wording may change."),
        "problems": Schema(
            type=OpenAPIType.ARRAY,
            description="Each parameter or body field refused, when there are several to name.",
            items=Schema(
                type=OpenAPIType.OBJECT,
                properties={
                    "key": Schema(type=OpenAPIType.STRING),
                    "message": Schema(type=OpenAPIType.STRING),
                    "source": Schema(type=OpenAPIType.STRING),
                },
            ),
        ),
    },
    description="Every error the service answers. Some codes carry more fields that say what to do "
    "(`field`, `parameter`, `retry_after`, `errors`, `task_id`...).",
)

# What a client of GET /imports/{task_id}/events reads, one event at a time.
SSE_EVENT_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["data"],
    properties={
        "event": Schema(
            type=OpenAPIType.STRING,
            description="`progress` while the import runs, then its outcome: `done`, `failed` or `cancelled`.",
        ),
        "data": Schema(
            type=OpenAPIType.STRING,
            content_media_type=_JSON,
            description="The import's progress, as JSON: the figures GET /imports/{task_id} has.",
        ),
        "id": Schema(type=OpenAPIType.STRING),
        "retry": Schema(type=OpenAPIType.INTEGER),
    },
    description="One Server-Sent Event.",
)

_DESCRIPTIONS = {
    400: "The parameters or the body are malformed (`invalid_request` names each).",
    401: "No token, or an unknown or revoked one (`unauthorized`), or an expired one (`token_expired`).",
    403: "The token's role, or lab, may not do this (`forbidden`).",
    404: "Nothing by that name, or nothing the token's labs may see (`not_found`).",
    409: "The resource's state does not allow it (the code says which).",
    413: "The body is larger than this operation takes.",
    415: "The body is not of a media type this operation takes (`unsupported_media_type`).",
    422: "The request is well-formed but cannot be done as asked (the code says why).",
    429: "Too many failed authentications from this address (`too_many_failed_logins`), or, for a "
    "submission, too many imports waiting (`too_many_imports`); try again after Retry-After.",
    503: "The database is unreachable (`database_unavailable`) or failed transiently; try again later.",
    507: "The server has no room left to store the upload (`spool_full`).",
}
_HEADERS: dict[int, dict[str, OpenAPIHeader | Reference]] = {
    401: {"WWW-Authenticate": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), required=True)},
    429: {
        "Retry-After": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.INTEGER), required=True, description="Seconds to wait."
        )
    },
    503: {"Retry-After": OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER), description="Seconds to wait.")},
}


def openapi_opt(errors: Iterable[int] = (), *, request_body: RequestBody | None = None) -> dict[str, Any]:
    """A handler's ``opt``: the error statuses it answers beyond those ``document`` derives from
    its route, and the request body it reads itself (one Litestar cannot see, as a streamed
    upload)."""
    opt: dict[str, Any] = {_ERRORS: tuple(errors)}
    if request_body is not None:
        opt[_REQUEST_BODY] = request_body
    return opt


def role_guards(handler: HTTPRouteHandler) -> list[RoleGuard]:
    """The role guards on the handler and the layers that own it, outermost first."""
    return [g for layer in handler.ownership_layers for g in layer.guards or () if isinstance(g, RoleGuard)]


def admitted_roles(handler: HTTPRouteHandler) -> tuple[str, ...]:
    """The roles every guard of the handler admits, in the order roles.ROLES gives them."""
    admitted = set(roles.ROLES)
    for guard in role_guards(handler):
        admitted &= set(guard.roles)
    return tuple(r for r in roles.ROLES if r in admitted)


def error_response(status: int, description: str | None = None) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description or _DESCRIPTIONS.get(status) or HTTPStatus(status).phrase,
        content={_JSON: OpenAPIMediaType(schema=_ERROR_REF)},
        headers=_HEADERS.get(status),
    )


def _error_statuses(path: str, handler: HTTPRouteHandler, operation: Operation) -> set[int]:
    statuses = set(handler.opt.get(_ERRORS, ()))
    if not _PUBLIC.match(path):
        statuses |= {401, 429, 503}
        if set(admitted_roles(handler)) != set(roles.ROLES):
            statuses.add(403)
    if operation.parameters or operation.request_body:
        statuses.add(400)
    if "{" in path:
        statuses.add(404)
    # Litestar refuses a body over the handler's limit; the upload has none but its own (declared).
    if operation.request_body is not None and handler.resolve_request_max_body_size() is not None:
        statuses.add(413)
    if handler.resolve_before_request() is json_body:
        statuses |= {415, 422}
    return statuses


def _exact_bounds(schema: Schema | Reference | None) -> None:
    """Litestar writes an integer's ge/le as floats, and float(2**63 - 1) is 2**63, which the
    parameter refuses: the bounds of an integer are put back as the integers they are."""
    if not isinstance(schema, Schema):
        return
    for option in schema.one_of or ():
        _exact_bounds(option)
    if schema.type != OpenAPIType.INTEGER and not (
        schema.one_of and any(isinstance(o, Schema) and o.type == OpenAPIType.INTEGER for o in schema.one_of)
    ):
        return
    if isinstance(schema.maximum, float):
        schema.maximum = min(int(schema.maximum), INT64_MAX)
    if isinstance(schema.minimum, float):
        schema.minimum = max(int(schema.minimum), -INT64_MAX - 1)


def _text_bodies(operation: Operation) -> None:
    """A streamed answer (CSV, JSON Lines) is text, not a JSON document; Server-Sent Events are
    read one event at a time."""
    for response in (operation.responses or {}).values():
        if not isinstance(response, OpenAPIResponse):
            continue
        for media_type, content in (response.content or {}).items():
            empty = isinstance(content.schema, Schema) and content.schema == Schema()
            if media_type == _JSON or not (content.schema is None or empty):
                continue
            content.schema = SSE_EVENT_SCHEMA if media_type == _SSE else Schema(type=OpenAPIType.STRING)


def _structs(info: msgspec.inspect.Type, seen: dict[type, msgspec.inspect.StructType]) -> None:
    """Every msgspec Struct in a body's type, into ``seen``."""
    inspect = msgspec.inspect
    if isinstance(info, inspect.StructType):
        if info.cls not in seen:
            seen[info.cls] = info
            for field in info.fields:
                _structs(field.type, seen)
    elif isinstance(info, inspect.UnionType):
        for option in info.types:
            _structs(option, seen)
    elif isinstance(info, (inspect.ListType, inspect.SetType, inspect.FrozenSetType, inspect.VarTupleType)):
        _structs(info.item_type, seen)
    elif isinstance(info, inspect.DictType):
        _structs(info.value_type, seen)


def _body_text(schema: Schema | Reference | bool | None) -> None:
    """Every string of the schema, keys of free-form objects included, without the control
    characters json_body refuses."""
    if not isinstance(schema, Schema):
        return
    if schema.type == OpenAPIType.STRING and schema.pattern is None and schema.enum is None:
        schema.pattern = BODY_TEXT_PATTERN
    for option in (*(schema.one_of or ()), *(schema.any_of or ()), *(schema.all_of or ())):
        _body_text(option)
    for prop in (schema.properties or {}).values():
        _body_text(prop)
    if not isinstance(schema.items, Sequence):
        _body_text(schema.items)
    if isinstance(schema.additional_properties, Schema):
        _body_text(schema.additional_properties)
        if schema.property_names is None:
            schema.property_names = Schema(type=OpenAPIType.STRING, pattern=BODY_TEXT_PATTERN)


def _document_body(openapi: OpenAPI, handler: HTTPRouteHandler) -> None:
    """What Litestar cannot see in a JSON body's schema: a struct that refuses unknown fields
    (forbid_unknown_fields) closes its object, where Litestar leaves it open, inviting clients,
    and fuzzers, to send fields that are refused; and behind json_body no string may hold a
    control character."""
    data = handler.parsed_fn_signature.parameters.get("data")
    schemas = openapi.components.schemas if isinstance(openapi.components, Components) else None
    if data is None or not schemas:
        return
    try:
        info = msgspec.inspect.type_info(data.annotation)
    except TypeError:  # not a type msgspec knows: nothing to say
        return
    structs: dict[type, msgspec.inspect.StructType] = {}
    _structs(info, structs)
    for cls, struct in structs.items():
        component = schemas.get(cls.__name__)
        if not (isinstance(component, Schema) and component.title == cls.__name__):
            continue
        if struct.forbid_unknown_fields:
            component.additional_properties = False
        if handler.resolve_before_request() is json_body:
            _body_text(component)


def _document_operation(path: str, handler: HTTPRouteHandler, operation: Operation) -> None:
    if (body := handler.opt.get(_REQUEST_BODY)) is not None:
        operation.request_body = body
    for parameter in operation.parameters or ():
        _exact_bounds(getattr(parameter, "schema", None))
    declared = {str(status) for status in (handler.responses or {})}
    responses = operation.responses = dict(operation.responses or {})
    for status in sorted(_error_statuses(path, handler, operation)):
        if str(status) not in declared:
            # Replaces Litestar's own 400 ({status_code, detail, extra}): we never send that.
            responses[str(status)] = error_response(status)
    _text_bodies(operation)
    if not _PUBLIC.match(path):
        operation.security = [{BEARER: []}]
        admitted = admitted_roles(handler)
        note = f"Roles: {', '.join(admitted)}."
        operation.description = f"{operation.description}\n\n{note}" if operation.description else note


def _operations(app: Litestar, openapi: OpenAPI) -> Iterable[tuple[str, HTTPRouteHandler, Operation]]:
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or openapi.paths is None:
            continue
        item = openapi.paths.get(route.path_format or "/")
        if item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, str(method).lower(), None)
            if isinstance(operation, Operation) and handler.resolve_include_in_schema():
                yield route.path_format, handler, operation


def document(app: Litestar) -> OpenAPI:
    """Complete ``app``'s schema in place (see the module's docstring) and return it. Called
    once, by the app factory, before the schema is first served: every route is registered by
    then, so Litestar never rebuilds it."""
    openapi = app.openapi_schema
    components = openapi.components
    if isinstance(components, Sequence):  # pragma: no cover - the app passes one Components
        components = openapi.components = components[0] if components else Components()
    components.schemas = {**(components.schemas or {}), ERROR: ERROR_SCHEMA}
    components.security_schemes = {
        **(components.security_schemes or {}),
        BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            description="An API token (`ledger token create`, or POST /tokens): `Authorization: Bearer <token>`.",
        ),
    }
    for path, handler, operation in _operations(app, openapi):
        _document_operation(path, handler, operation)
        _document_body(openapi, handler)
    return openapi
