"""One vocabulary of failures: every check chain verification, proofs and bundles report is a
name docs/ledger-format.md defines, and a place written the same way whoever reports it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import msgspec

from ledger.core.failures import CHECKS, BundleError, Failure, Place, VerificationError

ROOT = Path(__file__).resolve().parents[2]
FORMAT = (ROOT / "docs" / "ledger-format.md").read_text()
# The modules that report verification failures (notes and checkpoints have theirs in §9).
REPORTERS = [
    "ledger/core/verify.py",
    "ledger/core/bundle.py",
    "ledger/core/proofs.py",
    "ledger/core/stored_tree.py",
    "ledger/db/verification.py",
]
ERRORS = {"VerificationError", "InclusionError", "ConsistencyError", "ReceiptError", "BundleError", "SignatureError"}


def _constants(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _constants(node.body) + _constants(node.orelse)
    return []


def reported_checks(path: str) -> dict[str, set[str]]:
    """Check names in ``Failure(seq, entry, check, ...)`` and ``...Error(check, ...)`` calls
    (and in ``reason = ...`` chosen before such a call), by the kind of report."""
    found: dict[str, set[str]] = {"chain": set(), "offline": set()}
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "Failure" and len(node.args) > 2:
                found["chain"].update(_constants(node.args[2]))
            elif node.func.id in ERRORS | {"NoteError"} and node.args:
                found["offline"].update(_constants(node.args[0]))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "reason" for t in node.targets):
            found["chain" if path.endswith("verify.py") else "offline"].update(_constants(node.value))
    return found


def section(number: str) -> str:
    start = FORMAT.index(f"\n## {number}. ")
    end = FORMAT.find("\n## ", start + 1)
    return FORMAT[start : end if end >= 0 else None]


def table_names(text: str) -> set[str]:
    """The backquoted names in the first column of the section's tables."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([a-z][a-z0-9_]*)`", line.split(" | ")[0]))
    return names


def test_chain_checks_are_exactly_the_reasons_of_section_6() -> None:
    chain: set[str] = set()
    for path in REPORTERS:
        chain |= reported_checks(path)["chain"]
    assert chain == table_names(section("6"))


def test_every_offline_check_is_named_in_the_format() -> None:
    documented = table_names(section("6")) | {
        name for number in ("9", "10", "11", "12") for name in re.findall(r"`([a-z][a-z0-9_]*)`", section(number))
    }
    for path in REPORTERS:
        offline = reported_checks(path)["offline"]
        assert offline <= documented, (path, sorted(offline - documented))
        assert offline or path.endswith(("verify.py", "verification.py", "stored_tree.py")), path


def test_bundles_report_chain_failures_with_the_chain_reasons() -> None:
    bundle = reported_checks("ledger/core/bundle.py")["offline"]
    chain = reported_checks("ledger/core/verify.py")["chain"]
    # §12: the bundle verifier checks each batch as §6 does, reporting with its reasons.
    assert {"batch_missing", "entry_missing", "batch_hash_mismatch", "chain_hash_mismatch"} <= bundle & chain


def test_a_place_is_written_the_same_way_by_every_report() -> None:
    failure = Failure(2, 3, "leaf_hash_mismatch", "record bytes hash to …")
    error = BundleError("record_in_batch", Place(batch_seq=2, entry=3), "proof leads to root …")
    assert str(failure.place) == error.where == "batch 2, entry 3"
    assert str(failure) == "leaf_hash_mismatch failed at batch 2, entry 3: record bytes hash to …"
    assert str(error) == "record_in_batch failed at batch 2, entry 3: proof leads to root …"
    assert (failure.check, error.check) == ("leaf_hash_mismatch", "record_in_batch")
    assert str(Place(batch_seq=4)) == "batch 4" and str(Place(batch_seq=4, row=7)) == "batch 4, row 7"
    labelled = VerificationError("consistency", "checkpoint 4 -> 6", "the newer tree does not extend the older one")
    assert labelled.where == "checkpoint 4 -> 6" and labelled.place == Place(label="checkpoint 4 -> 6")


def test_the_chain_report_keeps_its_json_members() -> None:
    # GET /audit/verify and `ledger verify` print these; users parse them.
    encoded = msgspec.json.encode(Failure(1, None, "batch_hash_mismatch", "…"))
    assert encoded == b'{"batch_seq":1,"entry":null,"reason":"batch_hash_mismatch","detail":"\xe2\x80\xa6"}'


def test_every_check_the_code_can_report_is_in_the_vocabulary_and_section_13_lists_exactly_them() -> None:
    """Issue 19: the spec's list is what the code reports. Every module that can raise or
    return a verification failure is read, the pure core whole."""
    paths = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "ledger" / "core").rglob("*.py"))]
    paths += ["ledger/db/verification.py", "ledger/db/checkpoints.py", "ledger/cli/offline.py"]
    in_code: set[str] = set()
    for path in paths:
        found = reported_checks(path)
        in_code |= found["chain"] | found["offline"]
    in_spec = table_names(section("13"))
    assert in_code == set(CHECKS), (sorted(in_code - set(CHECKS)), sorted(set(CHECKS) - in_code))
    assert in_spec == set(CHECKS), (sorted(in_spec - set(CHECKS)), sorted(set(CHECKS) - in_spec))
