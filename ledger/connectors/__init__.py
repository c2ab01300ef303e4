"""Connectors: pulling inventory from an upstream HTTP API into an import (docs/connectors.md).

- ``definition``: the declarative source file (TOML), validated, and checked against a policy.
- ``paths``: dotted paths into JSON values (where the records, the cursor and each field are).
- ``paging``: the four paginators (page, offset, cursor, link), pure state machines.
- ``fetch``: HTTP with a bound on requests in flight, a source-wide pause on 429 and backoff.
- ``window``: the incremental cursor: inclusive, with de-duplication on the upstream key.
- ``sync``: one sync, start to finish: pages fetched, records mapped and spooled as JSON Lines,
  and the provenance of every page.
- ``pull``: `ledger pull`: a sync run on this machine, delivered through the API as `ledger
  submit` delivers a file.

The package runs on a lab's machine (`ledger pull`) as well as in the worker, so, like the
client, it needs only the core, httpx and stamina, never the server's code.
"""
