"""/uploads/: resumable uploads, tus 1.0 (the protocol is ledger.services.tus; this only
translates HTTP).

Who may upload is who may POST /imports (the same guard, the same lab checks, in the service);
the principal comes from the authentication middleware like everywhere else. OPTIONS is public,
as tus has clients discover the server before they authenticate: only the OPTIONS handlers opt
out of the middleware, by their ``opt`` (Litestar's ``exclude_from_auth`` key, which the
middleware honours per route handler), so the other methods of the same paths still need a token.

The operations are left out of the API schema: tus is its own protocol, specified elsewhere
(its headers carry the arguments, its own status 460 answers a checksum mismatch), and its
PATCHes only make sense in the order a tus client sends them, which a schema cannot say.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, Router, delete, head, patch, post, route
from litestar.datastructures import MutableScopeHeaders
from litestar.di import NamedDependency
from litestar.enums import HttpMethod, MediaType
from litestar.exceptions import InternalServerException
from litestar.types import Message, Scope

from ledger.api.errors import exception_handlers as app_exception_handlers
from ledger.api.guards import submitters
from ledger.api.inputs import PathText
from ledger.api.state import AppState
from ledger.errors import ServiceError
from ledger.services.access import Principal
from ledger.services.tus import TUS_VERSION, TusError, TusHeaders, Uploads, UploadState, capabilities, http_date

__all__ = ["PREFIX", "tus_resumable", "tus_router"]

PREFIX = "/uploads"
# Litestar's authentication middleware skips a route handler whose opt sets this key.
PUBLIC = {"exclude_from_auth": True}


class BodyIncomplete(ServiceError):
    status = 400
    default_code = "body_incomplete"


def _tus_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[Any]:
    """Our error body, as everywhere, with the headers tus requires on the answer."""
    response: Response[Any] = app_exception_handlers[ServiceError](request, exc)
    if isinstance(exc, TusError):
        response.headers.update(exc.headers)
    return response


async def tus_resumable(message: Message, scope: Scope) -> None:
    """Every answer under /uploads says which tus it speaks: the middleware's 401s and the
    router's 404s and 405s too, hence a ``before_send`` hook rather than the handlers."""
    if message["type"] != "http.response.start":
        return
    path: str = scope.get("path", "")
    if path == PREFIX or path.startswith(PREFIX + "/"):
        MutableScopeHeaders.from_message(message)["Tus-Resumable"] = TUS_VERSION


def _headers(request: Request[Any, Any, Any]) -> TusHeaders:
    h = request.headers
    return TusHeaders(
        tus_resumable=h.get("tus-resumable"),
        upload_length=h.get("upload-length"),
        upload_defer_length=h.get("upload-defer-length"),
        upload_concat=h.get("upload-concat"),
        upload_offset=h.get("upload-offset"),
        upload_metadata=h.get("upload-metadata"),
        upload_checksum=h.get("upload-checksum"),
        content_type=h.get("content-type"),
        content_length=h.get("content-length"),
        transfer_encoding=h.get("transfer-encoding"),
    )


async def _body(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except InternalServerException as exc:  # Litestar's word for a client that went away
        raise BodyIncomplete(
            "body_incomplete", "the request body ended early; what arrived is kept: ask HEAD for the offset"
        ) from exc


def _uploads(ledger: AppState) -> Uploads:
    return Uploads(ledger.db, ledger.database_url, ledger.settings, ledger.policies)


def _empty(status: int, headers: dict[str, str] | None = None) -> Response[None]:
    # As text, None is an empty body (as JSON it would be 'null').
    return Response(content=None, status_code=status, headers=headers, media_type=MediaType.TEXT)


def _answer(state: UploadState, status: int, **extra: str) -> Response[None]:
    headers = {"Upload-Offset": str(state.offset), "Upload-Expires": http_date(state.expires_at), **extra}
    if state.import_url is not None:
        headers["Ledger-Import"] = state.import_url
    return _empty(status, headers)


def tus_router() -> Router:
    """The routes under /uploads. A Router rather than a Controller: a Controller registers its
    handlers in the order of their names, and a path whose first handler is not OPTIONS gets
    Litestar's automatic OPTIONS handler, which then shadows ours (Litestar 2.25); a Router
    registers them in the order given. Made per app, as Litestar takes ownership of handlers."""

    @route("/", http_method=HttpMethod.OPTIONS, opt=PUBLIC, status_code=204)
    async def discover(ledger: NamedDependency[AppState]) -> Response[None]:
        return _empty(204, capabilities(ledger.settings))

    @route("/{upload_id:str}", http_method=HttpMethod.OPTIONS, opt=PUBLIC, status_code=204)
    async def discover_upload(upload_id: PathText, ledger: NamedDependency[AppState]) -> Response[None]:
        return _empty(204, capabilities(ledger.settings))

    @post("/", guards=[submitters], request_max_body_size=None, status_code=201)
    async def create(
        request: Request[Any, Any, Any], ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> Response[None]:
        headers = _headers(request)
        if headers.has_body():
            # Held before the body is read, as for POST /imports.
            with ledger.uploads.hold(principal.token_id):
                state = await _uploads(ledger).create(principal, headers, _body(request))
        else:
            state = await _uploads(ledger).create(principal, headers, None)
        return _answer(state, 201, Location=state.location)

    @head("/{upload_id:str}", guards=[submitters])
    async def offset(
        request: Request[Any, Any, Any],
        upload_id: PathText,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
    ) -> Response[None]:
        state = await _uploads(ledger).head(principal, upload_id, _headers(request))
        extra = {"Upload-Length": str(state.length), "Cache-Control": "no-store"}
        if state.metadata:
            extra["Upload-Metadata"] = state.metadata
        return _answer(state, 200, **extra)

    @patch("/{upload_id:str}", guards=[submitters], request_max_body_size=None, status_code=204)
    async def append(
        request: Request[Any, Any, Any],
        upload_id: PathText,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
    ) -> Response[None]:
        with ledger.uploads.hold(principal.token_id):
            state = await _uploads(ledger).patch(principal, upload_id, _headers(request), _body(request))
        return _answer(state, 204)

    @delete("/{upload_id:str}", guards=[submitters], status_code=204)
    async def terminate(
        request: Request[Any, Any, Any],
        upload_id: PathText,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
    ) -> Response[None]:
        await _uploads(ledger).terminate(principal, upload_id, _headers(request))
        return _empty(204)

    return Router(
        path=PREFIX,
        route_handlers=[discover, discover_upload, create, offset, append, terminate],
        tags=["uploads"],
        include_in_schema=False,
        exception_handlers={ServiceError: _tus_error},
    )
