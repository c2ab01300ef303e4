"""Dependencies injected into handlers by name: ``principal`` and ``ledger``."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from ledger.api.state import AppState
from ledger.services.access import Principal

__all__ = ["dependencies"]


def _principal(request: Request[Any, Any, Any]) -> Principal:
    user = request.user
    assert isinstance(user, Principal)
    return user


def _ledger(state: State) -> AppState:
    app_state: AppState = state.ledger
    return app_state


dependencies: dict[str, Provide] = {
    "principal": Provide(_principal, sync_to_thread=False),
    "ledger": Provide(_ledger, sync_to_thread=False),
}
