"""Decimal strings at the edges, integer base units inside; never floats.

`parse_amount("1.5", 6) == 1_500_000`. Anything that is not a plain positive decimal string (or a
`Decimal`) within the token's precision is refused with `InvalidAmount`, because guessing at money
is worse than refusing it.
"""

from __future__ import annotations

import re
from decimal import Decimal

from pipeline.errors import InvalidAmount

MAX_UINT256 = 2**256 - 1
_DECIMAL = re.compile(r"^(0|[1-9][0-9]*)(\.([0-9]+))?$")


def parse_amount(value: object, decimals: int) -> int:
    """Token units as a decimal string -> base units. Raises InvalidAmount."""
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidAmount(f"amount must be a decimal string, not {type(value).__name__} (floats lose money)")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidAmount(f"amount {value} is not finite")
        if value.adjusted() > 80:
            raise InvalidAmount("amount exceeds uint256")
        value = format(value, "f")
    if not isinstance(value, str):
        raise InvalidAmount(f"amount must be a decimal string such as '1.25', got {type(value).__name__}")
    text = value.strip()
    if len(text) > 200:  # uint256 has 78 digits; plus at most 36 decimals and some trailing zeros
        raise InvalidAmount("amount is too long to be a token amount")
    match = _DECIMAL.fullmatch(text)
    if not match:
        raise InvalidAmount(f"amount {value[:40]!r} is not a plain decimal number such as '1.25'")
    whole, fraction = match.group(1), (match.group(3) or "")
    significant = fraction.rstrip("0")
    if len(significant) > decimals:
        raise InvalidAmount(f"amount {text} has more than {decimals} decimal places for this token")
    base_units = int(whole) * 10**decimals + (int(significant.ljust(decimals, "0")) if decimals else 0)
    if base_units <= 0:
        raise InvalidAmount(f"amount must be greater than zero, got {text}")
    if base_units > MAX_UINT256:
        raise InvalidAmount("amount exceeds uint256")
    return base_units


def format_amount(base_units: int, decimals: int) -> str:
    """Base units -> the shortest exact decimal string ("1.5", "0", "0.000001")."""
    sign = "-" if base_units < 0 else ""
    whole, fraction = divmod(abs(base_units), 10**decimals)
    if not decimals:
        return f"{sign}{whole}"
    text = f"{fraction:0{decimals}d}".rstrip("0")
    return f"{sign}{whole}.{text}" if text else f"{sign}{whole}"
