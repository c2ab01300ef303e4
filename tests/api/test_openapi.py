"""The OpenAPI schema says what the service answers: our Error shape for every error, the bearer
scheme wherever a token is needed, the upload's form, and the real types of the answers.

The schema is read from an app built without a database (no request is served), for every
operation the app has: a route added later is held to the same rules.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.api.app import create_app
from ledger.api.auth import PUBLIC_PATHS
from ledger.config import Settings
from ledger.testing.checkout import POLICIES_DIR

_PUBLIC = re.compile("|".join(PUBLIC_PATHS))
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        app = create_app(Settings(home=Path(home), policies_dir=POLICIES_DIR), "postgresql://127.0.0.1/unused")
        document: dict[str, Any] = json.loads(json.dumps(app.openapi_schema.to_schema()))
        return document


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in _METHODS:
                yield method.upper(), path, operation


def test_the_error_component_is_our_shape(schema: dict[str, Any]) -> None:
    error = schema["components"]["schemas"]["Error"]
    assert error["type"] == "object" and error["required"] == ["code", "message"]
    assert error["properties"]["code"]["type"] == "string"
    assert error["properties"]["message"]["type"] == "string"
    assert error["properties"]["problems"]["type"] == "array"


def test_every_error_an_operation_documents_is_an_error(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        errors = {status: r for status, r in operation["responses"].items() if status >= "400"}
        for status, response in errors.items():
            if (method, path, status) == ("GET", "/health/ready", "503"):
                continue  # readiness answers its own report, documented as such below
            content = response.get("content", {})
            assert list(content) == ["application/json"], (method, path, status)
            assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path)
        # Litestar's own error shape ({status_code, detail, extra}) appears nowhere.
        assert "status_code" not in json.dumps(operation), (method, path)


def test_protected_operations_need_the_bearer_token_and_say_what_it_can_answer(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    seen_public = 0
    for method, path, operation in operations(schema):
        if _PUBLIC.match(path):
            seen_public += 1
            assert "security" not in operation, (method, path)
            assert not {"401", "403", "429"} & set(operation["responses"]), (method, path)
            continue
        assert operation["security"] == [{"bearer": []}], (method, path)
        responses = operation["responses"]
        assert {"401", "429", "503"} <= set(responses), (method, path)
        assert "WWW-Authenticate" in responses["401"]["headers"]
        assert "Retry-After" in responses["429"]["headers"]
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in responses, (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        # Who may call it, for people reading the page.
        assert "Roles: " in operation["description"], (method, path)
    assert seen_public >= 2  # /health/live and /health/ready


def test_the_routes_that_raise_them_document_409_413_415_and_507(schema: dict[str, Any]) -> None:
    responses = {(m, p): set(op["responses"]) for m, p, op in operations(schema)}
    assert {"409", "413", "422", "429", "507"} <= responses[("POST", "/imports")]
    assert "409" in responses[("DELETE", "/imports/{task_id}")]
    for action in ("resubmit", "dismiss"):
        assert {"409", "413", "415", "422"} <= responses[("POST", f"/quarantine/{{item_id}}/{action}")]
    assert {"413", "415", "422"} <= responses[("POST", "/quarantine/bulk")]
    assert "409" in responses[("POST", "/tokens/{token_id}/rotate")]


def test_the_upload_documents_its_form(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/imports"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]
    assert operation["requestBody"]["required"] is True
    body = form["schema"]
    assert body["required"] == ["file"]
    assert body["properties"]["file"] == {**body["properties"]["file"], "type": "string", "format": "binary"}
    assert {"file", "policy", "lab", "dry_run", "encoding", "sheet"} <= set(body["properties"])
    assert form["encoding"]["file"]["contentType"] == "application/octet-stream"
    headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
    assert headers["Idempotency-Key"]["schema"]["maxLength"] == 200
    for status in ("200", "202"):
        accepted = operation["responses"][status]["content"]["application/json"]["schema"]
        assert accepted == {"$ref": "#/components/schemas/Accepted"}, status


def test_answers_are_documented_with_their_real_types(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    ready = paths["/health/ready"]["get"]["responses"]
    for status in ("200", "503"):
        assert ready[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Readiness"}
    streams = {
        ("/imports/{task_id}/errors", "text/csv"),
        ("/quarantine/export.csv", "text/csv"),
        ("/audit/export", "application/x-ndjson"),
    }
    for path, media_type in streams:
        content = paths[path]["get"]["responses"]["200"]["content"]
        assert content == {media_type: {"schema": {"type": "string"}}}, path
    events = paths["/imports/{task_id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    assert events["schema"]["properties"]["data"]["contentMediaType"] == "application/json"
    # No answer is left as Litestar's untyped JSON object where a type exists.
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            for media_type, content in response.get("content", {}).items():
                assert content.get("schema") not in ({}, None), (method, path, status, media_type)


def test_integer_bounds_are_exact(schema: dict[str, Any]) -> None:
    """Litestar writes them as floats: 2**63 - 1 became 2**63, which the parameter refuses."""
    for method, path, operation in operations(schema):
        for parameter in operation.get("parameters", ()):
            for bound in ("maximum", "minimum"):
                value = parameter["schema"].get(bound)
                assert value is None or isinstance(value, int), (method, path, parameter["name"], value)
                assert value is None or -(2**63) <= value <= 2**63 - 1


def test_json_bodies_are_closed_and_free_of_control_characters(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for name in ("BulkBody", "BulkFilter", "DismissBody", "ResubmitBody"):
        body = components[name]
        assert body["additionalProperties"] is False, name
        for prop, spec in body["properties"].items():
            for option in spec.get("oneOf", [spec]):
                if option.get("type") == "string":
                    assert option["pattern"] == "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*$", (name, prop)
    values = components["ResubmitBody"]["properties"]["values"]
    assert values["propertyNames"]["pattern"] and values["additionalProperties"]["pattern"]
