"""An independent verifier of checkpoints, proofs and bundles, written only from
docs/ledger-format.md §3, §5, §6 and §8-§12 (and, for bundles.json, revision 4: §6.1 in
bundles, §6.2, §12's partial bundles and kept checkpoints).

It imports nothing from `ledger`: hashlib, base64, json and `cryptography` (for Ed25519)
only, and the §4.4 review rules of the other independent verifier. It must accept every
vector of audit.json and bundles.json whose want_error is null and reject every other one
with the check (and, where the vector names one, the batch and entry) the document names.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.core.test_independent_verifier import review_valid

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "audit.json").read_text(encoding="utf-8"))
B = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "bundles.json").read_text(encoding="utf-8"))


class Fail(Exception):
    def __init__(self, check: str, batch: int | None = None, entry: int | None = None) -> None:
        super().__init__(check)
        self.check = check
        self.batch = batch
        self.entry = entry


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(data: bytes) -> bytes:
    return sha(b"\x00" + data)


def node(left: bytes, right: bytes) -> bytes:
    return sha(b"\x01" + left + right)


def mth(hashes: list[bytes]) -> bytes:
    if not hashes:
        return sha(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node(mth(hashes[:k]), mth(hashes[k:]))


def canon(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tree_leaf(header: dict[str, Any]) -> bytes:  # §8
    return leaf(canon({**header, "v": 1}))


def inclusion_root(index: int, size: int, h: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2; raises ValueError when the proof does not fit the tree."""
    if not 0 <= index < size or any(len(p) != 32 for p in path):
        raise ValueError
    fn, sn, r = index, size - 1, h
    for p in path:
        if sn == 0:
            raise ValueError
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError
    return r


def consistent(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2."""
    if not 0 < m <= n or any(len(p) != 32 for p in proof):
        return m == 0 and not proof
    if m == n:
        return not proof and r1 == r2
    if not proof:
        return False
    path = [r1, *proof] if m & (m - 1) == 0 else list(proof)
    fn, sn = m - 1, n - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == r1 and sr == r2


# §9.2: verifier keys and signed notes
def parse_vkey(text: str) -> tuple[str, bytes, bytes]:
    name, key_id, b64 = text.split("+", 2)
    raw = base64.b64decode(b64, validate=True)
    assert raw[0] == 1 and len(raw) == 33
    assert sha(name.encode() + b"\n" + raw)[:4].hex() == key_id
    return name, bytes.fromhex(key_id), raw[1:]


def open_note(text: str, vkeys: list[str]) -> str:
    split = text.rfind("\n\n")
    if split < 0 or not text.endswith("\n"):
        raise Fail("note_format")
    body, sigs = text[: split + 1], text[split + 2 :]
    if any((c < " " and c != "\n") or c == "\x7f" for c in body):
        raise Fail("note_format")
    trusted = {(n, i): k for n, i, k in map(parse_vkey, vkeys)}
    verified = 0
    for line in sigs.split("\n")[:-1]:
        if not line.startswith("\u2014 "):
            raise Fail("note_format")
        name, _, blob = line[2:].partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            raise Fail("note_format") from None
        key = trusted.get((name, raw[:4]))
        if key is None:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(raw[4:], body.encode())
        except InvalidSignature:
            raise Fail("signature") from None
        verified += 1
    if not verified:
        raise Fail("untrusted_key")
    return body


def parse_checkpoint(body: str) -> tuple[str, int, bytes]:  # §9.1
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[0] or any(not x for x in lines[3:-1]):
        raise Fail("checkpoint_format")
    size = lines[1]
    if not (size.isascii() and size.isdigit()) or (size != "0" and size[0] == "0"):
        raise Fail("checkpoint_format")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except ValueError:
        raise Fail("checkpoint_format") from None
    if len(root) != 32:
        raise Fail("checkpoint_format")
    return lines[0], int(size), root


def checkpoint(note: str, vkeys: list[str]) -> tuple[str, int, bytes]:
    return parse_checkpoint(open_note(note, vkeys))


def hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def batch_in_tree(inclusion: dict[str, Any], size: int, root: bytes) -> None:
    header = inclusion["header"]
    if not 1 <= header["seq"] <= size:
        raise Fail("batch_in_checkpoint")
    try:
        ok = inclusion_root(header["seq"] - 1, size, tree_leaf(header), hexes(inclusion["tree_path"])) == root
    except ValueError:
        ok = False
    if not ok:
        raise Fail("batch_in_checkpoint")


def verify_entry(proof: dict[str, Any], vkeys: list[str]) -> None:  # §10
    _, size, root = checkpoint(proof["checkpoint"], vkeys)
    h = leaf(proof["record"].encode())
    if h.hex() != proof["leaf_hash"]:
        raise Fail("record_hash")
    header = proof["batch"]["header"]
    try:
        ok = (
            inclusion_root(proof["index"], header["records"], h, hexes(proof["batch_path"])).hex()
            == header["batch_hash"]
        )
    except ValueError:
        ok = False
    if not ok:
        raise Fail("record_in_batch")
    batch_in_tree(proof["batch"], size, root)


def verify_receipt(proof: dict[str, Any], manifest: bytes, vkeys: list[str]) -> None:  # §11.1
    _, size, root = checkpoint(proof["checkpoint"], vkeys)
    receipt = json.loads(proof["receipt"])
    if receipt.get("type") != "receipt" or receipt.get("v") != 1:
        raise Fail("receipt_format")
    if receipt["task_id"] != proof["task_id"]:
        raise Fail("receipt_task")
    header = proof["receipt_batch"]["header"]
    if header["kind"] != "receipt" or header["records"] != 1 or header["manifest_sha256"] != receipt["manifest_sha256"]:
        raise Fail("receipt_batch")
    if header["batch_hash"] != leaf(proof["receipt"].encode()).hex():
        raise Fail("record_in_batch")
    batch_in_tree(proof["receipt_batch"], size, root)
    listed = {(b["seq"], b["batch_hash"]) for b in receipt["batches"]}
    given = {(b["header"]["seq"], b["header"]["batch_hash"]) for b in proof["batches"]}
    if listed != given or any(b["header"]["kind"] != "assets" for b in proof["batches"]):
        raise Fail("receipt_batches")
    for b in proof["batches"]:
        batch_in_tree(b, size, root)
    if hashlib.sha256(manifest).hexdigest() != receipt["manifest_sha256"]:
        raise Fail("manifest_sha256")


def verify_consistency(old: str, new: str, proof: dict[str, Any], vkeys: list[str]) -> None:  # §11.2
    o1, m, r1 = checkpoint(old, vkeys)
    o2, n, r2 = checkpoint(new, vkeys)
    if o1 != o2:
        raise Fail("origin")
    if (proof["old_size"], proof["new_size"]) != (m, n):
        raise Fail("proof_sizes")
    if not consistent(m, n, r1, r2, hexes(proof["proof"])):
        raise Fail("consistency")


def verify_bundle(lines: list[str], vkeys: list[str], olds: list[str]) -> None:  # §12
    parsed = [json.loads(line) for line in lines]
    start = parsed[0]
    if start.get("type") != "bundle":
        raise Fail("bundle_format")
    kept = sorted((checkpoint(o, vkeys) for o in olds), key=lambda c: c[1])
    # §12: the compact range of the tree so far, largest subtree first.
    compact = hexes(start["prefix"])
    size = start["from"]
    if len(compact) != bin(size).count("1"):
        raise Fail("prefix")

    def compact_append(h: bytes) -> None:
        nonlocal size
        s = size
        while s % 2 == 1:
            h = node(compact.pop(), h)
            s //= 2
        compact.append(h)
        size += 1

    def compact_root() -> bytes:
        if not compact:
            return sha(b"")
        r = compact[-1]
        for left in reversed(compact[:-1]):
            r = node(left, r)
        return r

    prev = bytes.fromhex(start["prev_chain_hash"])
    trusted_at = -1
    i = 1
    records = batches = 0
    assets: dict[int, tuple[str, list[bytes]]] = {}
    # §6.1, and §12: from F > 0, corrections linked before F may be pending at the start.
    pending: list[bytes] = []
    pending_from = 0
    earlier_unknown = start["from"] > 0

    def check_old() -> None:
        while kept and kept[0][1] <= size:
            _, s, r = kept.pop(0)
            if s < size:
                raise Fail("old_checkpoint")  # before the bundle's start
            if r != compact_root():
                raise Fail("consistency")

    check_old()
    ended = False
    while i < len(parsed):
        line = parsed[i]
        t = line["type"]
        if ended:
            raise Fail("bundle_format")
        if t == "checkpoint":
            split = line["note"].rfind("\n\n")
            try:
                cp = checkpoint(line["note"], vkeys)
                trusted = True
            except Fail as exc:
                if exc.check != "untrusted_key":
                    raise
                cp, trusted = parse_checkpoint(line["note"][: split + 1]), False
            if cp[0] != start["origin"]:
                raise Fail("checkpoint_origin")
            if cp[1] != size:
                raise Fail("checkpoint_position")
            if cp[2] != compact_root():
                raise Fail("checkpoint_root")
            if trusted:
                trusted_at = size
            i += 1
        elif t == "batch":
            header = line["header"]
            if header["seq"] != size + 1:
                raise Fail("batch_missing" if header["seq"] > size + 1 else "batch_out_of_order")
            i += 1
            entries: list[bytes] = []
            while i < len(parsed) and parsed[i]["type"] == "record":
                if parsed[i]["idx"] != len(entries) or parsed[i]["seq"] != header["seq"]:
                    raise Fail("entry_missing")
                entries.append(parsed[i]["record"].encode())
                i += 1
            if len(entries) != header["records"]:
                raise Fail("entry_missing" if len(entries) < header["records"] else "record_count_mismatch")
            leaves = [leaf(e) for e in entries]
            if mth(leaves).hex() != header["batch_hash"]:
                raise Fail("batch_hash_mismatch")
            seq = header["seq"]
            link = sha(prev + canon({**header, "v": 1}))
            if link.hex() != line["chain_hash"]:
                raise Fail("chain_hash_mismatch", seq)
            prev = link
            if header["kind"] == "assets" and header["manifest_sha256"] is None:
                if not pending:
                    pending_from = seq
                pending += leaves
            elif header["kind"] == "review":
                commits = []
                for n, e in enumerate(entries):
                    if not review_valid(e):
                        raise Fail("review_malformed", seq, n)
                    c = json.loads(e)["correction"]
                    if c is not None and c["outcome"] == "committed":
                        commits.append((n, bytes.fromhex(c["record_hash"])))
                        if not earlier_unknown and (not pending or pending.pop(0) != commits[-1][1]):
                            raise Fail("review_correction_mismatch", seq, n)
                if earlier_unknown:
                    for n, h in commits[max(0, len(commits) - len(pending)) :]:
                        if pending.pop(0) != h:
                            raise Fail("review_correction_mismatch", seq, n)
                if pending:
                    raise Fail("corrections_unaccounted", seq)
                earlier_unknown = False
            else:
                if pending:
                    raise Fail("corrections_unaccounted", pending_from)
                earlier_unknown = False
            if header["kind"] == "assets":
                assets[header["seq"]] = (header["batch_hash"], leaves)
            elif header["kind"] == "receipt":
                receipt = json.loads(entries[0])
                outcomes = []
                while i < len(parsed) and parsed[i]["type"] == "outcome":
                    if parsed[i]["row"] != len(outcomes) + 1:
                        raise Fail("outcome_out_of_place")
                    outcomes.append(parsed[i]["outcome"].encode())
                    i += 1
                committed: list[bytes] | None = []
                places: list[tuple[int, int]] = []
                for b in receipt["batches"]:
                    if b["seq"] <= start["from"]:
                        committed = None
                        break
                    if assets.get(b["seq"], ("",))[0] != b["batch_hash"]:
                        raise Fail("receipt_batch_mismatch", seq, 0)
                    assert committed is not None
                    committed.extend(assets[b["seq"]][1])
                    places += [(b["seq"], n) for n in range(len(assets[b["seq"]][1]))]
                if len(outcomes) != receipt["rows"]["total"]:
                    raise Fail("outcomes_count_mismatch")
                if mth([leaf(o) for o in outcomes]).hex() != receipt["outcomes_root"]:
                    raise Fail("outcomes_root_mismatch")
                recorded = [
                    bytes.fromhex(o["record_hash"]) for o in map(json.loads, outcomes) if o["outcome"] == "committed"
                ]
                if committed is not None and recorded != committed:
                    # §12: named at the first asset entry whose committed row differs
                    at = next((n for n, h in enumerate(committed) if n >= len(recorded) or recorded[n] != h), None)
                    if at is None:  # more committed rows than asset entries
                        raise Fail("entry_not_as_recorded", seq, 0)
                    raise Fail("entry_not_as_recorded", *places[at])
            compact_append(tree_leaf(header))
            batches += 1
            records += len(entries)
            check_old()
        elif t == "end":
            if (line["batches"], line["records"]) != (batches, records):
                raise Fail("bundle_truncated")
            ended = True
            i += 1
        else:
            raise Fail("bundle_format")
    if not ended or size != start["to"]:
        raise Fail("bundle_truncated")
    if pending:
        raise Fail("corrections_unaccounted", pending_from)
    if trusted_at != start["to"]:
        raise Fail("checkpoint_missing")
    if kept:
        raise Fail("old_checkpoint")


def run(check: Any) -> str | None:
    try:
        check()
    except Fail as exc:
        return exc.check
    return None


def test_key_id_and_verifier_key() -> None:
    k = V["key"]
    name, key_id, public = parse_vkey(k["verifier_key"])
    assert (name, key_id.hex(), public.hex()) == (k["name"], k["key_id"], k["public_key"])


def test_tree_leaves_and_roots() -> None:
    leaves = [tree_leaf(b["header"]) for b in V["ledger"]["batches"]]
    assert [x.hex() for x in leaves] == V["ledger"]["tree_leaves"]
    for r in V["ledger"]["tree_roots"]:
        assert mth(leaves[: r["size"]]).hex() == r["root"]


@pytest.mark.parametrize("v", V["notes"], ids=lambda v: v["name"])
def test_notes(v: dict[str, Any]) -> None:
    assert run(lambda: open_note(v["note"], v["verifier_keys"])) == v["want_error"]


@pytest.mark.parametrize("v", V["checkpoints"], ids=lambda v: v["name"])
def test_checkpoint_bodies(v: dict[str, Any]) -> None:
    assert run(lambda: parse_checkpoint(v["body"])) == v["want_error"]
    if v["want"]:
        origin, size, root = parse_checkpoint(v["body"])
        assert {"origin": origin, "size": size, "root": root.hex()} == v["want"]


@pytest.mark.parametrize("v", V["entry_proofs"], ids=lambda v: v["name"])
def test_entry_proofs(v: dict[str, Any]) -> None:
    assert run(lambda: verify_entry(v["proof"], [V["key"]["verifier_key"]])) == v["want_error"]


@pytest.mark.parametrize("v", V["receipt_proofs"], ids=lambda v: v["name"])
def test_receipt_proofs(v: dict[str, Any]) -> None:
    manifest = bytes.fromhex(v["manifest_hex"])
    assert run(lambda: verify_receipt(v["proof"], manifest, [V["key"]["verifier_key"]])) == v["want_error"]


@pytest.mark.parametrize("v", V["consistency_proofs"], ids=lambda v: v["name"])
def test_consistency_proofs(v: dict[str, Any]) -> None:
    check = run(
        lambda: verify_consistency(v["old_checkpoint"], v["new_checkpoint"], v["proof"], [V["key"]["verifier_key"]])
    )
    assert check == v["want_error"]


@pytest.mark.parametrize("v", V["bundles"], ids=lambda v: v["name"])
def test_bundles(v: dict[str, Any]) -> None:
    check = run(lambda: verify_bundle(v["lines"], [V["key"]["verifier_key"]], v["old_checkpoints"]))
    assert check == v["want_error"]


# Revision 4: bundles.json


def failure_of(check: Any) -> dict[str, Any] | None:
    try:
        check()
    except Fail as exc:
        return {"check": exc.check, "batch_seq": exc.batch, "entry": exc.entry}
    return None


@pytest.mark.parametrize("v", B["bundles"], ids=lambda v: v["name"])
def test_bundles_with_reviews(v: dict[str, Any]) -> None:
    got = failure_of(lambda: verify_bundle(v["lines"], [V["key"]["verifier_key"]], v["old_checkpoints"]))
    want = v["want_error"]
    if want is None or want["batch_seq"] is None:
        assert (got or {}).get("check") == (want or {}).get("check")
    else:
        assert got == want


def stored_tree(v: dict[str, Any], vkeys: list[str]) -> tuple[int, int | None, str] | None:
    """§6.2: each stored tree leaf is the header's; each stored checkpoint, opened with a key
    the service registered, signs the root of the headers at its size, and its stored root and
    compact range are that tree's."""
    leaves: list[bytes] = []
    checkpoints = list(v["checkpoints"])
    for header, stored in zip(v["headers"], v["stored_leaves"], strict=True):
        tl = tree_leaf(header)
        if stored != tl.hex():
            return (header["seq"], None, "tree_state_mismatch")
        leaves.append(tl)
        while checkpoints and checkpoints[0]["tree_size"] == len(leaves):
            c = checkpoints.pop(0)
            size = len(leaves)
            try:
                _, signed_size, signed_root = checkpoint(c["note"], vkeys)
            except Fail:
                return (size, None, "checkpoint_mismatch")
            if (signed_size, signed_root) != (size, mth(leaves)):
                return (size, None, "checkpoint_mismatch")
            compact, rest = [], list(leaves)
            while rest:  # §12's compact range: the perfect subtrees, largest first
                k = 1 << (len(rest).bit_length() - 1)
                compact.append(mth(rest[:k]))
                rest = rest[k:]
            if c["root_hash"] != mth(leaves).hex() or c["tree_state"] != b"".join(compact).hex():
                return (size, None, "tree_state_mismatch")
    return None


@pytest.mark.parametrize("v", B["stored_tree"], ids=lambda v: v["name"])
def test_stored_tree(v: dict[str, Any]) -> None:
    want = v["want_failure"]
    expected = None if want is None else (want["batch_seq"], want["entry"], want["reason"])
    assert stored_tree(v, [V["key"]["verifier_key"]]) == expected
