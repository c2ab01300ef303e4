"""`ledger bench-pull`'s upstream: the test upstream as a process of its own, its pages encoded
ahead, counting what the bench checks (requests, the most in flight at once, when the first
request came and the last answer went). A sync against it reads every record once, within its
max_in_flight, and the bodies encoded ahead are the bytes the upstream would send otherwise.

The whole bench (fresh embedded servers) takes far longer than a test may: this is its part
that is not the server's."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from ledger.bench.pull import DEFINITION, upstream_process
from ledger.connectors.definition import parse_definition
from ledger.connectors.sync import run_sync
from ledger.testing.upstream import Upstream, inventory_records
from tests.connectors.helpers import upstream_client

RECORDS, PAGE, IN_FLIGHT = 1_050, 100, 4


async def test_a_sync_against_the_bench_upstream_reads_every_record_once_within_the_limit(tmp_path: Path) -> None:
    started = time.monotonic()
    # 50 ms a page: the first four requests overlap even on a busy machine.
    with upstream_process(RECORDS, 0.05, PAGE) as up:
        definition = parse_definition(
            DEFINITION.format(
                name="bench-wms",
                lab="chem-lab",
                url=up.url,
                secret_env="BENCH",
                max_in_flight=IN_FLIGHT,
                page_size=PAGE,
            )
        )
        async with upstream_client() as client:
            result = await run_sync(definition, saved=None, directory=tmp_path, client=client, env={"BENCH": "x"})
        counters = up.stop()

    assert (result.status, result.records, len(result.pages)) == ("ok", RECORDS, 11)
    assert result.manifest is not None
    tags = [json.loads(line)["asset_id"] for line in result.manifest.read_text().splitlines()]
    assert sorted(tags) == sorted(r["tag"] for r in inventory_records(RECORDS))
    # Asked for ahead, four at a time: the upstream saw four at once, never more.
    assert counters["in_flight_max"] == IN_FLIGHT == result.in_flight_max
    # A page asked for past the last may be cancelled before it leaves: the upstream never saw it.
    assert 11 <= counters["requests"] <= result.requests
    assert started < counters["first_request"] < counters["answered_last"] < time.monotonic()
    # The pages encoded ahead are the bytes an upstream that encodes each answer sends.
    plain = Upstream(inventory_records(RECORDS), page_size_max=PAGE)
    first = json.dumps(plain.page({"page": "1", "limit": str(PAGE)})).encode()
    assert result.pages[0].sha256 == hashlib.sha256(first).hexdigest()
