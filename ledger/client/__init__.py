"""The HTTP client of the service: `ledger submit` and `ledger checkpoint pull`.

It runs on a submitter's or an auditor's machine, talks to the server over HTTP only, and
imports nothing of the server but ledger.core (import-linter holds it to that), so it needs
neither a database nor the web framework.
"""
