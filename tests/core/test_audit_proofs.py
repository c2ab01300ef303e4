"""Signed notes, checkpoints, entry/receipt/consistency proofs and bundles (pure core).

Proof paths are compared with the recursive RFC 9162 reference (ledger.testing.merkle_reference)
on every tree size up to 64; property tests go beyond; every broken variant names the check it
fails.
"""

from __future__ import annotations

import base64
import hashlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core.bundle import verify_bundle
from ledger.core.checkpoint import Checkpoint, encode_body, parse_body, sign_checkpoint, verify_checkpoint
from ledger.core.failures import (
    BundleError,
    ConsistencyError,
    InclusionError,
    NoteError,
    ReceiptError,
    SignatureError,
    VerificationError,
)
from ledger.core.hashing import leaf_hash
from ledger.core.note import Signer, Verifier, key_id, open_note, sign_note
from ledger.core.proofs import (
    BatchInclusion,
    build_batch_inclusion,
    build_consistency_proof,
    build_entry_proof,
    build_receipt_proof,
    read_checkpoint,
    verify_batch_inclusion,
    verify_consistency_proof,
    verify_entry_proof,
    verify_receipt_proof,
)
from ledger.testing.merkle_reference import leaves_of, ref_mth, ref_path, ref_subproof
from tests.vectors.audit_ledger import (
    ORIGIN,
    OTHER_SIGNER,
    TEST_SIGNER,
    SynthBatch,
    bundle_lines,
    checkpoint_note,
    manifest_bytes,
    synth_ledger,
    tree_leaves,
)

TRUSTED = [TEST_SIGNER.verifier]

# golang.org/x/mod/sumdb/note's own example key and note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


def test_go_reference_note_is_reproduced_byte_for_byte() -> None:
    signer = Signer.parse(GO_SKEY)
    assert signer.verifier.encode() == GO_VKEY
    assert signer.encode() == GO_SKEY
    note = sign_note(GO_TEXT, [signer])
    assert note == GO_TEXT + "\n" + GO_SIG
    assert open_note(note, [Verifier.parse(GO_VKEY)]).body == GO_TEXT


def test_key_id_is_the_signed_note_formula() -> None:
    v = TEST_SIGNER.verifier
    expected = hashlib.sha256(v.name.encode() + b"\n\x01" + v.public_key).digest()[:4]
    assert key_id(v.name, v.public_key) == expected == v.key_id
    assert Verifier.parse(v.encode()).public_key == v.public_key
    assert Signer.parse(TEST_SIGNER.encode()).key_id == TEST_SIGNER.key_id


@pytest.mark.parametrize(
    "bad",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),  # key id of another key
        GO_VKEY.replace("+ARpc", "+AhRpc"),  # wrong algorithm byte / length
        GO_VKEY[:-4],  # truncated key
        "PeterNeumann+c74f20a3",  # no key
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in the name
    ],
)
def test_malformed_verifier_keys_are_refused(bad: str) -> None:
    with pytest.raises(NoteError):
        Verifier.parse(bad)


def test_note_signature_checks() -> None:
    note = sign_note("hello\n", [TEST_SIGNER])
    assert open_note(note, TRUSTED).verified_by[0].key_id == TEST_SIGNER.key_id
    with pytest.raises(SignatureError) as exc:
        open_note(note.replace("hello", "hellO"), TRUSTED)
    assert exc.value.check == "signature"
    with pytest.raises(SignatureError) as exc:
        open_note(note, [OTHER_SIGNER.verifier])  # same name, another key: another key id
    assert exc.value.check == "untrusted_key"
    two = sign_note("hello\n", [OTHER_SIGNER, TEST_SIGNER])
    assert len(open_note(two, TRUSTED).signatures) == 2  # unknown signers are ignored
    for broken in [
        note.replace("\n\n", "\n"),  # no blank line
        note + "garbage",  # trailing text after the signatures
        note.replace("— ", "- "),  # not an em dash
        "hel\x07lo\n" + note[6:],  # control character
        note.replace(note.split(" ")[-1], "!!!\n"),  # signature not base64
    ]:
        with pytest.raises(VerificationError):
            open_note(broken, TRUSTED)


def test_checkpoint_body_round_trip_and_malformed_bodies() -> None:
    cp = Checkpoint(origin=ORIGIN, size=7, root=bytes(range(32)))
    body = encode_body(cp)
    assert body == f"{ORIGIN}\n7\n{base64.b64encode(bytes(range(32))).decode()}\n"
    assert parse_body(body) == cp
    assert verify_checkpoint(sign_checkpoint(cp, TEST_SIGNER), TRUSTED) == cp
    root = base64.b64encode(bytes(32)).decode()
    for bad in [
        f"{ORIGIN}\n07\n{root}\n",  # leading zero
        f"{ORIGIN}\n-1\n{root}\n",
        f"{ORIGIN}\n7\n{base64.b64encode(bytes(31)).decode()}\n",  # 31-byte root
        f"{ORIGIN}\n7\n",  # no root line
        f"\n7\n{root}\n",  # empty origin
        f"{ORIGIN}\n7\n{root}",  # no final newline
        f"{ORIGIN}\n7\n{root}\n\n",  # empty extension line
    ]:
        with pytest.raises(NoteError):
            parse_body(bad)


LEDGER = synth_ledger([1] * 32, batch_rows=1)  # 64 batches of one record
ALL_LEAVES = tree_leaves(LEDGER)


def _notes(size: int) -> str:
    return checkpoint_note(LEDGER, size)


@pytest.mark.parametrize("n", range(1, 65))
def test_batch_inclusion_matches_the_reference_on_every_tree_size(n: int) -> None:
    leaves = ALL_LEAVES[:n]
    cp = read_checkpoint(_notes(n), TRUSTED)
    assert cp.root == ref_mth(leaves) and cp.size == n
    for i in range(n):
        inclusion = build_batch_inclusion(LEDGER[i].header, leaves)
        assert inclusion.tree_path == [p.hex() for p in ref_path(i, leaves)]
        verify_batch_inclusion(inclusion, cp)
    for m in range(0, n + 1):
        doc = build_consistency_proof(leaves, m, _notes(m) if m else None, _notes(n))
        if 0 < m < n:
            assert doc.proof == [p.hex() for p in ref_subproof(m, leaves, True)]
        if m:
            verify_consistency_proof(_notes(m), _notes(n), doc, TRUSTED)


def _entry_proof(batches: list[SynthBatch], seq: int, index: int, size: int) -> msgspec.Struct:
    b = batches[seq - 1]
    return build_entry_proof(
        entry_id=None,
        index=index,
        record=b.records[index],
        batch_leaves=[leaf_hash(r) for r in b.records],
        header=b.header,
        tree_leaves=tree_leaves(batches[:size]),
        checkpoint=checkpoint_note(batches, size),
    )


BIG = synth_ledger([13, 5, 0, 9], batch_rows=4)  # batches of 4, 4, 4, 1 and receipts


def test_entry_proofs_verify_for_every_record() -> None:
    size = len(BIG)
    for b in BIG:
        for i in range(b.header.records):
            proof = _entry_proof(BIG, b.header.seq, i, size)
            result = verify_entry_proof(proof, TRUSTED)  # type: ignore[arg-type]
            assert (result.batch_seq, result.index) == (b.header.seq, i)


def _flip_hex(value: str) -> str:
    raw = bytearray(bytes.fromhex(value))
    raw[0] ^= 8
    return raw.hex()


def _broken_entry_proofs() -> list[tuple[str, dict[str, object], str]]:
    good = msgspec.to_builtins(_entry_proof(BIG, 2, 1, len(BIG)))
    path, tree_path = good["batch_path"], good["batch"]["tree_path"]
    header = good["batch"]["header"]
    return [
        ("flipped bit in the batch path", {**good, "batch_path": [_flip_hex(path[0]), *path[1:]]}, "record_in_batch"),
        (
            "flipped bit in the tree path",
            {**good, "batch": {**good["batch"], "tree_path": [_flip_hex(tree_path[0]), *tree_path[1:]]}},
            "batch_in_checkpoint",
        ),
        ("index + 1", {**good, "index": good["index"] + 1}, "record_in_batch"),
        ("truncated batch path", {**good, "batch_path": path[:-1]}, "record_in_batch"),
        ("trailing garbage", {**good, "batch_path": [*path, "00" * 32]}, "record_in_batch"),
        (
            "truncated tree path",
            {**good, "batch": {**good["batch"], "tree_path": tree_path[:-1]}},
            "batch_in_checkpoint",
        ),
        (
            "checkpoint of another size",
            {**good, "checkpoint": checkpoint_note(BIG, len(BIG) - 1)},
            "batch_in_checkpoint",
        ),
        ("record changed", {**good, "record": good["record"].replace("equipment", "equipmenT")}, "record_hash"),
        (
            "header changed",
            {**good, "batch": {**good["batch"], "header": {**header, "committed_at": "2027-01-01T00:00:00.000000Z"}}},
            "batch_in_checkpoint",
        ),
        ("unsigned checkpoint", {**good, "checkpoint": checkpoint_note(BIG, len(BIG), OTHER_SIGNER)}, "untrusted_key"),
    ]


@pytest.mark.parametrize(
    ("name", "doc", "check"), _broken_entry_proofs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_broken_entry_proofs_name_the_failed_check(name: str, doc: dict[str, object], check: str) -> None:
    from ledger.core.proofs import EntryProof, decode_document

    proof = decode_document(msgspec.json.encode(doc), EntryProof, where="test")
    with pytest.raises(VerificationError) as exc:
        verify_entry_proof(proof, TRUSTED)
    assert exc.value.check == check, str(exc.value)
    assert "batch" in exc.value.where or "checkpoint" in exc.value.where


def _receipt(task: int) -> tuple[msgspec.Struct, bytes]:
    receipts = [b for b in BIG if b.header.kind == "receipt"]
    b = receipts[task]
    receipt = msgspec.json.decode(b.records[0])
    listed = [BIG[x["seq"] - 1].header for x in receipt["batches"]]
    proof = build_receipt_proof(
        task_id=b.task_id or "",
        receipt=b.records[0],
        receipt_header=b.header,
        batch_headers=listed,
        tree_leaves=tree_leaves(BIG),
        checkpoint=checkpoint_note(BIG, len(BIG)),
    )
    return proof, manifest_bytes(task, receipt["rows"]["committed"])


def test_receipts_prove_the_manifest_and_its_batches() -> None:
    for task in range(4):
        proof, manifest = _receipt(task)
        result = verify_receipt_proof(proof, TRUSTED, manifest=[manifest])  # type: ignore[arg-type]
        assert result.receipt.rows.total == result.receipt.rows.committed + 1
    proof, manifest = _receipt(0)
    with pytest.raises(ReceiptError) as exc:
        verify_receipt_proof(proof, TRUSTED, manifest=[manifest + b"x"])  # type: ignore[arg-type]
    assert exc.value.check == "manifest_sha256"
    doc = msgspec.to_builtins(proof)
    dropped = {**doc, "batches": doc["batches"][1:]}
    from ledger.core.proofs import ReceiptProof, decode_document

    with pytest.raises(InclusionError, match="omits"):
        verify_receipt_proof(decode_document(msgspec.json.encode(dropped), ReceiptProof, where="t"), TRUSTED)
    forged = {**doc, "receipt": doc["receipt"].replace('"quarantined":1', '"quarantined":0')}
    with pytest.raises(VerificationError):
        verify_receipt_proof(decode_document(msgspec.json.encode(forged), ReceiptProof, where="t"), TRUSTED)


def test_consistency_rejects_a_rewritten_history() -> None:
    rewritten = synth_ledger([13, 5, 0, 9], batch_rows=4)
    # A superuser rewrites batch 2's first record and recomputes everything after it.
    changed = synth_ledger([13, 6, 0, 9], batch_rows=4)
    assert tree_leaves(changed)[0] == tree_leaves(rewritten)[0]
    old_note = checkpoint_note(rewritten, 6)
    new_note = checkpoint_note(changed, len(changed))
    doc = build_consistency_proof(tree_leaves(changed), 6, None, None)
    with pytest.raises(ConsistencyError) as exc:
        verify_consistency_proof(old_note, new_note, doc, TRUSTED)
    assert exc.value.check == "consistency" and exc.value.where == f"checkpoint 6 -> {len(changed)}"


def test_bundles_verify_whole_and_from_a_later_size() -> None:
    size = len(BIG)
    report = verify_bundle(bundle_lines(BIG, 0, size, range(size + 1)), TRUSTED)
    assert (report.batches, report.records, report.checkpoints) == (size, 27 + 4, size + 1)
    report = verify_bundle(bundle_lines(BIG, 5, size, [5, size]), TRUSTED)
    assert report.from_size == 5 and report.batches == size - 5
    old = read_checkpoint(checkpoint_note(BIG, 3), TRUSTED)
    verify_bundle(bundle_lines(BIG, 0, size, [size]), TRUSTED, old_checkpoints=[old])


def _mutate(lines: list[bytes], index: int, old: bytes, new: bytes) -> list[bytes]:
    assert old in lines[index]
    return [*lines[:index], lines[index].replace(old, new), *lines[index + 1 :]]


def test_broken_bundles_name_the_failed_check() -> None:
    size = len(BIG)
    lines = list(bundle_lines(BIG, 0, size, [size]))
    record_line = next(i for i, line in enumerate(lines) if b'"type":"record"' in line)
    outcome_line = next(i for i, line in enumerate(lines) if b'"type":"outcome"' in line)
    cases = [
        (_mutate(lines, record_line, b"equipment", b"equipmenT"), "batch_hash_mismatch"),
        ([*lines[:record_line], *lines[record_line + 1 :]], "entry_missing"),
        (lines[:-1], "bundle_truncated"),
        ([*lines, lines[-1]], "bundle_format"),
        (_mutate(lines, outcome_line, b'"row":1', b'"row":2'), "outcome_out_of_place"),
        (list(bundle_lines(BIG, 0, size, [])), "checkpoint_missing"),
    ]
    rewritten = synth_ledger([13, 6, 0, 9], batch_rows=4)
    forged = list(bundle_lines(rewritten, 0, len(rewritten), []))
    forged.insert(-1, lines[-2])  # the genuine checkpoint, next to rewritten history
    cases.append((forged, "checkpoint_root"))
    for broken, check in cases:
        with pytest.raises(BundleError) as exc:
            verify_bundle(broken, TRUSTED)
        assert exc.value.check == check, str(exc.value)
    old = read_checkpoint(checkpoint_note(BIG, 6), TRUSTED)
    with pytest.raises(BundleError) as exc:
        verify_bundle(bundle_lines(rewritten, 0, len(rewritten), []), [], old_checkpoints=[old])
    assert exc.value.check == "consistency" and exc.value.where == "checkpoint of size 6"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=7),
    st.data(),
)
def test_property_any_record_of_any_ledger_is_provable(
    imports: list[int], batch_rows: int, data: st.DataObject
) -> None:
    batches = synth_ledger(imports, batch_rows)
    size = data.draw(st.integers(min_value=1, max_value=len(batches)))
    seq = data.draw(st.integers(min_value=1, max_value=size))
    index = data.draw(st.integers(min_value=0, max_value=batches[seq - 1].header.records - 1))
    proof = _entry_proof(batches, seq, index, size)
    verify_entry_proof(proof, TRUSTED)  # type: ignore[arg-type]
    doc = msgspec.to_builtins(proof)
    flip = data.draw(st.integers(min_value=0, max_value=255))
    leaf = bytearray(bytes.fromhex(doc["leaf_hash"]))
    leaf[flip % 32] ^= 1 << (flip % 8)
    from ledger.core.proofs import EntryProof

    with pytest.raises(VerificationError):
        verify_entry_proof(msgspec.convert({**doc, "leaf_hash": leaf.hex()}, EntryProof), TRUSTED)
    old = data.draw(st.integers(min_value=1, max_value=size))
    verify_consistency_proof(
        checkpoint_note(batches, old),
        checkpoint_note(batches, size),
        build_consistency_proof(tree_leaves(batches[:size]), old, None, None),
        TRUSTED,
    )
    assert verify_bundle(bundle_lines(batches, old, size, [old, size]), TRUSTED).batches == size - old


def test_batch_inclusion_rejects_a_batch_beyond_the_checkpoint() -> None:
    cp = read_checkpoint(checkpoint_note(BIG, 3), TRUSTED)
    with pytest.raises(InclusionError):
        verify_batch_inclusion(BatchInclusion(header=BIG[3].header, tree_path=[]), cp)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=300), st.sampled_from([1, 2, 4, 16]))
def test_compact_range_and_blocked_root_match_the_reference(start: int, more: int, block: int) -> None:
    from ledger.core.bundle import CompactRange
    from ledger.core.merkle import BlockedRoot

    leaves = leaves_of(start + more)
    prefix = CompactRange()
    for leaf in leaves[:start]:
        prefix.append(leaf)
    resumed = CompactRange(start, list(prefix.nodes))  # as a checkpoint or a bundle stores it
    blocked = BlockedRoot(block)
    for leaf in leaves[start:]:
        resumed.append(leaf)
    for leaf in leaves:
        blocked.append(leaf)
    assert resumed.root() == ref_mth(leaves) == blocked.root()
    assert prefix.root() == ref_mth(leaves[:start])
