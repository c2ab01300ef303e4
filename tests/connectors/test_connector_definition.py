"""The source definition: the issue's example parses, unknown keys are refused by name, every
rule of a usable definition names the key it is about, and a map that does not fit the policy
is refused when the source is loaded, naming the column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ledger.connectors.definition import (
    DefinitionError,
    check_columns,
    from_builtins,
    load_definition,
    parse_definition,
)
from ledger.core.policy.descriptor import PolicySpec, parse_descriptor
from tests.connectors.helpers import BASE, definition

ROOT = Path(__file__).resolve().parents[2]

# The example of issue #17, as written there.
EXAMPLE = """
name = "chem-wms"
lab = "chem-lab"
policy = "lab-inventory"
base_url = "https://wms.example.edu/api/v2"
resource = "/inventory"          # path under base_url
auth_header = "Authorization"    # optional; its value is read from the variable below
auth_env = "CHEM_WMS_TOKEN"      # never the secret itself in the file
records = "data.items"           # dotted path to the list of records in a response
key = "id"                       # the upstream record key, for de-duplication
max_in_flight = 8
schedule = "*/15 * * * *"        # cron, optional
[pagination]                     # type = page | offset | cursor | link
type = "cursor"
cursor_path = "meta.next_cursor" # cursor: where the next cursor is (body); cursor_header for a header
cursor_param = "cursor"          # query parameter that carries it
page_size_param = "limit"        # page/offset also name page_param / offset_param
page_size = 500
[incremental]                    # optional
field = "updated_at"             # upstream field holding the change time
param = "updated_since"          # query parameter
start = "2024-01-01T00:00:00Z"
[map]                            # policy column = dotted path of the upstream field
asset_id = "tag"
grant_code = "grant.code"
"""


@pytest.fixture(scope="module")
def policy() -> PolicySpec:
    return parse_descriptor((ROOT / "policies" / "lab-inventory.json").read_bytes(), source="lab-inventory.json")


def problems(**overrides: Any) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        definition(**overrides)
    return caught.value.problems


def test_the_issue_example_parses() -> None:
    d = parse_definition(EXAMPLE, source="chem-wms.toml")
    assert (d.name, d.lab, d.policy, d.key, d.records, d.max_in_flight) == (
        "chem-wms",
        "chem-lab",
        "lab-inventory",
        "id",
        "data.items",
        8,
    )
    assert d.url == "https://wms.example.edu/api/v2/inventory"
    assert (d.auth_header, d.auth_env, d.schedule) == ("Authorization", "CHEM_WMS_TOKEN", "*/15 * * * *")
    p = d.pagination
    assert (p.type, p.cursor_path, p.cursor_header, p.cursor_param, p.page_size_param, p.page_size) == (
        "cursor",
        "meta.next_cursor",
        None,
        "cursor",
        "limit",
        500,
    )
    assert d.incremental is not None
    assert (d.incremental.field, d.incremental.param, d.incremental.start) == (
        "updated_at",
        "updated_since",
        "2024-01-01T00:00:00Z",
    )
    assert d.map == {"asset_id": "tag", "grant_code": "grant.code"}
    # What the server stores is the validated definition: it reads back the same.
    assert from_builtins(d.as_dict()) == d


def test_load_definition_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "chem-wms.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    assert load_definition(str(path)).name == "chem-wms"
    with pytest.raises(DefinitionError) as caught:
        load_definition(str(tmp_path / "absent.toml"))
    assert caught.value.source.endswith("absent.toml")
    assert caught.value.problems[0].startswith("cannot read it")


def test_not_toml_is_refused_saying_so() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition('name = "unterminated', source="x.toml")
    assert caught.value.problems[0].startswith("not valid TOML")
    assert str(caught.value).startswith("x.toml: ")


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        (EXAMPLE.replace('key = "id"', 'key = "id"\nmax_inflight = 4'), "max_inflight"),
        (EXAMPLE.replace('type = "cursor"', 'type = "cursor"\ncursor_pth = "x"'), "cursor_pth"),
        (EXAMPLE.replace('param = "updated_since"', 'param = "updated_since"\nstrat = "0"'), "strat"),
    ],
    ids=["top-level", "pagination", "incremental"],
)
def test_an_unknown_key_is_refused_with_its_name(toml: str, named: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(toml)
    assert len(caught.value.problems) == 1
    assert f"`{named}`" in caught.value.problems[0]
    assert "unknown field" in caught.value.problems[0]


def test_the_table_holding_an_unknown_key_is_named() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(EXAMPLE.replace('type = "cursor"', 'type = "cursor"\ncursor_pth = "x"'))
    assert caught.value.problems[0].startswith("pagination: ")


def test_a_wrong_type_names_the_key() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(EXAMPLE.replace("max_in_flight = 8", 'max_in_flight = "8"'))
    assert caught.value.problems[0].startswith("max_in_flight: ")
    with pytest.raises(DefinitionError) as caught:
        parse_definition(EXAMPLE.replace('type = "cursor"', 'type = "scroll"'))
    assert caught.value.problems[0].startswith("pagination.type: ")


def test_a_required_key_left_out_is_named() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(EXAMPLE.replace('records = "data.items"', ""))
    assert "`records`" in caught.value.problems[0]


CURSOR = {"type": "cursor", "cursor_path": "meta.next"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"name": "Chem WMS"}, "name: lower-case letters"),
        ({"name": "x" * 64}, "name: lower-case letters"),
        ({"lab": "Chem-Lab"}, "lab: a lab name"),
        ({"policy": ""}, "policy: required"),
        ({"base_url": "ftp://wms.example.edu/api"}, "base_url: an http:// or https:// URL with a host"),
        ({"base_url": "https:///api"}, "base_url: an http:// or https:// URL with a host"),
        ({"base_url": BASE + "?token=abc"}, "base_url: no query, fragment or credentials"),
        ({"base_url": "https://user:pw@wms.example.edu/api"}, "base_url: no query, fragment or credentials"),
        ({"base_url": BASE + "#top"}, "base_url: no query, fragment or credentials"),
        ({"auth_header": "Authorization"}, "auth_header and auth_env: both or neither"),
        ({"auth_env": "CHEM_WMS_TOKEN"}, "auth_header and auth_env: both or neither"),
        ({"auth_header": "Bad Header:", "auth_env": "T"}, "auth_header: an HTTP header name"),
        ({"auth_header": "Authorization", "auth_env": "Bearer abc123"}, "auth_env: the name of an environment"),
        ({"records": "data..items"}, "records: not a dotted path"),
        ({"key": "id."}, "key: not a dotted path"),
        ({"map": {"asset_id": ".tag"}}, "map.asset_id: not a dotted path"),
        ({"map": {}}, "map: at least one column"),
        ({"max_in_flight": 0}, "max_in_flight: between 1 and 64"),
        ({"max_in_flight": 65}, "max_in_flight: between 1 and 64"),
        ({"schedule": "every 15 minutes"}, "schedule: not a cron expression"),
        ({"timeout_seconds": 0}, "timeout_seconds: more than 0, at most 600"),
        ({"timeout_seconds": 601}, "timeout_seconds: more than 0, at most 600"),
        ({"response_bytes_max": 1023}, "response_bytes_max: between 1 KiB and 1 GiB"),
        ({"pages_max": 0}, "pages_max: between 1 and 10,000,000"),
        ({"attempts": 0}, "attempts: between 1 and 20"),
        ({"attempts": 21}, "attempts: between 1 and 20"),
        ({"max_wait_seconds": -1}, "max_wait_seconds: between 0 and 86,400"),
        (
            {"pagination": {"type": "page", "page_size_param": "limit", "page_size": 0}},
            "pagination.page_size: between 1 and 100,000",
        ),
        ({"pagination": {"type": "page"}}, "pagination.page_size_param: required for type 'page'"),
        ({"pagination": {"type": "offset"}}, "pagination.page_size_param: required for type 'offset'"),
        ({"pagination": {"type": "cursor"}}, "pagination: type 'cursor' needs cursor_path or cursor_header"),
        (
            {"pagination": {"type": "cursor", "cursor_path": "meta.next", "cursor_header": "X-Next"}},
            "pagination: type 'cursor' needs cursor_path or cursor_header",
        ),
        ({"pagination": {"type": "cursor", "cursor_path": "meta..next"}}, "pagination.cursor_path: not a dotted"),
        ({"pagination": {"type": "link", "link_path": "links."}}, "pagination.link_path: not a dotted path"),
        ({"incremental": {"field": "updated..at", "param": "since"}}, "incremental.field: not a dotted path"),
        ({"incremental": {"field": "updated_at", "param": ""}}, "incremental.param: required"),
    ],
)
def test_each_rule_names_its_key(overrides: dict[str, Any], expected: str) -> None:
    found = problems(**overrides)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_named_at_once() -> None:
    found = problems(name="Bad Name", max_in_flight=0, map={}, pagination={"type": "cursor"})
    assert [p.split(":")[0] for p in found] == ["name", "map", "max_in_flight", "pagination"]


def test_the_edges_of_the_ranges_are_accepted() -> None:
    d = definition(
        max_in_flight=64,
        timeout_seconds=600,
        response_bytes_max=1024,
        pages_max=1,
        attempts=20,
        max_wait_seconds=0,
        schedule="0 3 * * 1-5",
        auth_header="X-Api-Key",
        auth_env="WMS_KEY",
        pagination=CURSOR,
        records="",  # the body is the list itself
    )
    assert d.max_in_flight == 64 and d.records == ""


def test_check_columns_accepts_a_map_of_the_policy_columns(policy: PolicySpec) -> None:
    required = [f.name for f in policy.fields if f.required]
    d = definition(map={name: f"u.{name}" for name in [*required, "unit_cost"]})
    check_columns(d, [f.name for f in policy.fields], required)


def test_check_columns_refuses_an_unknown_column_naming_it(policy: PolicySpec) -> None:
    required = [f.name for f in policy.fields if f.required]
    d = definition(map={**{name: name for name in required}, "asset_tag": "tag"})
    with pytest.raises(DefinitionError) as caught:
        check_columns(d, [f.name for f in policy.fields], required)
    assert caught.value.source == "chem-wms"
    [problem] = caught.value.problems
    assert problem.startswith("map.asset_tag: the policy 'lab-inventory' has no column 'asset_tag'")
    assert "asset_id" in problem  # the columns it does have are listed


def test_check_columns_refuses_a_map_leaving_out_a_required_column_naming_it(policy: PolicySpec) -> None:
    required = [f.name for f in policy.fields if f.required]
    assert "category" in required and "location" in required
    d = definition(map={name: name for name in required if name not in ("category", "location")})
    with pytest.raises(DefinitionError) as caught:
        check_columns(d, [f.name for f in policy.fields], required)
    [problem] = caught.value.problems
    assert problem == "map: the policy 'lab-inventory' requires category, location, which the map leaves out"


def test_the_issue_example_does_not_fit_lab_inventory(policy: PolicySpec) -> None:
    # Its map has two of the policy's six required columns: refused when loaded, not at import.
    d = parse_definition(EXAMPLE)
    with pytest.raises(DefinitionError) as caught:
        check_columns(d, [f.name for f in policy.fields], [f.name for f in policy.fields if f.required])
    assert "category" in caught.value.problems[0] and "acquisition_date" in caught.value.problems[0]
