"""A synthetic ledger built with the pure core only, for audit vectors, tests and benchmarks.

Imports of N committed rows and one quarantined row each: asset batches of at most
``batch_rows`` records, then a receipt batch with the import's row outcomes. The checkpoint
key is fixed (derived from a published string), so every byte is reproducible.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from ledger.core import records
from ledger.core.bundle import (
    BatchLine,
    BundleStart,
    CheckpointLine,
    CompactRange,
    EndLine,
    OutcomeLine,
    RecordLine,
    encode_line,
    verify_bundle,
)
from ledger.core.canonical import encode as canonical_encode
from ledger.core.checkpoint import Checkpoint, parse_body, sign_checkpoint
from ledger.core.failures import VerificationError
from ledger.core.hashing import leaf_hash, sha256
from ledger.core.merkle import root
from ledger.core.note import Signer, Verifier, open_note, sign_note
from ledger.core.outcomes import row_outcome
from ledger.core.proofs import (
    PROOF_VERSION,
    ConsistencyProof,
    EntryProof,
    ReceiptProof,
    build_consistency_proof,
    build_entry_proof,
    build_receipt_proof,
    read_checkpoint,
    tree_leaf,
    verify_consistency_proof,
    verify_entry_proof,
    verify_receipt_proof,
)

ORIGIN = "ledger.test/vectors"
TEST_SEED = sha256(b"ledger audit test vectors: not a secret")
TEST_SIGNER = Signer(ORIGIN, TEST_SEED)
OTHER_SIGNER = Signer(ORIGIN, sha256(b"another key: not a secret"))
WHEN = "2026-11-23T04:00:00.000000Z"
POLICY_SHA = "cd" * 32


class SynthBatch(msgspec.Struct, kw_only=True):
    header: records.BatchHeader
    chain_hash: bytes
    records: list[bytes]
    outcomes: list[bytes] | None = None
    task_id: str | None = None


def asset(i: int, prefix: str = "A") -> bytes:
    return records.asset_record(
        policy="lab-inventory",
        lab="chem-lab",
        data={"asset_id": f"{prefix}-{i:07d}", "grant_code": "NIH-R01GM1", "category": "equipment", "quantity": i},
    )


def manifest_bytes(task: int, rows: int) -> bytes:
    return f"manifest {task} with {rows} rows\n".encode()


def synth_ledger(imports: Sequence[int], batch_rows: int) -> list[SynthBatch]:
    batches: list[SynthBatch] = []
    prev = records.GENESIS_PREV

    def add(kind: str, entries: list[bytes], manifest: str, **extra: object) -> records.BatchHeader:
        nonlocal prev
        header = records.BatchHeader(
            seq=len(batches) + 1,
            kind=kind,
            batch_hash=root([leaf_hash(e) for e in entries]).hex(),
            records=len(entries),
            manifest_sha256=manifest,
            policy_sha256=POLICY_SHA,
            committed_at=WHEN,
        )
        prev = records.chain_hash(prev, records.encode_header(header))
        batches.append(SynthBatch(header=header, chain_hash=prev, records=entries, **extra))  # type: ignore[arg-type]
        return header

    for task, n in enumerate(imports):
        manifest = sha256(manifest_bytes(task, n)).hex()
        task_id = f"00000000-0000-4000-8000-{task:012d}"
        assets = [asset(i, prefix=f"T{task}") for i in range(n)]
        listed = []
        for start in range(0, n, batch_rows):
            h = add("assets", assets[start : start + batch_rows], manifest)
            listed.append((h.seq, h.batch_hash))
        outcomes = [
            row_outcome(row=i + 1, outcome="committed", record_hash=leaf_hash(a).hex()) for i, a in enumerate(assets)
        ]
        outcomes.append(
            row_outcome(
                row=n + 1, outcome="quarantined", record_hash=None, errors=[("quantity", "integer")], cells=["x"]
            )
        )
        receipt = records.receipt_record(
            task_id=task_id,
            lab="chem-lab",
            manifest_sha256=manifest,
            policy_name="lab-inventory",
            policy_version="1",
            policy_sha256=POLICY_SHA,
            rows_total=n + 1,
            rows_committed=n,
            rows_duplicate=0,
            rows_quarantined=1,
            outcomes_root=root([leaf_hash(o) for o in outcomes]).hex(),
            batches=listed,
        )
        add("receipt", [receipt], manifest, outcomes=outcomes, task_id=task_id)
    return batches


def tree_leaves(batches: Sequence[SynthBatch]) -> list[bytes]:
    return [tree_leaf(b.header) for b in batches]


def checkpoint_note(batches: Sequence[SynthBatch], size: int, signer: Signer = TEST_SIGNER) -> str:
    return sign_checkpoint(Checkpoint(origin=ORIGIN, size=size, root=root(tree_leaves(batches[:size]))), signer)


def bundle_lines(
    batches: Sequence[SynthBatch], size_from: int, size_to: int, checkpoint_sizes: Iterable[int]
) -> Iterator[bytes]:
    notes = {s: checkpoint_note(batches, s) for s in checkpoint_sizes}
    prefix = CompactRange()
    for leaf in tree_leaves(batches[:size_from]):
        prefix.append(leaf)
    prev = batches[size_from - 1].chain_hash if size_from else records.GENESIS_PREV
    yield encode_line(
        BundleStart(
            v=PROOF_VERSION,
            origin=ORIGIN,
            from_size=size_from,
            to_size=size_to,
            prefix=[n.hex() for n in prefix.nodes],
            prev_chain_hash=prev.hex(),
        )
    )
    if size_from in notes:
        yield encode_line(CheckpointLine(note=notes[size_from]))
    total = 0
    for b in batches[size_from:size_to]:
        seq = b.header.seq
        yield encode_line(BatchLine(header=b.header, chain_hash=b.chain_hash.hex()))
        for idx, record in enumerate(b.records):
            yield encode_line(RecordLine(seq=seq, idx=idx, record=record.decode()))
            total += 1
        for row, outcome in enumerate(b.outcomes or (), start=1):
            yield encode_line(OutcomeLine(seq=seq, row=row, outcome=outcome.decode()))
        if seq in notes:
            yield encode_line(CheckpointLine(note=notes[seq]))
    yield encode_line(EndLine(batches=size_to - size_from, records=total))


# --- vectors: tests/vectors/audit.json ---------------------------------------------------

VECTOR_LEDGER = synth_ledger([3, 2], batch_rows=2)  # batches: 2 + 1 assets, receipt, 2 assets, receipt


def _flip(hex_value: str, bit: int = 3) -> str:
    raw = bytearray(bytes.fromhex(hex_value))
    raw[0] ^= 1 << bit
    return raw.hex()


def _outcome(run: Any) -> str | None:
    """The check a verification fails, or None when it passes."""
    try:
        run()
    except VerificationError as exc:
        return exc.check
    return None


def _ledger_json(batches: Sequence[SynthBatch]) -> dict[str, Any]:
    leaves = tree_leaves(batches)
    return {
        "batches": [
            {
                "header": msgspec.to_builtins(b.header),
                "chain_hash": b.chain_hash.hex(),
                "records": [r.decode() for r in b.records],
                "outcomes": None if b.outcomes is None else [o.decode() for o in b.outcomes],
            }
            for b in batches
        ],
        "tree_leaves": [leaf.hex() for leaf in leaves],
        "tree_roots": [{"size": n, "root": root(leaves[:n]).hex()} for n in range(len(leaves) + 1)],
    }


def _note_vectors() -> list[dict[str, Any]]:
    go_vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    go_note = (
        "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n"
        "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    )
    key = TEST_SIGNER.verifier.encode()
    good = checkpoint_note(VECTOR_LEDGER, 5)
    body, _, sig_line = good.partition("\n\n")
    blob = bytearray(base64.b64decode(sig_line.split(" ")[-1]))
    blob[10] ^= 1
    flipped = f"{body}\n\n— {ORIGIN} {base64.b64encode(bytes(blob)).decode()}\n"
    cases = [
        ("go reference note", go_note, [go_vkey]),
        ("checkpoint of size 5", good, [key]),
        ("two signatures, one trusted", sign_note(body + "\n", [OTHER_SIGNER, TEST_SIGNER]), [key]),
        ("signature bit flipped", flipped, [key]),
        ("body changed", good.replace("\n5\n", "\n6\n"), [key]),
        ("signed by an untrusted key", checkpoint_note(VECTOR_LEDGER, 5, OTHER_SIGNER), [key]),
        ("no blank line", good.replace("\n\n", "\n"), [key]),
        ("trailing garbage", good + "garbage", [key]),
        ("not an em dash", good.replace("— ", "-- "), [key]),
    ]
    out = []
    for name, note, keys in cases:
        check = _outcome(lambda n=note, k=keys: open_note(n, [Verifier.parse(x) for x in k]))
        out.append({"name": name, "note": note, "verifier_keys": keys, "want_error": check})
    return out


def _checkpoint_vectors() -> list[dict[str, Any]]:
    root64 = base64.b64encode(bytes(range(32))).decode()
    cases = [
        ("valid", f"{ORIGIN}\n7\n{root64}\n"),
        ("with an extension line", f"{ORIGIN}\n7\n{root64}\nextension\n"),
        ("leading zero", f"{ORIGIN}\n07\n{root64}\n"),
        ("negative size", f"{ORIGIN}\n-7\n{root64}\n"),
        ("31-byte root", f"{ORIGIN}\n7\n{base64.b64encode(bytes(31)).decode()}\n"),
        ("no root line", f"{ORIGIN}\n7\n"),
        ("empty origin", f"\n7\n{root64}\n"),
        ("no final newline", f"{ORIGIN}\n7\n{root64}"),
    ]
    out = []
    for name, body in cases:
        check = _outcome(lambda b=body: parse_body(b))
        want = None
        if check is None:
            cp = parse_body(body)
            want = {"origin": cp.origin, "size": cp.size, "root": cp.root.hex()}
        out.append({"name": name, "body": body, "want": want, "want_error": check})
    return out


def _entry_proof_doc(batches: Sequence[SynthBatch], seq: int, index: int, size: int) -> dict[str, Any]:
    b = batches[seq - 1]
    proof = build_entry_proof(
        entry_id=None,
        index=index,
        record=b.records[index],
        batch_leaves=[leaf_hash(r) for r in b.records],
        header=b.header,
        tree_leaves=tree_leaves(batches[:size]),
        checkpoint=checkpoint_note(batches, size),
    )
    return msgspec.to_builtins(proof)  # type: ignore[no-any-return]


def _entry_proof_vectors() -> list[dict[str, Any]]:
    good = _entry_proof_doc(VECTOR_LEDGER, 1, 1, 5)
    path, tree_path = good["batch_path"], good["batch"]["tree_path"]
    last = _entry_proof_doc(VECTOR_LEDGER, 4, 0, 5)
    cases = [
        ("batch 1 entry 1", good),
        ("batch 4 entry 0", last),
        ("batch 2 entry 0 at size 2", _entry_proof_doc(VECTOR_LEDGER, 2, 0, 2)),
        ("batch path bit flipped", {**good, "batch_path": [_flip(path[0]), *path[1:]]}),
        (
            "tree path bit flipped",
            {**good, "batch": {**good["batch"], "tree_path": [_flip(tree_path[0]), *tree_path[1:]]}},
        ),
        ("index + 1", {**good, "index": 0}),
        ("truncated batch path", {**good, "batch_path": path[:-1]}),
        (
            "trailing garbage in the tree path",
            {**good, "batch": {**good["batch"], "tree_path": [*tree_path, "00" * 32]}},
        ),
        ("checkpoint of the wrong tree size", {**good, "checkpoint": checkpoint_note(VECTOR_LEDGER, 4)}),
        ("record changed", {**good, "record": good["record"].replace("equipment", "equipmenT")}),
        ("untrusted checkpoint", {**good, "checkpoint": checkpoint_note(VECTOR_LEDGER, 5, OTHER_SIGNER)}),
    ]
    out = []
    for name, doc in cases:
        check = _outcome(lambda d=doc: verify_entry_proof(msgspec.convert(d, EntryProof), [TEST_SIGNER.verifier]))
        out.append({"name": name, "proof": doc, "want_error": check})
    return out


def _receipt_vectors() -> list[dict[str, Any]]:
    b = VECTOR_LEDGER[2]
    doc = msgspec.to_builtins(
        build_receipt_proof(
            task_id=b.task_id or "",
            receipt=b.records[0],
            receipt_header=b.header,
            batch_headers=[VECTOR_LEDGER[0].header, VECTOR_LEDGER[1].header],
            tree_leaves=tree_leaves(VECTOR_LEDGER),
            checkpoint=checkpoint_note(VECTOR_LEDGER, 5),
        )
    )
    manifest = manifest_bytes(0, 3)
    cases = [
        ("valid", doc, manifest),
        ("another manifest", doc, manifest + b"\n"),
        ("asset batch omitted", {**doc, "batches": doc["batches"][:1]}, manifest),
        ("row counts changed", {**doc, "receipt": doc["receipt"].replace('"committed":3', '"committed":2')}, manifest),
        (
            "receipt batch path bit flipped",
            {
                **doc,
                "receipt_batch": {**doc["receipt_batch"], "tree_path": [_flip(doc["receipt_batch"]["tree_path"][0])]},
            },
            manifest,
        ),
    ]
    out = []
    for name, d, m in cases:
        check = _outcome(
            lambda d=d, m=m: verify_receipt_proof(
                msgspec.convert(d, ReceiptProof), [TEST_SIGNER.verifier], manifest=[m]
            )
        )
        out.append({"name": name, "proof": d, "manifest_hex": m.hex(), "want_error": check})
    return out


def _consistency_vectors() -> list[dict[str, Any]]:
    leaves = tree_leaves(VECTOR_LEDGER)
    rewritten = synth_ledger([2, 3], batch_rows=2)  # differs from batch 1 on

    def case(m: int, n: int, proof_leaves: list[bytes], new_batches: Sequence[SynthBatch]) -> dict[str, Any]:
        doc = msgspec.to_builtins(build_consistency_proof(proof_leaves[:n], m, None, None))
        return {
            "old_checkpoint": checkpoint_note(VECTOR_LEDGER, m),
            "new_checkpoint": checkpoint_note(new_batches, n),
            "proof": doc,
        }

    good = case(3, 5, leaves, VECTOR_LEDGER)
    p = good["proof"]["proof"]
    cases = [
        ("3 -> 5", good),
        ("1 -> 5", case(1, 5, leaves, VECTOR_LEDGER)),
        ("4 -> 5", case(4, 5, leaves, VECTOR_LEDGER)),
        ("proof bit flipped", {**good, "proof": {**good["proof"], "proof": [_flip(p[0]), *p[1:]]}}),
        ("truncated proof", {**good, "proof": {**good["proof"], "proof": p[:-1]}}),
        ("trailing garbage", {**good, "proof": {**good["proof"], "proof": [*p, "00" * 32]}}),
        ("wrong tree size", {**good, "proof": {**good["proof"], "old_size": 2}}),
        ("history rewritten before size 3", case(3, 5, tree_leaves(rewritten), rewritten)),
    ]
    out = []
    for name, c in cases:
        check = _outcome(
            lambda c=c: verify_consistency_proof(
                c["old_checkpoint"],
                c["new_checkpoint"],
                msgspec.convert(c["proof"], ConsistencyProof),
                [TEST_SIGNER.verifier],
            )
        )
        out.append({"name": name, **c, "want_error": check})
    return out


def _bundle_vectors() -> list[dict[str, Any]]:
    full = [line.decode() for line in bundle_lines(VECTOR_LEDGER, 0, 5, [3, 5])]
    record_at = next(i for i, line in enumerate(full) if '"type":"record"' in line)
    rewritten = synth_ledger([2, 3], batch_rows=2)  # differs from batch 1 on
    forged = [line.decode() for line in bundle_lines(rewritten, 0, 5, [5])]
    cases: list[tuple[str, list[str], list[str]]] = [
        ("whole ledger", full, []),
        ("from size 3", [line.decode() for line in bundle_lines(VECTOR_LEDGER, 3, 5, [3, 5])], []),
        ("consistent with an earlier checkpoint", full, [checkpoint_note(VECTOR_LEDGER, 2)]),
        (
            "record changed",
            [*full[:record_at], full[record_at].replace("equipment", "equipmenT"), *full[record_at + 1 :]],
            [],
        ),
        ("record dropped", [*full[:record_at], *full[record_at + 1 :]], []),
        ("no end line", full[:-1], []),
        ("trailing garbage", [*full, full[-1]], []),
        ("rewritten, checked against an earlier checkpoint", forged, [checkpoint_note(VECTOR_LEDGER, 4)]),
    ]
    out = []
    trusted = [TEST_SIGNER.verifier]
    for name, lines, olds in cases:
        check = _outcome(
            lambda lines=lines, olds=olds: verify_bundle(
                [line.encode() for line in lines],
                trusted,
                old_checkpoints=[read_checkpoint(o, trusted) for o in olds],
            )
        )
        out.append({"name": name, "lines": lines, "old_checkpoints": olds, "want_error": check})
    return out


def audit_vectors() -> dict[str, Any]:
    v = TEST_SIGNER.verifier
    return {
        "key": {
            "name": v.name,
            "seed": TEST_SEED.hex(),
            "public_key": v.public_key.hex(),
            "key_id": v.key_id.hex(),
            "verifier_key": v.encode(),
            "signer_key": TEST_SIGNER.encode(),
            "other_verifier_key": OTHER_SIGNER.verifier.encode(),
        },
        "notes": _note_vectors(),
        "checkpoints": _checkpoint_vectors(),
        "ledger": _ledger_json(VECTOR_LEDGER),
        "entry_proofs": _entry_proof_vectors(),
        "receipt_proofs": _receipt_vectors(),
        "consistency_proofs": _consistency_vectors(),
        "bundles": _bundle_vectors(),
    }


# --- vectors: tests/vectors/bundles.json (document revision 4) ------------------------------


def relink_bundle(lines: Sequence[bytes], signer: Signer) -> list[bytes]:
    """What an operator holding the signing key (or a buggy server) can do to a bundle it
    changed: recompute every batch hash, every receipt's list of batch hashes, every chain link
    and tree root, and sign every checkpoint line again. Only rules that hash nothing (§6.1,
    the receipt's account of its rows) can then tell."""
    parsed = [msgspec.json.decode(line) for line in lines]
    start = parsed[0]
    prefix = CompactRange(start["from"], [bytes.fromhex(h) for h in start["prefix"]])
    prev = bytes.fromhex(start["prev_chain_hash"])
    hashes: dict[int, str] = {}
    out: list[bytes] = [lines[0]]
    i = 1
    while i < len(parsed):
        line = parsed[i]
        if line["type"] == "checkpoint":
            note = sign_checkpoint(Checkpoint(origin=start["origin"], size=prefix.size, root=prefix.root()), signer)
            out.append(encode_line(CheckpointLine(note=note)))
            i += 1
            continue
        if line["type"] != "batch":
            out.append(lines[i])
            i += 1
            continue
        header = msgspec.convert(line["header"], records.BatchHeader)
        i += 1
        record_lines = []
        while i < len(parsed) and parsed[i]["type"] == "record":
            record = parsed[i]["record"].encode()
            if header.kind == "receipt":
                receipt = msgspec.json.decode(record)
                receipt["batches"] = [{"batch_hash": hashes[b["seq"]], "seq": b["seq"]} for b in receipt["batches"]]
                record = canonical_encode(receipt)
            record_lines.append(record)
            i += 1
        header = msgspec.structs.replace(
            header, batch_hash=root([leaf_hash(r) for r in record_lines]).hex(), records=len(record_lines)
        )
        hashes[header.seq] = header.batch_hash
        prev = records.chain_hash(prev, records.encode_header(header))
        prefix.append(tree_leaf(header))
        out.append(encode_line(BatchLine(header=header, chain_hash=prev.hex())))
        out += [encode_line(RecordLine(seq=header.seq, idx=n, record=r.decode())) for n, r in enumerate(record_lines)]
    return out


def _stored_to_synth(batches: Sequence[dict[str, Any]]) -> list[SynthBatch]:
    """The stored-batch form of generate.py's ledgers (hex entries) as SynthBatch."""
    return [
        SynthBatch(
            header=records.BatchHeader(**b["header"]),
            chain_hash=bytes.fromhex(b["chain_hash"]),
            records=[bytes.fromhex(e["record_hex"]) for e in b["entries"]],
            outcomes=None if b["outcomes_hex"] is None else [bytes.fromhex(o) for o in b["outcomes_hex"]],
        )
        for b in batches
    ]


def _failure_of(lines: Sequence[bytes], olds: Sequence[str]) -> dict[str, Any] | None:
    """The check and place a bundle fails, as verify_bundle reports them; None when it passes."""
    trusted = [TEST_SIGNER.verifier]
    try:
        verify_bundle(lines, trusted, old_checkpoints=[read_checkpoint(o, trusted) for o in olds])
    except VerificationError as exc:
        return {"check": exc.check, "batch_seq": exc.place.batch_seq, "entry": exc.place.entry}
    return None


def _edit_record(lines: list[bytes], seq: int, idx: int, change: Any) -> list[bytes]:
    """``lines`` with record ``idx`` of batch ``seq`` rewritten by ``change`` (on its JSON),
    canonically, and nothing else changed."""
    out = []
    for line in lines:
        parsed = msgspec.json.decode(line)
        if parsed["type"] == "record" and (parsed["seq"], parsed["idx"]) == (seq, idx):
            value = msgspec.json.decode(parsed["record"].encode())
            change(value)
            line = encode_line(RecordLine(seq=seq, idx=idx, record=canonical_encode(value).decode()))
        out.append(line)
    return out


def _drop_batches_after(lines: list[bytes], size: int) -> list[bytes]:
    """The bundle cut after batch ``size`` (its ``to`` and end line made to match)."""
    out: list[bytes] = []
    records_count = 0
    for line in lines:
        parsed = msgspec.json.decode(line)
        kind = parsed["type"]
        if kind == "bundle":
            parsed["to"] = size
            out.append(canonical_encode(parsed) + b"\n")
        elif kind == "end":
            out.append(encode_line(EndLine(batches=size - msgspec.json.decode(out[0])["from"], records=records_count)))
        elif (
            parsed.get("seq", 0) > size
            or (kind == "batch" and parsed["header"]["seq"] > size)
            or (kind == "checkpoint" and parse_body(parsed["note"].rpartition("\n\n")[0] + "\n").size > size)
        ):
            continue
        else:
            records_count += kind == "record"
            out.append(line)
    return out


def stored_tree_vectors(batches: Sequence[SynthBatch]) -> list[dict[str, Any]]:
    """§6.2: the service's stored tree leaves and checkpoints against the headers."""
    leaves = tree_leaves(batches)

    def stored_checkpoint(size: int, state_leaves: Sequence[bytes], note_leaves: Sequence[bytes]) -> dict[str, Any]:
        tree = CompactRange()
        for leaf in state_leaves[:size]:
            tree.append(leaf)
        note = sign_checkpoint(Checkpoint(origin=ORIGIN, size=size, root=root(list(note_leaves[:size]))), TEST_SIGNER)
        return {
            "tree_size": size,
            "note": note,
            "root_hash": tree.root().hex(),
            "tree_state": b"".join(tree.nodes).hex(),
        }

    rewritten = synth_ledger([3, 2], batch_rows=2)
    rewritten[0] = msgspec.structs.replace(rewritten[0], records=[asset(0, prefix="X"), *rewritten[0].records[1:]])
    forged_headers = [
        msgspec.structs.replace(b.header, batch_hash=root([leaf_hash(r) for r in b.records]).hex()) for b in rewritten
    ]
    forged_leaves = [tree_leaf(h) for h in forged_headers]

    def case(
        name: str,
        headers: Sequence[records.BatchHeader],
        stored: Sequence[bytes],
        checkpoints: list[dict[str, Any]],
    ) -> dict[str, Any]:
        from ledger.core.stored_tree import StoredCheckpointState, TreeCheck

        check = TreeCheck([TEST_SIGNER.verifier])
        states = [
            StoredCheckpointState(
                id=n,
                tree_size=c["tree_size"],
                note=c["note"],
                root_hash=bytes.fromhex(c["root_hash"]),
                tree_state=bytes.fromhex(c["tree_state"]),
            )
            for n, c in enumerate(checkpoints, start=1)
        ]
        failure = None
        for h, leaf in zip(headers, stored, strict=True):
            failure = check.batch(h, leaf)
            while failure is None and states and states[0].tree_size == h.seq:
                failure = check.checkpoint(states.pop(0))
            if failure is not None:
                break
        return {
            "name": name,
            "headers": [msgspec.to_builtins(h) for h in headers],
            "stored_leaves": [leaf.hex() for leaf in stored],
            "checkpoints": checkpoints,
            "want_failure": None
            if failure is None
            else {"batch_seq": failure.batch_seq, "entry": failure.entry, "reason": failure.reason},
        }

    headers = [b.header for b in batches]
    genuine = [stored_checkpoint(3, leaves, leaves), stored_checkpoint(5, leaves, leaves)]
    return [
        case("as the service stores it", headers, leaves, genuine),
        case(
            "records, leaves, batch, chain hashes and tree state rewritten; the signed notes kept",
            forged_headers,
            forged_leaves,
            [stored_checkpoint(3, forged_leaves, leaves), stored_checkpoint(5, forged_leaves, leaves)],
        ),
        case("a stored tree leaf differs from its header's", headers, [forged_leaves[0], *leaves[1:]], genuine),
        case(
            "the compact range stored with a checkpoint is not the tree's",
            headers,
            leaves,
            [stored_checkpoint(3, forged_leaves, leaves), genuine[1]],
        ),
        case(
            "a checkpoint signed by a key the service never registered",
            headers,
            leaves,
            [genuine[0], {**genuine[1], "note": checkpoint_note(batches, 5, OTHER_SIGNER)}],
        ),
    ]


def bundle_vectors() -> dict[str, Any]:
    """Bundles of ledgers with corrections, reviews and transfers (§6.1 applied to bundles, §12),
    partial bundles, kept checkpoints outside the range; and the §6.2 stored-tree cases."""
    from tests.vectors.generate import review_vectors, transfer_vectors

    review = _stored_to_synth(review_vectors()["ledger"])  # 1-3 import, 4 correction, 5-6 reviews
    transfer = _stored_to_synth(transfer_vectors()["ledger"])  # 1-3 import, 4 correction, 5 review
    full = list(bundle_lines(review, 0, 6, [3, 5, 6]))
    from_3 = list(bundle_lines(review, 3, 6, [6]))

    def relinked(lines: list[bytes]) -> list[bytes]:
        return relink_bundle(lines, TEST_SIGNER)

    def set_member(name: str, value: Any) -> Any:
        return lambda r: r.__setitem__(name, value)

    cases: list[tuple[str, list[bytes], list[str]]] = [
        ("corrections and reviews", full, []),
        ("a transfer", list(bundle_lines(transfer, 0, 5, [3, 5])), []),
        ("from size 3: starts with the correction", list(bundle_lines(review, 3, 6, [5, 6])), []),
        (
            "from size 4: starts with the review batch of a correction before it",
            list(bundle_lines(review, 4, 6, [6])),
            [],
        ),
        ("from size 3, with the checkpoint at size 3", list(bundle_lines(review, 3, 6, [3, 6])), []),
        (
            "from size 3, a checkpoint counting only the bundle's batches",
            [from_3[0], encode_line(CheckpointLine(note=checkpoint_note(review, 0))), *from_3[1:]],
            [],
        ),
        (
            "relinked and re-signed: a correction's values changed",
            relinked(_edit_record(full, 4, 0, lambda r: r["data"].__setitem__("quantity", 20))),
            [],
        ),
        (
            "relinked and re-signed: a dismissal's note emptied",
            relinked(_edit_record(full, 5, 1, set_member("note", ""))),
            [],
        ),
        ("relinked and re-signed: the review batch dropped", relinked(_drop_batches_after(full, 4)), []),
        (
            "relinked and re-signed: a transfer without its labs",
            relinked(_edit_record(list(bundle_lines(transfer, 0, 5, [3, 5])), 5, 0, lambda r: r.pop("transfer"))),
            [],
        ),
        (
            "relinked and re-signed: a committed record rewritten, its receipt's batch hashes too",
            relinked(_edit_record(full, 1, 1, lambda r: r["data"].__setitem__("quantity", 99))),
            [],
        ),
        (
            "a kept checkpoint before the bundle's start",
            list(bundle_lines(review, 3, 6, [6])),
            [checkpoint_note(review, 2)],
        ),
        (
            "a kept checkpoint beyond the bundle's end",
            list(bundle_lines(review, 0, 5, [5])),
            [checkpoint_note(review, 6)],
        ),
    ]
    bundles = []
    for name, lines, olds in cases:
        bundles.append(
            {
                "name": name,
                "lines": [line.decode() for line in lines],
                "old_checkpoints": olds,
                "want_error": _failure_of(lines, olds),
            }
        )
    return {"bundles": bundles, "stored_tree": stored_tree_vectors(VECTOR_LEDGER)}
