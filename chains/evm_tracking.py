"""Confirmation tracking for many EVM transactions in a few JSON-RPC batches (`EvmAdapter.track`).

Asking for every pending transaction's receipt each tick costs an RPC per transfer per tick, so
100,000 transfers waiting during congestion would cost 100,000 calls a tick. An account's nonce
says what moved instead: one batch reads the head and `eth_getTransactionCount(sender, latest)`
for every sender with transactions out; a transaction whose nonce is still at or above its
sender's count cannot be mined (nothing with its nonce is), so only the others need a receipt.
Transactions seen included are looked at again only when they reach the chain's depth: a receipt
(for the fee) and the canonical block at that height (a reorg sends them back). The calls per
tick grow with what moved and with the number of sending accounts, never with the backlog.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chains.base import Observation, TxState, TxStatus, Watched
from chains.errors import ChainRpcError
from chains.evm_rpc import JsonRpcClient, NodeRpcError, batch_results, to_int

BATCH_SIZE = 500  # calls per HTTP request: well under the 1,000 most providers accept


def included_status(receipt: dict[str, Any], number: int, head: int) -> TxStatus:
    """The status a canonical receipt gives: success or revert, the fee actually charged."""
    status = to_int(receipt.get("status"), "receipt status")
    fee = to_int(receipt.get("gasUsed"), "gas used") * to_int(receipt.get("effectiveGasPrice"), "effective gas price")
    if receipt.get("l1Fee") is not None:  # OP-stack chains charge the L1 data fee on top
        fee += to_int(receipt["l1Fee"], "L1 fee")
    return TxStatus(
        state=TxState.INCLUDED if status == 1 else TxState.REVERTED,
        block_number=number,
        block_hash=str(receipt["blockHash"]),
        confirmations=max(head - number + 1, 1),
        fee_paid=fee,
    )


class _Batches:
    """Runs calls in batches of BATCH_SIZE and counts the HTTP requests."""

    def __init__(self, rpc: JsonRpcClient) -> None:
        self.rpc = rpc
        self.requests = 0

    def run(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        results: list[Any] = []
        for start in range(0, len(calls), BATCH_SIZE):
            self.requests += 1
            results.extend(batch_results(self.rpc, calls[start:start + BATCH_SIZE]))
        return results


def _value(result: Any) -> Any:
    if isinstance(result, NodeRpcError):
        raise result
    return result


def track(rpc: JsonRpcClient, depth: int, watched: Sequence[Watched]) -> Observation:
    """News about `watched` (see `chains.base.Observation`); the module docstring says how."""
    batches = _Batches(rpc)
    unseen = [item for item in watched if item.block_number is None]
    senders = sorted({item.sender for item in unseen if item.nonce is not None})
    first = batches.run([("eth_blockNumber", [])] + [("eth_getTransactionCount", [s, tag]) for s in senders
                                                      for tag in ("latest", "pending")])
    head = to_int(_value(first[0]), "block number")
    # A sender the node cannot answer for is no news for its transactions alone (not moved, this tick).
    counts = {sender: (latest, pending) for sender, latest, pending in zip(senders, first[1::2], first[2::2])
              if not isinstance(latest, NodeRpcError) and not isinstance(pending, NodeRpcError)}
    nonces = {sender: (to_int(latest, "nonce"), to_int(pending, "nonce")) for sender, (latest, pending) in counts.items()}
    mined_nonces = {sender: latest for sender, (latest, _) in nonces.items()}
    moved = [item for item in unseen if item.nonce is None or mined_nonces.get(item.sender, -1) > item.nonce]
    deep = [item for item in watched if item.block_number is not None and head - item.block_number + 1 >= depth]
    asked = moved + deep
    receipts = batches.run([("eth_getTransactionReceipt", [item.signed.tx_hash]) for item in asked])
    found = {item.key: receipt for item, receipt in zip(asked, receipts)
             if isinstance(receipt, dict) and receipt.get("blockHash")}
    heights = sorted({to_int(receipt.get("blockNumber"), "receipt block number") for receipt in found.values()})
    blocks = batches.run([("eth_getBlockByNumber", [hex(height), False]) for height in heights])
    canonical = {height: str(block.get("hash", "")).lower() for height, block in zip(heights, blocks)
                 if isinstance(block, dict)}
    statuses: dict[str, TxStatus] = {}
    for item in asked:
        receipt = found.get(item.key)
        if receipt is not None:
            number = to_int(receipt.get("blockNumber"), "receipt block number")
            if canonical.get(number) == str(receipt["blockHash"]).lower():
                statuses[item.key] = included_status(receipt, number, head)
                continue
        if item.block_number is not None:  # seen included before, and no longer: a reorg
            statuses[item.key] = TxStatus(TxState.NOT_FOUND)
    return Observation(head=head, statuses=statuses, rpc_calls=batches.requests, nonces=nonces)


NONCE_SEARCH_BLOCKS = 100_000  # how far back a used nonce is looked for at most


def nonce_user(rpc: JsonRpcClient, sender: str, nonce: int, depth: int) -> str | None:
    """The hash of the transaction that used `nonce` of `sender`, if it is in a canonical block
    at least `depth` deep; None if the nonce is not used that deep, or the node cannot say (its
    state of older blocks pruned: no proof then). The search steps back from the deepest block in
    doubling strides (a full node keeps only recent state), then bisects, reading the account's
    nonce at block heights; the answer comes from the block's own transaction list, not from a
    transaction index a lagging or pruned node may lack."""
    head = to_int(rpc.call("eth_blockNumber", []), "block number")
    high = head - depth + 1
    try:
        if high < 0 or _count_at(rpc, sender, high) <= nonce:
            return None
        low = _last_below(rpc, sender, nonce, high)
        if low is None:
            return None
        while high - low > 1:  # invariant: count(low) <= nonce < count(high)
            middle = (low + high) // 2
            if _count_at(rpc, sender, middle) > nonce:
                high = middle
            else:
                low = middle
    except NodeRpcError:
        return None  # "missing trie node", "block out of range": this node cannot prove it
    return _user_in_block(rpc, sender, nonce, high)


def _last_below(rpc: JsonRpcClient, sender: str, nonce: int, high: int) -> int | None:
    """A height at or below which the account's nonce was still <= `nonce` (None: not found
    within NONCE_SEARCH_BLOCKS, or the account started past it)."""
    stride = 1
    while stride <= NONCE_SEARCH_BLOCKS:
        height = max(high - stride, 0)
        if _count_at(rpc, sender, height) <= nonce:
            return height
        if height == 0:
            return None
        stride *= 2
    return None


def _user_in_block(rpc: JsonRpcClient, sender: str, nonce: int, height: int) -> str:
    block = rpc.call("eth_getBlockByNumber", [hex(height), True])
    for item in (block or {}).get("transactions", []) if isinstance(block, dict) else []:
        if (isinstance(item, dict) and str(item.get("from", "")).lower() == sender.lower()
                and to_int(item.get("nonce"), "nonce") == nonce):
            return str(item.get("hash"))
    raise ChainRpcError(f"block {height} raised the nonce of {sender} past {nonce} but holds no such transaction")


def _count_at(rpc: JsonRpcClient, sender: str, height: int) -> int:
    return to_int(rpc.call("eth_getTransactionCount", [sender, hex(height)]), "nonce")
