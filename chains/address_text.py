"""The check every family's address parser starts with: a string, without surrounding whitespace
(a pasted newline must be refused, not silently trimmed into a different string)."""

from __future__ import annotations

from chains.errors import InvalidAddress


def require_text(address: object, chain: str) -> str:
    """`address` as a str; InvalidAddress for a non-string or leading/trailing whitespace."""
    if not isinstance(address, str):
        raise InvalidAddress(chain, repr(address), f"not a string ({type(address).__name__})")
    if address != address.strip():
        raise InvalidAddress(chain, address, "leading or trailing whitespace")
    return address
