"""Prefixed ULID identifiers (`w_…`, `acc_…`, `ast_…`, `tx_…`) and their validation.

IDs arrive from callers (the API, the CLI, ops scripts); a malformed one is rejected with a typed
error before it reaches a query.
"""

from __future__ import annotations

import re

from ulid import ULID

from pipeline.errors import InvalidId

PREFIXES = {"client": "cli", "wallet": "w", "account": "acc", "asset": "ast", "transaction": "tx", "event": "ev"}
_ULID = "[0-9A-HJKMNP-TV-Z]{26}"
_PATTERNS = {kind: re.compile(rf"^{prefix}_{_ULID}$") for kind, prefix in PREFIXES.items()}


def new_id(kind: str) -> str:
    return f"{PREFIXES[kind]}_{ULID()}"


def check_id(kind: str, value: object) -> str:
    """Return `value` if it is a well-formed id of `kind`; raises InvalidId."""
    if not isinstance(value, str) or not _PATTERNS[kind].fullmatch(value):
        shown = repr(value)[:60]
        raise InvalidId(f"{shown} is not a valid {kind} id (expected {PREFIXES[kind]}_ followed by a 26-char ULID)")
    return value
