"""Who may call what: every route of the app, taken from the app itself, against every kind of
caller, in one table.

``MATRIX`` has a row per route and HTTP method (the OPTIONS answers Litestar makes up for
every path aside): the status each caller gets, a request that really succeeds for the callers
allowed (a real import of lab A with quarantined rows, valid bodies, a fresh resource for each
case of a destructive route), and a malformed variant of that request. The callers are no
token, an invalid, an expired and a revoked token, the three roles that act for every lab, a
lab manager of lab A (which owns every import, row, item, asset and upload the requests name)
and one of lab B. The API is called with each caller's bearer token; the pages under /ui/ with
a browser session signed in with it (the expired and revoked callers' sessions outlived their
tokens; the invalid caller's cookie names no session); the sign-in form is sent the token.

- test_every_route_has_a_row: a route the app serves without a row fails, naming it; so does
  a row naming a route the app no longer has, and a row with no malformed request for a route
  that takes parameters or a body and refuses someone.
- test_matrix: each route as each caller. A 404 to a caller lab A's manager would get an
  answer from must be exactly what an id that does not exist gets (another lab's records, and
  another token's uploads, are not told apart from unknown ones), and what lab B's manager may
  read must hold nothing of lab A.
- test_api_sessions_need_csrf: the API also takes the pages' session cookie; a request that
  changes something on its authority without the session's X-CSRF-Token is refused (403
  csrf_failed), the admin's too.
- test_role_is_checked_before_parameters: the malformed request is still refused for every
  caller refused for its token, session or role (the guards run before parameters and bodies
  are read), while an admin gets the 400/404/412/422 that shows the request really is malformed.

Adding a route: add its row (who may call it, a request that succeeds, a malformed variant).
"""

from __future__ import annotations

import base64
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from litestar import Litestar
from litestar.routes import ASGIRoute, HTTPRoute, WebSocketRoute

from ledger.config import Settings
from ledger.core import roles
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.pool import Conn, connect
from ledger.db.tokens import create_token
from ledger.services import sessions
from ledger.services.access import Principal, principal_of
from ledger.testing import Api, manifest, running_api
from ledger.testing.checkout import POLICIES_DIR
from ledger.testing.databases import run_admin, with_database
from ledger.testing.imports import create_import
from ledger.testing.upstream import INVENTORY_MAP

if TYPE_CHECKING:
    from litestar._kwargs import KwargsModel  # what HTTPRoute.route_handler_map holds

LAB_A = "chem-lab"  # the lab of ledger.testing.TOKENS["manager"]; lab B's is bio-lab ("manager2")

# The callers, in the order of the table's columns.
PRINCIPALS = ("none", "invalid", "expired", "revoked", "admin", "officer", "auditor", "lab_a", "lab_b")
# What the API's 401 says to each caller without a valid token.
UNAUTHENTICATED = {
    "none": "unauthorized",
    "invalid": "unauthorized",
    "expired": "token_expired",
    "revoked": "unauthorized",
}

# Lab A's import: one row it commits, BAD_ROWS it quarantines for an unknown category (one per
# case that resubmits, dismisses or bulk-dismisses an item) and TRANSFER_ROWS whose asset keys
# lab B committed first (quarantined ``other_lab``: one per case that transfers a key).
GOOD_ASSET = "MX-0001"
BAD_ROWS = 64
TRANSFER_ROWS = 24

UNKNOWN_TASK = str(uuid.UUID(int=0x5EED, version=4))
UNKNOWN_ITEM = f"{UNKNOWN_TASK}:2"
UNKNOWN_ASSET = "MX-9999"
UNKNOWN_UPLOAD = str(uuid.UUID(int=0xF00D, version=4))
UNKNOWN_CONNECTOR = "no-such-source"
MATRIX_SOURCE = "matrix-wms"  # lab A's source, registered by its manager
OUT_OF_RANGE = "99999999999999999999999"  # past a BIGINT

TUS = {"Tus-Resumable": "1.0.0"}
UPLOAD_BYTES = manifest(f"{GOOD_ASSET},NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Uploaded")


def tus_metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


# What creates an upload of UPLOAD_BYTES for lab A.
NEW_UPLOAD = {
    **TUS,
    "Upload-Length": str(len(UPLOAD_BYTES)),
    "Upload-Metadata": tus_metadata(filename="m.csv", lab=LAB_A),
}


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Req:
    method: str
    url: str
    params: dict[str, str] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] | None = None
    data: dict[str, str] | None = None


@dataclass(frozen=True)
class Ctx:
    """What the requests name: lab A's records, or (``unknown()``) ids that do not exist."""

    task: str  # lab A's import, done, with quarantined rows
    item: str  # one of its quarantined items, left open
    asset: str  # an asset it committed
    entry: int  # a ledger entry (the asset's)
    upload: str  # an upload lab A's manager began
    connector: str  # a source of lab A's, registered
    fresh_items: Iterator[str]  # its other items quarantined for a bad cell, one per case
    fresh_transfers: Iterator[str]  # its items quarantined as lab B's keys, one per case
    fresh_imports: Iterator[str]  # lab A's imports still queued, one per cancel
    fresh_tokens: Iterator[str]  # token ids, one per revoke or rotate
    fresh_uploads: Iterator[str]  # uploads lab A's manager began, one per PATCH or DELETE
    serial: Iterator[int]  # for manifests, labs and tokens no case has made before

    def unknown(self) -> Ctx:
        return replace(
            self,
            task=UNKNOWN_TASK,
            item=UNKNOWN_ITEM,
            asset=UNKNOWN_ASSET,
            upload=UNKNOWN_UPLOAD,
            connector=UNKNOWN_CONNECTOR,
            fresh_items=itertools.repeat(UNKNOWN_ITEM),
            fresh_transfers=itertools.repeat(UNKNOWN_ITEM),
            fresh_imports=itertools.repeat(UNKNOWN_TASK),
            fresh_uploads=itertools.repeat(UNKNOWN_UPLOAD),
        )

    def new_manifest(self) -> bytes:
        return manifest(f"MX-N{next(self.serial):04d},NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,New")

    def new_lab(self) -> dict[str, str]:
        return {"name": f"matrix-lab-{next(self.serial)}", "title": "Matrix"}


Build = Callable[[Ctx], Req]


def get(url: str, **params: str) -> Build:
    """A GET of ``url`` (formatted with the Ctx's fields) with query ``params``."""
    return lambda c: Req("GET", url.format(c=c), params=params or None)


def as_json(method: str, url: str, body: Any) -> Build:
    return lambda c: Req(method, url.format(c=c), json=body)


def not_json(url: str) -> Build:
    return lambda c: Req("POST", url.format(c=c), content=b"{not json", headers={"Content-Type": "application/json"})


def form(url: str, **fields: str) -> Build:
    """A form post to ``url`` (formatted with the Ctx's fields); its CSRF token is added."""
    return lambda c: Req("POST", url.format(c=c), data=fields)


def tus(method: str, url: str, **headers: str) -> Build:
    return lambda c: Req(method, url.format(c=c), headers={**TUS, **headers})


def submission(c: Ctx) -> Req:
    return Req("POST", "/imports", files={"file": ("m.csv", c.new_manifest(), "text/csv")}, data={"lab": LAB_A})


def source_definition(name: str) -> str:
    """A source of lab A on a port nothing listens on. A sync of it (the matrix starts some, and
    its worker runs them) fails at its first request: one attempt, no waiting, refused at once,
    so it ends within milliseconds and never holds up the worker's stop."""
    return (
        f"""
name = "{name}"
lab = "{LAB_A}"
policy = "lab-inventory"
base_url = "http://127.0.0.1:9"
records = "items"
key = "id"
attempts = 1
max_wait_seconds = 0
timeout_seconds = 5

[pagination]
type = "page"
page_size_param = "limit"

"""
        + INVENTORY_MAP
    )


def new_source(c: Ctx) -> Req:
    return Req("POST", "/connectors", json={"definition": source_definition(f"matrix-src-{next(c.serial)}")})


def pull(c: Ctx) -> Req:
    """What `ledger pull` records of a sync that found nothing new, for a source of its own."""
    name = f"matrix-pull-{next(c.serial)}"
    sync = {
        "definition": source_definition(name),
        "status": "ok",
        "records": 0,
        "fetched": 0,
        "skipped": 0,
        "pages": [],
        "errors": [],
        "problems": [],
        "cursor_from": None,
        "cursor_to": None,
        "manifest_sha256": None,
    }
    return Req("POST", f"/connectors/{name}/pulls", json=sync)


def upload_patch(upload: str) -> Req:
    """The first 10 bytes of ``upload``."""
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    return Req("PATCH", f"/uploads/{upload}", content=UPLOAD_BYTES[:10], headers=headers)


# ---------------------------------------------------------------- the table

# How a row's request carries who sends it: the API's bearer token, the pages' session cookie
# (with the session's CSRF token in the form of a POST), or the sign-in form's token field.
BEARER, SESSION, SIGN_IN = "bearer", "session", "sign-in"


@dataclass(frozen=True)
class Malformed:
    """A variant of the row's request with a bad parameter, header or body, and what an admin
    gets."""

    request: Build
    admin: int


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # the route as the app spells it (HTTPRoute.path)
    expect: tuple[int, ...]  # a status per PRINCIPALS
    request: Build
    # None: the route takes no parameter or body (or is public: nobody is refused).
    malformed: Malformed | None
    # For a route whose success status alone does not show it acted: what its answer says.
    effect: Callable[[httpx.Response], bool] | None
    via: str
    # The request ends the session it is sent with: each case gets a session of its own.
    ends_session: bool

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path

    def status(self, who: str) -> int:
        return self.expect[PRINCIPALS.index(who)]

    def refused_before_input(self, who: str) -> bool:
        """Whether ``who`` is refused for who it is (401 for its token, a sign-in redirect or
        401 for its session, 403 for its role), not for what it asked: lab B's manager naming
        lab A (403) shares its role with lab A's; the sign-in form's token is what it asks."""
        status = self.status(who)
        if self.via == SIGN_IN or status == self.status("admin"):
            return False
        if who in ("lab_a", "lab_b"):
            return status == 403 and self.status("lab_a") == self.status("lab_b")
        return status in (401, 403) or (status == 303 and self.via == SESSION and who in UNAUTHENTICATED)


def row(
    method: str,
    path: str,
    expect: tuple[int, ...],
    request: Build,
    malformed: Malformed | None = None,
    effect: Callable[[httpx.Response], bool] | None = None,
    *,
    via: str = BEARER,
    ends_session: bool = False,
) -> Row:
    assert len(expect) == len(PRINCIPALS), (method, path)
    return Row(method, path, expect, request, malformed, effect, via, ends_session)


def body(check: Callable[[Any], bool]) -> Callable[[httpx.Response], bool]:
    return lambda response: check(response.json())


def goes_to(prefix: str) -> Callable[[httpx.Response], bool]:
    return lambda response: response.headers.get("location", "").startswith(prefix)


IMPORT = "/imports/{task_id:str}"
ITEM = "/quarantine/{item_id:str}"
TOKEN = "/tokens/{token_id:str}"
UPLOAD = "/uploads/{upload_id:str}"
CONNECTOR = "/connectors/{name:str}"

# fmt: off
MATRIX: list[Row] = [
    #                                                    none inv  exp  rev  admin off aud  labA labB
    # Public: a token, even a bad one, is not looked at.
    row("GET",    "/health/live",                       (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/health/live")),
    row("GET",    "/health/ready",                      (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/health/ready")),
    # Prometheus scrapes without a token: aggregates only, no id, path or lab in a label.
    row("GET",    "/metrics",                           (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/metrics")),
    row("GET",    "/schema",                            (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/schema")),
    row("GET",    "/schema/swagger",                    (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/schema/swagger")),
    row("GET",    "/schema/redoc",                      (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/schema/redoc")),
    row("GET",    "/schema/openapi.json",               (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/schema/openapi.json")),
    # Litestar's answer for a schema page no render plugin serves.
    row("GET",    "/schema/{path:str}",                 (404, 404, 404, 404, 404, 404, 404, 404, 404),
        get("/schema/no-such-page")),
    row("GET",    "/schema/assets/{file_path:path}",    (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/schema/assets/swagger-init.js")),
    row("HEAD",   "/schema/assets/{file_path:path}",    (200, 200, 200, 200, 200, 200, 200, 200, 200),
        lambda c: Req("HEAD", "/schema/assets/swagger-init.js")),
    # tus clients discover the server before they authenticate.
    row("OPTIONS", "/uploads",                          (204, 204, 204, 204, 204, 204, 204, 204, 204),
        lambda c: Req("OPTIONS", "/uploads")),
    row("OPTIONS", UPLOAD,                              (204, 204, 204, 204, 204, 204, 204, 204, 204),
        lambda c: Req("OPTIONS", f"/uploads/{c.upload}")),

    # Admins: the workers, tokens, labs, signing a checkpoint on demand.
    row("GET",    "/health/workers",                    (401, 401, 401, 401, 200, 403, 403, 403, 403),
        get("/health/workers")),
    row("GET",    "/tokens",                            (401, 401, 401, 401, 200, 403, 403, 403, 403),
        get("/tokens")),
    row("POST",   "/tokens",                            (401, 401, 401, 401, 201, 403, 403, 403, 403),
        as_json("POST", "/tokens", {"role": roles.AUDITOR, "label": "matrix"}),
        Malformed(not_json("/tokens"), admin=400)),
    row("DELETE", TOKEN,                                (401, 401, 401, 401, 200, 403, 403, 403, 403),
        lambda c: Req("DELETE", f"/tokens/{next(c.fresh_tokens)}"),
        Malformed(lambda c: Req("DELETE", "/tokens/not-a-token-id"), admin=404),
        body(lambda b: b["revoked_at"] is not None)),
    row("POST",   TOKEN + "/rotate",                    (401, 401, 401, 401, 201, 403, 403, 403, 403),
        lambda c: Req("POST", f"/tokens/{next(c.fresh_tokens)}/rotate"),
        Malformed(lambda c: Req("POST", "/tokens/not-a-token-id/rotate"), admin=404)),
    # 200: every commit signs its head, so the latest checkpoint already states it (201 when new).
    row("POST",   "/audit/checkpoints",                 (401, 401, 401, 401, 200, 403, 403, 403, 403),
        lambda c: Req("POST", "/audit/checkpoints")),
    row("POST",   "/labs",                              (401, 401, 401, 401, 201, 403, 403, 403, 403),
        lambda c: Req("POST", "/labs", json=c.new_lab()),
        Malformed(not_json("/labs"), admin=400)),

    # Auditors, compliance officers and admins read the chain; lab managers do not.
    row("GET",    "/audit/head",                        (401, 401, 401, 401, 200, 200, 200, 403, 403),
        get("/audit/head")),
    row("GET",    "/audit/verify",                      (401, 401, 401, 401, 200, 200, 200, 403, 403),
        get("/audit/verify")),
    row("GET",    "/audit/public-key",                  (401, 401, 401, 401, 200, 200, 200, 403, 403),
        get("/audit/public-key")),
    row("GET",    "/audit/checkpoints/latest",          (401, 401, 401, 401, 200, 200, 200, 403, 403),
        get("/audit/checkpoints/latest")),
    row("GET",    "/audit/checkpoints",                 (401, 401, 401, 401, 200, 200, 200, 403, 403),
        get("/audit/checkpoints", **{"from": "1"}),
        Malformed(get("/audit/checkpoints", **{"from": "-1"}), admin=400)),
    row("GET",    "/audit/batches/{seq:int}",           (401, 401, 401, 401, 200, 200, 200, 403, 403),
        get("/audit/batches/1"),
        Malformed(get("/audit/batches/" + OUT_OF_RANGE), admin=400)),
    row("GET",    "/audit/proofs/entries/{entry_id:int}", (401, 401, 401, 401, 200, 200, 200, 403, 403),
        get("/audit/proofs/entries/{c.entry}"),
        Malformed(get("/audit/proofs/entries/" + OUT_OF_RANGE), admin=400)),
    row("GET",    "/audit/proofs/consistency",          (401, 401, 401, 401, 200, 200, 200, 403, 403),
        get("/audit/proofs/consistency", **{"from": "1"}),
        Malformed(get("/audit/proofs/consistency"), admin=400)),  # 'from' is required
    row("GET",    "/audit/export",                      (401, 401, 401, 401, 200, 200, 200, 403, 403),
        get("/audit/export"),
        Malformed(get("/audit/export", to="-1"), admin=400)),

    # Every role reads policies, labs, assets, imports and the quarantine; lab managers their
    # labs' only (another lab's record: 404, as an unknown one).
    row("GET",    "/policies",                          (401, 401, 401, 401, 200, 200, 200, 200, 200),
        get("/policies")),
    row("GET",    "/policies/{name:str}",               (401, 401, 401, 401, 200, 200, 200, 200, 200),
        get("/policies/lab-inventory"),
        Malformed(get("/policies/lab%01inventory"), admin=400)),
    row("GET",    "/labs",                              (401, 401, 401, 401, 200, 200, 200, 200, 200),
        get("/labs")),
    row("GET",    "/assets",                            (401, 401, 401, 401, 200, 200, 200, 200, 200),
        get("/assets"),
        Malformed(get("/assets", limit="-1"), admin=400)),
    row("GET",    "/assets/{asset_id:str}/history",     (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/assets/{c.asset}/history"),
        Malformed(get("/assets/{c.asset}/history", grant_code="NIH-\x01"), admin=400)),
    row("GET",    "/imports",                           (401, 401, 401, 401, 200, 200, 200, 200, 200),
        get("/imports"),
        Malformed(get("/imports", limit="-1"), admin=400)),
    row("GET",    IMPORT,                               (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/imports/{c.task}"),
        Malformed(get("/imports/%01"), admin=400)),
    row("GET",    IMPORT + "/rows",                     (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/imports/{c.task}/rows"),
        Malformed(get("/imports/{c.task}/rows", limit="-1"), admin=400)),
    row("GET",    IMPORT + "/errors",                   (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/imports/{c.task}/errors"),
        Malformed(get("/imports/%01/errors"), admin=400)),
    row("GET",    IMPORT + "/events",                   (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/imports/{c.task}/events"),
        Malformed(get("/imports/%01/events"), admin=400)),
    row("GET",    IMPORT + "/accounting",               (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/imports/{c.task}/accounting"),
        Malformed(get("/imports/%01/accounting"), admin=400)),
    row("GET",    IMPORT + "/receipt",                  (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/imports/{c.task}/receipt"),
        Malformed(get("/imports/%01/receipt"), admin=400)),
    row("GET",    "/quarantine",                        (401, 401, 401, 401, 200, 200, 200, 200, 200),
        get("/quarantine"),
        Malformed(get("/quarantine", limit="-1"), admin=400)),
    row("GET",    "/quarantine/export.csv",             (401, 401, 401, 401, 200, 200, 200, 200, 200),
        get("/quarantine/export.csv"),
        Malformed(get("/quarantine/export.csv", status="open\x01"), admin=400)),
    row("GET",    ITEM,                                 (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/quarantine/{c.item}"),
        Malformed(get("/quarantine/{c.task}:" + OUT_OF_RANGE), admin=400)),

    # Lab managers (for their labs: naming another is 403, another's import 404) and admins
    # submit and cancel.
    row("POST",   "/imports",                           (401, 401, 401, 401, 202, 403, 403, 202, 403),
        submission,
        Malformed(lambda c: Req("POST", "/imports", content=b"file=x", headers={"Content-Type": "text/plain"}),
                  admin=422)),
    row("DELETE", IMPORT,                               (401, 401, 401, 401, 200, 403, 403, 200, 404),
        lambda c: Req("DELETE", f"/imports/{next(c.fresh_imports)}"),
        Malformed(lambda c: Req("DELETE", "/imports/%01"), admin=400),
        body(lambda b: b["status"] == "cancelled")),
    # Resumable uploads (tus): who submits may upload; an upload is its creator's (another
    # token, an admin's too, gets 404 as for an unknown upload).
    row("POST",   "/uploads",                           (401, 401, 401, 401, 201, 403, 403, 201, 403),
        lambda c: Req("POST", "/uploads", headers=NEW_UPLOAD),
        Malformed(lambda c: Req("POST", "/uploads", headers={**NEW_UPLOAD, "Tus-Resumable": "0.2"}), admin=412),
        goes_to("/uploads/")),
    row("HEAD",   UPLOAD,                               (401, 401, 401, 401, 404, 403, 403, 200, 404),
        tus("HEAD", "/uploads/{c.upload}"),
        Malformed(tus("HEAD", "/uploads/%01"), admin=400)),
    row("PATCH",  UPLOAD,                               (401, 401, 401, 401, 404, 403, 403, 204, 404),
        lambda c: upload_patch(next(c.fresh_uploads)),
        Malformed(lambda c: upload_patch("%01"), admin=400),
        lambda r: r.headers["Upload-Offset"] == "10"),
    row("DELETE", UPLOAD,                               (401, 401, 401, 401, 404, 403, 403, 204, 404),
        lambda c: Req("DELETE", f"/uploads/{next(c.fresh_uploads)}", headers=TUS),
        Malformed(tus("DELETE", "/uploads/%01"), admin=400)),

    # Compliance officers and admins decide quarantined rows; lab managers and auditors do not.
    row("POST",   "/quarantine/bulk",                   (401, 401, 401, 401, 200, 200, 403, 403, 403),
        lambda c: Req("POST", "/quarantine/bulk",
                      json={"action": "dismiss", "ids": [next(c.fresh_items)], "reason": "matrix"}),
        Malformed(not_json("/quarantine/bulk"), admin=400),
        body(lambda b: (b["acted"], b["items"][0]["result"]) == (1, "dismissed"))),
    row("POST",   ITEM + "/resubmit",                   (401, 401, 401, 401, 200, 200, 403, 403, 403),
        lambda c: Req("POST", f"/quarantine/{next(c.fresh_items)}/resubmit",
                      json={"values": {"category": "equipment"}, "note": "matrix"}),
        Malformed(as_json("POST", "/quarantine/{c.task}:" + OUT_OF_RANGE + "/resubmit", {"values": {}}), admin=400),
        body(lambda b: (b["result"], b["outcome"]) == ("resolved", "committed"))),
    row("POST",   ITEM + "/transfer",                   (401, 401, 401, 401, 200, 200, 403, 403, 403),
        lambda c: Req("POST", f"/quarantine/{next(c.fresh_transfers)}/transfer",
                      json={"note": "matrix: moved to lab A", "values": {}}),
        Malformed(as_json("POST", "/quarantine/{c.task}:" + OUT_OF_RANGE + "/transfer", {"note": "x"}), admin=400),
        body(lambda b: (b["result"], b["outcome"]) == ("resolved", "committed"))),
    row("POST",   ITEM + "/dismiss",                    (401, 401, 401, 401, 200, 200, 403, 403, 403),
        lambda c: Req("POST", f"/quarantine/{next(c.fresh_items)}/dismiss", json={"reason": "matrix"}),
        Malformed(as_json("POST", "/quarantine/{c.task}:" + OUT_OF_RANGE + "/dismiss", {"reason": "x"}), admin=400),
        body(lambda b: b["result"] == "dismissed")),

    # Connectors: every role reads sources (lab managers their labs': another lab's is 404, as
    # an unknown one); lab managers (for their labs: a definition naming another is 403) and
    # admins register and record pulls; officers and admins start a sync now.
    row("GET",    "/connectors",                        (401, 401, 401, 401, 200, 200, 200, 200, 200),
        get("/connectors")),
    row("GET",    CONNECTOR,                            (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/connectors/{c.connector}"),
        Malformed(get("/connectors/%01"), admin=400)),
    row("GET",    CONNECTOR + "/syncs",                 (401, 401, 401, 401, 200, 200, 200, 200, 404),
        get("/connectors/{c.connector}/syncs", limit="5"),
        Malformed(get("/connectors/{c.connector}/syncs", limit="0"), admin=400)),
    row("POST",   "/connectors",                        (401, 401, 401, 401, 201, 403, 403, 201, 403),
        new_source,
        Malformed(not_json("/connectors"), admin=400),
        body(lambda b: b["lab"] == LAB_A and b["name"].startswith("matrix-src-"))),
    row("POST",   CONNECTOR + "/syncs",                 (401, 401, 401, 401, 202, 202, 403, 403, 403),
        lambda c: Req("POST", f"/connectors/{c.connector}/syncs"),
        Malformed(lambda c: Req("POST", "/connectors/%01/syncs"), admin=400),
        body(lambda b: b["connector"] == MATRIX_SOURCE)),
    row("POST",   CONNECTOR + "/pulls",                 (401, 401, 401, 401, 201, 403, 403, 201, 403),
        pull,
        Malformed(not_json("/connectors/{c.connector}/pulls"), admin=400),
        body(lambda b: (b["origin"], b["status"], b["task_id"]) == ("client", "ok", None))),

    # The pages: public files and sign-in; then, with a session, the sections of ledger.web.nav.
    # No session: a GET is sent to sign in (303), a POST answered 401; a role a section does
    # not admit gets 403.
    row("GET",    "/",                                  (302, 302, 302, 302, 302, 302, 302, 302, 302),
        get("/"), via=SESSION),
    row("GET",    "/ui/static/{file_path:path}",        (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/ui/static/ui.css"), via=SESSION),
    row("HEAD",   "/ui/static/{file_path:path}",        (200, 200, 200, 200, 200, 200, 200, 200, 200),
        lambda c: Req("HEAD", "/ui/static/ui.css"), via=SESSION),
    row("GET",    "/ui/sign-in",                        (200, 200, 200, 200, 200, 200, 200, 200, 200),
        get("/ui/sign-in"), via=SESSION),
    row("POST",   "/ui/sign-in",                        (401, 401, 401, 401, 303, 303, 303, 303, 303),
        form("/ui/sign-in"), via=SIGN_IN, effect=goes_to("/ui/")),
    # Signing out needs the CSRF token of a session or of the sign-in form: a browser with
    # neither cookie is refused (403 csrf_failed); an ended session signs out all the same.
    row("POST",   "/ui/sign-out",                       (403, 303, 303, 303, 303, 303, 303, 303, 303),
        form("/ui/sign-out"), via=SESSION, ends_session=True, effect=goes_to("/ui/sign-in")),
    row("GET",    "/ui",                                (303, 303, 303, 303, 200, 200, 200, 200, 200),
        get("/ui"), via=SESSION),
    row("GET",    "/ui/imports",                        (303, 303, 303, 303, 200, 200, 200, 200, 200),
        get("/ui/imports"),
        Malformed(get("/ui/imports", cursor="not-a-cursor"), admin=422), via=SESSION),
    row("GET",    "/ui/imports/new",                    (303, 303, 303, 303, 200, 403, 403, 200, 200),
        get("/ui/imports/new"), via=SESSION),
    row("GET",    "/ui/imports/{task_id:str}",          (303, 303, 303, 303, 200, 200, 200, 200, 404),
        get("/ui/imports/{c.task}"),
        Malformed(get("/ui/imports/not-a-task-id"), admin=404), via=SESSION),
    row("POST",   "/ui/imports/{task_id:str}/cancel",   (401, 401, 401, 401, 303, 403, 403, 303, 404),
        lambda c: Req("POST", f"/ui/imports/{next(c.fresh_imports)}/cancel", data={}),
        Malformed(form("/ui/imports/not-a-task-id/cancel"), admin=404), via=SESSION,
        effect=goes_to("/ui/imports/")),
    # The quarantine queue and its items: every role reads (lab managers their labs'); officers
    # and admins decide, as with the API's /quarantine.
    row("GET",    "/ui/quarantine",                     (303, 303, 303, 303, 200, 200, 200, 200, 200),
        get("/ui/quarantine", status="open"),
        Malformed(get("/ui/quarantine", status="sideways"), admin=422), via=SESSION),
    row("GET",    "/ui/quarantine/{item_id:str}",       (303, 303, 303, 303, 200, 200, 200, 200, 404),
        get("/ui/quarantine/{c.item}"),
        Malformed(get("/ui/quarantine/{c.task}:" + OUT_OF_RANGE), admin=404), via=SESSION),
    row("POST",   "/ui/quarantine/bulk",                (401, 401, 401, 401, 200, 200, 403, 403, 403),
        lambda c: Req("POST", "/ui/quarantine/bulk",
                      data={"ids": next(c.fresh_items), "step": "dismiss", "reason": "matrix"}),
        Malformed(form("/ui/quarantine/bulk", step="dismiss", all="true", reason="x", **{"filter.task_id": "x"}),
                  admin=422), via=SESSION,
        effect=lambda r: "Dismissed 1 of 1 item(s)" in r.text),
    row("POST",   "/ui/quarantine/{item_id:str}/resubmit", (401, 401, 401, 401, 200, 200, 403, 403, 403),
        lambda c: Req("POST", f"/ui/quarantine/{next(c.fresh_items)}/resubmit",
                      data={"value.category": "equipment", "note": "matrix"}),
        Malformed(form("/ui/quarantine/{c.task}:" + OUT_OF_RANGE + "/resubmit", note="x"), admin=404), via=SESSION,
        effect=lambda r: "Committed to the ledger" in r.text),
    row("POST",   "/ui/quarantine/{item_id:str}/transfer", (401, 401, 401, 401, 200, 200, 403, 403, 403),
        lambda c: Req("POST", f"/ui/quarantine/{next(c.fresh_transfers)}/transfer",
                      data={"note": "matrix: moved to lab A"}),
        Malformed(form("/ui/quarantine/{c.task}:" + OUT_OF_RANGE + "/transfer", note="x"), admin=404), via=SESSION,
        effect=lambda r: "Transferred to " + LAB_A in r.text),
    row("POST",   "/ui/quarantine/{item_id:str}/dismiss", (401, 401, 401, 401, 200, 200, 403, 403, 403),
        lambda c: Req("POST", f"/ui/quarantine/{next(c.fresh_items)}/dismiss", data={"reason": "matrix"}),
        Malformed(form("/ui/quarantine/{c.task}:" + OUT_OF_RANGE + "/dismiss", reason="x"), admin=404), via=SESSION,
        effect=lambda r: ">Dismissed</h2>" in r.text),
    # The auditor's page: the API's auditors (not lab managers).
    row("GET",    "/ui/audit",                          (303, 303, 303, 303, 200, 200, 200, 403, 403),
        lambda c: Req("GET", "/ui/audit", params={"asset_id": c.asset}),
        Malformed(get("/ui/audit", asset_id="a\x01b"), admin=400), via=SESSION),
    row("GET",    "/ui/audit/verify",                   (303, 303, 303, 303, 200, 200, 200, 403, 403),
        get("/ui/audit/verify"), via=SESSION),
    row("GET",    "/ui/audit/verification",             (303, 303, 303, 303, 200, 200, 200, 403, 403),
        get("/ui/audit/verification"), via=SESSION),
    row("GET",    "/ui/tokens",                         (303, 303, 303, 303, 200, 403, 403, 403, 403),
        get("/ui/tokens"), via=SESSION),
    row("POST",   "/ui/tokens",                         (401, 401, 401, 401, 201, 403, 403, 403, 403),
        form("/ui/tokens", role=roles.AUDITOR, label="matrix"),
        Malformed(form("/ui/tokens", role="no-such-role"), admin=422), via=SESSION,
        effect=lambda r: "ldg_" in r.text),
    row("POST",   "/ui/tokens/{token_id:str}/revoke",   (401, 401, 401, 401, 303, 403, 403, 403, 403),
        lambda c: Req("POST", f"/ui/tokens/{next(c.fresh_tokens)}/revoke", data={}),
        Malformed(form("/ui/tokens/not-a-token-id/revoke"), admin=404), via=SESSION,
        effect=goes_to("/ui/tokens")),
]
# fmt: on


# ---------------------------------------------------------------- the routes of the app


def _made_up_options(handler: Any) -> bool:
    """The OPTIONS handler Litestar adds to every path that has none of its own."""
    return "create_options_handler" in getattr(handler.fn, "__qualname__", "")


def _takes_input(kwargs: KwargsModel) -> bool:
    """Whether a handler reads parameters (path, query, header, cookie, its dependencies'
    included) or a decoded body."""
    return bool(
        kwargs.expected_path_params
        or kwargs.expected_query_params
        or kwargs.expected_header_params
        or kwargs.expected_cookie_params
        or "data" in kwargs.expected_reserved_kwargs
    )


def app_routes(app: Litestar) -> dict[tuple[str, str], bool]:
    """(method, path) of every handler the app serves, and whether it takes input."""
    found: dict[tuple[str, str], bool] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for method, (handler, kwargs) in route.route_handler_map.items():
                if not _made_up_options(handler):
                    found[(method, route.path)] = _takes_input(kwargs)
        elif isinstance(route, WebSocketRoute):
            found[("WEBSOCKET", route.path)] = True
        elif isinstance(route, ASGIRoute):
            found[("ASGI", route.path)] = True
        else:  # pragma: no cover - a new kind of route needs a rule here
            found[(type(route).__name__, route.path)] = True
    return found


# ---------------------------------------------------------------- the app, shared by the cases


@dataclass
class Caller:
    token: str | None  # its bearer token (None: it sends none)
    principal: Principal | None  # who its token speaks for, to start sessions with
    session: str | None  # the cookie secret of its standing session


@dataclass
class Matrix:
    api: Api
    conn: Conn
    ctx: Ctx
    callers: dict[str, Caller]

    async def _session(self, who: str, fresh: bool) -> str | None:
        caller = self.callers[who]
        if not fresh or caller.principal is None:
            return caller.session
        secret, _ = await sessions.start(self.conn, caller.principal, 1)
        return secret

    async def send(self, req: Req, who: str, r: Row) -> httpx.Response:
        caller = self.callers[who]
        headers, data = dict(req.headers), req.data
        if r.via == BEARER and caller.token is not None:
            headers["Authorization"] = f"Bearer {caller.token}"
        elif r.via == SESSION:
            secret = await self._session(who, r.ends_session)
            if secret is not None:
                headers["Cookie"] = f"{sessions.SESSION_COOKIE}={secret}"
            if data is not None:
                data = {**data, sessions.CSRF_FIELD: "" if secret is None else sessions.csrf_token_of(secret)}
        elif r.via == SIGN_IN:
            # A browser that has the sign-in page (and its cookie) sends the caller's token.
            presession = sessions.new_secret()
            headers["Cookie"] = f"{sessions.PRESESSION_COOKIE}={presession}"
            data = {
                **(data or {}),
                "token": caller.token or "",
                sessions.CSRF_FIELD: sessions.csrf_token_of(presession),
            }
        try:
            return await self.api.client.request(
                req.method,
                req.url,
                params=req.params,
                json=req.json,
                content=req.content,
                files=req.files,
                data=data,
                headers=headers,
                follow_redirects=False,
            )
        finally:
            # Each case is one browser: what the app set (a session, a sign-in cookie) goes.
            self.api.client.cookies.clear()


async def _lab_a_import(api: Api) -> tuple[str, list[str], list[str]]:
    """Lab A's import (its task id), its items quarantined for a bad cell and those quarantined
    because lab B holds their keys."""
    keys = [f"MX-T{i:03d},NSF-CHE2201234,equipment,1,BIO-1120,2024-01-15,,,10.00,Held" for i in range(TRANSFER_ROWS)]
    theirs = await api.run(manifest(*keys), role="manager2")
    assert theirs["status"] == "done" and theirs["rows_committed"] == TRANSFER_ROWS, theirs
    good = f"{GOOD_ASSET},NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"
    bad = [f"MX-B{i:03d},NIH-R01GM1,gadget,1,CHM-204,2024-01-15,,,10.00,Gadget" for i in range(BAD_ROWS)]
    mine = await api.run(manifest(good, *bad, *(k.replace("BIO-1120", "CHM-204") for k in keys)), role="manager")
    assert mine["status"] == "done", mine
    assert (mine["rows_committed"], mine["rows_quarantined"]) == (1, BAD_ROWS + TRANSFER_ROWS), mine
    task: str = mine["task_id"]

    async def items(reason: str) -> list[str]:
        page = (await api.get("/quarantine", params={"task_id": task, "reason": reason, "limit": 100})).json()
        # By row: the first is row 2, as UNKNOWN_ITEM's, so that the pages' 404s (which name the
        # item) read alike for the two.
        return [i["id"] for i in sorted(page["items"], key=lambda i: i["row"])]

    bad_items, transfers = await items("schema_violation"), await items("other_lab")
    assert (len(bad_items), len(transfers)) == (BAD_ROWS, TRANSFER_ROWS)
    return task, bad_items, transfers


async def _fresh_tokens(conn: Conn, count: int) -> list[str]:
    return [str((await create_token(conn, role=roles.AUDITOR, label="matrix"))[1].id) for _ in range(count)]


async def _queued_imports(conn: Conn, home: Path, count: int) -> list[str]:
    """Lab A's imports, queued with no job (no worker takes them): each case cancels its own."""
    policies = PolicyRegistry.load_dir(POLICIES_DIR)
    path = home / "queued.csv"
    path.write_bytes(manifest(f"{GOOD_ASSET},NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Queued"))
    ids = [await create_import(conn, path, policies, enqueue=False) for _ in range(count)]
    labs = {r["lab"] for r in await conn.fetch("SELECT lab FROM imports WHERE id = ANY($1)", ids)}
    assert labs == {LAB_A}
    return [str(i) for i in ids]


async def _uploads(api: Api, count: int) -> list[str]:
    """Uploads lab A's manager began (nothing sent yet)."""
    ids = []
    for _ in range(count):
        response = await api.client.post("/uploads", headers={**api.auth("manager"), **NEW_UPLOAD})
        assert response.status_code == 201, response.text
        ids.append(response.headers["location"].rstrip("/").rsplit("/", 1)[-1])
    return ids


async def _callers(conn: Conn, api: Api) -> dict[str, Caller]:
    """Each caller's token, and a session started with it (an expired or revoked token's from
    before it ended; the invalid caller's cookie names no session)."""
    callers = {
        "none": Caller(None, None, None),
        "invalid": Caller("ldg_" + uuid.uuid4().hex, None, sessions.new_secret()),
    }
    for who, ends in (("expired", "expires_at"), ("revoked", "revoked_at")):
        token, token_row = await create_token(conn, role=roles.ADMIN, label=who)
        principal = Principal(token_id=token_row.id, role=token_row.role, labs=token_row.labs)
        secret, _ = await sessions.start(conn, principal, 1)
        await conn.execute(f"UPDATE tokens SET {ends} = now() - interval '1 second' WHERE id = $1", token_row.id)
        callers[who] = Caller(token, principal, secret)
    named = {"admin": "admin", "officer": "officer", "auditor": "auditor", "lab_a": "manager", "lab_b": "manager2"}
    for who, name in named.items():
        principal = await principal_of(conn, api.tokens[name])
        secret, _ = await sessions.start(conn, principal, 1)
        callers[who] = Caller(api.tokens[name], principal, secret)
    assert tuple(callers) == PRINCIPALS
    return callers


@pytest.fixture(scope="module")
async def matrix(pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Matrix]:
    name = f"ledger_t_{uuid.uuid4().hex[:12]}"
    await run_admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = with_database(pg_server, name)
    home = tmp_path_factory.mktemp("matrix")
    settings = Settings(
        database_url=url,
        home=home,
        policies_dir=POLICIES_DIR,
        # Hundreds of bad tokens come from one address here: not a guessing attack.
        auth_failures_per_minute=1_000_000,
        imports_queued_max=1_000,
        imports_queued_per_lab_max=1_000,
    )
    try:
        async with running_api(settings, url) as api:
            conn = await connect(url)
            try:
                task, items, transfers = await _lab_a_import(api)
                history = (await api.get(f"/assets/{GOOD_ASSET}/history")).json()
                uploads = await _uploads(api, 24)
                source = await api.client.post(
                    "/connectors", headers=api.auth("manager"), json={"definition": source_definition(MATRIX_SOURCE)}
                )
                assert source.status_code == 201, source.text
                ctx = Ctx(
                    task=task,
                    item=items[0],
                    asset=GOOD_ASSET,
                    entry=history["revisions"][-1]["entry_id"],
                    upload=uploads[0],
                    connector=MATRIX_SOURCE,
                    fresh_items=iter(items[1:]),
                    fresh_transfers=iter(transfers),
                    fresh_imports=iter(await _queued_imports(conn, home, 24)),
                    fresh_tokens=iter(await _fresh_tokens(conn, 40)),
                    fresh_uploads=iter(uploads[1:]),
                    serial=itertools.count(),
                )
                yield Matrix(api, conn, ctx, await _callers(conn, api))
            finally:
                await conn.close()
    finally:
        await run_admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- the tests

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _shape(response: httpx.Response, *ids: str) -> tuple[object, ...]:
    """What a refusal says, less the id it names: status and code and message for the API,
    status and page for the pages, status alone for a HEAD."""
    if not response.content:
        return (response.status_code,)
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        return response.status_code, body["code"], re.sub(r"'[^']*'", "'<id>'", body["message"])
    text = response.text
    for the_id in ids:
        text = text.replace(the_id, "<id>")
    return response.status_code, _UUID.sub("<id>", text)


def _check_refusal(response: httpx.Response, who: str, r: Row, where: str) -> None:
    is_json = response.headers.get("content-type", "").startswith("application/json") and bool(response.content)
    status = response.status_code
    if status == 401 and r.via == BEARER:
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), where
        assert not is_json or response.json()["code"] == UNAUTHENTICATED[who], where
    elif status == 401 and r.via == SESSION:
        assert "session_required" in response.text, where
    elif status == 403 and is_json:
        assert response.json()["code"] in ("forbidden", "csrf_failed"), where
    elif status == 404 and is_json:
        assert response.json()["code"] == "not_found", where
    elif status == 303 and r.via == SESSION and who in UNAUTHENTICATED and r.method == "GET":
        assert response.headers["location"].startswith("/ui/sign-in"), where


async def test_every_route_has_a_row(matrix: Matrix) -> None:
    served = app_routes(matrix.api.client.app)
    keys = [r.key for r in MATRIX]
    assert len(keys) == len(set(keys)), "a route has two rows"
    missing = sorted(set(served) - set(keys))
    stale = sorted(set(keys) - set(served))
    assert not missing, f"routes with no row in MATRIX (say who may call them): {missing}"
    assert not stale, f"rows in MATRIX for routes the app no longer has: {stale}"
    untried = sorted(
        r.key
        for r in MATRIX
        if served[r.key] and r.malformed is None and any(r.refused_before_input(who) for who in PRINCIPALS)
    )
    assert not untried, f"rows for routes that take input and refuse someone, with no malformed request: {untried}"


CASES = [pytest.param(r, who, id=f"{r.method} {r.path} as {who}") for r in MATRIX for who in PRINCIPALS]


@pytest.mark.parametrize(("r", "who"), CASES)
async def test_matrix(matrix: Matrix, r: Row, who: str) -> None:
    where = f"{r.method} {r.path} as {who}"
    expected = r.status(who)
    response = await matrix.send(r.request(matrix.ctx), who, r)
    assert response.status_code == expected, f"{where}: {response.status_code} {response.text[:300]}"
    _check_refusal(response, who, r, where)
    if expected < 400 and r.effect is not None:
        assert r.effect(response), f"{where}: {response.headers} {response.text[:300]}"
    if who == "lab_b" and expected < 400 and r.status("none") != expected:
        # What lab B's manager may read holds nothing of lab A.
        assert LAB_A not in response.text and matrix.ctx.task not in response.text, where
    if expected == 404 and 200 <= r.status("lab_a") < 400:
        # Another lab's record (another token's upload) answers exactly like one that does not
        # exist.
        unknown = await matrix.send(r.request(matrix.ctx.unknown()), who, r)
        known = [matrix.ctx.task, matrix.ctx.item, matrix.ctx.asset, matrix.ctx.upload]
        assert _shape(response, *known) == _shape(unknown, *known), where
        assert LAB_A not in response.text, where


MALFORMED = [pytest.param(r, id=f"{r.method} {r.path}") for r in MATRIX if r.malformed is not None]


@pytest.mark.parametrize("r", MALFORMED)
async def test_role_is_checked_before_parameters(matrix: Matrix, r: Row) -> None:
    assert r.malformed is not None
    admin = await matrix.send(r.malformed.request(matrix.ctx), "admin", r)
    assert admin.status_code == r.malformed.admin, f"the malformed request as admin: {admin.status_code} {admin.text}"
    refused = [who for who in PRINCIPALS if r.refused_before_input(who)]
    assert refused, "a row with a malformed request refuses someone"
    for who in refused:
        response = await matrix.send(r.malformed.request(matrix.ctx), who, r)
        where = f"malformed {r.method} {r.path} as {who}"
        assert response.status_code == r.status(who), f"{where}: {response.status_code} {response.text[:300]}"
        _check_refusal(response, who, r, where)


UNSAFE = [
    pytest.param(r, id=f"{r.method} {r.path}")
    for r in MATRIX
    if r.via == BEARER and r.method not in ("GET", "HEAD", "OPTIONS") and r.status("none") == 401
]


@pytest.mark.parametrize("r", UNSAFE)
async def test_api_sessions_need_csrf(matrix: Matrix, r: Row) -> None:
    """A page of another site can make a browser send its cookie, never the CSRF token."""
    req = r.request(matrix.ctx)
    secret = matrix.callers["admin"].session
    assert secret is not None
    cookie = {"Cookie": f"{sessions.SESSION_COOKIE}={secret}"}
    response = await matrix.send(replace(req, headers={**req.headers, **cookie}), "none", r)
    assert response.status_code == 403, f"{r.method} {r.path}: {response.status_code} {response.text[:300]}"
    assert not response.content or response.json()["code"] == "csrf_failed", response.text
