"""Check-digit algorithms a policy can name (``x-ledger-check-digit``)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["CHECK_DIGITS", "cas_check_digit_ok"]


def cas_check_digit_ok(value: str) -> bool:
    """CAS Registry Number: the last digit is the sum of the other digits weighted 1, 2, 3, ...
    from the right, modulo 10. Expects a value that already matched the CAS pattern."""
    digits = value.replace("-", "")
    body, check = digits[:-1], int(digits[-1])
    total = sum(weight * int(d) for weight, d in enumerate(reversed(body), start=1))
    return total % 10 == check


CHECK_DIGITS: dict[str, Callable[[str], bool]] = {"cas": cas_check_digit_ok}
