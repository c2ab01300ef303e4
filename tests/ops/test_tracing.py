"""Traces (issue #18, part 3), read from the SDK's in-memory exporter and from a local OTLP
receiver.

- test_one_import_is_one_trace: an upload through the API and its in-process worker is one
  trace: the request's span named by its route template, the worker's ``import`` span under it
  (across the queue, through imports.trace_context), every stage under that, the projection
  linked to it; the database calls are spans with their SQL and none of its parameters (no cell
  value in any attribute), no span holds a raw path, and the log lines carry the trace id. Then
  a refused manifest: its ``import`` span is an error with the code and the exception.
- test_otlp_export_when_an_endpoint_is_set / test_nothing_without_an_endpoint: ``configure``
  exports over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, and without it installs nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ledger.logs import configure_logging
from ledger.telemetry import tracing
from ledger.testing import HEADER, Api, manifest

# A cell value no span may hold: the asset ids (and grant codes) of the manifest.
SECRET = "QZXTRACE"
ROWS = [f"{SECRET}-{i:03d},NIH-R01{SECRET}{i},equipment,{i},CHM-204,2024-01-15,,,10.00,Item {i}" for i in range(1, 6)]
BAD_ROW = f"{SECRET}-BAD,NOT-A-GRANT,equipment,1,CHM-204,2024-01-15,,,10.00,Quarantined"
STAGES = ("parse_validate", "stage", "decide", "finalize")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span, as it ends, until the test is over (request it before ``api``)."""
    exporter = InMemorySpanExporter()
    tracing.install_for_tests(exporter)
    try:
        yield exporter
    finally:
        tracing.uninstall()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The service's real log configuration, its lines written here."""
    saved = structlog.get_config()
    levels = {name: logging.getLogger(name).level for name in ("alembic", "httpx")}
    out = io.StringIO()
    configure_logging("info")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    try:
        yield out
    finally:
        structlog.configure(**saved)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _hex(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain: list[ReadableSpan] = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


def _values(span: ReadableSpan) -> list[str]:
    """Every text a span exports: its name, attributes, events' and links' attributes."""
    texts = [span.name, *(str(v) for v in (span.attributes or {}).values())]
    for event in span.events:
        texts += [event.name, *(str(v) for v in (event.attributes or {}).values())]
    for link in span.links:
        texts += [str(v) for v in (link.attributes or {}).values()]
    return texts


async def _finished(
    exporter: InMemorySpanExporter, awaited: Callable[[ReadableSpan], bool], within: float = 10.0
) -> Sequence[ReadableSpan]:
    """The spans so far, once one that is ``awaited`` has ended: a request's span ends once its
    response is sent, maybe after the client has it; the projector's, after the rows it applied
    are visible."""
    deadline = asyncio.get_running_loop().time() + within
    while not any(awaited(s) for s in exporter.get_finished_spans()):
        assert asyncio.get_running_loop().time() < deadline, f"the span awaited has not ended after {within}s"
        await asyncio.sleep(0.02)
    return exporter.get_finished_spans()


def _unrouted(span: ReadableSpan) -> bool:
    return span.kind == trace.SpanKind.SERVER and "http.route" not in (span.attributes or {})


async def test_one_import_is_one_trace(spans: InMemorySpanExporter, json_logs: io.StringIO, api: Api) -> None:
    response = await api.submit(manifest(*ROWS, BAD_ROW))
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    status = await api.wait(task_id)
    assert (status["status"], status["rows_committed"], status["rows_quarantined"]) == ("done", 5, 1)
    finished = await _finished(spans, lambda s: s.name == "projection" and bool(s.links))
    by_id = {s.context.span_id: s for s in finished if s.context is not None}

    # The request: a server span named by its route, whose trace the import continues.
    (post,) = [s for s in finished if s.kind == trace.SpanKind.SERVER and s.name == "POST /imports"]
    assert post.attributes is not None and post.attributes["http.route"] == "/imports"
    (job,) = [s for s in finished if s.name == "import"]
    assert job.kind == trace.SpanKind.CONSUMER
    assert _hex(job)[0] == _hex(post)[0]
    assert post in _ancestors(job, by_id)
    assert job.attributes is not None
    assert job.attributes["ledger.task_id"] == task_id and job.attributes["ledger.lab"] == "chem-lab"
    assert (job.attributes["ledger.rows_committed"], job.attributes["ledger.rows_quarantined"]) == (5, 1)
    assert job.attributes["ledger.status"] == "done" and job.status.is_ok

    # Every stage, under the import.
    for name in STAGES:
        found = [s for s in finished if s.name == name]
        assert found, f"no {name!r} span"
        assert all(job in _ancestors(s, by_id) for s in found), name
    (projection,) = [s for s in finished if s.name == "projection" and s.links]
    assert [link.context.span_id for link in projection.links] == [job.context.span_id]  # type: ignore[union-attr]

    # The database calls: under a request or an import, with their SQL and not its parameters.
    queries = [s for s in finished if (s.attributes or {}).get("db.system") == "postgresql"]
    assert any(job in _ancestors(q, by_id) for q in queries)
    assert any(post in _ancestors(q, by_id) for q in queries)
    assert all(q.parent is not None for q in queries)  # a heartbeat or a queue poll traces nothing
    assert any("$1" in str((q.attributes or {}).get("db.statement")) for q in queries)
    assert not [q for q in queries if "db.statement.parameters" in (q.attributes or {})]
    leaks = [(s.name, text) for s in finished for text in _values(s) if SECRET in text]
    assert not leaks, leaks

    # Polling GET /imports/{task_id}: named by the template; the id is in no request span.
    polls = [s for s in finished if s.kind == trace.SpanKind.SERVER and s.name == "GET /imports/{task_id}"]
    assert polls
    assert not [text for s in polls for text in _values(s) if task_id in text]

    # A path no route has: the span is named by the method alone, and holds no part of the path.
    spans.clear()
    assert (await api.get(f"/no/such/{task_id}")).status_code == 404
    (unmatched,) = [s for s in await _finished(spans, _unrouted) if _unrouted(s)]
    assert unmatched.name == "GET" and unmatched.attributes is not None
    assert unmatched.attributes["http.target"] == "unmatched" and not [t for t in _values(unmatched) if "such" in t]

    # The log lines inside the request and the import carry their trace and span ids.
    lines = [json.loads(text) for text in json_logs.getvalue().splitlines()]
    (done,) = [line for line in lines if line["event"] == "import_done"]
    assert (done["trace_id"], done["span_id"]) == _hex(job)
    (request,) = [line for line in lines if line["event"] == "http_request" and line["route"] == "/imports"]
    assert (request["trace_id"], request["span_id"]) == _hex(post)

    # A refused manifest: the import's span is an error, with the exception and the code.
    spans.clear()
    status = await api.run(manifest(ROWS[0] + ",x", header=HEADER + ",room_temperature"))
    assert (status["status"], status["error"]["code"]) == ("failed", "schema_drift")
    (job,) = [s for s in await _finished(spans, lambda s: s.name == "import") if s.name == "import"]
    assert (job.status.status_code, job.status.description) == (trace.StatusCode.ERROR, "schema_drift")
    assert job.attributes is not None and job.attributes["ledger.error_code"] == "schema_drift"
    assert [event.name for event in job.events] == ["exception"]
    (parse,) = [s for s in spans.get_finished_spans() if s.name == "parse_validate"]
    assert parse.status.status_code == trace.StatusCode.ERROR  # where it was raised


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector's trace endpoint: keeps each request's path and spans' names."""

    received: list[tuple[str, list[str], dict[str, Any]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            names = [s.name for scope in resource_spans.scope_spans for s in scope.spans]
            self.received.append((self.path, names, resource))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, list[str], dict[str, Any]]]]]:
    received: list[tuple[str, list[str], dict[str, Any]]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    tracing.uninstall()


def test_otlp_export_when_an_endpoint_is_set(
    otel_env: pytest.MonkeyPatch, collector: tuple[str, list[tuple[str, list[str], dict[str, Any]]]]
) -> None:
    endpoint, received = collector
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    assert tracing.configure(tracing.WORKER_SERVICE)
    assert tracing.enabled()
    with trace.get_tracer(__name__).start_as_current_span("probe"):
        assert tracing.traceparent() is not None
    tracing.uninstall()  # flushes the batch
    assert [(path, names) for path, names, _ in received] == [("/v1/traces", ["probe"])]
    assert received[0][2]["service.name"]  # the process's (fixed by its first install)


def test_nothing_without_an_endpoint(
    otel_env: pytest.MonkeyPatch, collector: tuple[str, list[tuple[str, list[str], dict[str, Any]]]]
) -> None:
    _, received = collector
    assert not tracing.configure(tracing.API_SERVICE)
    assert not tracing.enabled()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    assert tracing.http_app(app) is app  # no middleware at all
    with trace.get_tracer(__name__).start_as_current_span("probe") as span:
        assert not span.is_recording()
        assert tracing.traceparent() is None
    assert received == []
