"""TRON's confirmation-tracker tick (`TronAdapter.track`): many watched txIDs, a bounded number of requests.

Why a block scan: java-tron answers for one txID per request (gettransactioninfobyid), so asking
about every pending transfer costs a request per transfer per tick. Instead a tick reads the
solidified head and the head (2 requests, in get_status's order), then walks the blocks after the
cursor's `scanned` height up to the head, at most MAX_BLOCKS_PER_TICK of them, with one
wallet/gettransactioninfobyblocknum each (id, block number, fee and receipt of every transaction
in the block), and matches the ids against the watched hashes in memory. Only a block holding a
watched transaction costs one more request, wallet/getblockbynum: its blockID, and the check that
the canonical block at that height still lists the txID (as `TronAdapter._included` checks).

Reorgs: a watched transaction the pipeline saw included (block_number/block_hash stored) is
re-checked once its block is solidified, i.e. when its confirmations reach the depth: one
getblockbynum per distinct height (plus that height's infos for the fee, unless this tick scanned
it). Another block at that height, or the txID gone from it: NOT_FOUND. Still there: INCLUDED /
REVERTED with the fee at depth. At most MAX_RECHECK_HEIGHTS heights a tick, oldest first; the
rest wait for the next tick. A transaction whose unsolidified block was replaced after the scan
passed it is thus reported NOT_FOUND at depth, never included in a block that is not canonical.

Statuses are `_included`'s: confirmations count from the head but reach the registry's depth only
once the block is solidified; REVERTED when the info says FAILED or the receipt's result is not
SUCCESS (detail: that result, e.g. OUT_OF_ENERGY, or the decoded resMessage); the fee is the
info's `fee` (absent = 0, free bandwidth paid). Requests per tick: at most
2 + 2 x MAX_BLOCKS_PER_TICK + 2 x MAX_RECHECK_HEIGHTS (+1 genesis check on the adapter's first
use), whatever the number watched.

Not news (the pipeline asks get_status one by one for a transfer without news for too long): a
transaction mined before the cursor's window (before the first tick's window, or in blocks skipped
when the tracker fell more than MAX_CATCH_UP_BLOCKS behind and jumped to the head), and one in a
block that a lagging backend behind a load balancer answered `[]` for. A miss, never a false status.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from chains.base import Observation, TxState, TxStatus, Watched
from chains.errors import ChainRpcError
from chains.tron import TronAdapter, _Block, receipt_status
from chains.tron_rpc import to_int

log = structlog.get_logger(__name__)

MAX_BLOCKS_PER_TICK = 50  # blocks scanned a tick: 150 s of mainnet (3 s blocks), 12.5 s of the devnet
MAX_RECHECK_HEIGHTS = 25  # distinct solidified heights re-checked a tick (2 requests each at most)
# Further behind than this, the tick restarts at the head rather than crawl through old blocks
# (an hour of mainnet; the skipped blocks' transactions fall to the per-transfer get_status).
MAX_CATCH_UP_BLOCKS = 1_200
INFOS_PATH = "wallet/gettransactioninfobyblocknum"


class _Node:
    """The adapter's node access for one tick, counting every HTTP request (`Observation.rpc_calls`)."""

    def __init__(self, adapter: TronAdapter) -> None:
        self._adapter = adapter
        self.requests = 0

    def _ready(self) -> None:
        if not self._adapter._chain_checked:  # the adapter's first use checks the genesis block
            self.requests += 1
            self._adapter.verify_chain()
        self.requests += 1

    def block(self, path: str, body: dict[str, Any] | None = None) -> _Block | None:
        """The block answered at `path`; None for `{}` (the node does not have it)."""
        self._ready()
        answer = self._adapter._post(path, body)
        return self._adapter._parse_block(answer, path) if answer else None

    def infos(self, number: int) -> list[dict[str, Any]]:
        """Every transaction info of block `number` (java-tron answers a JSON array; `[]` for a block
        without transactions or one it does not have)."""
        self._ready()
        answer = self._adapter._api.post_json(INFOS_PATH, {"num": number})
        if answer == {}:
            return []
        if not isinstance(answer, list) or not all(isinstance(info, dict) for info in answer):
            raise ChainRpcError(f"{self._adapter.spec.name}: {INFOS_PATH} {number} answered no usable info list")
        for info in answer:
            if to_int(info.get("blockNumber"), "receipt block number") != number:
                raise ChainRpcError(f"{self._adapter.spec.name}: {INFOS_PATH} {number} listed a transaction "
                                    f"of block {info.get('blockNumber')!r}")
        return answer


def track_blocks(adapter: TronAdapter, watched: Sequence[Watched], cursor: Mapping[str, Any]) -> Observation:
    """One tick: scan the blocks after `cursor["scanned"]`, re-check solidified stored blocks; news only."""
    node = _Node(adapter)
    solid = node.block("walletsolidity/getnowblock")  # first, as get_status reads it
    head = node.block("wallet/getnowblock")
    if solid is None or head is None:
        raise ChainRpcError(f"{adapter.spec.name}: getnowblock answered no block")
    depth = adapter.spec.confirmations
    by_txid: dict[str, list[Watched]] = defaultdict(list)
    for item in watched:
        by_txid[item.signed.tx_hash.lower()].append(item)

    scanned = _start(adapter, cursor, head.number)
    last = min(head.number, scanned + MAX_BLOCKS_PER_TICK)
    statuses: dict[str, TxStatus] = {}
    infos_at: dict[int, list[dict[str, Any]]] = {}
    for number in range(max(scanned + 1, 1), last + 1):  # block 0 (genesis) holds no transactions
        infos_at[number] = infos = node.infos(number)
        matched = [info for info in infos if str(info.get("id", "")).lower() in by_txid]
        if not matched:
            continue
        block = node.block("wallet/getblockbynum", {"num": number})
        for info in matched:
            txid = str(info["id"]).lower()
            if block is None or block.number != number or txid not in block.txids:
                continue  # the block at this height is being replaced (a fork switch): no news yet
            status = _status(info, block, head, solid, depth)
            statuses.update((item.key, status) for item in by_txid[txid])

    _recheck(node, watched, statuses, infos_at, head, solid, depth)
    return Observation(head=head.number, statuses=statuses, cursor={"scanned": max(scanned, last)},
                       rpc_calls=node.requests)


def _start(adapter: TronAdapter, cursor: Mapping[str, Any], head: int) -> int:
    """The height scanned so far: the cursor's, or a bounded window back from the head when the
    cursor is empty, unusable, far behind, or ahead of the head (another chain, a reset devnet)."""
    scanned = cursor.get("scanned")
    fresh = max(head - MAX_BLOCKS_PER_TICK, 0)
    if not isinstance(scanned, int) or isinstance(scanned, bool) or scanned < 0:
        return fresh
    if head - scanned > MAX_CATCH_UP_BLOCKS or scanned - head > MAX_BLOCKS_PER_TICK:
        log.warning("tron_tracker_restarts_at_head", chain=adapter.spec.name, scanned=scanned, head=head)
        return fresh
    return scanned  # at most MAX_BLOCKS_PER_TICK ahead of this node's head (a lagging backend): wait


def _recheck(node: _Node, watched: Sequence[Watched], statuses: dict[str, TxStatus],
             infos_at: dict[int, list[dict[str, Any]]], head: _Block, solid: _Block, depth: int) -> None:
    """Stored blocks that reached depth (solidified), oldest first, MAX_RECHECK_HEIGHTS heights a
    tick: still the canonical block and still holding the txID -> status with fee; else NOT_FOUND."""
    due: dict[int, list[Watched]] = defaultdict(list)
    for item in watched:
        number = item.block_number
        if item.key not in statuses and number is not None and 0 < number <= solid.number:
            due[number].append(item)
    for number in sorted(due)[:MAX_RECHECK_HEIGHTS]:
        block = node.block("wallet/getblockbynum", {"num": number})
        if block is None or block.number != number:
            continue  # this backend does not serve it (yet): no proof either way
        held = [item for item in due[number] if _still_there(item, block)]
        for item in due[number]:
            if item.block_hash is not None and not _still_there(item, block):
                statuses[item.key] = TxStatus(TxState.NOT_FOUND)
        if not held:
            continue
        if number not in infos_at:
            infos_at[number] = node.infos(number)
        by_id = {str(info.get("id", "")).lower(): info for info in infos_at[number]}
        for item in held:
            info = by_id.get(item.signed.tx_hash.lower())
            if info is not None:  # else the infos lag the block: no news rather than no fee
                statuses[item.key] = _status(info, block, head, solid, depth)


def _still_there(item: Watched, block: _Block) -> bool:
    return (item.block_hash is None or item.block_hash == block.block_id) and item.signed.tx_hash.lower() in block.txids


def _status(info: Mapping[str, Any], block: _Block, head: _Block, solid: _Block, depth: int) -> TxStatus:
    """`TronAdapter._included`'s status for a transaction info in a canonical block."""
    return receipt_status(info, block.number, block.block_id, head.number, solid.number, depth)
