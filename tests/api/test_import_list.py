"""GET /imports: the imports a token may read, newest first, in keyset pages, scoped to a lab
manager's labs."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.testing import Api, manifest


def _row(i: int) -> str:
    return f"LS-{i:04d},NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Listed"


async def _pages(api: Api, role: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get("/imports", role=role, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next"]
        if cursor is None:
            return pages


async def test_imports_are_listed_newest_first_in_keyset_pages_and_scoped_to_labs(api: Api) -> None:
    chem = [(await api.run(manifest(_row(i)), filename=f"chem-{i}.csv"))["task_id"] for i in range(5)]
    bio = [
        (await api.run(manifest(_row(100 + i)), role="manager2", filename=f"bio-{i}.csv"))["task_id"] for i in range(2)
    ]
    everything = [item for page in await _pages(api, "auditor", limit=2) for item in page]
    # Submitted one after another: newest first is the reverse order, across pages of 2.
    assert [i["task_id"] for i in everything] == list(reversed(chem + bio))
    first = everything[-1]
    assert first["task_id"] == chem[0] and first["filename"] == "chem-0.csv" and first["lab"] == "chem-lab"
    assert (first["status"], first["rows_total"], first["rows_committed"]) == ("done", 1, 1)
    # A lab manager sees its own labs' imports only, and naming another lab lists nothing.
    mine = [item["task_id"] for page in await _pages(api, "manager", limit=3) for item in page]
    assert mine == list(reversed(chem))
    assert await _pages(api, "manager", lab="bio-lab") == [[]]
    assert [
        i["task_id"] for i in (await api.get("/imports", role="multi", params={"lab": "bio-lab"})).json()["items"]
    ] == list(reversed(bio))
    # Filtered by status.
    assert (await api.get("/imports", role="admin", params={"status": "failed"})).json() == {"items": [], "next": None}


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"limit": "0"}, 422, "invalid_limit"),
        ({"limit": "501"}, 422, "invalid_limit"),
        ({"limit": "-1"}, 400, "invalid_request"),
        ({"status": "finished"}, 422, "invalid_status"),
        ({"cursor": "not-a-cursor"}, 422, "invalid_cursor"),
        ({"cursor": "WyJ4IiwieSJd"}, 422, "invalid_cursor"),  # ["x","y"]: not a time and an id
    ],
)
async def test_bad_parameters_are_refused(api: Api, params: dict[str, str], status: int, code: str) -> None:
    response = await api.get("/imports", params=params)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
