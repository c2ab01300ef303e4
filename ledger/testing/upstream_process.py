"""The test upstream (ledger.testing.upstream) as a process of its own, for `ledger bench-pull`.

    python -m ledger.testing.upstream_process --records 100000 --latency 0.02 --page-size-max 500 \
        --encode-ahead 500

encodes the pages of ``inventory_records(records)`` ahead, prints ``{"url": ...}`` as one JSON
line once it listens on 127.0.0.1, serves until its standard input closes, then prints its
counters as one JSON line (requests, in_flight_max, first_request and answered_last on the
monotonic clock, which every process of the machine shares) and exits.

A process, not a thread of the bench: the bench's layer may not import the testing helpers, and
an upstream that shares no interpreter lock with its measurer is what a real one is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ledger.testing.upstream import Upstream, inventory_records, serving_upstream

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger.testing.upstream_process", description=__doc__)
    parser.add_argument("--records", type=int, default=100_000, help="records served (default: %(default)s)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per response (default: %(default)s)")
    parser.add_argument(
        "--page-size-max", type=int, default=1000, help="the most records a page holds (default: %(default)s)"
    )
    parser.add_argument(
        "--encode-ahead",
        type=int,
        metavar="PAGE_SIZE",
        help="encode every page of page-number pagination with this limit before listening (default: none)",
    )
    args = parser.parse_args(argv)
    records = inventory_records(args.records)
    # Nothing changes the records here: the page bodies are encoded once.
    upstream = Upstream(records, latency=args.latency, page_size_max=args.page_size_max, frozen=True)
    if args.encode_ahead:
        size = min(args.encode_ahead, args.page_size_max)
        pages = len(records) // size + 1  # the last, shorter or empty, page included
        upstream.encode_ahead([{"page": str(n), "limit": str(args.encode_ahead)} for n in range(1, pages + 1)])
    with serving_upstream(upstream):
        print(json.dumps({"url": upstream.url}), flush=True)
        sys.stdin.read()  # until the bench closes it
    with upstream.lock:
        counters = {
            "requests": upstream.requests,
            "in_flight_max": upstream.in_flight_max,
            "first_request": upstream.log[0][0] if upstream.log else None,
            "answered_last": upstream.answered_last or None,
        }
    print(json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
