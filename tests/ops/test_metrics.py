"""GET /metrics against what really happened: imports run through the API and its in-process
worker, the scrape parsed with Prometheus's own parser and held to the imports' answers and to
the database, and no label anywhere holding an id or a raw path.

- test_scrape_accounts_for_the_imports: a clean, a dirty and a refused manifest, and one that
  repeats the clean rows; the row and import counters, the failure code, the stage histograms
  (bucket by bucket against imports.stage_seconds), the queue, workers, chain, checkpoint,
  quarantine and verification figures, and every family the module declares.
- test_no_label_holds_an_id_or_a_raw_path: after requests whose paths hold ids (an import's, a
  quarantine item's, an unknown path's), every label value of the scrape: no UUID anywhere, a
  route label is a route's template (or "unmatched"), no other label holds a path.
- test_unsigned_head_and_the_checkpoint_timer: a commit made without the signing key leaves the
  head unsigned, which the scrape shows; the worker's timer signs it, and the scrape shows that
  too. The database snapshot is cached for LEDGER_METRICS_CACHE_SECONDS; with the database
  refusing connections the scrape still answers, with ledger_database_up 0.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger.api.access_log import UNMATCHED
from ledger.bench.manifest import HEADER, generate_rows
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.pool import create_pool
from ledger.jobs.checkpoint_timer import sign_if_unsigned
from ledger.jobs.import_job import run_import
from ledger.services.metrics import CONTENT_TYPE, METRIC_NAMES, STAGE_BUCKETS
from ledger.services.signing import load_signing
from ledger.testing import Api, manifest
from ledger.testing.databases import run_admin
from ledger.testing.imports import create_import, job_settings

UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE)
# A path segment that is an id: digits, or a long run of hex.
ID_SEGMENT = re.compile(r"/(\d+|[0-9a-f]{16,})(/|$)", re.IGNORECASE)

CLEAN = [f"MT-{i:04d},NIH-R01GM{i},equipment,{i},CHM-204,2024-01-15,,,10.00,Clean {i}" for i in range(1, 6)]
UNKNOWN = "00000000-0000-4000-8000-000000005eed"
STAGES = ("upload", "parse_validate", "stage", "decide", "finalize", "projection")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: Api) -> tuple[Samples, list[dict[str, str]]]:
    """Every sample of a scrape by (name, labels), and every label set, unauthenticated."""
    response = await api.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    samples: Samples = {}
    labels: list[dict[str, str]] = []
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
            labels.append(dict(s.labels))
    return samples, labels


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


async def scrape_until(
    api: Api, done: Callable[[Samples], bool], within: float = 15.0
) -> tuple[Samples, list[dict[str, str]]]:
    """Scrape until ``done`` holds (figures another task writes: the projection's, a cache's)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        samples, labels = await scrape(api)
        if done(samples):
            return samples, labels
        assert asyncio.get_running_loop().time() < deadline, "the scrape never showed it"
        await asyncio.sleep(0.05)


def dirty_manifest(rows: int, seed: int) -> bytes:
    """The benchmark's manifest: about 1% of rows break a rule, about 1% repeat a row exactly."""
    return ("\n".join([HEADER, *(",".join(r) for r in generate_rows(rows, seed=seed))]) + "\n").encode()


@pytest.mark.parametrize("settings_overrides", [{"metrics_cache_seconds": 0}])
async def test_scrape_accounts_for_the_imports(api: Api, db: Any) -> None:
    clean = await api.run(manifest(*CLEAN))
    dirty = await api.run(dirty_manifest(600, seed=7))
    again = await api.run(manifest(*CLEAN, "MT-0099,NSF-R0000099,equipment,2,BIO-101,2024-02-01,,,1.00,New"))
    refused = await api.run(manifest("a,b", header="not,the,header"))
    done = [clean, dirty, again]
    assert [i["status"] for i in done] == ["done"] * 3 and refused["status"] == "failed"
    assert clean["rows_committed"] == len(CLEAN) and again["rows_duplicate"] == len(CLEAN)
    assert dirty["rows_quarantined"] > 0 and dirty["rows_duplicate"] > 0

    # The projection's figures are written by the worker just after the assets are current.
    samples, _ = await scrape_until(
        api, lambda s: s.get(("ledger_import_stage_seconds_count", frozenset({("stage", "projection")}))) == 3
    )

    for outcome in ("committed", "duplicate", "quarantined"):
        expected = sum(i[f"rows_{outcome}"] for i in done)
        assert value(samples, "ledger_import_rows_total", outcome=outcome) == expected, outcome
    assert value(samples, "ledger_imports_finished_total", status="done") == 3
    assert value(samples, "ledger_imports_finished_total", status="failed") == 1
    assert value(samples, "ledger_imports_finished_total", status="cancelled") == 0
    assert value(samples, "ledger_import_failures_total", code=refused["error"]["code"]) == 1
    assert value(samples, "ledger_imports", status="queued") == 0
    assert value(samples, "ledger_import_last_rows_per_second") > 0

    # Each stage's histogram is exactly the imports' stage_seconds, bucket by bucket.
    stored = [r["stage_seconds"] for r in await db.fetch("SELECT stage_seconds FROM imports")]
    counts = {"upload": 4, "parse_validate": 4, "stage": 3, "decide": 3, "finalize": 3, "projection": 3}
    for stage in STAGES:
        figures = [float(s[stage]) for s in stored if s and stage in s]
        assert len(figures) == counts[stage], stage
        assert value(samples, "ledger_import_stage_seconds_count", stage=stage) == len(figures)
        assert value(samples, "ledger_import_stage_seconds_sum", stage=stage) == pytest.approx(sum(figures))
        for le in STAGE_BUCKETS:
            bucket = value(samples, "ledger_import_stage_seconds_bucket", stage=stage, le=repr(float(le)))
            assert bucket == sum(f <= le for f in figures), (stage, le)
        assert value(samples, "ledger_import_stage_seconds_bucket", stage=stage, le="+Inf") == len(figures)

    head = (await api.get("/audit/head", role="auditor")).json()
    assert value(samples, "ledger_chain_head_seq") == head["seq"] == 6  # an asset batch and a receipt each
    assert value(samples, "ledger_checkpoint_tree_size") == head["seq"]  # every commit signs its head
    assert value(samples, "ledger_checkpoint_unsigned_seconds") == 0
    assert value(samples, "ledger_checkpoint_interval_seconds") == 300
    assert value(samples, "ledger_workers_alive") == 1
    assert value(samples, "ledger_queue_jobs", entrypoint="import_manifest", state="queued") == 0
    assert value(samples, "ledger_database_up") == 1

    open_items = sum(v for (n, _), v in samples.items() if n == "ledger_quarantine_open_items")
    assert open_items == dirty["rows_quarantined"]
    assert value(samples, "ledger_quarantine_open_items", reason="schema_violation") == dirty["rows_quarantined"]
    assert value(samples, "ledger_quarantine_oldest_open_age_seconds") >= 0

    # A verification run by this process; then every family the module declares is in the scrape.
    assert (await api.get("/audit/verify", role="auditor")).json()["ok"] is True
    samples, _ = await scrape(api)
    assert value(samples, "ledger_verification_runs_total", result="intact") == 1
    assert value(samples, "ledger_verification_runs_total", result="tampered") == 0
    assert value(samples, "ledger_verification_last_ok") == 1
    names = {name for name, _ in samples}
    for family in METRIC_NAMES:
        assert family in names or f"{family}_count" in names, family


async def test_no_label_holds_an_id_or_a_raw_path(api: Api) -> None:
    status = await api.run(dirty_manifest(200, seed=11))
    task_id = status["task_id"]
    item = next(r for r in await api.rows(task_id) if r["outcome"] == "quarantined")
    assert (await api.get(f"/imports/{task_id}/rows", params={"limit": 5})).status_code == 200
    assert (await api.get(f"/quarantine/{task_id}:{item['row']}", role="officer")).status_code == 200
    assert (await api.get(f"/imports/{UNKNOWN}")).status_code == 404
    assert (await api.client.get(f"/nowhere/{task_id}/42")).status_code == 404
    samples, labels = await scrape(api)

    by_template = {"method": "GET", "route": "/imports/{task_id:str}", "status_class": "2xx"}
    assert value(samples, "ledger_http_request_duration_seconds_count", **by_template) >= 1
    unknown = {**by_template, "status_class": "4xx"}
    assert value(samples, "ledger_http_request_duration_seconds_count", **unknown) == 1
    item_route = {"method": "GET", "route": "/quarantine/{item_id:str}", "status_class": "2xx"}
    assert value(samples, "ledger_http_request_duration_seconds_count", **item_route) == 1
    unmatched = {"method": "GET", "route": UNMATCHED, "status_class": "4xx"}
    assert value(samples, "ledger_http_request_duration_seconds_count", **unmatched) == 1

    templates = {r.path for r in api.client.app.routes}
    assert len(labels) > 50
    for label_set in labels:
        for key, text in label_set.items():
            assert not UUID.search(text), (key, text)
            if key == "route":
                assert text == UNMATCHED or (text in templates and not ID_SEGMENT.search(text)), text
            else:
                assert "/" not in text, (key, text)


@pytest.mark.parametrize("settings_overrides", [{"metrics_cache_seconds": 0.5}])
@pytest.mark.parametrize("inline_worker", [False])
async def test_unsigned_head_and_the_checkpoint_timer(
    api: Api, db: Any, database_url: str, pg_server: str, tmp_path: Path
) -> None:
    samples, _ = await scrape(api)
    assert value(samples, "ledger_chain_head_seq") == 0
    assert value(samples, "ledger_workers_alive") == 0
    assert value(samples, "ledger_checkpoint_unsigned_seconds") == 0

    # A commit by a writer without the signing key (signing=None): the head goes unsigned.
    settings = job_settings(database_url, tmp_path)
    policies = PolicyRegistry.load_dir(settings.policies_dir)
    path = tmp_path / "unsigned.csv"
    path.write_bytes(manifest(*CLEAN))
    await run_import(db, await create_import(db, path, policies, enqueue=False), policies, settings)
    samples, _ = await scrape_until(api, lambda s: s[("ledger_chain_head_seq", frozenset())] == 2)
    assert value(samples, "ledger_checkpoint_unsigned_seconds") > 0
    assert ("ledger_checkpoint_tree_size", frozenset()) not in samples  # no checkpoint at all yet

    # The snapshot is cached: a worker that appears now shows at the first scrape after it expires.
    await db.execute("INSERT INTO workers (id, hostname, pid) VALUES (gen_random_uuid(), 'elsewhere', 1)")
    assert value((await scrape(api))[0], "ledger_workers_alive") == 0
    await scrape_until(api, lambda s: s[("ledger_workers_alive", frozenset())] == 1)

    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        sign: Callable[[], Awaitable[int | None]] = lambda: sign_if_unsigned(pool, load_signing(settings))  # noqa: E731
        assert await sign() == 2
        assert await sign() is None  # the head is signed now: nothing to do
    finally:
        await pool.close()
    samples, _ = await scrape_until(api, lambda s: s.get(("ledger_checkpoint_tree_size", frozenset())) == 2)
    assert value(samples, "ledger_checkpoint_unsigned_seconds") == 0
    assert value(samples, "ledger_checkpoint_age_seconds") >= 0

    # The database refuses connections: the scrape still answers, says so, and reports none of
    # the database's figures (stale ones would hide the outage), only the process's own.
    name = await db.fetchval("SELECT current_database()")
    await run_admin(
        pg_server,
        f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )
    try:
        samples, _ = await scrape_until(api, lambda s: s[("ledger_database_up", frozenset())] == 0)
    finally:
        await run_admin(pg_server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert ("ledger_chain_head_seq", frozenset()) not in samples
    assert value(samples, "ledger_checkpoint_interval_seconds") == 300
    assert any(name == "ledger_http_request_duration_seconds_count" for name, _ in samples)
