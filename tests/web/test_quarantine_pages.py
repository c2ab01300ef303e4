"""The compliance officer's pages over HTTP, without a browser: the queue's filters in the address
under the API's names, its counts and pages both ways, the export of the same filter; an item
as a form with its broken cells marked; resubmit, transfer and dismiss, one at a time or in
bulk, each what the API's service does; refusals that change nothing; escaping; roles."""

from __future__ import annotations

import base64
import html
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ledger.testing import Api, manifest
from ledger.testing.checkout import ROOT
from ledger.testing.web import sign_in

DIRTY = (ROOT / "examples" / "dirty-manifest.csv").read_bytes()
CLEAN = (ROOT / "examples" / "clean-manifest.csv").read_bytes()
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _links(text: str, name: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(rf'<a href="([^"]*)"[^>]*>{re.escape(name)}</a>', text)]


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def _cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _matching(text: str) -> int:
    found = re.search(r'id="matching"[^>]*>([\d,]+) matching<', text)
    assert found, text
    return int(found.group(1).replace(",", ""))


def _item_ids(text: str) -> list[str]:
    return re.findall(r'<a href="/ui/quarantine/([0-9a-f-]{36}:\d+)">Row', text)


async def _head(api: Api) -> int:
    seq: int = (await api.get("/audit/head")).json()["seq"]
    return seq


async def _item(api: Api, item_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await api.get(f"/quarantine/{item_id}")).json()
    return body


async def test_the_queue_is_the_apis_query_in_the_address(api: Api) -> None:
    task = (await api.run(DIRTY))["task_id"]
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        bare = await user.get("/ui/quarantine")
        assert bare.status_code == 303 and bare.headers["location"] == "/ui/quarantine?status=open"
        page = await user.get("/ui/quarantine?status=open")
        assert page.status_code == 200
        assert "<caption>Quarantine queue</caption>" in page.text and 'aria-label="Filters"' in page.text
        for label in ("Status", "Reason", "Rule", "Field", "Lab", "Grant code", "Import"):
            assert re.search(rf"<label for=\"[^\"]+\">{label}</label>", page.text), label
        assert ">Apply</button>" in page.text
        api_page = (await api.get("/quarantine", role="officer", params={"status": "open", "limit": 500})).json()
        assert _matching(page.text) == len(api_page["items"]) == 8
        # Facet counts beside the rules and fields: the API's.
        for rule, count in api_page["facets"]["rules"].items():
            assert f">{rule} ({count})</option>" in page.text, rule

        # Filter by rule: the page's address is the API's query, and so is its CSV export.
        filtered = await user.get("/ui/quarantine?status=open&rule=integer&task_id=" + task)
        api_filtered = (
            await api.get("/quarantine", role="officer", params={"status": "open", "rule": "integer", "task_id": task})
        ).json()
        integer = len(api_filtered["items"])
        assert _matching(filtered.text) == integer >= 1
        assert _item_ids(filtered.text) == [i["id"] for i in api_filtered["items"]]
        # Every rule is still there to pick, counted under the other filters (not the rule's).
        unruled = (await api.get("/quarantine", role="officer", params={"status": "open", "task_id": task})).json()
        for rule, count in unruled["facets"]["rules"].items():
            assert f">{rule} ({count})</option>" in filtered.text, rule
        (export,) = _links(filtered.text, "Export CSV")
        assert urlsplit(export).path == "/quarantine/export.csv"
        assert _query(export) == {"status": ["open"], "rule": ["integer"], "task_id": [task]}
        csv = await user.get(export)  # the session cookie is enough for the API's GET
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        assert len(csv.text.strip().splitlines()) == 1 + integer
        # "Any status" is a state of its own, kept in the address as an empty status.
        anything = await user.get("/ui/quarantine?status=&task_id=" + task)
        assert anything.status_code == 200 and _matching(anything.text) == 8
        assert "status" not in _query(_links(anything.text, "Export CSV")[0])  # the API's "any"


async def test_keyset_pages_go_forward_and_back(api: Api) -> None:
    rows = [f"PG-{i:04d},NIH-R01GM1,gadget,1,CHM-204,2024-01-15,,,10.00,Page {i}" for i in range(120)]
    task = (await api.run(manifest(*rows)))["task_id"]
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        first = await user.get(f"/ui/quarantine?status=open&task_id={task}")
        assert _matching(first.text) == 120 and not _links(first.text, "Previous page")
        seen = [_item_ids(first.text)]
        page = first
        while next_links := _links(page.text, "Next page"):
            assert _query(next_links[0])["task_id"] == [task]  # the filter travels with the page
            page = await user.get(next_links[0])
            seen.append(_item_ids(page.text))
        assert [len(s) for s in seen] == [50, 50, 20]
        ordered = [i for s in seen for i in s]
        assert ordered == [f"{task}:{n}" for n in range(1, 121)]
        # Back, page by page, to the first (which has no previous page).
        for expected in (seen[1], seen[0]):
            (previous,) = _links(page.text, "Previous page")
            page = await user.get(previous)
            assert _item_ids(page.text) == expected
        assert not _links(page.text, "Previous page") and _links(page.text, "Next page")


async def test_a_filter_the_service_refuses_is_said_on_the_form(api: Api) -> None:
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        for query, code in (
            ("status=sideways", "invalid_status"),
            ("status=open&task_id=not-a-task", "invalid_task_id"),
            ("status=open&cursor=bm90LWEtY3Vyc29y", "invalid_cursor"),
            # A forged cursor whose row number is past a BIGINT never reaches the database.
            (
                f"status=open&cursor={_cursor(['2024-01-01T00:00:00+00:00', str(uuid.UUID(int=1)), 10**30])}",
                "invalid_cursor",
            ),
            (
                f"status=open&before={_cursor(['2024-01-01T00:00:00+00:00', str(uuid.UUID(int=1)), 2**63])}",
                "invalid_cursor",
            ),
        ):
            page = await user.get(f"/ui/quarantine?{query}")
            assert page.status_code in (400, 422) and code in page.text, (query, page.status_code)
        control = await user.get("/ui/quarantine?status=open&rule=a%00b")
        assert control.status_code == 400


def _cell(text: str, field: str) -> str:
    """The input of ``field`` on an item page."""
    found = re.search(rf'<label for="(cell-\d+)">{re.escape(field)}</label>\s*<input [^>]*id="\1"[^>]*>', text)
    assert found, field
    return found.group(0)


def _description(text: str, cell: str) -> str:
    described = re.search(r'aria-describedby="([^"]+)"', cell)
    assert described, cell
    found = re.search(rf'<ul class="cell-rules" id="{described.group(1)}">(.*?)</ul>', text, re.S)
    assert found
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


async def test_an_item_is_its_row_as_a_form_with_every_broken_cell_marked(api: Api) -> None:
    task = (await api.run(DIRTY))["task_id"]
    detail = await _item(api, f"{task}:4")
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        page = await user.get(f"/ui/quarantine/{task}:4")
        assert page.status_code == 200
        broken = {e["field"] for e in detail["errors"]}
        assert broken == {"grant_code", "quantity", "location"}
        for field in ("asset_id", "grant_code", "category", "quantity", "location", "acquisition_date", "description"):
            cell = _cell(page.text, field)
            assert f'name="value.{field}"' in cell
            assert f'value="{html.escape(detail["fields"].get(field, ""), quote=True)}"' in cell
            if field in broken:
                assert 'aria-invalid="true"' in cell
                said = _description(page.text, cell)
                for error in (e for e in detail["errors"] if e["field"] == field):
                    # Told by its text (the mark and the words), not by its colour alone.
                    assert f"✖ Broken rule {error['rule']}: {error['message']}" in said
            else:
                assert "aria-invalid" not in cell
        for control in ('<label for="note">Note</label>', ">Resubmit</button>", ">Dismiss</button>"):
            assert control in page.text
        assert ">Transfer to this lab</button>" not in page.text  # not another lab's key
        assert "<caption>History of decisions</caption>" in page.text and "No decision yet." in page.text


async def test_a_still_invalid_resubmit_says_what_is_broken_and_changes_nothing(api: Api) -> None:
    task = (await api.run(DIRTY))["task_id"]
    head = await _head(api)
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        await user.get(f"/ui/quarantine/{task}:4")
        page = await user.post(f"/ui/quarantine/{task}:4/resubmit", {"value.quantity": "3", "note": "first try"})
        assert page.status_code == 422
        assert "Still invalid: nothing was changed" in page.text and "still_invalid" in page.text
        # What was typed stays; the rules still broken are beside their cells.
        assert 'value="3"' in _cell(page.text, "quantity") and "aria-invalid" not in _cell(page.text, "quantity")
        for field, rule in (("grant_code", "prefix"), ("location", "pattern")):
            assert f"Broken rule {rule}" in _description(page.text, _cell(page.text, field))
        assert "first try" in page.text
    assert await _head(api) == head
    item = await _item(api, f"{task}:4")
    assert item["status"] == "open" and item["history"] == []


async def test_a_corrected_resubmit_shows_the_ledger_entry_it_became(api: Api) -> None:
    task = (await api.run(DIRTY))["task_id"]
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        await user.get(f"/ui/quarantine/{task}:4")
        detail = await _item(api, f"{task}:4")
        # The form sends every cell; unchanged ones are no correction.
        form = {f"value.{name}": value for name, value in detail["fields"].items()}
        form |= {"value.grant_code": "NIH-R01GM123456", "value.quantity": "3", "value.location": "CHM-204"}
        page = await user.post(f"/ui/quarantine/{task}:4/resubmit", {**form, "note": "per PO 4471"})
        assert page.status_code == 200, page.text
        assert "Committed to the ledger" in page.text
    item = await _item(api, f"{task}:4")
    assert item["status"] == "resolved"
    (entry,) = item["history"]
    assert entry["values"] == {"grant_code": "NIH-R01GM123456", "location": "CHM-204", "quantity": "3"}
    assert entry["note"] == "per PO 4471"
    record_hash = entry["correction"]["record_hash"]
    assert HEX64.match(record_hash)
    assert f'<dd id="entry-seq">{entry["seq"]}</dd>' in page.text
    assert f'<dd id="entry-idx">{entry["idx"]}</dd>' in page.text
    assert f'<code class="hash" id="record-hash">{record_hash}</code>' in page.text
    # The asset is on the ledger as the corrected row.
    history = (await api.get("/assets/CONS-0501/history", params={"grant_code": "NIH-R01GM123456"})).json()
    assert history["revisions"][-1]["leaf_hash"] == record_hash
    # Resolved: the page reads it, and offers no decision.
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        again = await user.get(f"/ui/quarantine/{task}:4")
        assert ">Resubmit</button>" not in again.text and "per PO 4471" in again.text


async def test_dismiss_asks_for_a_reason_in_a_dialog_and_records_it(api: Api) -> None:
    task = (await api.run(DIRTY))["task_id"]
    item = f"{task}:6"
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        page = await user.get(f"/ui/quarantine/{item}")
        assert re.search(r'<dialog id="dismiss-dialog"[^>]*aria-labelledby', page.text)
        assert not re.search(r"<dialog[^>]* open>", page.text)
        # Without scripts, "Dismiss" asks the server for the page with the dialog open.
        asked = await user.get(f"/ui/quarantine/{item}?confirm=dismiss")
        assert re.search(r'<dialog id="dismiss-dialog"[^>]* open>', asked.text)
        assert '<label for="dismiss-reason">Reason</label>' in asked.text and ">Confirm dismiss</button>" in asked.text
        assert "This will dismiss 1 item" in asked.text
        missing = await user.post(f"/ui/quarantine/{item}/dismiss", {"reason": "  "})
        assert missing.status_code == 422 and "reason_required" in missing.text
        assert re.search(r'<dialog id="dismiss-dialog"[^>]* open>', missing.text)
        assert (await _item(api, item))["history"] == []
        done = await user.post(f"/ui/quarantine/{item}/dismiss", {"reason": "<script>alert(1)</script> not ours"})
        assert done.status_code == 200 and '<h2 id="result-heading">Dismissed</h2>' in done.text
        assert "<script>alert(1)</script>" not in done.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; not ours" in done.text
        again = await user.post(f"/ui/quarantine/{item}/dismiss", {"reason": "twice"})
        assert again.status_code == 409 and "already_decided" in again.text
    detail = await _item(api, item)
    assert detail["status"] == "dismissed"
    assert [(h["action"], h["note"]) for h in detail["history"]] == [("dismiss", "<script>alert(1)</script> not ours")]


async def test_an_officer_transfers_another_labs_key_with_a_note(api: Api) -> None:
    await api.run(CLEAN, role="manager")  # chem-lab holds the keys
    task = (await api.run(CLEAN, role="manager2"))["task_id"]  # bio-lab's rows: other_lab
    (first, *_rest) = (
        await api.get("/quarantine", role="officer", params={"task_id": task, "reason": "other_lab"})
    ).json()["items"]
    item = first["id"]
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        page = await user.get(f"/ui/quarantine/{item}")
        assert ">Transfer to this lab</button>" in page.text
        refused = await user.post(f"/ui/quarantine/{item}/resubmit", {"note": "ours"})
        assert refused.status_code == 409 and "other_lab" in refused.text
        unexplained = await user.post(f"/ui/quarantine/{item}/transfer", {"note": ""})
        assert unexplained.status_code == 422 and "note_required" in unexplained.text
        assert re.search(r'<textarea id="note"[^>]*aria-invalid="true"', unexplained.text)
        moved = await user.post(f"/ui/quarantine/{item}/transfer", {"note": "the stocks moved to the bio lab"})
        assert moved.status_code == 200, moved.text
        assert "Transferred to bio-lab and committed" in moved.text
        assert "Moved the asset key from chem-lab to bio-lab." in moved.text
    (entry,) = (await _item(api, item))["history"]
    assert entry["action"] == "transfer" and entry["transfer"] == {"from_lab": "chem-lab", "to_lab": "bio-lab"}


async def test_bulk_dismissal_confirms_the_count_and_answers_for_each_item(api: Api) -> None:
    task = (await api.run(DIRTY))["task_id"]
    open_ids = [
        i["id"] for i in (await api.get("/quarantine", params={"task_id": task, "status": "open"})).json()["items"]
    ]
    picked = open_ids[:3]
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        queue = await user.get(f"/ui/quarantine?status=open&task_id={task}")
        assert (
            f">Select all {len(open_ids)} matching</label>" in queue.text and ">Dismiss selected</button>" in queue.text
        )
        assert len(re.findall(r'<input type="checkbox" name="ids"', queue.text)) == len(open_ids)
        filters = {"filter.status": "open", "filter.task_id": task}
        nothing = await user.post("/ui/quarantine/bulk", {**filters, "step": "confirm"})
        assert nothing.status_code == 422 and "nothing_selected" in nothing.text
        confirm = await user.post("/ui/quarantine/bulk", {**filters, "ids": picked, "step": "confirm"})
        assert confirm.status_code == 200 and "This will dismiss 3 item(s)" in confirm.text
        assert re.search(r"<dialog open", confirm.text) and ">Confirm dismiss</button>" in confirm.text
        head = await _head(api)
        done = await user.post(
            "/ui/quarantine/bulk",
            {**filters, "ids": [*picked, "no-such-item"], "step": "dismiss", "reason": "not lab inventory"},
        )
        assert done.status_code == 200, done.text
        assert "Dismissed 3 of 4 item(s)" in done.text
        rows = re.findall(r"<tr>\s*<td>(.*?)</td>\s*<td><span class=\"status status-(\w+)\">", done.text, re.S)
        assert [(re.sub(r"<[^>]+>", "", r[0]), r[1]) for r in rows] == [
            *((p, "dismissed") for p in picked),
            ("no-such-item", "not_found"),
        ]
        # One review entry per dismissed item, on the ledger.
        entries = set()
        for item_id in picked:
            (entry,) = (await _item(api, item_id))["history"]
            assert (entry["action"], entry["note"]) == ("dismiss", "not lab inventory")
            entries.add((entry["seq"], entry["idx"]))
        assert len(entries) == 3 and await _head(api) == head + 1
        # Every item the filter matches: the dialog counts them first.
        rest = len(open_ids) - 3
        every = {**filters, "all": "true"}
        confirm = await user.post("/ui/quarantine/bulk", {**every, "step": "confirm"})
        assert f"This will dismiss {rest} item(s)" in confirm.text
        done = await user.post("/ui/quarantine/bulk", {**every, "step": "dismiss", "reason": "sweep"})
        assert f"Dismissed {rest} of {rest} item(s)" in done.text
    assert (await api.get("/quarantine", params={"task_id": task, "status": "open"})).json()["items"] == []


async def test_forged_csrf_changes_nothing(api: Api) -> None:
    task = (await api.run(DIRTY))["task_id"]
    head = await _head(api)
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        await user.get(f"/ui/quarantine/{task}:5")
        for path, form in (
            (f"/ui/quarantine/{task}:5/resubmit", {"value.quantity": "2"}),
            (f"/ui/quarantine/{task}:5/transfer", {"note": "x"}),
            (f"/ui/quarantine/{task}:5/dismiss", {"reason": "x"}),
            ("/ui/quarantine/bulk", {"ids": f"{task}:5", "step": "dismiss", "reason": "x"}),
        ):
            for csrf in ("", "forged"):
                response = await user.post(path, form, csrf=csrf)
                assert response.status_code == 403 and "csrf_failed" in response.text, path
    assert await _head(api) == head
    assert (await _item(api, f"{task}:5"))["status"] == "open"


async def test_who_may_read_and_who_may_act(api: Api) -> None:
    task = (await api.run(DIRTY))["task_id"]
    item = f"{task}:5"
    async with await sign_in(api.client, api.tokens["manager"]) as user:
        home = await user.get("/ui/")
        assert 'href="/ui/quarantine"' in home.text and 'href="/ui/audit"' not in home.text
        page = await user.get(f"/ui/quarantine/{item}")  # its own lab's item: read, not decided
        assert page.status_code == 200 and "readonly" in _cell(page.text, "quantity")
        assert ">Resubmit</button>" not in page.text and "compliance officers and admins decide it" in page.text
        queue = await user.get(f"/ui/quarantine?status=open&task_id={task}")
        assert queue.status_code == 200 and "Dismiss selected" not in queue.text and 'name="ids"' not in queue.text
        for path, form in (
            (f"/ui/quarantine/{item}/resubmit", {"value.quantity": "2"}),
            ("/ui/quarantine/bulk", {"ids": item}),
        ):
            refused = await user.post(path, form)
            assert refused.status_code == 403 and "You may not see this page as lab manager" in refused.text
        audit = await user.get("/ui/audit")
        assert audit.status_code == 403 and "You may not see this page" in audit.text
    async with await sign_in(api.client, api.tokens["manager2"]) as user:
        assert (await user.get(f"/ui/quarantine/{item}")).status_code == 404
        queue = await user.get(f"/ui/quarantine?status=open&task_id={task}")
        assert _matching(queue.text) == 0 and "chem-lab" not in queue.text.split("<main", 1)[1]
    async with await sign_in(api.client, api.tokens["auditor"]) as user:
        home = await user.get("/ui/")
        assert 'href="/ui/quarantine"' in home.text and 'href="/ui/audit"' in home.text
        assert ">Resubmit</button>" not in (await user.get(f"/ui/quarantine/{item}")).text
        assert (await user.post(f"/ui/quarantine/{item}/dismiss", {"reason": "x"})).status_code == 403
    assert (await _item(api, item))["status"] == "open"


async def test_markup_in_cells_and_filenames_is_text(api: Api) -> None:
    hostile = manifest(
        '<IMG SRC=X ONERROR=ALERT(1)>,NIH-R01GM1,<b>gadget</b>,1,CHM-204,2024-01-15,,,10.00,"<script>alert(2)</script>"'
    )
    task = (await api.run(hostile, filename="<svg onload=alert(3)>.csv"))["task_id"]
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        for path in (f"/ui/quarantine?status=open&task_id={task}", f"/ui/quarantine/{task}:1"):
            page = await user.get(path)
            assert page.status_code == 200
            for raw in ("<script>alert(2)", "<svg onload", "<b>gadget", "<IMG SRC"):
                assert raw not in page.text, (path, raw)
        page = await user.get(f"/ui/quarantine/{task}:1")
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page.text and "&lt;svg onload=alert(3)&gt;.csv" in page.text
        # A note or value with a NUL is refused, as by the API, and changes nothing.
        nul = await user.post(f"/ui/quarantine/{task}:1/resubmit", {"value.category": "equipment", "note": "a\x00b"})
        assert nul.status_code == 422 and "invalid_field" in nul.text
    assert (await _item(api, f"{task}:1"))["status"] == "open"


@pytest.mark.parametrize(
    "path",
    ["/ui/quarantine/not-an-item", "/ui/quarantine/00000000-0000-4000-8000-000000000000:99999999999999999999999"],
)
async def test_an_unknown_item_is_the_404_page(api: Api, path: str) -> None:
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        page = await user.get(path)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
