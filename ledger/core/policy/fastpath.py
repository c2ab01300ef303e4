"""The valid-row fast path: a binding compiled to one straight-line function.

Nearly every row of a manifest is valid, and for those the general validator's work is mostly
Python overhead: a checker call, a result tuple and a few branches per cell. ``compile_fast_path``
generates, for one policy bound to one header, a function that checks every cell inline and
returns ``(data, key)`` when the row is valid, or ``None`` as soon as anything is wrong. It
never explains a failure: ``Binding.validate`` does, for the rows this refuses, so the rules
and their messages stay in one place (``rules.py``). A property test holds the two to the same
answers.

Only constants reach the generated source by value: field names (``^[a-z][a-z0-9_]*$``, checked
by the descriptor reader) and small integers. Patterns, enums and functions are bound by name.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from ledger.core.policy.checkdigits import CHECK_DIGITS
from ledger.core.policy.descriptor import FieldSpec

__all__ = ["FastPath", "compile_fast_path"]

Value = str | int
FastPath = Callable[[Sequence[str]], tuple[dict[str, Value], tuple[str, ...]] | None]

# The same shapes as rules.py (a test pins them equal).
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_NUMBER = re.compile(r"-?([0-9]{1,15})(?:\.([0-9]{1,30}))?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def compile_fast_path(columns: Sequence[str], specs: dict[str, FieldSpec], key_fields: Sequence[str]) -> FastPath:
    """``columns``: the field of each header position; ``specs``: the policy's fields."""
    env: dict[str, Any] = {
        "INTEGER": _INTEGER.fullmatch,
        "NUMBER": _NUMBER.fullmatch,
        "DATE": _DATE.fullmatch,
        "fromisoformat": dt.date.fromisoformat,
        "Decimal": Decimal,
    }
    lines = ["def fast(cells):", f"    if len(cells) != {len(columns)}:", "        return None", "    data = {}"]
    for position, name in enumerate(columns):
        spec = specs[name]
        if not _NAME.fullmatch(name):  # the descriptor reader guarantees it; never trust it here
            raise ValueError(f"field name {name!r} cannot be compiled")
        lines += [f"    v = cells[{position}].strip()", "    if v:"]
        lines += ["        " + line for line in _check(spec, position, env)]
        lines += ["    else:", "        return None" if spec.required else "        pass"]
    for index, (name, spec) in enumerate(specs.items()):
        when = spec.required_when
        if when is not None:
            env[f"W{index}"] = frozenset(when.values)
            lines += [f"    if {name!r} not in data and data.get({when.field!r}) in W{index}:", "        return None"]
    key = ", ".join(f"str(data[{k!r}])" for k in key_fields)
    lines.append(f"    return data, ({key}{',' if len(key_fields) == 1 else ''})")
    namespace: dict[str, Any] = dict(env)
    exec(compile("\n".join(lines), f"<fast path {','.join(columns)}>", "exec"), namespace)
    fast: FastPath = namespace["fast"]
    return fast


def _check(spec: FieldSpec, position: int, env: dict[str, Any]) -> list[str]:
    """Lines that check the stripped, non-empty cell ``v`` and store it in ``data``, or return None."""
    p, name = position, spec.name
    if spec.type == "integer":
        out = ["if INTEGER(v) is None:", "    return None", "n = int(v)"]
        if spec.minimum is not None:
            env[f"MIN{p}"] = spec.minimum
            out += [f"if n < MIN{p}:", "    return None"]
        return [*out, f"data[{name!r}] = n"]
    if spec.type == "number":
        places = spec.decimal_places or 0
        out = ["m = NUMBER(v)", "if m is None:", "    return None", "f = m.group(2) or ''", f"if len(f) > {places}:"]
        out += ["    return None"]
        if spec.minimum is not None:
            minimum = Decimal(str(spec.minimum))
            env[f"MIN{p}"] = minimum
            # A value written without a minus sign is never below a minimum of zero or less.
            guard = "v[0] == '-' and " if minimum <= 0 else ""
            out += [f"if {guard}Decimal(v) < MIN{p}:", "    return None"]
        whole = "str(int(m.group(1)))"
        value = f"{whole} + '.' + f.ljust({places}, '0')" if places else whole
        return [*out, f"data[{name!r}] = {value}"]
    if spec.type == "date":
        return [
            "if DATE(v) is None:",
            "    return None",
            "try:",
            f"    data[{name!r}] = fromisoformat(v).isoformat()",
            "except ValueError:",
            "    return None",
        ]
    out = []
    if spec.max_length is not None:
        out += [f"if len(v) > {int(spec.max_length)}:", "    return None"]
    normal = {"upper": "v.upper()", "lower": "v.lower()"}.get(spec.normalize, "v")
    out.append(f"n = {normal}")
    if spec.prefixes:
        env[f"PRE{p}"] = tuple(x.upper() for x in spec.prefixes)
        out += [f"if not n.upper().startswith(PRE{p}):", "    return None"]
    if spec.pattern:
        env[f"PAT{p}"] = re.compile(spec.pattern).fullmatch
        out += [f"if PAT{p}(n) is None:", "    return None"]
        if spec.check_digit:
            env[f"CHK{p}"] = CHECK_DIGITS[spec.check_digit]
            out += [f"if not CHK{p}(n):", "    return None"]
    if spec.enum:
        env[f"ENUM{p}"] = frozenset(spec.enum)
        out += [f"if n not in ENUM{p}:", "    return None"]
    return [*out, f"data[{name!r}] = n"]
