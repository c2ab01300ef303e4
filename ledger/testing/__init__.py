"""Factories and helpers for tests, so that test modules import these instead of each other.

Each module owns one thing:

- ``api``: the service's HTTP contract (tokens per role, manifests, an app and its client);
  re-exported here.
- ``checkout``: where the source checkout and its policies are.
- ``databases``: statements and database URLs on the server the tests use.
- ``imports``: an import recorded straight in the database, and the settings to run it with.
- ``content``: what an import leaves in the ledger, comparable between runs.
- ``xlsx``: a tiny XLSX writer, so the suite needs no spreadsheet library.
- ``policy_rows``: a Hypothesis strategy of rows bound to the lab-inventory policy.
- ``merkle_reference``: a plain transcription of RFC 9162's Merkle tree definitions.
- ``web``: the pages over HTTP as signed-in users (a session cookie, forms with their CSRF token).
- ``browser``: Debian's Chromium through Playwright, signing in as a person would, and axe-core.

Nothing here runs in production: it sits at the top of the layers, beside the CLI, and no
other part of ledger imports it.
"""

from __future__ import annotations

from ledger.testing.api import HEADER, TOKENS, Api, create_tokens, manifest, running_api

__all__ = ["HEADER", "TOKENS", "Api", "create_tokens", "manifest", "running_api"]
