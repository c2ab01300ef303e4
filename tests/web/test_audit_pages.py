"""The auditor's page over HTTP, without a browser: the API's head, checkpoint and keys; the
chain verified on demand, intact or broken at its first failure; an asset's revisions with
the proofs the API serves, through the session cookie."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

from ledger.testing import Api
from ledger.testing.checkout import ROOT
from ledger.testing.web import sign_in

CLEAN = (ROOT / "examples" / "clean-manifest.csv").read_bytes()


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.split("<main", 1)[1]))


async def test_the_audit_page_shows_the_apis_head_checkpoint_and_keys(api: Api) -> None:
    await api.run(CLEAN)
    head = (await api.get("/audit/head", role="auditor")).json()
    checkpoint = (await api.get("/audit/checkpoints/latest", role="auditor")).json()
    keys = (await api.get("/audit/public-key", role="auditor")).json()
    async with await sign_in(api.client, api.tokens["auditor"]) as user:
        page = await user.get("/ui/audit")
        assert page.status_code == 200
        assert f'<dd id="head-seq">{head["seq"]}</dd>' in page.text
        assert f'<code class="hash" id="head-hash">{head["chain_hash"]}</code>' in page.text
        note = re.search(r'<pre class="note" id="checkpoint-note" tabindex="0">(.*?)</pre>', page.text, re.S)
        assert note and html.unescape(note.group(1)) == checkpoint["note"]
        assert re.search(r"signed <time [^>]*>\d+ (second|minute)s? ago</time>", page.text)
        assert "<caption>Public keys</caption>" in page.text
        for key in keys:
            assert key["verifier_key"] in page.text
        # The how-to names the exact commands, with the current key.
        current = next(k for k in keys if k["current"])["verifier_key"]
        assert f"KEY='{current}'" in html.unescape(page.text)
        assert 'ledger verify-proof proof-ENTRY.json --public-key "$KEY"' in html.unescape(page.text)
        (bundle,) = re.findall(
            r'<a href="([^"]+)" download="ledger-bundle.jsonl">Download export bundle</a>', page.text
        )
        exported = await user.get(bundle)  # the API's export, through the session cookie
        assert exported.status_code == 200 and exported.text.count('"record"') >= 1


async def verified(user: Any) -> Any:
    """ "Verify chain", then the page it refreshes to until the report is there (a verification
    that takes longer than the page waits is polled, as the browser's refresh does)."""
    answer = await user.get("/ui/audit/verify")
    for _ in range(100):
        if "Verifying the chain" not in answer.text:
            return answer
        assert '<meta http-equiv="refresh" content="1; url=/ui/audit/verification">' in answer.text
        await asyncio.sleep(0.1)
        answer = await user.get("/ui/audit/verification")
    raise AssertionError("the verification did not finish")


async def test_verify_chain_says_intact_or_names_the_first_failure(api: Api, db: Any) -> None:
    await api.run(CLEAN)
    async with await sign_in(api.client, api.tokens["auditor"]) as user:
        intact = await verified(user)
        assert intact.status_code == 200
        report = (await api.get("/audit/verify", role="auditor")).json()
        said = " ".join(_text(intact.text).split())
        assert (
            f"Chain intact: {report['batches_checked']} batches and {report['records_checked']} records verified."
            in said
        )
        # A superuser rewrites a record behind the triggers' back.
        await db.execute("SET session_replication_role = replica")
        await db.execute(
            """
            UPDATE ledger_entries
            SET record = convert_to(replace(convert_from(record, 'UTF8'), '"quantity":4', '"quantity":40'), 'UTF8')
            WHERE asset_id = 'CHEM-0043'
            """
        )
        await db.execute("SET session_replication_role = DEFAULT")
        broken = await verified(user)
        assert broken.status_code == 200
        said = " ".join(_text(broken.text).split())
        assert "Chain broken. First failure: Batch 1 Entry 2 Check leaf_hash_mismatch" in said
        assert 'role="alert" id="verdict"' in broken.text


async def test_an_assets_revisions_each_link_to_their_proof(api: Api) -> None:
    await api.run(CLEAN)
    history = (await api.get("/assets/CHEM-0042/history", role="auditor")).json()
    async with await sign_in(api.client, api.tokens["auditor"]) as user:
        page = await user.get("/ui/audit?asset_id=chem-0042&grant_code=NSF-CHE2201234")
        assert page.status_code == 200 and "<caption>Revisions of CHEM-0042</caption>" in page.text
        links = re.findall(r'<a href="([^"]+)" download="proof-(\d+).json">Download proof</a>', page.text)
        assert [int(e) for _, e in links] == [r["entry_id"] for r in history["revisions"]]
        for href, entry in links:
            proof = await user.get(href)  # the API's proof, through the session cookie
            assert proof.status_code == 200
            assert proof.json() == (await api.get(f"/audit/proofs/entries/{entry}", role="auditor")).json()
        unknown = await user.get("/ui/audit?asset_id=NO-SUCH-ASSET")
        assert unknown.status_code == 200 and "no asset &#39;NO-SUCH-ASSET&#39; visible to you" in unknown.text
        control = await user.get("/ui/audit?asset_id=a%00b")
        assert control.status_code == 400


async def test_a_long_verification_is_polled_not_waited_for(api: Api, monkeypatch: Any) -> None:
    """A page request never holds the connection for a whole verification (seconds for a 1M
    ledger): past a short wait the page says "Verifying" and refreshes itself."""
    from ledger.services import verification

    await api.run(CLEAN)
    gate = asyncio.Event()
    real = verification._verify

    async def slow(pool: Any, database_url: str) -> Any:
        await gate.wait()
        return await real(pool, database_url)

    monkeypatch.setattr(verification, "_verify", slow)
    async with await sign_in(api.client, api.tokens["auditor"]) as user:
        started = await user.get("/ui/audit/verify")
        assert started.status_code == 200
        assert "Verifying the chain" in started.text and 'role="status"' in started.text
        assert "Verifying the chain" in (await user.get("/ui/audit/verification")).text
        gate.set()
        done = await verified(user)
        assert "Chain intact" in done.text and "Verified at" in done.text
