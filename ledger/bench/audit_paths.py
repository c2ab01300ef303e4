"""`ledger bench-audit`: build a synthetic ledger of N records and measure the audit paths.

The ledger is written straight into a fresh database on the configured server with COPY (the
same rows an import writes: entries, batches, tree leaves, row outcomes, receipts), then a
checkpoint is signed. Measured, each ``runs`` times (medians reported):

- full server-side verification (ledger.db.verification.verify_ledger), records/s;
- one inclusion proof (ledger.services.audit_trail.entry_proof, the code behind
  GET /audit/proofs/entries/{id}), p50/p95 over ``proofs`` random entries;
- offline verification of one proof document (decode + verify), p50/p95;
- export of the whole ledger as a bundle, and its offline verification, records/s.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ledger.config import Settings
from ledger.core import records
from ledger.core.bundle import verify_bundle_file
from ledger.core.hashing import leaf_hash, sha256
from ledger.core.merkle import root
from ledger.core.note import Signer
from ledger.core.outcomes import row_outcome
from ledger.core.proofs import EntryProof, decode_document, tree_leaf, verify_entry_proof

if TYPE_CHECKING:
    from ledger.db.pool import Conn

__all__ = ["AuditBench", "run_audit_bench"]

_POLICY_SHA = sha256(b"bench policy").hex()


class AuditBench(msgspec.Struct, kw_only=True):
    machine: dict[str, Any]
    records: int
    batches: int
    build_seconds: float
    verify_seconds: float
    verify_records_per_second: float
    verify_single_process_seconds: float
    verify_single_process_records_per_second: float
    verify_single_process_cpu_seconds: float
    proof_ms_p50: float
    proof_ms_p95: float
    offline_proof_ms_p50: float
    offline_proof_ms_p95: float
    export_seconds: float
    export_records_per_second: float
    bundle_bytes: float
    bundle_verify_seconds: float
    bundle_records_per_second: float
    bundle_records_per_cpu_second: float
    runs: int


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


async def _admin(url: str, statement: str) -> None:
    from ledger.db.pool import connect

    conn = await connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class _Chain:
    """The chain as the bench links it: the head so far, and the batch rows and tree leaves of the
    import being built."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.when = records.format_time(now)
        self.seq = 0
        self.prev = records.GENESIS_PREV
        self.batch_rows: list[tuple[Any, ...]] = []  # one import's, cleared per import
        self.tree: list[tuple[int, bytes]] = []

    def link(self, kind: str, batch_hash: bytes, size: int, manifest: str, import_id: uuid.UUID) -> None:
        """Append one batch: its ledger_batches row and its tree leaf, and move the head."""
        self.seq += 1
        header = records.BatchHeader(
            seq=self.seq,
            kind=kind,
            batch_hash=batch_hash.hex(),
            records=size,
            manifest_sha256=manifest,
            policy_sha256=_POLICY_SHA,
            committed_at=self.when,
        )
        self.prev = records.chain_hash(self.prev, records.encode_header(header))
        self.batch_rows.append(
            (self.seq, kind, batch_hash, size, manifest, _POLICY_SHA, self.now, self.prev, import_id)
        )
        self.tree.append((self.seq, tree_leaf(header)))


class _Import:
    """One import's rows as they are built: its entries, its row outcomes and their leaves, and
    the asset batches its receipt lists."""

    def __init__(self, task: int, import_id: uuid.UUID, manifest: str) -> None:
        self.task = task
        self.import_id = import_id
        self.manifest = manifest
        self.entries: list[tuple[Any, ...]] = []
        self.outcomes: list[tuple[Any, ...]] = []
        self.outcome_leaves: list[bytes] = []
        self.listed: list[tuple[int, str]] = []


async def _build(url: str, total: int, batch_rows: int, signer: Signer) -> int:
    """Imports of up to 100,000 committed rows and one quarantined row each; returns batches."""
    from ledger.db import checkpoints
    from ledger.db.head import LockedHead, store_head
    from ledger.db.pool import connect

    conn = await connect(url)
    chain = _Chain(datetime.now(UTC))
    done, task = 0, 0
    try:
        while done < total:
            n = min(100_000, total - done)
            imp = _Import(task, uuid.UUID(int=task + 1), sha256(f"bench manifest {task}".encode()).hex())
            await _insert_import(conn, imp)
            chain.batch_rows.clear()
            chain.tree.clear()
            for start in range(0, n, batch_rows):
                _add_asset_batch(chain, imp, start, min(n, start + batch_rows))
            _add_quarantined_row(imp, n)
            _add_receipt(chain, imp, n)
            await _copy_import(conn, chain, imp)
            done += n
            task += 1
        await store_head(conn, LockedHead(chain.seq, chain.prev))
        await conn.execute("ANALYZE")
        await checkpoints.sign_head(conn, signer, signer.name)
    finally:
        await conn.close()
    return chain.seq


async def _insert_import(conn: Conn, imp: _Import) -> None:
    """The import's row, as a finished import leaves it (its lab registered)."""
    await conn.execute("INSERT INTO labs (name) VALUES ('bench-lab') ON CONFLICT DO NOTHING")
    await conn.execute(
        """
        INSERT INTO imports (id, idempotency_key, lab, policy_name, policy_version, policy_sha256,
                             manifest_sha256, manifest_bytes, spool_path, accepted_body, status)
        VALUES ($1, $2, 'bench-lab', 'lab-inventory', '1', $3, $4, 0, '', '{}'::jsonb, 'done')
        """,
        imp.import_id,
        f"bench-{imp.task}",
        _POLICY_SHA,
        imp.manifest,
    )


def _add_asset_batch(chain: _Chain, imp: _Import, start: int, stop: int) -> None:
    """Rows ``start`` to ``stop`` (0-based, exclusive) of the import: their entries and committed
    row outcomes, linked as one asset batch."""
    import_id, task = imp.import_id, imp.task
    leaves = []
    for i in range(start, stop):
        asset_id = f"B{task:03d}-{i:07d}"
        record = records.asset_record(
            policy="lab-inventory",
            lab="bench-lab",
            data={
                "asset_id": asset_id,
                "grant_code": "NIH-R01GM1",
                "category": "equipment",
                "quantity": i,
                "location": "CHM-204",
                "unit_cost": "1.00",
            },
        )
        leaf = leaf_hash(record)
        leaves.append(leaf)
        imp.entries.append(
            (chain.seq + 1, i - start, "asset", record, leaf, asset_id, "NIH-R01GM1", 1, import_id, i + 1)
        )
        imp.outcomes.append((import_id, i + 1, "committed", asset_id, "NIH-R01GM1", 1, leaf, None, None))
        imp.outcome_leaves.append(leaf_hash(row_outcome(row=i + 1, outcome="committed", record_hash=leaf.hex())))
    batch_hash = root(leaves)
    chain.link("assets", batch_hash, len(leaves), imp.manifest, import_id)
    imp.listed.append((chain.seq, batch_hash.hex()))


def _add_quarantined_row(imp: _Import, n: int) -> None:
    """The import's last row, row ``n + 1``: quarantined."""
    errors = [{"field": "quantity", "rule": "integer", "message": "not a whole number"}]
    imp.outcomes.append((imp.import_id, n + 1, "quarantined", None, None, None, None, errors, ["x"]))
    imp.outcome_leaves.append(
        leaf_hash(
            row_outcome(
                row=n + 1,
                outcome="quarantined",
                record_hash=None,
                errors=[("quantity", "integer")],
                cells=["x"],
            )
        )
    )


def _add_receipt(chain: _Chain, imp: _Import, n: int) -> None:
    """The receipt of the import's ``n`` committed rows and one quarantined row, linked as its batch."""
    import_id, manifest = imp.import_id, imp.manifest
    receipt = records.receipt_record(
        task_id=str(import_id),
        lab="bench-lab",
        manifest_sha256=manifest,
        policy_name="lab-inventory",
        policy_version="1",
        policy_sha256=_POLICY_SHA,
        rows_total=n + 1,
        rows_committed=n,
        rows_duplicate=0,
        rows_quarantined=1,
        outcomes_root=root(imp.outcome_leaves).hex(),
        batches=imp.listed,
    )
    imp.entries.append((chain.seq + 1, 0, "receipt", receipt, leaf_hash(receipt), None, None, None, import_id, None))
    chain.link("receipt", leaf_hash(receipt), 1, manifest, import_id)


async def _copy_import(conn: Conn, chain: _Chain, imp: _Import) -> None:
    """COPY the import's batches, tree leaves, entries and row outcomes into their tables."""
    await conn.copy_records_to_table(
        "ledger_batches",
        records=chain.batch_rows,
        columns=[
            "seq",
            "kind",
            "batch_hash",
            "records",
            "manifest_sha256",
            "policy_sha256",
            "committed_at",
            "chain_hash",
            "import_id",
        ],
    )
    await conn.copy_records_to_table("batch_tree", records=chain.tree, columns=["seq", "leaf_hash"])
    await conn.copy_records_to_table(
        "ledger_entries",
        records=imp.entries,
        columns=[
            "batch_seq",
            "idx",
            "kind",
            "record",
            "leaf_hash",
            "asset_id",
            "grant_code",
            "revision",
            "import_id",
            "row_no",
        ],
    )
    await conn.copy_records_to_table(
        "import_rows",
        records=imp.outcomes,
        columns=[
            "import_id",
            "row_no",
            "outcome",
            "asset_id",
            "grant_code",
            "revision",
            "record_hash",
            "errors",
            "cells",
        ],
    )


def _machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was."""
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "load_average_1m": round(load[0], 2), "load_average_5m": round(load[1], 2)}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(url: str, proofs: int, signer: Signer, workdir: Path) -> dict[str, float]:
    from ledger.db import checkpoints
    from ledger.db.pool import create_pool
    from ledger.db.verification import verify_ledger
    from ledger.services import audit_trail

    signing = checkpoints.CheckpointSigning(signer=signer, origin=signer.name)
    pool = await create_pool(url, min_size=1, max_size=4)
    out: dict[str, float] = {}
    try:
        async with pool.acquire() as conn:
            # As the API and `ledger verify` run it (ranges in parallel processes), then in one.
            t0 = time.perf_counter()
            report = await verify_ledger(conn, database_url=url, workers=min(4, os.cpu_count() or 1))
            out["verify_seconds"] = time.perf_counter() - t0
            assert report.ok, report.first_failure
            t0, c0 = time.perf_counter(), time.process_time()
            single = await verify_ledger(conn)
            out["verify_single_process_seconds"] = time.perf_counter() - t0
            # This process's CPU alone (the server's is not counted): what a busy machine costs.
            out["verify_single_process_cpu_seconds"] = time.process_time() - c0
            assert single == report
        out["verify_records_per_second"] = report.records_checked / out["verify_seconds"]
        out["verify_single_process_records_per_second"] = report.records_checked / out["verify_single_process_seconds"]

        bounds = await pool.fetchrow("SELECT min(id), max(id) FROM ledger_entries")
        assert bounds is not None
        lo, hi = bounds
        ids = [random.randint(lo, hi) for _ in range(proofs)]
        timings, docs = [], []
        for entry_id in ids:
            t0 = time.perf_counter()
            proof = await audit_trail.entry_proof(pool, signing, entry_id)
            timings.append(time.perf_counter() - t0)
            docs.append(msgspec.json.encode(proof))
        out["proof_ms_p50"] = statistics.median(timings) * 1000
        out["proof_ms_p95"] = _percentile(timings, 0.95) * 1000
        keys = [signer.verifier]
        offline = []
        for doc in docs:
            t0 = time.perf_counter()
            verify_entry_proof(decode_document(doc, EntryProof, where="bench"), keys)
            offline.append(time.perf_counter() - t0)
        out["offline_proof_ms_p50"] = statistics.median(offline) * 1000
        out["offline_proof_ms_p95"] = _percentile(offline, 0.95) * 1000

        path = workdir / "bundle.jsonl"
        t0 = time.perf_counter()
        with path.open("wb") as f:
            async for chunk in await audit_trail.export_bundle(pool, signing, 0, None):
                f.write(chunk)
        out["export_seconds"] = time.perf_counter() - t0
        out["export_records_per_second"] = report.records_checked / out["export_seconds"]
        out["bundle_bytes"] = path.stat().st_size
        t0, c0 = time.perf_counter(), time.process_time()
        with path.open("rb") as f:
            bundle = verify_bundle_file(f, keys)  # what `ledger verify-bundle` runs
        out["bundle_verify_seconds"] = time.perf_counter() - t0
        out["bundle_records_per_second"] = bundle.records / out["bundle_verify_seconds"]
        out["bundle_records_per_cpu_second"] = bundle.records / (time.process_time() - c0)
    finally:
        await pool.close()
    return out


def run_audit_bench(
    url: str, settings: Settings, *, records: int, batch_rows: int, runs: int, proofs: int
) -> AuditBench:
    from ledger.db.migrate import upgrade

    name = f"ledger_bench_audit_{uuid.uuid4().hex[:8]}"
    bench_url = _with_database(url, name)
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    try:
        upgrade(bench_url)
        signer = Signer.generate("ledger.bench/audit")
        t0 = time.perf_counter()
        batches = asyncio.run(_build(bench_url, records, batch_rows, signer))
        build_seconds = time.perf_counter() - t0
        results = []
        with tempfile.TemporaryDirectory(dir=settings.home if settings.home.is_dir() else None) as tmp:
            for _ in range(runs):
                results.append(asyncio.run(_measure(bench_url, proofs, signer, Path(tmp))))
        median = {k: round(statistics.median(r[k] for r in results), 3) for k in results[0]}
        return AuditBench(
            machine=_machine(),
            records=records,
            batches=batches,
            build_seconds=round(build_seconds, 1),
            runs=runs,
            **median,
        )
    finally:
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
