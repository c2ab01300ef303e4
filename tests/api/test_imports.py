"""Submitting manifests through the HTTP API, against a real PostgreSQL and a real worker."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from ledger.testing import HEADER, Api, manifest

ROOT = Path(__file__).resolve().parents[2]
CLEAN = (ROOT / "examples" / "clean-manifest.csv").read_bytes()
DIRTY = (ROOT / "examples" / "dirty-manifest.csv").read_bytes()

GOOD = "EQ-0001,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"


def accounted(status: dict[str, Any]) -> None:
    assert status["rows_committed"] + status["rows_duplicate"] + status["rows_quarantined"] == status["rows_total"]


async def test_clean_manifest_is_committed_with_batches_and_a_receipt(api: Api) -> None:
    response = await api.submit(CLEAN)
    assert response.status_code == 202
    accepted = response.json()
    assert set(accepted) == {"task_id", "idempotency_key", "manifest_sha256", "status_url"}
    status = await api.wait(accepted["task_id"])
    assert status["status"] == "done", status
    assert (status["rows_total"], status["rows_committed"], status["rows_duplicate"], status["rows_quarantined"]) == (
        8,
        8,
        0,
        0,
    )
    assert status["policy"]["name"] == "lab-inventory"
    assert len(status["policy"]["sha256"]) == 64
    assert [b["kind"] for b in status["batches"]] == ["assets", "receipt"]
    assert status["batches"][0]["records"] == 8
    assert [b["seq"] for b in status["batches"]] == [1, 2]
    rows = await api.rows(accepted["task_id"])
    assert [r["row"] for r in rows] == list(range(1, 9))
    assert {r["outcome"] for r in rows} == {"committed"}
    assert rows[0]["key"] == ["MS-0001", "NIH-R01GM123456"] and rows[0]["revision"] == 1


async def test_same_file_again_answers_200_with_the_original_body_and_creates_nothing(api: Api) -> None:
    first = await api.submit(CLEAN)
    status = await api.wait(first.json()["task_id"])
    head = (await api.get("/audit/head")).json()
    again = await api.submit(CLEAN)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert (await api.get("/audit/head")).json() == head
    assert (await api.get(f"/imports/{first.json()['task_id']}")).json()["batches"] == status["batches"]


async def test_resubmission_under_a_new_key_only_finds_duplicates(api: Api) -> None:
    first = await api.run(CLEAN)
    second = await api.run(CLEAN, headers={"Idempotency-Key": "second-try"})
    assert second["task_id"] != first["task_id"]
    assert (second["rows_committed"], second["rows_duplicate"]) == (0, 8)
    # Only the receipt is new: no asset batch, and the first import's hashes are untouched.
    assert [b["kind"] for b in second["batches"]] == ["receipt"]
    assets = (await api.get("/assets", params={"limit": 100})).json()["items"]
    assert len(assets) == 8 and {a["revision"] for a in assets} == {1}


async def test_idempotency_key_reused_for_another_file_is_a_conflict(api: Api) -> None:
    await api.run(CLEAN, headers={"Idempotency-Key": "k1"})
    response = await api.submit(manifest(GOOD), headers={"Idempotency-Key": "k1"})
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"


async def test_an_idempotency_key_is_scoped_to_the_lab_as_the_readme_says(api: Api) -> None:
    """The same key for the same lab is the same submission, whoever sends it; for another lab
    it is another submission (README, "Idempotency")."""
    first = await api.submit(CLEAN, role="manager", headers={"Idempotency-Key": "k-lab"})
    assert first.status_code == 202
    same_lab = await api.submit(CLEAN, role="multi", lab="chem-lab", headers={"Idempotency-Key": "k-lab"})
    assert same_lab.status_code == 200 and same_lab.json() == first.json()
    other_lab = await api.submit(CLEAN, role="multi", lab="bio-lab", headers={"Idempotency-Key": "k-lab"})
    assert other_lab.status_code == 202 and other_lab.json()["task_id"] != first.json()["task_id"]


async def test_dirty_manifest_accounts_for_every_row(api: Api) -> None:
    await api.run(CLEAN)
    status = await api.run(DIRTY)
    assert status["status"] == "done"
    assert (status["rows_total"], status["rows_committed"], status["rows_duplicate"], status["rows_quarantined"]) == (
        12,
        2,
        2,
        8,
    )
    accounted(status)
    rows = {r["row"]: r for r in await api.rows(status["task_id"])}
    assert len(rows) == 12
    assert rows[1]["outcome"] == "duplicate" and rows[1]["revision"] == 1  # same as the ledger
    assert rows[2]["outcome"] == "committed" and rows[2]["revision"] == 2  # a new revision
    assert rows[8]["outcome"] == "committed" and rows[9]["outcome"] == "duplicate"  # repeated in file
    for conflict in (10, 11):
        assert rows[conflict]["outcome"] == "quarantined"
        assert [e["rule"] for e in rows[conflict]["errors"]] == ["duplicate_key_in_manifest"]
    rules = {(e["field"], e["rule"]) for e in rows[3]["errors"]}
    assert {
        ("acquisition_date", "date"),
        ("cas_number", "check_digit"),
        ("hazard_class", "required_when"),
        ("unit_cost", "decimal_places"),
    } <= rules
    rules = {(e["field"], e["rule"]) for e in rows[4]["errors"]}
    assert {("grant_code", "prefix"), ("quantity", "minimum"), ("location", "pattern")} <= rules
    assert [e["field"] for e in rows[12]["errors"]] == ["row"]
    for row in rows.values():
        for error in row["errors"]:
            assert error["message"] and error["field"] and error["rule"]
    quarantined = await api.rows(status["task_id"], outcome="quarantined")
    assert [r["row"] for r in quarantined] == [3, 4, 5, 6, 7, 10, 11, 12]
    # Each outcome filter lists exactly its rows (duplicates through the partial outcome
    # index, committed rows through the key).
    for outcome in ("committed", "duplicate", "quarantined"):
        listed = await api.rows(status["task_id"], outcome=outcome)
        assert [r["row"] for r in listed] == sorted(n for n, r in rows.items() if r["outcome"] == outcome), outcome


async def test_revisions_are_kept_and_history_lists_them(api: Api) -> None:
    await api.run(manifest(GOOD))
    await api.run(manifest(GOOD.replace(",1,CHM-204", ",3,CHM-204")))
    # Back to the first content: a third revision, not a duplicate. The same bytes as the first
    # submission would be answered by it (same idempotency key), so this one names its own key.
    await api.run(manifest(GOOD), headers={"Idempotency-Key": "back-to-one"})
    history = (await api.get("/assets/EQ-0001/history", params={"grant_code": "NIH-R01GM1"})).json()
    revisions = history["revisions"]
    assert [r["revision"] for r in revisions] == [1, 2, 3]
    assert [r["data"]["quantity"] for r in revisions] == [1, 3, 1]
    assert revisions[0]["leaf_hash"] == revisions[2]["leaf_hash"]  # identical content, identical hash
    assert revisions[0]["batch_seq"] < revisions[1]["batch_seq"] < revisions[2]["batch_seq"]
    current = (await api.get("/assets", params={"grant_code": "nih-r01gm1"})).json()["items"]
    assert len(current) == 1 and current[0]["revision"] == 3


@pytest.mark.parametrize("batch_rows", [3])
async def test_committed_rows_are_split_into_batches_of_at_most_n(api: Api, batch_rows: int) -> None:
    status = await api.run(CLEAN)
    sizes = [b["records"] for b in status["batches"] if b["kind"] == "assets"]
    assert sizes == [3, 3, 2]
    assert [b["seq"] for b in status["batches"]] == [1, 2, 3, 4]
    verify = (await api.get("/audit/verify")).json()
    assert verify == {"ok": True, "batches_checked": 4, "records_checked": 9, "first_failure": None}


async def test_batch_hash_is_the_merkle_root_of_the_records_computed_from_the_file(api: Api) -> None:
    """The server's batch hash equals one computed here from the file and the policy alone,
    so the same manifest gives the same hash on any ledger, whenever it is submitted."""
    from ledger.core.hashing import leaf_hash
    from ledger.core.merkle import root
    from ledger.core.policy import load_policy
    from ledger.core.records import asset_record

    policy = load_policy((ROOT / "policies" / "lab-inventory.json").read_bytes(), source="lab-inventory")
    reader = csv.reader(io.StringIO(CLEAN.decode()))
    binding = policy.bind_header(next(reader))
    leaves = []
    for cells in reader:
        result = binding.validate(cells)
        assert result.data is not None
        leaves.append(leaf_hash(asset_record(policy=policy.name, lab="chem-lab", data=result.data)))
    status = await api.run(CLEAN)
    assert status["batches"][0]["batch_hash"] == root(leaves).hex()


async def test_errors_csv_lists_each_broken_rule_and_neutralises_formulas(api: Api) -> None:
    status = await api.run(DIRTY)
    response = await api.get(f"/imports/{status['task_id']}/errors")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    text = response.content.decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0][:4] == ["row", "field", "rule", "message"]
    assert lines[0][4:] == next(csv.reader(io.StringIO(DIRTY.decode())))
    body = lines[1:]
    rows = await api.rows(status["task_id"], outcome="quarantined")
    assert len(body) == sum(len(r["errors"]) for r in rows)
    for line in body:
        for cell in line:
            assert not cell or cell[0] not in "=+-@\t\r", line
    formula = [line for line in body if line[0] == "5"]
    assert formula and all(line[-1].startswith("'=HYPERLINK") for line in formula)


async def test_dry_run_reports_without_writing_to_the_ledger(api: Api) -> None:
    status = await api.run(DIRTY, dry_run="true")
    assert status["status"] == "done" and status["dry_run"] is True
    assert status["rows_total"] == 12 and status["batches"] == []
    accounted(status)
    assert (await api.get("/audit/head")).json()["seq"] == 0
    assert (await api.get("/assets")).json()["items"] == []
    # The real submission of the same file is not answered by the dry run.
    real = await api.submit(DIRTY)
    assert real.status_code == 202


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "not_tabular"),
        (b"PK\x03\x04" + bytes(100), "not_tabular"),
        (b"\xff\xfea\x00,\x00\x00\xd8", "encoding"),  # a UTF-16 BOM, then a broken surrogate
    ],
)
async def test_unreadable_files_fail_with_a_code(api: Api, content: bytes, code: str) -> None:
    status = await api.run(content)
    assert status["status"] == "failed"
    assert status["error"]["code"] == code and status["error"]["message"]
    assert status["batches"] == [] and status["rows_committed"] == 0


async def test_unknown_columns_are_schema_drift_naming_them(api: Api) -> None:
    status = await api.run(manifest(GOOD + ",x", header=HEADER + ",room_temperature"))
    assert status["status"] == "failed"
    assert status["error"]["code"] == "schema_drift"
    assert status["error"]["unknown_columns"] == ["room_temperature"]


async def test_missing_required_columns_are_named(api: Api) -> None:
    status = await api.run(b"asset_id,grant_code,category\nEQ-1,NIH-1A,equipment\n")
    assert status["status"] == "failed"
    assert status["error"]["code"] == "missing_columns"
    assert set(status["error"]["missing_columns"]) == {"quantity", "location", "acquisition_date"}


async def test_header_only_manifest_is_done_with_zero_rows(api: Api) -> None:
    status = await api.run(manifest())
    assert status["status"] == "done"
    assert status["rows_total"] == 0
    assert [b["kind"] for b in status["batches"]] == ["receipt"]


async def test_header_variants_and_bom_are_accepted(api: Api) -> None:
    header = "\ufeff Asset ID ,GRANT-CODE,Category,quantity,location,Acquisition.Date"
    status = await api.run(manifest("eq-0009,nih-abc,Equipment,2,chm-204,2024-01-01", header=header))
    assert status["status"] == "done" and status["rows_committed"] == 1, status
    item = (await api.get("/assets")).json()["items"][0]
    assert (item["asset_id"], item["grant_code"], item["data"]["category"]) == ("EQ-0009", "NIH-ABC", "equipment")


async def test_ragged_rows_and_broken_quoting_are_quarantined_not_fatal(api: Api) -> None:
    content = manifest(
        GOOD,
        "EQ-0002,NIH-R01GM1,equipment,1",  # too few cells
        GOOD.replace("EQ-0001", "EQ-0003") + ",extra,cells",  # too many
        'EQ-0004,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,1.00,"unterminated',
    )
    status = await api.run(content)
    assert status["status"] == "done"
    accounted(status)
    rows = await api.rows(status["task_id"])
    assert rows[0]["outcome"] == "committed"
    assert all(r["outcome"] == "quarantined" for r in rows[1:])
    assert all(r["errors"][0]["field"] == "row" for r in rows[1:])


async def test_an_absurdly_long_line_is_a_quarantined_row(api: Api) -> None:
    long_line = "EQ-0005,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,1.00," + "x" * 3_000_000
    status = await api.run(manifest(GOOD, long_line, GOOD.replace("EQ-0001", "EQ-0006")))
    assert status["status"] == "done"
    accounted(status)
    rows = await api.rows(status["task_id"])
    assert [r["outcome"] for r in rows] == ["committed", "quarantined", "committed"]


async def test_quoted_fields_spanning_lines_count_as_one_row(api: Api) -> None:
    multi = 'EQ-0007,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,1.00,"two\nlines, and a ""quote"""'
    status = await api.run(manifest(multi, GOOD))
    assert status["rows_total"] == 2 and status["rows_committed"] == 2
    history = (await api.get("/assets/EQ-0007/history")).json()["revisions"]
    assert history[0]["data"]["description"] == 'two\nlines, and a "quote"'


async def test_bad_requests_get_coded_4xx(api: Api) -> None:
    no_file = await api.client.post("/imports", headers=api.auth("manager"), data={"lab": "chem-lab"})
    assert no_file.status_code in (400, 422) and no_file.json()["code"] in ("missing_file", "bad_multipart")
    bad_policy = await api.submit(CLEAN, policy="nope")
    assert bad_policy.status_code == 422 and bad_policy.json()["code"] == "unknown_policy"
    bad_flag = await api.submit(CLEAN, dry_run="perhaps")
    assert bad_flag.status_code == 422 and bad_flag.json()["code"] == "invalid_field"
    missing = await api.get("/imports/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    garbage = await api.get("/imports/not-a-uuid")
    assert garbage.status_code == 404
    status = await api.run(CLEAN)
    bad_outcome = await api.get(f"/imports/{status['task_id']}/rows", params={"outcome": "lost"})
    assert bad_outcome.status_code == 422 and bad_outcome.json()["code"] == "invalid_outcome"
    bad_cursor = await api.get("/assets", params={"cursor": "!!"})
    assert bad_cursor.status_code == 422


async def test_rows_and_assets_paginate_with_cursors(api: Api) -> None:
    await api.run(CLEAN)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/assets", params=params)).json()
        seen += [item["asset_id"] for item in page["items"]]
        cursor = page["next"]
        if not cursor:
            break
    assert seen == sorted(seen) and len(seen) == 8
    filtered = (await api.get("/assets", params={"category": "chemical"})).json()["items"]
    assert {a["asset_id"] for a in filtered} == {"CHEM-0042", "CHEM-0043", "CHEM-0044"}
    by_location = (await api.get("/assets", params={"location": "chm-210"})).json()["items"]
    assert {a["asset_id"] for a in by_location} == {"CHEM-0043", "CHEM-0044"}
