"""/imports/{task_id}/receipt: the signed receipt of one import, checkable offline."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from ledger.api.state import AppState
from ledger.core.proofs import ReceiptProof
from ledger.services import audit as service
from ledger.services.access import READERS, Principal, require_role

__all__ = ["ReceiptsController"]


class ReceiptsController(Controller):
    path = "/imports"
    tags = ["imports"]

    @get("/{task_id:str}/receipt", summary="The import's receipt with its inclusion in a signed checkpoint")
    async def receipt(
        self, task_id: FromPath[str], ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> ReceiptProof:
        require_role(principal, READERS)
        return await service.receipt_proof(ledger.db, principal, task_id)
