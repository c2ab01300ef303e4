"""The compliance officer's and the auditor's paths in a real browser: filter the queue by rule,
open an item, a still-invalid resubmit, a corrected one that shows its ledger entry, a dismissal
through the dialog, a bulk dismissal of N items writing N review entries on the ledger; the
auditor verifies the chain, downloads a proof and checks it with `ledger verify-proof`. The
same decisions without scripts. Every page is checked with axe-core; markup typed into cells,
notes and reasons is shown as text and never runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from ledger.testing import manifest
from ledger.testing.browser import sign_in
from ledger.testing.checkout import ROOT
from ledger.testing.live import Served

DIRTY = (ROOT / "examples" / "dirty-manifest.csv").read_bytes()
CLEAN = (ROOT / "examples" / "clean-manifest.csv").read_bytes()
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _api(served: Served, path: str, role: str = "admin", **params: str) -> Any:
    response = httpx.get(
        f"{served.base_url}{path}", params=params, headers={"Authorization": f"Bearer {served.tokens[role]}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _run(served: Served, content: bytes, filename: str, role: str = "manager") -> str:
    """Import ``content`` through the API and wait for it to end; its task id."""
    response = httpx.post(
        f"{served.base_url}/imports",
        headers={"Authorization": f"Bearer {served.tokens[role]}"},
        files={"file": (filename, content, "text/csv")},
    )
    assert response.status_code in (200, 202), response.text
    task: str = response.json()["task_id"]
    deadline = time.monotonic() + 30
    while _api(served, f"/imports/{task}")["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, "the import did not end"
        time.sleep(0.1)
    return task


def _alerts(page: Any) -> list[str]:
    """What alert() calls the page makes: markup typed by users must never run."""
    fired: list[str] = []

    def seen(dialog: Any) -> None:
        fired.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", seen)
    return fired


def test_the_officer_filters_corrects_and_dismisses(
    page: Any, served: Served, accessible: Callable[[Any], None]
) -> None:
    task = _run(served, DIRTY, "dirty-manifest.csv")
    alerts = _alerts(page)
    sign_in(page, served.tokens["officer"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Quarantine").click()
    expect(page).to_have_url(re.compile(r"/ui/quarantine\?status=open$"))
    expect(page.get_by_role("table", name="Quarantine queue")).to_be_visible()
    accessible(page)

    filters = page.get_by_role("form", name="Filters")
    filters.get_by_label("Import").fill(task)
    filters.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("8 matching", exact=True)).to_be_visible()
    # A filter applies as soon as it changes; the address holds it, under the API's names.
    filters.get_by_label("Rule").select_option("integer")
    expect(page).to_have_url(re.compile(rf"\?status=open&rule=integer&task_id={task}$"))
    expect(filters.get_by_label("Rule")).to_be_focused()  # the results came in around it
    expected = _api(served, "/quarantine", "officer", status="open", rule="integer", task_id=task)["items"]
    expect(page.get_by_text(f"{len(expected)} matching", exact=True)).to_be_visible()
    queue = page.get_by_role("table", name="Quarantine queue")
    expect(queue.get_by_role("link", name=re.compile(r"^Row \d+$"))).to_have_text([f"Row {i['row']}" for i in expected])
    accessible(page)
    page.go_back()  # the back button undoes the filter
    expect(page.get_by_text("8 matching", exact=True)).to_be_visible()
    page.go_forward()
    expect(filters.get_by_label("Rule")).to_have_value("integer")

    # Row 5: quantity 1.5.
    queue.get_by_role("link", name="Row 5").click()
    expect(page).to_have_url(re.compile(rf"/ui/quarantine/{task}:5$"))
    quantity = page.get_by_label("quantity", exact=True)
    expect(quantity).to_have_value("1.5")
    expect(quantity).to_have_attribute("aria-invalid", "true")
    expect(quantity).to_have_accessible_description(re.compile(r"Broken rule integer: quantity '1\.5'"))
    expect(page.get_by_label("category", exact=True)).not_to_have_attribute("aria-invalid", "true")
    accessible(page)

    head = _api(served, "/audit/head")["seq"]
    quantity.fill("1.25")
    page.get_by_role("button", name="Resubmit").click()
    expect(page.get_by_role("alert")).to_contain_text("Still invalid: nothing was changed")
    expect(quantity).to_have_value("1.25")
    expect(quantity).to_have_accessible_description(re.compile(r"Broken rule integer: quantity '1\.25'"))
    accessible(page)
    assert _api(served, "/audit/head")["seq"] == head
    assert _api(served, f"/quarantine/{task}:5")["status"] == "open"

    quantity.fill("2")
    page.get_by_label("Note").fill("1.5 was a typo <b>really</b>")
    page.get_by_role("button", name="Resubmit").click()
    expect(page.get_by_role("heading", name="Committed to the ledger")).to_be_visible()
    (entry,) = _api(served, f"/quarantine/{task}:5")["history"]
    expect(page.locator("#entry-seq")).to_have_text(str(entry["seq"]))
    expect(page.locator("#entry-idx")).to_have_text(str(entry["idx"]))
    record_hash = page.locator("#record-hash").inner_text()
    assert HEX64.match(record_hash) and record_hash == entry["correction"]["record_hash"]
    assert entry["values"] == {"quantity": "2"}  # only what the officer changed
    history = page.get_by_role("table", name="History of decisions")
    expect(history).to_contain_text("1.5 was a typo <b>really</b>")
    accessible(page)

    # Row 6 (category gadget): dismissed through the dialog.
    page.goto(f"/ui/quarantine/{task}:6")
    page.get_by_role("button", name="Dismiss").click()
    dialog = page.get_by_role("dialog", name="Dismiss this row")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("This will dismiss 1 item")
    dialog.get_by_label("Reason").fill('<img src=x onerror="alert(1)"> not lab inventory')
    accessible(page)
    dialog.get_by_role("button", name="Confirm dismiss").click()
    expect(page.get_by_role("heading", name="Dismissed")).to_be_visible()
    expect(page.get_by_role("table", name="History of decisions")).to_contain_text(
        '<img src=x onerror="alert(1)"> not lab inventory'
    )
    assert _api(served, f"/quarantine/{task}:6")["status"] == "dismissed"
    accessible(page)
    assert alerts == []


def _review_records(served: Served, entries: set[tuple[int, int]]) -> list[dict[str, Any]]:
    """The records at ``entries`` (batch seq, index) as the ledger's export carries them."""
    response = httpx.get(
        f"{served.base_url}/audit/export", headers={"Authorization": f"Bearer {served.tokens['auditor']}"}
    )
    assert response.status_code == 200
    found = []
    for line in response.text.splitlines():
        doc = json.loads(line)
        if doc.get("type") == "record" and (doc["seq"], doc["idx"]) in entries:
            found.append(json.loads(doc["record"]))
    return found


def test_the_officer_dismisses_in_bulk(page: Any, served: Served, accessible: Callable[[Any], None]) -> None:
    rows = [f"BULK-{i:03d},NIH-R01GM1,gadget,1,CHM-204,2024-01-15,,,10.00,Gadget {i}" for i in range(6)]
    task = _run(served, manifest(*rows), "bulk.csv")
    sign_in(page, served.tokens["officer"])
    page.goto(f"/ui/quarantine?status=open&task_id={task}")
    expect(page.get_by_text("6 matching", exact=True)).to_be_visible()
    picked = [1, 2, 4, 5]
    for row in picked:
        page.get_by_label(f"Select row {row} of bulk.csv").check()
    page.get_by_role("button", name="Dismiss selected").click()
    dialog = page.get_by_role("dialog", name="Dismiss items")
    expect(dialog).to_contain_text("This will dismiss 4 item(s)")
    dialog.get_by_label("Reason").fill("gadgets are not inventory")
    accessible(page)
    dialog.get_by_role("button", name="Confirm dismiss").click()
    expect(page.get_by_role("status")).to_contain_text("Dismissed 4 of 4 item(s)")
    outcome = page.get_by_role("table", name="What became of each item")
    expect(outcome.get_by_role("row")).to_have_count(1 + 4)
    for row in picked:
        expect(outcome.get_by_role("row", name=re.compile(rf":{row}\b.*dismissed"))).to_have_count(1)
    accessible(page)

    # Four decisions, four review entries on the ledger, each saying so.
    entries = set()
    for row in picked:
        (entry,) = _api(served, f"/quarantine/{task}:{row}")["history"]
        entries.add((entry["seq"], entry["idx"]))
    records = _review_records(served, entries)
    assert len(entries) == len(records) == 4
    assert {(r["action"], r["note"], r["item"]["row"]) for r in records} == {
        ("dismiss", "gadgets are not inventory", row) for row in picked
    }

    # The pages that stand in for the dialogs where no script runs (axe-core needs one).
    page.get_by_role("link", name="Back to the queue").click()
    page.get_by_label("Select row 3 of bulk.csv").check()
    page.locator("#bulk-form").evaluate("form => form.requestSubmit(form.querySelector('[value=confirm]'))")
    expect(page.get_by_role("dialog", name="Dismiss items")).to_contain_text("This will dismiss 1 item(s)")
    accessible(page)
    page.goto(f"/ui/quarantine/{task}:3?confirm=dismiss")
    expect(page.get_by_role("dialog", name="Dismiss this row")).to_be_visible()
    accessible(page)

    # "Select all N matching": the dialog counts every open item the filter matches.
    page.goto(f"/ui/quarantine?status=open&task_id={task}")
    expect(page.get_by_text("2 matching", exact=True)).to_be_visible()
    page.get_by_label("Select all 2 matching").check()
    page.get_by_role("button", name="Dismiss selected").click()
    expect(dialog).to_contain_text("This will dismiss 2 item(s)")
    dialog.get_by_role("link", name="Cancel").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Dismiss selected").click()
    dialog.get_by_label("Reason").fill("the rest too")
    dialog.get_by_role("button", name="Confirm dismiss").click()
    expect(page.get_by_role("status")).to_contain_text("Dismissed 2 of 2 item(s)")
    assert _api(served, "/quarantine", status="open", task_id=task)["items"] == []


def test_the_officer_decides_without_scripts(served: Served, playwright_browser: Any) -> None:
    rows = [f"NOJS-{i:03d},NIH-R01GM1,gadget,1,CHM-204,2024-01-15,,,10.00,Gadget {i}" for i in range(3)]
    task = _run(served, manifest(*rows), "nojs.csv")
    context = playwright_browser.new_context(base_url=served.base_url, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, served.tokens["officer"])
        page.goto(f"/ui/quarantine?status=open&task_id={task}")
        filters = page.get_by_role("form", name="Filters")
        filters.get_by_label("Rule").select_option("enum")
        filters.get_by_role("button", name="Apply").click()
        expect(page).to_have_url(re.compile(r"rule=enum"))
        expect(page.get_by_text("3 matching", exact=True)).to_be_visible()
        # One item: "Dismiss" asks the server for the dialog.
        page.get_by_role("link", name="Row 1").click()
        page.get_by_role("button", name="Dismiss").click()
        dialog = page.get_by_role("dialog", name="Dismiss this row")
        expect(page).to_have_url(re.compile(r"\?confirm=dismiss$"))
        dialog.get_by_label("Reason").fill("no script needed")
        dialog.get_by_role("button", name="Confirm dismiss").click()
        expect(page.get_by_role("heading", name="Dismissed")).to_be_visible()
        # Bulk: the confirmation is a page of its own.
        page.goto(f"/ui/quarantine?status=open&task_id={task}")
        page.get_by_label("Select row 2 of nojs.csv").check()
        page.get_by_role("button", name="Dismiss selected").click()
        dialog = page.get_by_role("dialog", name="Dismiss items")
        expect(dialog).to_contain_text("This will dismiss 1 item(s)")
        dialog.get_by_label("Reason").fill("no script needed either")
        dialog.get_by_role("button", name="Confirm dismiss").click()
        expect(page.get_by_role("status")).to_contain_text("Dismissed 1 of 1 item(s)")
    finally:
        context.close()
    assert [i["row"] for i in _api(served, "/quarantine", status="open", task_id=task)["items"]] == [3]


def test_the_auditor_verifies_and_checks_a_proof_offline(
    page: Any, served: Served, accessible: Callable[[Any], None], tmp_path: Path
) -> None:
    _run(served, CLEAN, "clean-manifest.csv")
    (key,) = [k["verifier_key"] for k in _api(served, "/audit/public-key", "auditor") if k["current"]]
    sign_in(page, served.tokens["auditor"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    expect(page.get_by_role("table", name="Public keys")).to_contain_text(key)
    expect(page.locator("#head-seq")).to_have_text(str(_api(served, "/audit/head", "auditor")["seq"]))
    accessible(page)
    page.get_by_role("button", name="Verify chain").click()
    expect(page.get_by_role("status")).to_contain_text("Chain intact")
    accessible(page)

    page.get_by_label("Asset ID").fill("CHEM-0042")
    page.get_by_label("Grant code").fill("NSF-CHE2201234")
    page.get_by_role("button", name="Search").click()
    revisions = page.get_by_role("table", name="Revisions of CHEM-0042")
    expect(revisions).to_be_visible()
    accessible(page)
    with page.expect_download() as download:
        revisions.get_by_role("link", name="Download proof").last.click()
    proof = tmp_path / "proof.json"
    download.value.save_as(proof)
    checked = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", "verify-proof", str(proof), "--public-key", key],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert re.search(r"record [0-9a-f]{64} is entry \d+ of batch \d+", checked.stdout), checked.stdout

    with page.expect_download() as download:
        page.get_by_role("link", name="Download export bundle").click()
    bundle = tmp_path / "bundle.jsonl"
    download.value.save_as(bundle)
    checked = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", "verify-bundle", str(bundle), "--public-key", key],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr

    # A lab manager may not see the audit page: the 403 page says so.
    context = page.context.browser.new_context(base_url=served.base_url)
    try:
        other = context.new_page()
        sign_in(other, served.tokens["manager"])
        response = other.goto("/ui/audit")
        assert response is not None and response.status == 403
        expect(other.get_by_text("You may not see this page as lab manager")).to_be_visible()
        accessible(other)
    finally:
        context.close()
