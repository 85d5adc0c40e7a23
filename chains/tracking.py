"""Helpers for `ChainAdapter.track`: the rotating window, and a one-by-one fallback.

A family whose node can answer for many transactions at once implements `track` itself (EVM
nonce batches, Solana signature batches, TRON/Bitcoin block scans). `track_each` is for a family
that cannot: it asks `get_status` for at most `limit` watched transactions a tick, continuing
where the last tick stopped, so one tick's RPC calls stay bounded however many are pending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from chains.base import Observation, TxState, TxStatus, Watched

ONE_BY_ONE_LIMIT = 64


class _StatusSource(Protocol):
    def get_status(self, signed: Any) -> TxStatus: ...


def rotating_window(watched: Sequence[Watched], cursor: Mapping[str, Any], limit: int) -> tuple[list[Watched], dict[str, Any]]:
    """Up to `limit` watched transactions after the cursor's key (in key order, wrapping around),
    and the cursor for the next tick. Every transaction is looked at within len/limit ticks."""
    ordered = sorted(watched, key=lambda item: item.key)
    if len(ordered) <= limit:
        return ordered, {}
    after = str(cursor.get("after", ""))
    start = next((i for i, item in enumerate(ordered) if item.key > after), 0)
    window = (ordered[start:] + ordered[:start])[:limit]
    return window, {"after": window[-1].key}


def track_each(adapter: _StatusSource, watched: Sequence[Watched], cursor: Mapping[str, Any],
               limit: int = ONE_BY_ONE_LIMIT) -> Observation:
    """`get_status` per transaction over a rotating window: news are inclusions, and reorgs of a
    transaction we had seen included. EXPIRED / PENDING / NOT_FOUND of an unseen one are no news
    (the pipeline's per-transfer confirm step owns expiry and rebroadcast)."""
    window, next_cursor = rotating_window(watched, cursor, limit)
    statuses: dict[str, TxStatus] = {}
    head = 0
    for item in window:
        status = adapter.get_status(item.signed)
        if status.state in (TxState.INCLUDED, TxState.REVERTED):
            statuses[item.key] = status
            if status.block_number is not None:
                head = max(head, status.block_number + status.confirmations - 1)
        elif item.block_hash is not None:
            statuses[item.key] = TxStatus(TxState.NOT_FOUND)
    return Observation(head=head, statuses=statuses, cursor=next_cursor, rpc_calls=len(window))
