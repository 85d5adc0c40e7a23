"""How `paratro show` and `paratro stuck` render fees and signed attempts (plain dicts, JSON-ready).

Fee parameters are stored as the FeeQuote JSON (`{"max_fee", "params", "inputs"}`); what an
operator compares between a transaction and its bump is the price fields of `params`: the
integer ones other than `gas` (EVM maxFeePerGas/maxPriorityFeePerGas or gasPrice in wei, Bitcoin
fee_rate and change, TRON energy_price_sun, ...), kept as stored, never converted. An attempt's
signed bytes are never rendered: they are not secret, but long, and the hash names them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pipeline.amounts import format_amount
from pipeline.models import TransactionAttempt

# The field that is "the price" of a quote, in the order they are looked for (one family each).
PRICE_KEYS = ("maxFeePerGas", "gasPrice", "fee_rate", "energy_price_sun", "max_compute_unit_price")


def iso(moment: datetime | None) -> str | None:
    """Naive-UTC column -> ISO-8601 with a Z (as `describe_transfer` renders its times)."""
    return None if moment is None else moment.isoformat() + "Z"


def fee_fields(fee_params: str | None) -> dict[str, int]:
    """The integer price fields of a stored quote (no `gas`, no flags, no inputs); {} if unreadable."""
    try:
        params = json.loads(fee_params or "{}").get("params") or {}
    except (ValueError, AttributeError):
        return {}
    if not isinstance(params, dict):
        return {}
    return {key: value for key, value in sorted(params.items())
            if key != "gas" and isinstance(value, int) and not isinstance(value, bool)}


def price_of(fee_params: str | None) -> dict[str, int] | None:
    """The quote's one price field as {name: value} (first of PRICE_KEYS; else its max_fee)."""
    fields = fee_fields(fee_params)
    for key in PRICE_KEYS:
        if key in fields:
            return {key: fields[key]}
    try:
        max_fee = json.loads(fee_params or "{}").get("max_fee")
    except (ValueError, AttributeError):
        return None
    return {"max_fee": int(max_fee)} if isinstance(max_fee, int) and not isinstance(max_fee, bool) else None


def fee_text(fields: dict[str, int] | None) -> str:
    """`gasPrice=2000000000` / `maxFeePerGas=..., maxPriorityFeePerGas=...`; "" when none."""
    return ", ".join(f"{key}={value}" for key, value in (fields or {}).items())


def attempt_view(attempt: TransactionAttempt, native_decimals: int) -> dict[str, Any]:
    """One signed transaction of a transfer, as `paratro show --json` lists it."""
    return {
        "number": attempt.number,
        "kind": attempt.kind,
        "tx_hash": attempt.tx_hash,
        "nonce": attempt.nonce,
        "fee": fee_fields(attempt.fee_params),
        "max_fee": None if attempt.max_fee is None else format_amount(attempt.max_fee, native_decimals),
        "max_fee_base_units": None if attempt.max_fee is None else str(attempt.max_fee),
        "state": attempt.state,
        "signed_at": iso(attempt.signed_at),
        "sent_at": iso(attempt.sent_at),
    }
