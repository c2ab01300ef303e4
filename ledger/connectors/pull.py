"""`ledger pull FILE`: run one connector sync on this machine and deliver it through the API.

1. The definition is read and checked against the policy the server holds (a map naming a
   column the policy does not know is refused here, before any request upstream).
2. The source's cursor comes from the server (``GET /connectors/{name}``): a pull and the
   worker's scheduled syncs of the same source share it.
3. The sync runs (ledger.connectors.sync) and its manifest is spooled under the state directory.
4. The sync is recorded (``POST /connectors/{name}/pulls``: pages, errors, cursor window), then
   its manifest is submitted exactly as `ledger submit` would (resumable, retried), naming the
   sync, so the import's receipt records the pages and its commit moves the cursor.

Exit codes as `ledger submit`'s, plus 5 for a sync that ended ``partial``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import stamina

from ledger.client.retry import ATTEMPTS, AuthFailed, Backoff, Refused, Transient, check
from ledger.client.submit import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_PARTIAL,
    EXIT_USAGE,
    Options,
    Outcome,
    Reporter,
    Submitter,
    worst,
)
from ledger.connectors.definition import DefinitionError, SourceDefinition, check_columns, parse_definition
from ledger.connectors.fetch import Clock
from ledger.connectors.sync import SyncResult, run_sync
from ledger.connectors.window import CursorState
from ledger.core.policy.descriptor import parse_descriptor
from ledger.core.policy.errors import PolicyError

__all__ = ["Puller", "load_checked"]


def load_checked(path: Path) -> tuple[str, SourceDefinition]:
    """The definition's text and value (DefinitionError says what is wrong, with the key)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(str(path), [f"cannot read it: {exc}"]) from None
    return text, parse_definition(text, source=str(path))


class Puller:
    def __init__(
        self,
        client: httpx.AsyncClient,
        upstream: httpx.AsyncClient,
        state_dir: Path,
        options: Options,
        *,
        reporter: Reporter | None = None,
        clock: Clock | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.state_dir = state_dir
        self.options = options
        self.reporter = reporter
        self.clock = clock
        self.env = env

    async def pull(self, path: Path) -> Outcome:
        outcome = Outcome(file=str(path))
        backoff = Backoff(self.options.max_wait)
        try:
            text, definition = load_checked(path)
            await self._check_policy(definition, backoff)
            saved = await self._cursor(definition, backoff)
            result = await run_sync(
                definition,
                saved=saved,
                directory=self.state_dir / "pulls",
                client=self.upstream,
                env=self.env,
                clock=self.clock,
            )
        except DefinitionError as exc:
            outcome.status, outcome.error, outcome.code = "error", str(exc), EXIT_USAGE
            return outcome
        except (Transient, httpx.TransportError, Refused) as exc:
            return _failed(outcome, exc)
        try:
            return await self._deliver(outcome, text, definition, result, backoff)
        finally:
            if result.manifest is not None:
                with contextlib.suppress(FileNotFoundError):
                    result.manifest.unlink()

    async def _deliver(
        self, outcome: Outcome, text: str, definition: SourceDefinition, result: SyncResult, backoff: Backoff
    ) -> Outcome:
        outcome.extra.update(
            sync_status=result.status,
            pages=len(result.pages),
            records=result.records,
            fetched=result.fetched,
            skipped=result.skipped,
            errors=msgspec.to_builtins(result.errors),
            problems=result.problems_total,
        )
        body = {"definition": text, **result.record()}
        try:
            recorded = await self._retrying(
                backoff, lambda: self._post(f"/connectors/{definition.name}/pulls", body, ok=(201,), need="sync_id")
            )
        except (Transient, httpx.TransportError, Refused) as exc:
            return _failed(outcome, exc)
        outcome.extra["sync_id"] = recorded["sync_id"]
        if result.manifest is None:
            outcome.status = "failed" if result.status == "failed" else "done"
            if result.errors:
                outcome.error = "; ".join(f"{e.code}: {e.message}" for e in result.errors)
            outcome.code = EXIT_ERROR if result.status == "failed" else _sync_code(result.status)
            return outcome
        options = Options(
            chunk_size=self.options.chunk_size,
            max_wait=self.options.max_wait,
            wait=self.options.wait,
            policy=definition.policy,
            lab=definition.lab,
            receipt_dir=self.options.receipt_dir,
            timeout=self.options.timeout,
            fields=(("connector_sync", str(recorded["sync_id"])),),
        )
        submitter = Submitter(self.client, self.state_dir, options, reporter=self.reporter)
        delivered = await submitter.submit(result.manifest)
        delivered.file = outcome.file
        delivered.extra.update(outcome.extra)
        if result.errors and delivered.error is None:
            delivered.error = "; ".join(f"{e.code}: {e.message}" for e in result.errors)
        delivered.code = worst([delivered.code, _sync_code(result.status)])
        return delivered

    async def _check_policy(self, definition: SourceDefinition, backoff: Backoff) -> None:
        policy = await self._retrying(backoff, lambda: self._get(f"/policies/{definition.policy}"))
        try:
            spec = parse_descriptor(json.dumps(policy["descriptor"]).encode(), source=definition.policy)
        except (PolicyError, KeyError, TypeError) as exc:
            raise Refused(f"the server's policy {definition.policy!r} cannot be read: {exc}", 500) from None
        fields = [f.name for f in spec.fields]
        check_columns(definition, fields, [f.name for f in spec.fields if f.required])

    async def _cursor(self, definition: SourceDefinition, backoff: Backoff) -> CursorState | None:
        async def get() -> dict[str, Any] | None:
            response = await self.client.get(f"/connectors/{definition.name}")
            if response.status_code == 404:
                return None
            return _object(check(response))

        found = await self._retrying(backoff, get)
        if found is None:
            return None
        if found.get("lab") != definition.lab:
            raise DefinitionError(definition.name, [f"lab: the server's {definition.name!r} is another lab's"])
        if found.get("cursor") is None:
            return None
        return CursorState(value=found["cursor"], keys=list(found.get("cursor_keys") or []))

    async def _get(self, url: str) -> dict[str, Any]:
        return _object(check(await self.client.get(url)))

    async def _post(self, url: str, body: dict[str, Any], ok: tuple[int, ...], need: str) -> dict[str, Any]:
        return _object(check(await self.client.post(url, json=body), ok=ok), need)

    async def _retrying(self, backoff: Backoff, step: Callable[[], Awaitable[Any]]) -> Any:
        async for attempt in stamina.retry_context(on=backoff, attempts=ATTEMPTS, timeout=None):
            with attempt:
                return await step()
        raise AssertionError("stamina ends with the last error")  # pragma: no cover


def _object(response: httpx.Response, need: str | None = None) -> dict[str, Any]:
    """The answer's JSON object. Another body (a proxy's HTML page, a wrong LEDGER_URL) is
    refused, so the source ends with exit 1 and its --json line, not a traceback."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or (need is not None and need not in body):
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        where = f"{response.request.method} {response.request.url.path}"
        raise Refused(f"{where}: the server's answer is not the JSON object expected ({kind})", response.status_code)
    return body


def _sync_code(status: str) -> int:
    return EXIT_PARTIAL if status == "partial" else (EXIT_ERROR if status == "failed" else 0)


def _failed(outcome: Outcome, exc: BaseException) -> Outcome:
    if isinstance(exc, AuthFailed):
        outcome.status, outcome.code = "error", EXIT_AUTH
    elif isinstance(exc, Transient | httpx.TransportError):
        outcome.status, outcome.code = "transient_failure", EXIT_ERROR
    else:
        outcome.status, outcome.code = "error", EXIT_ERROR
    outcome.error = str(exc) or type(exc).__name__
    return outcome
