"""Traces, with OpenTelemetry: exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set,
nothing at all otherwise.

The rest of ledger speaks only the OpenTelemetry API (``trace.get_tracer(__name__)``), whose spans
are no-ops until a provider is installed; this module owns the SDK: the provider, the exporter, the
asyncpg and httpx instrumentations and the HTTP middleware. ``configure`` runs once at process start
(``ledger serve``, ``ledger worker``); the tests install an in-memory exporter instead.

What a span may carry is limited here too: the asyncpg instrumentation records the SQL text (with
its ``$1`` placeholders) and never the parameters; a database call outside any request or import
(the worker's heartbeat, the queue's polling) starts no trace; an HTTP request's span is named by
its route template, and the raw path and query (which hold asset ids, cursors, lab names) are
replaced by that template before the span is exported (docs/tracing.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from ledger.logs import get_logger

__all__ = [
    "API_SERVICE",
    "TRACEPARENT",
    "WORKER_SERVICE",
    "configure",
    "enabled",
    "http_app",
    "install_for_tests",
    "parent_context",
    "traceparent",
    "uninstall",
]

log = get_logger("ledger.telemetry")

API_SERVICE = "ledger-api"
WORKER_SERVICE = "ledger-worker"
TRACEPARENT = "traceparent"

# Where a span's attributes hold the request's raw target (old and new HTTP conventions).
_PATH_ATTRIBUTES = ("http.target", "url.path")
_URL_ATTRIBUTES = ("http.url", "url.full")
_QUERY_ATTRIBUTES = ("url.query",)
_DB_SYSTEM_ATTRIBUTES = ("db.system", "db.system.name")
UNMATCHED = "unmatched"  # as the access log says of a path no route serves

# The import row keeps the W3C traceparent itself (imports.trace_context), whatever propagators
# OTEL_PROPAGATORS chooses for HTTP.
_W3C = TraceContextTextMapPropagator()


class _Relay(SpanProcessor):
    """Hands spans to the processor installed now, if any. OpenTelemetry lets a process set its
    global provider once; what that provider exports to is switched here instead (the tests
    install and remove an in-memory exporter around the tests that read spans)."""

    def __init__(self) -> None:
        self.processor: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.processor is not None:
            self.processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.processor is not None:
            self.processor.on_end(span)

    def shutdown(self) -> None:
        if self.processor is not None:
            self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True if self.processor is None else self.processor.force_flush(timeout_millis)


class _Sampler(Sampler):
    """The sampler the ``OTEL_TRACES_SAMPLER`` variables chose, except that nothing is recorded
    while no processor is installed, and a database call with no parent span starts no trace (a
    worker's heartbeat and the queue's polling would otherwise be a trace every few seconds)."""

    def __init__(self, relay: _Relay, chosen: Sampler) -> None:
        self._relay = relay
        self._chosen = chosen

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: trace.SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if self._relay.processor is None:
            return SamplingResult(Decision.DROP)
        recorded = attributes or {}
        is_query = any(key in recorded for key in _DB_SYSTEM_ATTRIBUTES)
        if is_query and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.DROP)
        return self._chosen.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"LedgerSampler{{{self._chosen.get_description()}}}"


_relay = _Relay()
_provider: TracerProvider | None = None


def configure(service_name: str) -> bool:
    """At process start: export spans over OTLP (HTTP/protobuf) when ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and ``OTEL_SDK_DISABLED`` is not true;
    otherwise install nothing, so that every span stays a no-op. ``OTEL_SERVICE_NAME`` wins over
    ``service_name``; the exporter and the batching read their own ``OTEL_*`` variables. True when
    tracing is on."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    # Imported here: requests and protobuf are loaded only by a process that exports.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    _install(BatchSpanProcessor(OTLPSpanExporter()), service_name)
    assert _provider is not None
    log.info(
        "tracing_on",
        stage="tracing",
        service=_provider.resource.attributes.get(SERVICE_NAME),
        sampler=_provider.sampler.get_description(),
    )
    return True


def install_for_tests(exporter: SpanExporter, service_name: str = "ledger-test") -> None:
    """Every span from now on goes to ``exporter`` as it ends (a SimpleSpanProcessor), until
    ``uninstall``. Install before the app is created: its HTTP middleware is added only when
    tracing is on."""
    _install(SimpleSpanProcessor(exporter), service_name)


def uninstall() -> None:
    """Back to no tracing: the instrumentations removed, the processor flushed and shut down."""
    processor, _relay.processor = _relay.processor, None
    if processor is None:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().uninstrument()
    processor.shutdown()


def enabled() -> bool:
    return _relay.processor is not None


def _install(processor: SpanProcessor, service_name: str) -> None:
    # Imported here, like the exporter and the HTTP middleware: a process that does not trace
    # does not load them.
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    global _provider
    if _relay.processor is not None:
        raise RuntimeError("tracing is already installed in this process")
    if _provider is None:
        named = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
        provider = TracerProvider(resource=Resource.create(named))
        # Before any tracer exists: each takes the provider's sampler when it is made.
        provider.sampler = _Sampler(_relay, provider.sampler)
        provider.add_span_processor(_relay)
        trace.set_tracer_provider(provider)
        _provider = provider
    _relay.processor = processor
    # Parameters never: they are cell values (asset ids, grant codes) and token hashes.
    AsyncPGInstrumentor(capture_parameters=False).instrument(tracer_provider=_provider)  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument(tracer_provider=_provider)


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (a request's, when an import is recorded),
    or None when tracing is off. A trace the sampler dropped is named too, so that the worker
    drops its spans alike."""
    if not enabled():
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get(TRACEPARENT)


def parent_context(traceparent: str | None) -> Context | None:
    """The context a stored ``traceparent`` names, for a span that continues its trace (None:
    none stored, or not a valid one, and the span starts a trace of its own)."""
    if not traceparent:
        return None
    context = _W3C.extract({TRACEPARENT: traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def http_app(app: ASGIApp) -> ASGIApp:
    """``app`` inside Litestar's OpenTelemetry middleware when tracing is on (``app`` itself
    otherwise): a server span per HTTP request, continuing a ``traceparent`` the client sent,
    and named ``METHOD /route/{template}``. Wrap the outermost handler, so that the span covers
    routing, the access log and the body deadlines too."""
    if not enabled():
        return app
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryInstrumentationMiddleware

    config = OpenTelemetryConfig(
        tracer_provider=_provider,
        # Litestar names the span by the raw path; the route is known only after routing.
        scope_span_details_extractor=_method_only,
        # A span per ASGI message would be thousands for one upload.
        exclude_spans=["receive", "send"],
    )
    return OpenTelemetryInstrumentationMiddleware(_RouteNames(app), config)


def _method_only(scope: Scope) -> tuple[str, dict[str, Any]]:
    return str(scope.get("method") or scope["type"]), {}


class _RouteNames:
    """Inside the OpenTelemetry middleware: once routing has happened (when the response
    starts, or when the app ends without one), names the server span by the route template and
    puts the template where the raw path and query were."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        if scope["type"] != ScopeType.HTTP or not span.is_recording():
            await self.app(scope, receive, send)
            return
        named = False

        def name() -> None:
            nonlocal named
            if not named:
                named = True
                _name_by_route(span, scope)

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                name()  # before the middleware ends the span with the response's last body
            await send(message)

        try:
            await self.app(scope, receive, send_named)
        finally:
            name()


def _name_by_route(span: trace.Span, scope: Scope) -> None:
    method = str(scope.get("method", ""))
    template = scope.get("path_template")
    span.update_name(f"{method} {template}" if template else method)
    if template:
        span.set_attribute("http.route", template)
    recorded: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    for key in _PATH_ATTRIBUTES:
        if key in recorded:
            span.set_attribute(key, template or UNMATCHED)
    for key in _URL_ATTRIBUTES:
        if key in recorded:
            parts = urlsplit(str(recorded[key]))
            span.set_attribute(key, urlunsplit((parts.scheme, parts.netloc, template or "", "", "")))
    for key in _QUERY_ATTRIBUTES:
        if key in recorded:
            span.set_attribute(key, "")
