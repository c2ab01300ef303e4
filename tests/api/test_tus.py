"""The tus 1.0 server at /uploads/ (issue 16, item 6): one test per MUST of the protocol and of
the issue, named after it, then the limits shared with POST /imports (the per-token cap, the
body deadlines), two API processes on one upload, the janitor, and interop with a real tus
client (tuspy) on a real server on 127.0.0.1, an interrupted and resumed upload included.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient
from tusclient.client import TusClient
from tusclient.uploader import Uploader

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db import tus_uploads as uploads_db
from ledger.db.pool import connect, create_pool
from ledger.jobs import spool_janitor
from ledger.jobs.worker import running_worker
from ledger.services import tus
from ledger.testing import Api, create_tokens, manifest
from ledger.testing.checkout import POLICIES_DIR
from ledger.testing.server import serving

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
ROW = "TU-{:04d},NIH-R01GM123456,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"


def rows(count: int, start: int = 0) -> bytes:
    return manifest(*(ROW.format(i) for i in range(start, start + count)))


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def upload_id(response: httpx.Response) -> str:
    return response.headers["Location"].rsplit("/", 1)[1]


def spooled(home: Path) -> list[Path]:
    spool = home / "spool"
    return sorted(p for p in spool.iterdir() if p.is_file()) if spool.is_dir() else []


class Tus:
    """The tus requests of one token, through the in-process client."""

    def __init__(self, api: Api, role: str = "manager") -> None:
        self.api, self.role = api, role

    def headers(self, **extra: str) -> dict[str, str]:
        return {**self.api.auth(self.role), **TUS, **extra}

    async def create(self, length: int, *, body: bytes | None = None, **fields: str) -> httpx.Response:
        headers = self.headers(**{"Upload-Length": str(length), "Upload-Metadata": metadata(**fields)})
        if body is not None:
            headers["Content-Type"] = OCTETS
        return await self.api.client.post("/uploads/", headers=headers, content=body)

    async def new(self, length: int, **fields: str) -> str:
        response = await self.create(length, **fields)
        assert response.status_code == 201, response.text
        return upload_id(response)

    async def head(self, upload: str, **extra: str) -> httpx.Response:
        return await self.api.client.head(f"/uploads/{upload}", headers=self.headers(**extra))

    async def patch(self, upload: str, offset: int, data: bytes, **extra: str) -> httpx.Response:
        headers = self.headers(**{"Upload-Offset": str(offset), "Content-Type": OCTETS, **extra})
        return await self.api.client.patch(f"/uploads/{upload}", headers=headers, content=data)

    async def offset(self, upload: str) -> int:
        response = await self.head(upload)
        assert response.status_code == 200, response.status_code
        return int(response.headers["Upload-Offset"])


@pytest.fixture
def manager(api: Api) -> Tus:
    return Tus(api)


async def _count(db: Any, table: str) -> int:
    count: int = await db.fetchval(f"SELECT count(*) FROM {table}")
    return count


# ---------------------------------------------------------------- the protocol's MUSTs


@pytest.mark.parametrize("settings_overrides", [{"upload_bytes_max": 123_456}])
async def test_options_without_a_token_advertises_version_extensions_max_size_and_checksum(
    api: Api, settings_overrides: dict[str, Any]
) -> None:
    for path in ("/uploads/", f"/uploads/{uuid.uuid4()}"):
        response = await api.client.options(path)
        assert response.status_code == 204, response.text
        assert response.headers["Tus-Version"] == "1.0.0"
        assert set(response.headers["Tus-Extension"].split(",")) == {
            "creation",
            "creation-with-upload",
            "termination",
            "checksum",
            "expiration",
        }
        assert response.headers["Tus-Max-Size"] == "123456"
        assert response.headers["Tus-Checksum-Algorithm"] == "sha256"
    # Public for OPTIONS only: the other methods of the same paths still need a token.
    upload = f"/uploads/{uuid.uuid4()}"
    for method, path in (("POST", "/uploads/"), ("HEAD", upload), ("PATCH", upload), ("DELETE", upload)):
        response = await api.client.request(method, path, headers={**TUS, "Upload-Length": "1"})
        assert response.status_code == 401, (method, response.status_code)
        assert response.headers["Tus-Resumable"] == "1.0.0"


async def test_post_creates_an_upload_from_upload_length_and_upload_metadata(
    api: Api, manager: Tus, db: Any, tmp_path: Path
) -> None:
    fields = {"filename": "q3 inventory.csv", "policy": "lab-inventory", "lab": "chem-lab", "dry_run": "true"}
    response = await manager.create(100, **fields, idempotency_key="q3-2024")
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith("/uploads/")
    assert response.headers["Tus-Resumable"] == "1.0.0"
    row = await uploads_db.get_upload(db, uuid.UUID(upload_id(response)))
    assert row is not None
    assert (row.length, row.received, row.lab, row.filename, row.idempotency_key) == (
        100,
        0,
        "chem-lab",
        "q3 inventory.csv",
        "q3-2024",
    )
    assert row.fields == {"policy": "lab-inventory", "lab": "chem-lab", "dry_run": "true"}
    # Without a lab, a token of one lab submits for it, as POST /imports does.
    assert (await manager.create(5)).status_code == 201
    for headers in ({}, {"Upload-Length": "-1"}, {"Upload-Length": "ten"}, {"Upload-Defer-Length": "1"}):
        refused = await api.client.post("/uploads/", headers=manager.headers(**headers))
        assert refused.status_code == 400, (headers, refused.text)
        assert refused.json()["code"] == "invalid_header"
    assert await _count(db, "tus_uploads") == 2


async def test_head_answers_upload_offset_upload_length_and_cache_control_no_store(manager: Tus) -> None:
    upload = await manager.new(10, filename="m.csv")
    assert (await manager.patch(upload, 0, b"0123")).status_code == 204
    response = await manager.head(upload)
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "4"
    assert response.headers["Upload-Length"] == "10"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Upload-Metadata"] == metadata(filename="m.csv")
    assert response.headers["Tus-Resumable"] == "1.0.0"


async def test_patch_of_offset_octet_stream_answers_204_and_the_new_upload_offset(manager: Tus, db: Any) -> None:
    data = rows(3)
    upload = await manager.new(len(data))
    first = await manager.patch(upload, 0, data[:50])
    assert first.status_code == 204
    assert first.headers["Upload-Offset"] == "50"
    assert first.content == b""
    row = await uploads_db.get_upload(db, uuid.UUID(upload))
    assert row is not None
    assert row.received == 50
    assert Path(row.spool_path).read_bytes() == data[:50]
    # An empty PATCH is in order too, and moves nothing.
    assert (await manager.patch(upload, 50, b"")).headers["Upload-Offset"] == "50"


async def test_patch_at_another_offset_is_409_and_stores_nothing(manager: Tus, db: Any) -> None:
    upload = await manager.new(20)
    assert (await manager.patch(upload, 0, b"abcde")).status_code == 204
    for offset in (0, 3, 6):
        response = await manager.patch(upload, offset, b"XYZ")
        assert response.status_code == 409
        assert response.json()["code"] == "offset_mismatch"
        assert response.json()["offset"] == 5
    row = await uploads_db.get_upload(db, uuid.UUID(upload))
    assert row is not None
    assert row.received == 5
    assert Path(row.spool_path).read_bytes() == b"abcde"


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0", ""])
async def test_a_wrong_tus_resumable_is_412_with_tus_version(api: Api, manager: Tus, version: str | None) -> None:
    upload = await manager.new(10)
    headers = {**api.auth("manager"), "Upload-Length": "10", "Upload-Offset": "0", "Content-Type": OCTETS}
    if version is not None:
        headers["Tus-Resumable"] = version
    for method, path in (("POST", "/uploads/"), ("HEAD", f"/uploads/{upload}"), ("PATCH", f"/uploads/{upload}")):
        response = await api.client.request(
            method, path, headers=headers, content=b"abc" if method == "PATCH" else None
        )
        assert response.status_code == 412, (method, response.status_code)
        assert response.headers["Tus-Version"] == "1.0.0"
        if method != "HEAD":
            assert response.json()["code"] == "unsupported_tus_version"
    response = await api.client.delete(f"/uploads/{upload}", headers=headers)
    assert response.status_code == 412
    assert await manager.offset(upload) == 0


@pytest.mark.parametrize("settings_overrides", [{"upload_bytes_max": 1000}])
async def test_an_upload_length_above_the_max_is_413_before_any_byte_is_stored(
    manager: Tus, db: Any, tmp_path: Path, settings_overrides: dict[str, Any]
) -> None:
    response = await manager.create(1001)
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    # With its first bytes in the same request (creation-with-upload): refused before them.
    response = await manager.create(5000, body=b"x" * 100)
    assert response.status_code == 413
    assert await _count(db, "tus_uploads") == 0
    assert spooled(tmp_path) == []
    assert (await manager.create(1000)).status_code == 201


async def test_a_patch_that_is_not_offset_octet_stream_is_415(manager: Tus) -> None:
    upload = await manager.new(10)
    for content_type in ("application/octet-stream", "text/csv", ""):
        response = await manager.patch(upload, 0, b"abc", **{"Content-Type": content_type})
        assert response.status_code == 415, content_type
        assert response.json()["code"] == "unsupported_media_type"
    assert await manager.offset(upload) == 0


async def test_a_checksum_mismatch_is_460_and_the_chunk_is_discarded(manager: Tus, db: Any) -> None:
    upload = await manager.new(10)

    def checksum(data: bytes) -> str:
        return "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()

    assert (await manager.patch(upload, 0, b"abc", **{"Upload-Checksum": checksum(b"abc")})).status_code == 204
    response = await manager.patch(upload, 3, b"def", **{"Upload-Checksum": checksum(b"deX")})
    assert response.status_code == 460
    assert response.json()["code"] == "checksum_mismatch"
    assert await manager.offset(upload) == 3
    row = await uploads_db.get_upload(db, uuid.UUID(upload))
    assert row is not None
    assert Path(row.spool_path).read_bytes() == b"abc"
    # An algorithm that is not offered (Tus-Checksum-Algorithm) is a bad request.
    sha1 = "sha1 " + base64.b64encode(hashlib.sha1(b"def").digest()).decode()
    response = await manager.patch(upload, 3, b"def", **{"Upload-Checksum": sha1})
    assert response.status_code == 400
    assert await manager.offset(upload) == 3


async def test_an_expired_upload_answers_410(manager: Tus, db: Any) -> None:
    upload = await manager.new(10)
    await db.execute("UPDATE tus_uploads SET expires_at = now() - interval '1 second' WHERE id = $1", uuid.UUID(upload))
    assert (await manager.head(upload)).status_code == 410
    response = await manager.patch(upload, 0, b"abc")
    assert response.status_code == 410
    assert response.json()["code"] == "upload_expired"


async def test_delete_terminates_the_upload_with_204(manager: Tus, db: Any, tmp_path: Path) -> None:
    upload = await manager.new(10)
    assert (await manager.patch(upload, 0, b"abc")).status_code == 204
    assert len(spooled(tmp_path)) == 1
    response = await manager.api.client.delete(f"/uploads/{upload}", headers=manager.headers())
    assert response.status_code == 204
    assert (await manager.head(upload)).status_code == 404
    assert (await manager.patch(upload, 3, b"def")).status_code == 404
    assert spooled(tmp_path) == []
    assert await _count(db, "tus_uploads") == 0


@pytest.mark.parametrize("settings_overrides", [{"upload_expiry_seconds": 3600}])
async def test_upload_expires_is_sent_on_creation_and_every_patch(
    manager: Tus, db: Any, settings_overrides: dict[str, Any]
) -> None:
    response = await manager.create(10)
    created = parsedate_to_datetime(response.headers["Upload-Expires"])
    assert abs((created - datetime.now(UTC)) - timedelta(hours=1)) < timedelta(minutes=1)
    upload = upload_id(response)
    # Abandoned uploads expire: each PATCH pushes the expiry back.
    await db.execute(
        "UPDATE tus_uploads SET expires_at = now() + interval '5 minutes' WHERE id = $1", uuid.UUID(upload)
    )
    response = await manager.patch(upload, 0, b"abc")
    moved = parsedate_to_datetime(response.headers["Upload-Expires"])
    assert abs((moved - datetime.now(UTC)) - timedelta(hours=1)) < timedelta(minutes=1)
    assert (await manager.head(upload)).headers["Upload-Expires"] == response.headers["Upload-Expires"]


async def test_creation_with_upload_stores_the_first_bytes(manager: Tus) -> None:
    data = rows(2)
    response = await manager.create(len(data), body=data[:40])
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == "40"
    upload = upload_id(response)
    assert await manager.offset(upload) == 40
    response = await manager.patch(upload, 40, data[40:])
    assert response.status_code == 204
    assert "Ledger-Import" in response.headers


# ---------------------------------------------------------------- the ledger's MUSTs


async def test_the_last_byte_creates_the_import_as_post_imports_does(api: Api, manager: Tus, tmp_path: Path) -> None:
    data = rows(5)
    upload = await manager.new(len(data), filename="five.csv")
    assert "Ledger-Import" not in (await manager.patch(upload, 0, data[:100])).headers
    final = await manager.patch(upload, 100, data[100:])
    assert final.status_code == 204
    assert final.headers["Upload-Offset"] == str(len(data))
    location = final.headers["Ledger-Import"]
    task = location.rsplit("/", 1)[1]
    assert location == f"/imports/{task}"
    # Every later HEAD names it too.
    head = await manager.head(upload)
    assert (head.headers["Upload-Offset"], head.headers["Ledger-Import"]) == (str(len(data)), location)
    done = await api.wait(task)
    assert done["status"] == "done", done
    assert (done["rows_committed"], done["filename"]) == (5, "five.csv")
    assert done["manifest_sha256"] == hashlib.sha256(data).hexdigest()
    # The same file through POST /imports is the same submission (same key): 200, the same import.
    again = await api.submit(data)
    assert again.status_code == 200, again.text
    assert again.json()["task_id"] == task
    # And a second upload of it answers with the same import, creating nothing.
    second = await manager.new(len(data))
    response = await manager.patch(second, 0, data)
    assert response.headers["Ledger-Import"] == location
    assert spooled(tmp_path) == []  # the duplicate's bytes went; the import's when it ended


async def test_what_is_found_later_ends_the_import_failed(api: Api, manager: Tus) -> None:
    data = b"%PDF-1.7\n" + bytes(range(256)) * 8
    upload = await manager.new(len(data))
    response = await manager.patch(upload, 0, data)
    assert response.status_code == 204
    failed = await api.wait(response.headers["Ledger-Import"].rsplit("/", 1)[1])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "not_tabular"


async def test_an_empty_upload_is_whole_when_it_is_created(api: Api, manager: Tus) -> None:
    response = await manager.create(0)
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Ledger-Import"].startswith("/imports/")


async def test_only_those_who_submit_imports_may_upload_and_for_their_labs(api: Api, db: Any) -> None:
    for role in ("officer", "auditor"):
        response = await Tus(api, role).create(10, lab="chem-lab")
        assert response.status_code == 403, role
        assert response.json()["code"] == "forbidden"
    assert (await Tus(api, "admin").create(10, lab="chem-lab")).status_code == 201
    refused = {
        "another lab": (await Tus(api).create(10, lab="bio-lab"), 403, "forbidden"),
        "unregistered lab": (await Tus(api, "admin").create(10, lab="nope-lab"), 422, "unknown_lab"),
        "no lab, several": (await Tus(api, "multi").create(10), 422, "lab_required"),
        "unknown policy": (await Tus(api).create(10, policy="nope"), 422, "unknown_policy"),
        "dry_run neither": (await Tus(api).create(10, dry_run="maybe"), 422, "invalid_field"),
        "bad encoding": (await Tus(api).create(10, encoding="no-such-codec"), 422, "invalid_encoding"),
        "empty key": (await Tus(api).create(10, idempotency_key=""), 422, "invalid_idempotency_key"),
    }
    for what, (response, status, code) in refused.items():
        assert (response.status_code, response.json()["code"]) == (status, code), what
    assert await _count(db, "tus_uploads") == 1
    # Checked on every request: officers get 403 for an upload that exists as for one that does not.
    upload = await Tus(api).new(10)
    for method in ("HEAD", "PATCH", "DELETE"):
        response = await api.client.request(method, f"/uploads/{upload}", headers=Tus(api, "officer").headers())
        assert response.status_code == 403, method


async def test_someone_elses_upload_answers_404_like_an_unknown_one(api: Api, manager: Tus) -> None:
    upload = await manager.new(10)
    assert (await manager.patch(upload, 0, b"abc")).status_code == 204
    unknown = str(uuid.uuid4())
    # Another lab's manager, a manager of the same lab with another token, an admin.
    for role in ("manager2", "multi", "admin"):
        other = Tus(api, role)
        for target in (upload, unknown, "not-an-id"):
            assert (await other.head(target)).status_code == 404, (role, target)
            patched = await other.patch(target, 3, b"def")
            assert patched.status_code == 404
            assert patched.json() == {
                "code": "not_found",
                "message": f"no upload '{target}'",
            }
            response = await api.client.delete(f"/uploads/{target}", headers=other.headers())
            assert response.status_code == 404
    assert await manager.offset(upload) == 3


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(manager: Tus, db: Any, tmp_path: Path) -> None:
    upload = await manager.new(10)
    assert (await manager.patch(upload, 0, b"abc")).status_code == 204
    # A PATCH past Upload-Length: refused from its Content-Length, before a byte is read (sent
    # without one, as soon as it goes past: test_a_chunked_patch_past_upload_length_stores_nothing).
    response = await manager.patch(upload, 3, b"x" * 8)
    assert (response.status_code, response.json()["code"]) == (413, "past_upload_length")
    assert await manager.offset(upload) == 3
    row = await uploads_db.get_upload(db, uuid.UUID(upload))
    assert row is not None
    assert Path(row.spool_path).read_bytes() == b"abc"

    before = await _count(db, "tus_uploads")
    cases = {
        "not base64": ("filename m.csv!", 400, "invalid_header"),
        "not UTF-8": ("filename " + base64.b64encode(b"\xff\xfe").decode(), 400, "invalid_header"),
        "a key twice": (metadata(lab="chem-lab") + "," + metadata(lab="chem-lab"), 400, "invalid_header"),
        "a 10 kB filename": (metadata(filename="a" * 10_000 + ".csv"), 400, "invalid_header"),
        "a long filename": (metadata(filename="a" * 256), 422, "invalid_field"),
        "control characters": (metadata(filename="m\x00.csv"), 422, "invalid_field"),
        "a newline in the lab": (metadata(lab="chem-lab\n"), 422, "invalid_field"),
    }
    for what, (value, status, code) in cases.items():
        response = await manager.api.client.post(
            "/uploads/", headers=manager.headers(**{"Upload-Length": "10", "Upload-Metadata": value})
        )
        assert (response.status_code, response.json()["code"]) == (status, code), (what, response.text)
    assert await _count(db, "tus_uploads") == before
    assert len(spooled(tmp_path)) == 1


@pytest.mark.parametrize("inline_worker", [False])
async def test_spool_files_are_owner_only(manager: Tus, tmp_path: Path, inline_worker: bool) -> None:
    (tmp_path / "spool").mkdir(mode=0o755)
    old = os.umask(0o002)
    try:
        upload = await manager.new(10)
        assert (await manager.patch(upload, 0, b"abc")).status_code == 204
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    [path] = spooled(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("settings_overrides", "inline_worker"), [({"imports_queued_per_lab_max": 1}, False)])
async def test_the_last_patch_refused_for_a_full_queue_keeps_the_offset_to_be_sent_again(
    api: Api, manager: Tus, settings_overrides: dict[str, Any], inline_worker: bool
) -> None:
    data = rows(2)
    upload = await manager.new(len(data))
    assert (await manager.patch(upload, 0, data[:30])).status_code == 204
    queued = await api.submit(rows(1, start=50))  # fills chem-lab's queue (no worker takes it)
    assert queued.status_code == 202
    response = await manager.patch(upload, 30, data[30:])
    assert (response.status_code, response.json()["code"]) == (429, "too_many_imports")
    assert "Retry-After" in response.headers
    assert await manager.offset(upload) == 30
    cancelled = await api.client.delete(f"/imports/{queued.json()['task_id']}", headers=api.auth("manager"))
    assert cancelled.status_code == 200
    response = await manager.patch(upload, 30, data[30:])
    assert response.status_code == 204
    assert "Ledger-Import" in response.headers


# ---------------------------------------------------------------- the offset and lock in PostgreSQL


async def test_two_api_processes_serve_the_patches_of_one_upload(
    api: Api, manager: Tus, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = rows(4)
    upload = await manager.new(len(data))
    settings = Settings(database_url=database_url, home=tmp_path, policies_dir=POLICIES_DIR)
    other_app = create_app(settings, database_url)
    async with AsyncTestClient(app=other_app) as other_client:
        other = Tus(Api(other_client, api.tokens))
        offset = 0
        for i, step in enumerate(range(0, len(data), 60)):
            chunk = data[step : step + 60]
            # Each process hashes what it saw: one that did not see the rest hashes the file.
            monkeypatch.setattr(tus, "_HASHES", tus._HashCache())
            response = await (manager if i % 2 else other).patch(upload, offset, chunk)
            assert response.status_code == 204, response.text
            offset += len(chunk)
            assert await (other if i % 2 else manager).offset(upload) == offset
    task = response.headers["Ledger-Import"].rsplit("/", 1)[1]
    done = await api.wait(task)
    assert (done["status"], done["manifest_sha256"]) == ("done", hashlib.sha256(data).hexdigest())


async def test_concurrent_patches_of_one_upload_cannot_interleave(
    manager: Tus, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tus, "LOCK_WAIT_SECONDS", 0.2)
    upload = await manager.new(10)
    holder = await connect(database_url)
    try:
        assert await uploads_db.lock_upload(holder, uuid.UUID(upload), wait_seconds=1)
        response = await manager.patch(upload, 0, b"abc")
        assert (response.status_code, response.json()["code"]) == (423, "upload_busy")
        assert response.headers["Retry-After"]
        assert await manager.offset(upload) == 0
    finally:
        await holder.close()  # its lock goes with its session
    assert (await manager.patch(upload, 0, b"abc")).status_code == 204


# ---------------------------------------------------------------- expiry: the janitor


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    p = await create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


@pytest.mark.parametrize("inline_worker", [False])
async def test_abandoned_uploads_expire_and_the_janitor_deletes_their_rows_and_files(
    api: Api, manager: Tus, db: Any, pool: asyncpg.Pool[Any], tmp_path: Path, inline_worker: bool
) -> None:
    settings = Settings(database_url="unused", home=tmp_path, policies_dir=POLICIES_DIR)
    paused, abandoned, whole = await manager.new(10), await manager.new(10), await manager.new(len(rows(1)))
    for upload in (paused, abandoned):
        assert (await manager.patch(upload, 0, b"abc")).status_code == 204
    finished = await manager.patch(whole, 0, rows(1))
    task = finished.headers["Ledger-Import"].rsplit("/", 1)[1]
    for path in spooled(tmp_path):
        os.utime(path, (0, 0))  # older than the janitor's hour for files no import names
    await db.execute(
        "UPDATE tus_uploads SET expires_at = now() - interval '1 minute' WHERE id = ANY($1::uuid[])",
        [uuid.UUID(abandoned), uuid.UUID(whole)],
    )
    paths = {
        u: Path(r.spool_path)
        for u in (paused, abandoned, whole)
        if (r := await uploads_db.get_upload(db, uuid.UUID(u)))
    }
    removed = await spool_janitor.sweep(pool, settings)
    assert removed == [paths[abandoned]]
    assert {str(r["id"]) for r in await db.fetch("SELECT id FROM tus_uploads")} == {paused}
    # The paused upload lives on; the completed one's file is its (queued) import's.
    assert paths[paused].exists() and paths[whole].exists()
    assert (await manager.head(abandoned)).status_code == 404
    assert await manager.offset(paused) == 3
    status = await api.get(f"/imports/{task}")
    assert status.json()["status"] == "queued"


# ---------------------------------------------------------------- on a real server


@dataclass
class Served:
    base_url: str
    tokens: dict[str, str]
    home: Path
    received: Received

    def auth(self, role: str = "manager") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def http(self, role: str = "manager") -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers={**self.auth(role), **TUS}, timeout=30)


class Received:
    """ASGI middleware counting the upload bytes the server received (what clients re-sent
    included), around the whole app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bytes = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("PATCH", "POST"):
            await self.app(scope, receive, send)
            return

        async def counting() -> Any:
            message = await receive()
            if message["type"] == "http.request" and scope["path"].startswith("/uploads"):
                self.bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


@contextlib.asynccontextmanager
async def served(database_url: str, home: Path, *, worker: bool = False, **overrides: Any) -> AsyncIterator[Served]:
    conn = await connect(database_url)
    try:
        tokens = await create_tokens(conn)
    finally:
        await conn.close()
    settings = Settings(database_url=database_url, home=home, policies_dir=POLICIES_DIR, **overrides)
    policies = PolicyRegistry.load_dir(POLICIES_DIR)
    background = [lambda: running_worker(settings, database_url, policies)] if worker else []
    app = create_app(settings, database_url, policies=policies, background=background)
    received = app.asgi_handler = Received(app.asgi_handler)
    with serving(app) as port:
        yield Served(f"http://127.0.0.1:{port}", tokens, home, received)


class RawPatch:
    """A PATCH written by hand on its own connection, to be cut short or left to stall."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def start(cls, server: Served, upload: str, *, offset: int, length: int) -> RawPatch:
        port = int(server.base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"PATCH /uploads/{upload} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.tokens['manager']}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: {OCTETS}\r\nContent-Length: {length}\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def status(self, within: float) -> tuple[int, str]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), within)
        return int(head.split()[1]), head.decode("latin-1").lower()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def _offset_becomes(client: httpx.AsyncClient, upload: str, offset: int, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        now = int((await client.head(f"/uploads/{upload}")).headers["Upload-Offset"])
        if now == offset:
            return
        assert asyncio.get_running_loop().time() < deadline, f"offset {now}, not {offset}"
        await asyncio.sleep(0.05)


async def test_an_interrupted_patch_keeps_what_arrived(database_url: str, tmp_path: Path) -> None:
    data = rows(100)
    async with served(database_url, tmp_path) as server, server.http() as client:
        upload = upload_id(await client.post("/uploads/", headers={"Upload-Length": str(len(data))}))
        raw = await RawPatch.start(server, upload, offset=0, length=len(data))
        await raw.send(data[:3000])
        await asyncio.sleep(0.2)
        await raw.close()  # the client goes away mid-body
        await _offset_becomes(client, upload, 3000)
        conn = await connect(database_url)
        try:
            row = await uploads_db.get_upload(conn, uuid.UUID(upload))
        finally:
            await conn.close()
        assert row is not None
        assert Path(row.spool_path).read_bytes() == data[:3000]


async def test_a_chunked_patch_past_upload_length_stores_nothing(database_url: str, tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"yy"

    async with served(database_url, tmp_path) as server, server.http() as client:
        upload = upload_id(await client.post("/uploads/", headers={"Upload-Length": "5"}))
        response = await client.patch(
            f"/uploads/{upload}", headers={"Upload-Offset": "0", "Content-Type": OCTETS}, content=chunks()
        )
        assert (response.status_code, response.json()["code"]) == (413, "past_upload_length")
        assert int((await client.head(f"/uploads/{upload}")).headers["Upload-Offset"]) == 0
        [path] = spooled(tmp_path)
        assert path.read_bytes() == b""


async def test_the_per_token_upload_cap_applies_to_patch_bodies(database_url: str, tmp_path: Path) -> None:
    async with served(database_url, tmp_path, uploads_per_token_max=1) as server, server.http() as client:
        first, second = [upload_id(await client.post("/uploads/", headers={"Upload-Length": "100"})) for _ in range(2)]
        raw = await RawPatch.start(server, first, offset=0, length=100)
        try:
            await raw.send(b"x" * 10)
            await asyncio.sleep(0.2)
            response = await client.patch(
                f"/uploads/{second}", headers={"Upload-Offset": "0", "Content-Type": OCTETS}, content=b"abc"
            )
            assert (response.status_code, response.json()["code"]) == (429, "too_many_uploads")
            assert response.headers["Retry-After"]
            assert response.headers["Tus-Resumable"] == "1.0.0"
        finally:
            await raw.close()


async def test_the_body_deadlines_apply_to_patch_bodies(database_url: str, tmp_path: Path) -> None:
    async with served(database_url, tmp_path, body_idle_seconds=0.5) as server, server.http() as client:
        upload = upload_id(await client.post("/uploads/", headers={"Upload-Length": "100"}))
        raw = await RawPatch.start(server, upload, offset=0, length=100)
        try:
            await raw.send(b"x" * 40)  # then nothing
            status, head = await raw.status(within=10)
            assert status == 408
            assert "connection: close" in head
        finally:
            await raw.close()
        # A stalled PATCH keeps what arrived before it stalled, like one cut short.
        await _offset_becomes(client, upload, 40)


# ---------------------------------------------------------------- interop: tuspy


class Sha256Uploader(Uploader):
    """tuspy's uploader, sending checksums with the algorithm this server offers (tuspy's own
    default is sha1)."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


def _tuspy_upload(url: str, token: str, data: bytes, *, chunk_size: int, **meta: str) -> str:
    """Upload ``data`` with tuspy (checksums on), and return the upload's URL."""
    client = TusClient(url, headers={"Authorization": f"Bearer {token}"})
    uploader = Sha256Uploader(
        file_stream=BytesIO(data), client=client, chunk_size=chunk_size, metadata=meta, upload_checksum=True
    )
    uploader.upload()
    assert uploader.url is not None
    return str(uploader.url)


def _tuspy_resume(upload_url: str, token: str, data: bytes, *, chunk_size: int) -> int:
    """Resume the upload at ``upload_url`` from the server's offset (tuspy asks it with HEAD);
    the offset it resumed from."""
    client = TusClient(upload_url, headers={"Authorization": f"Bearer {token}"})
    uploader = Uploader(file_stream=BytesIO(data), client=client, url=upload_url, chunk_size=chunk_size)
    resumed_from = int(uploader.offset)
    uploader.upload()
    return resumed_from


async def _wait_done(client: httpx.AsyncClient, location: str) -> dict[str, Any]:
    for _ in range(600):
        body: dict[str, Any] = (await client.get(location)).json()
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{location} still {body['status']}")


async def test_tuspy_uploads_are_imports_like_post_imports_and_idempotent(database_url: str, tmp_path: Path) -> None:
    data = rows(400)
    async with served(database_url, tmp_path, worker=True) as server, server.http() as client:
        token = server.tokens["manager"]
        url = await asyncio.to_thread(
            _tuspy_upload, f"{server.base_url}/uploads/", token, data, chunk_size=8192, filename="tuspy.csv"
        )
        location = (await client.head(url)).headers["Ledger-Import"]
        done = await _wait_done(client, location)
        assert (done["status"], done["rows_committed"], done["filename"]) == ("done", 400, "tuspy.csv")
        assert server.received.bytes == len(data)
        # POST /imports of the same file: the same manifest_sha256, and the same submission.
        posted = await client.post("/imports", files={"file": ("tuspy.csv", data, "text/csv")})
        assert posted.status_code == 200, posted.text
        assert posted.json()["task_id"] == done["task_id"]
        assert posted.json()["manifest_sha256"] == done["manifest_sha256"] == hashlib.sha256(data).hexdigest()
        # A second upload of the same file answers with the same task id.
        again = await asyncio.to_thread(_tuspy_upload, f"{server.base_url}/uploads/", token, data, chunk_size=len(data))
        assert again != url
        assert (await client.head(again)).headers["Ledger-Import"] == location


async def test_tuspy_resumes_an_interrupted_upload_without_resending_acknowledged_bytes(
    database_url: str, tmp_path: Path
) -> None:
    data = rows(1000)
    half = len(data) // 2
    async with served(database_url, tmp_path, worker=True) as server, server.http() as client:
        token = server.tokens["manager"]
        created = await client.post(
            "/uploads/", headers={"Upload-Length": str(len(data)), "Upload-Metadata": metadata(filename="big.csv")}
        )
        upload = upload_id(created)
        # The first PATCH carries the whole file but the connection drops half-way through it.
        raw = await RawPatch.start(server, upload, offset=0, length=len(data))
        await raw.send(data[:half])
        await asyncio.sleep(0.2)
        await raw.close()
        await _offset_becomes(client, upload, half)
        sent_before = server.received.bytes
        assert sent_before == half
        resumed_from = await asyncio.to_thread(
            _tuspy_resume, f"{server.base_url}/uploads/{upload}", token, data, chunk_size=16384
        )
        assert resumed_from == half
        # Not one acknowledged byte came twice: the server received the file exactly once.
        assert server.received.bytes == len(data)
        location = (await client.head(f"/uploads/{upload}")).headers["Ledger-Import"]
        done = await _wait_done(client, location)
        assert (done["status"], done["rows_committed"]) == ("done", 1000), done
        assert done["manifest_sha256"] == hashlib.sha256(data).hexdigest()
