"""`ledger checkpoint pull` against a log played by respx: the pinned key only, the kept
checkpoint per origin and key, and the refusals (a smaller tree, another root at the same size,
a failed consistency proof, a key the server chose)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import respx
import stamina

from ledger.cli.main import main
from ledger.core.checkpoint import Checkpoint, sign_checkpoint
from ledger.core.merkle import root
from ledger.core.note import Signer
from ledger.core.proofs import build_consistency_proof

SERVER = "http://ledger.test"
ORIGIN = "ledger.test/log"
SIGNER = Signer.generate("ledger-test")
KEY = SIGNER.verifier.encode()


@pytest.fixture(autouse=True)
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LEDGER_URL", SERVER)
    monkeypatch.setenv("LEDGER_TOKEN", "auditor-token")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    with stamina.set_testing(True, attempts=8, cap=True):
        yield


def leaves(n: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(n)]


def note(tree: list[bytes], signer: Signer = SIGNER) -> str:
    return sign_checkpoint(Checkpoint(origin=ORIGIN, size=len(tree), root=root(tree)), signer)


class Log:
    def __init__(self, router: respx.MockRouter) -> None:
        self.tree: list[bytes] = []
        self.signer = SIGNER
        self.latest = router.get(f"{SERVER}/audit/checkpoints/latest").mock(side_effect=self._latest)
        self.proof = router.get(f"{SERVER}/audit/proofs/consistency").mock(side_effect=self._proof)
        self.bad_proof = False

    def _latest(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer auditor-token"
        return httpx.Response(200, json={"note": note(self.tree, self.signer), "tree_size": len(self.tree)})

    def _proof(self, request: httpx.Request) -> httpx.Response:
        old, new = int(request.url.params["from"]), int(request.url.params["to"])
        proof: Any = msgspec.to_builtins(build_consistency_proof(self.tree[:new], old, None, None))
        if self.bad_proof:
            proof["proof"][0] = "00" * 32
        return httpx.Response(200, json=proof)


def pull(*extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["checkpoint", "pull", "--public-key", KEY, *extra])
    return code, out.getvalue(), err.getvalue()


def test_keeps_the_first_then_checks_each_newer_one_extends_it() -> None:
    with respx.mock(assert_all_called=False) as router:
        log = Log(router)
        log.tree = leaves(5)
        code, out, _ = pull("--json")
        assert code == 0 and json.loads(out)["size"] == 5 and json.loads(out)["previous_size"] is None
        assert log.proof.call_count == 0
        log.tree = leaves(12)
        code, out, _ = pull("--json")
        assert code == 0 and json.loads(out)["previous_size"] == 5
        assert log.proof.calls.last.request.url.params["from"] == "5"
        assert log.proof.calls.last.request.url.params["to"] == "12"
        code, out, _ = pull()
        assert code == 0 and "unchanged" in out


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("smaller", "smaller than the one verified before"),
        ("rewritten", "the log was rewritten"),
        ("bad_proof", "does not extend"),
        ("forked", "does not extend"),
        ("other_key", "none of them is a trusted key"),
    ],
)
def test_refuses_what_does_not_extend_the_kept_checkpoint(change: str, says: str) -> None:
    with respx.mock(assert_all_called=False) as router:
        log = Log(router)
        log.tree = leaves(8)
        assert pull()[0] == 0
        if change == "smaller":
            log.tree = leaves(6)
        elif change == "rewritten":
            log.tree = leaves(8, salt="x")
        elif change == "bad_proof":
            log.tree, log.bad_proof = leaves(10), True
        elif change == "forked":
            log.tree = leaves(10, salt="x")
        else:
            log.tree, log.signer = leaves(10), Signer.generate("ledger-test")
        code, out, err = pull()
        assert code == 1, out + err
        assert "REJECTED" in err and says in err
        # The kept checkpoint is still the one verified: a good extension of it passes.
        log.tree, log.bad_proof, log.signer = leaves(9), False, SIGNER
        assert pull()[0] == 0


def test_a_refused_token_exits_4_and_a_missing_key_is_usage() -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{SERVER}/audit/checkpoints/latest").mock(return_value=httpx.Response(403, json={"message": "no"}))
        assert pull()[0] == 4
    with pytest.raises(SystemExit) as refused:
        main(["checkpoint", "pull"])
    assert refused.value.code == 2
