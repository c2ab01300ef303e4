"""The lab manager's path in a real browser, with real files through the tus server: upload,
live status, the outcome and its links; an upload cut off by a reload that resumes without
sending the acknowledged bytes again; a failed import shown as failed. Every page is checked
with axe-core."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from ledger.testing import HEADER
from ledger.testing.browser import sign_in
from ledger.testing.checkout import ROOT
from ledger.testing.live import Served

DIRTY = ROOT / "examples" / "dirty-manifest.csv"
CHUNK = 8 * 1024 * 1024
UPLOADS = re.compile(r"/uploads/")


def _status(served: Served, task_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{served.base_url}/imports/{task_id}", headers={"Authorization": f"Bearer {served.tokens['manager']}"}
    )
    body: dict[str, Any] = response.json()
    return body


def _task_id(page: Any) -> str:
    found = re.search(r"/ui/imports/([0-9a-f-]{36})$", page.url)
    assert found, page.url
    return found.group(1)


def test_upload_follow_and_read_the_outcome(page: Any, served: Served, accessible: Callable[[Any], None]) -> None:
    sign_in(page, served.tokens["manager"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Upload a manifest").click()
    expect(page.get_by_role("progressbar", name="Upload progress")).to_be_visible()
    accessible(page)
    page.get_by_label("Manifest file").set_input_files(DIRTY)
    expect(page.get_by_label("Policy")).to_have_value("lab-inventory")
    assert page.get_by_label("Lab").count() == 0  # one lab: nothing to choose
    expect(page.get_by_label("Dry run")).not_to_be_checked()
    page.get_by_role("button", name="Upload").click()

    page.wait_for_url(re.compile(r"/ui/imports/[0-9a-f-]{36}$"))
    task_id = _task_id(page)
    status = page.get_by_role("status")
    expect(status).to_have_text("done", timeout=30_000)
    expect(page.get_by_role("progressbar", name="Import progress")).to_be_visible()
    api = _status(served, task_id)
    assert api["status"] == "done" and api["filename"] == "dirty-manifest.csv"
    outcome = page.get_by_role("table", name="Outcome")
    for label, value in (
        ("Total", api["rows_total"]),
        ("Committed", api["rows_committed"]),
        ("Duplicate", api["rows_duplicate"]),
        ("Quarantined", api["rows_quarantined"]),
    ):
        expect(outcome.get_by_role("row", name=label)).to_contain_text(f"{value:,}")
    assert (api["rows_total"], api["rows_quarantined"]) == (12, 8)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    accessible(page)

    # The links are the API's, through the session cookie.
    report = page.request.get(page.get_by_role("link", name="Error report (CSV)").get_attribute("href"))
    assert report.status == 200 and "row" in report.text().splitlines()[0]
    rows = page.request.get(page.get_by_role("link", name="Rows").get_attribute("href"))
    assert rows.status == 200 and len(rows.json()["items"]) == 12
    receipt = page.request.get(page.get_by_role("link", name="Receipt").get_attribute("href"))
    assert receipt.status == 200 and receipt.json()["task_id"] == task_id

    page.get_by_role("link", name="All imports").click()
    table = page.get_by_role("table", name="Imports")
    expect(table.get_by_role("row").nth(1)).to_contain_text("dirty-manifest.csv")
    expect(table.get_by_role("row").nth(1)).to_contain_text("done")
    accessible(page)


def _big_manifest(path: Path, size: int) -> Path:
    """A valid manifest of at least ``size`` bytes: long descriptions, unique keys."""
    description = "x" * 480
    lines = [HEADER]
    total = len(HEADER) + 1
    i = 0
    while total < size:
        line = f"BIG-{i:06d},NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,{description}"
        lines.append(line)
        total += len(line) + 1
        i += 1
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_reload_mid_upload_resumes_without_resending(
    page: Any, served: Served, tmp_path: Path, accessible: Callable[[Any], None]
) -> None:
    manifest = _big_manifest(tmp_path / "big-manifest.csv", CHUNK + 2 * 1024 * 1024)
    size = manifest.stat().st_size
    delivered: list[tuple[int, int]] = []  # (Upload-Offset, body bytes) of each PATCH let through
    cut = {"on": True}

    def network(route: Any) -> None:
        request = route.request
        if request.method == "PATCH":
            offset = int(request.headers.get("upload-offset", "0"))
            if cut["on"] and offset > 0:  # the network drops once the first chunk is in
                route.abort("connectionreset")
                return
            delivered.append((offset, len(request.post_data_buffer or b"")))
        route.continue_()

    page.route(UPLOADS, network)
    sign_in(page, served.tokens["manager"])
    page.goto("/ui/imports/new")
    page.get_by_label("Manifest file").set_input_files(manifest)
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_text(f"{CHUNK:,} of {size:,} bytes sent")).to_be_visible()
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    assert delivered == [(0, CHUNK)]

    # A reload: the page forgets the upload; the browser's local storage remembers where it was.
    cut["on"] = False
    page.reload()
    page.get_by_label("Manifest file").set_input_files(manifest)
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/ui/imports/[0-9a-f-]{36}$"), timeout=30_000)
    # The server got every byte exactly once: the first chunk before the reload, the rest after.
    assert delivered == [(0, CHUNK), (CHUNK, size - CHUNK)], delivered
    expect(page.get_by_role("status")).to_have_text("done", timeout=60_000)
    api = _status(served, _task_id(page))
    assert api["manifest_bytes"] == size and api["rows_committed"] == api["rows_total"] > 0
    # Done: the fingerprint is gone, so the same file again would be a new upload.
    stored = page.evaluate("JSON.stringify(Object.keys(window.localStorage))")
    assert not [k for k in json.loads(stored) if k.startswith("tus::")], stored


def test_a_failed_import_is_shown_as_failed(
    page: Any, served: Served, tmp_path: Path, accessible: Callable[[Any], None]
) -> None:
    drifted = tmp_path / "drifted.csv"
    drifted.write_text("asset_id,colour\nEQ-1,red\n")
    sign_in(page, served.tokens["manager"])
    page.goto("/ui/imports/new")
    page.get_by_label("Manifest file").set_input_files(drifted)
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/ui/imports/[0-9a-f-]{36}$"))
    expect(page.get_by_role("status")).to_have_text("failed", timeout=30_000)
    api = _status(served, _task_id(page))
    assert api["status"] == "failed"
    expect(page.get_by_role("heading", name="The import failed")).to_be_visible()
    expect(page.locator("#error-code")).to_have_text(api["error"]["code"])
    expect(page.get_by_role("table", name="Outcome")).to_have_count(0)
    assert "success" not in page.content().lower()
    accessible(page)
    page.goto("/ui/imports")
    expect(page.get_by_role("table", name="Imports").get_by_role("row").nth(1)).to_contain_text("failed")
