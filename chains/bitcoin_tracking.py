"""Batched confirmation tracking for Bitcoin (`BitcoinAdapter.track`): scan the blocks mined since
the cursor, match their txids against the watched ones, fetch details only for the matches.

Why a block scan: bitcoind has no call that answers for many txids at once, and asking
`getrawtransaction` per pending transfer per tick makes the RPC load grow with the backlog. A block
lists its txids (`getblock <hash> 1`), so one tick reads at most MAX_BLOCKS_PER_TICK blocks and
looks the watched hashes up in a set. Every step is one JSON-RPC batch (bitcoind takes a JSON array
of calls in one HTTP request), chunked at MAX_BATCH calls, so a tick makes three HTTP requests in
the steady state, whatever len(watched):

1. `getblockcount`, `getblockhash` of the heights around the cursor (REORG_RESCAN back, up to
   MAX_BLOCKS_PER_TICK ahead; heights past the tip answer "out of range", which costs nothing), and
   `getblockhash` of each distinct height a watched transaction was last seen at (the canonical
   check: the chain's hash at that height is still the stored one). A first tick (empty cursor)
   learns the tip here and asks for the window's hashes in one more request.
2. `getblock <hash> 1` for each block of the window: its txids, and a check that it links to the
   block before it, sits at its height and is on the main chain. A block that fails (a reorg raced
   the tick) ends the window there; the next tick goes on from the last block that held.
3. `getrawtransaction <txid> 2 <blockhash>` for each transaction reported INCLUDED: the fee, read
   with the adapter's `_fee_of` as `get_status` reads it (and proof the transaction is in that
   block). Only a node too old to report the fee and the spent outputs costs one more request
   (`getrawtransaction <parent> 1`, batched) to sum the inputs.

News, by `Watched.key`:
- a watched transaction in a scanned block: INCLUDED at that block, confirmations = tip - height + 1;
- one seen before (stored block_number and block_hash) whose stored block is no longer the
  chain's block at that height, or which that block does not hold: NOT_FOUND (a reorg), unless the
  scan found it again in a new block;
- one seen before whose stored block is canonical and deep enough (spec.confirmations): INCLUDED
  again, with its fee, so the pipeline can settle it. Shallower ones are no news.
Bitcoin has no expiry, so never EXPIRED. A fee bump is watched as a second entry (its own key and
txid, the same inputs): whichever of the two a block holds is reported; the other, evicted from the
mempool by the replacement or never mined, is never news (get_status says NOT_FOUND for it).

The cursor is {"scanned": height, "hash": that block's hash}. The hash is how a reorg below the
cursor is noticed: when the chain's block at `scanned` is another one, the scan restarts
REORG_RESCAN blocks back, so transactions moved into the new blocks are found again. A first tick
starts MAX_BLOCKS_PER_TICK blocks back from the tip; what was mined before the window is not news
(the pipeline asks `get_status` about a transfer that waited too long).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from chains.base import Observation, TxState, TxStatus, Watched
from chains.bitcoin_rpc import RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER, BitcoinRpcClient, NodeRpcError, to_int
from chains.errors import ChainRpcError
from chains.registry import ChainSpec

MAX_BLOCKS_PER_TICK = 20  # blocks read per tick (a mainnet block's txid list is ~250 kB of JSON)
REORG_RESCAN = 6  # blocks scanned again when the cursor's block left the main chain
MAX_BATCH = 1000  # calls per HTTP request; bitcoind has no batch limit, this keeps bodies and timeouts sane
_TXID = re.compile(r"^[0-9a-f]{64}$")

log = structlog.get_logger("paratro.chains.bitcoin")


@dataclass
class _Rpc:
    """The node client, counting HTTP requests (what `Observation.rpc_calls` reports)."""

    client: BitcoinRpcClient
    requests: int = 0

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Results (or NodeRpcError instances) of `calls`, MAX_BATCH per HTTP request."""
        results: list[Any] = []
        for start in range(0, len(calls), MAX_BATCH):
            self.requests += 1
            results.extend(self.client.batch(calls[start:start + MAX_BATCH]))
        return results


@dataclass
class _Found:
    """A block a watched transaction is in this tick, and the watched entries for it."""

    height: int
    block_hash: str
    items: list[Watched] = field(default_factory=list)


def track(client: BitcoinRpcClient, spec: ChainSpec, fee_of: Callable[[dict[str, Any]], int],
          watched: Sequence[Watched], cursor: Mapping[str, Any]) -> Observation:
    """One tick (module docstring). `fee_of` is the adapter's fee reading of a verbose transaction."""
    rpc = _Rpc(client)
    by_txid = _watched_by_txid(watched, spec.name)
    seen_heights = {w.block_number for w in watched if _seen(w)}
    scanned, scanned_hash = _read_cursor(cursor, spec.name)

    # 1. The tip, the hashes around the cursor, the hashes at the stored heights.
    around = range(max(scanned - REORG_RESCAN, 0), scanned + MAX_BLOCKS_PER_TICK + 1) if scanned is not None else ()
    probe = sorted(set(around) | seen_heights)
    answers = rpc.batch([("getblockcount", [])] + [("getblockhash", [h]) for h in probe])
    tip = to_int(_ok(answers[0]), "block count")
    hashes = {h: _hash_or_none(answer, h) for h, answer in zip(probe, answers[1:])}

    start = _window_start(scanned, scanned_hash, tip, hashes, spec.name)
    end = min(tip, start + MAX_BLOCKS_PER_TICK)
    missing = [h for h in range(start, end + 1) if h not in hashes]
    if missing:  # a first tick, or the chain got shorter than the cursor
        answers = rpc.batch([("getblockhash", [h]) for h in missing])
        hashes.update({h: _hash_or_none(answer, h) for h, answer in zip(missing, answers)})

    # 2. The window's blocks: their txids, matched against the watched ones.
    window: list[tuple[int, str]] = []
    for height in range(start + 1, end + 1):
        block_hash = hashes.get(height)
        if block_hash is None:  # the chain got shorter during the tick
            break
        window.append((height, block_hash))
    last, last_hash = start, hashes.get(start)
    blocks = rpc.batch([("getblock", [block_hash, 1]) for _, block_hash in window]) if last_hash else []
    found: dict[str, _Found] = {}
    for (height, block_hash), block in zip(window, blocks):
        txids = _linked_txids(block, height, block_hash, last_hash)
        if txids is None:
            log.info("bitcoin.track.reorg_during_tick", chain=spec.name, height=height)
            break
        for txid in txids:
            if txid in by_txid:
                found[txid] = _Found(height, block_hash, list(by_txid[txid]))
        last, last_hash = height, block_hash

    # Watched ones seen before and not found again: is their block still the chain's block there?
    statuses: dict[str, TxStatus] = {}
    included = list(found.items())
    for txid, items in by_txid.items():
        for item in items:
            if txid in found or not _seen(item):
                continue
            assert item.block_number is not None and item.block_hash is not None
            if hashes.get(item.block_number) != item.block_hash.lower():
                statuses[item.key] = TxStatus(TxState.NOT_FOUND)
            elif tip - item.block_number + 1 >= spec.confirmations:
                included.append((txid, _Found(item.block_number, item.block_hash.lower(), [item])))

    # 3. Fees of what is reported INCLUDED, from the block it is in.
    for (txid, where), verbose in zip(included, _verbose_transactions(rpc, included)):
        for item in where.items:
            if verbose is not None:
                statuses[item.key] = TxStatus(TxState.INCLUDED, block_number=where.height, block_hash=where.block_hash,
                                              confirmations=tip - where.height + 1, fee_paid=fee_of(verbose))
            elif _seen(item):  # its stored block does not hold it
                statuses[item.key] = TxStatus(TxState.NOT_FOUND)
            else:
                log.warning("bitcoin.track.not_in_scanned_block", chain=spec.name, txid=txid, block=where.block_hash)
    next_cursor = {"scanned": last, "hash": last_hash} if last_hash else {}
    return Observation(head=tip, statuses=statuses, cursor=next_cursor, rpc_calls=rpc.requests)


def _seen(item: Watched) -> bool:
    return item.block_number is not None and isinstance(item.block_hash, str) and bool(_TXID.match(item.block_hash.lower()))


def _watched_by_txid(watched: Sequence[Watched], chain: str) -> dict[str, list[Watched]]:
    """Watched transactions by lower-case txid; a hash that is no txid is skipped (no news: the
    pipeline's per-transfer path, get_status, reports it as malformed)."""
    by_txid: dict[str, list[Watched]] = {}
    skipped = 0
    for item in watched:
        txid = item.signed.tx_hash.lower() if isinstance(item.signed.tx_hash, str) else ""
        if not _TXID.match(txid):
            skipped += 1
            continue
        by_txid.setdefault(txid, []).append(item)
    if skipped:
        log.warning("bitcoin.track.unusable_txids", chain=chain, skipped=skipped)
    return by_txid


def _read_cursor(cursor: Mapping[str, Any], chain: str) -> tuple[int | None, str | None]:
    """(scanned height, its hash), or (None, None) for an empty or unusable cursor (a first tick)."""
    if not cursor:
        return None, None
    scanned, block_hash = cursor.get("scanned"), cursor.get("hash")
    if isinstance(scanned, int) and not isinstance(scanned, bool) and scanned >= 0 \
            and isinstance(block_hash, str) and _TXID.match(block_hash):
        return scanned, block_hash
    log.warning("bitcoin.track.unusable_cursor", chain=chain, cursor=str(dict(cursor))[:200])
    return None, None


def _window_start(scanned: int | None, scanned_hash: str | None, tip: int, hashes: Mapping[int, str | None],
                  chain: str) -> int:
    """The last height already scanned: the cursor's if its block is still the chain's, else
    REORG_RESCAN back from it (or from the tip, if the chain got shorter); for a first tick,
    MAX_BLOCKS_PER_TICK back from the tip."""
    if scanned is None:
        return max(tip - MAX_BLOCKS_PER_TICK, 0)
    if scanned <= tip and hashes.get(scanned) == scanned_hash:
        return scanned
    log.info("bitcoin.track.reorg_below_cursor", chain=chain, scanned=scanned, tip=tip)
    return max(min(scanned, tip) - REORG_RESCAN, 0)


def _ok(answer: Any) -> Any:
    if isinstance(answer, NodeRpcError):
        raise answer
    return answer


def _hash_or_none(answer: Any, height: int) -> str | None:
    """The block hash at `height`, or None past the tip ("Block height out of range")."""
    if isinstance(answer, NodeRpcError) and answer.code == RPC_INVALID_PARAMETER:
        return None
    answer = _ok(answer)
    if not isinstance(answer, str) or not _TXID.match(answer):
        raise ChainRpcError(f"getblockhash {height}: unusable answer {str(answer)[:80]!r}")
    return answer


def _linked_txids(block: Any, height: int, block_hash: str, previous: str | None) -> list[str] | None:
    """The block's txids if it is the main chain's block at `height` following `previous`; None if
    a reorg moved it (off the main chain, or not linked to the block scanned before it)."""
    if isinstance(block, NodeRpcError) and block.code == RPC_INVALID_ADDRESS_OR_KEY and "not found" in block.node_message.lower():
        return None
    block = _ok(block)  # e.g. "Block not available (pruned data)": the node cannot serve the scan
    if not isinstance(block, dict) or not isinstance(block.get("tx"), list):
        raise ChainRpcError(f"getblock {block_hash}: unusable answer")
    if block.get("hash") != block_hash or to_int(block.get("height"), "height") != height:
        raise ChainRpcError(f"getblock {block_hash}: the node answered another block")
    if to_int(block.get("confirmations"), "confirmations") < 1 or block.get("previousblockhash") != previous:
        return None
    return [str(txid).lower() for txid in block["tx"]]


def _verbose_transactions(rpc: _Rpc, included: Sequence[tuple[str, _Found]]) -> list[dict[str, Any] | None]:
    """`getrawtransaction txid 2 blockhash` for each (None when the block does not hold it), with
    the spent outputs filled in from the parents when the node reports neither fee nor prevouts."""
    answers = rpc.batch([("getrawtransaction", [txid, 2, where.block_hash]) for txid, where in included])
    verbose: list[dict[str, Any] | None] = []
    for answer in answers:
        if isinstance(answer, NodeRpcError) and answer.code == RPC_INVALID_ADDRESS_OR_KEY:
            verbose.append(None)
            continue
        answer = _ok(answer)
        if not isinstance(answer, dict):
            raise ChainRpcError(f"getrawtransaction answered {type(answer).__name__}")
        verbose.append(answer)
    _fill_prevouts(rpc, [v for v in verbose if v is not None])
    return verbose


def _fill_prevouts(rpc: _Rpc, transactions: Sequence[dict[str, Any]]) -> None:
    """Older nodes give neither `fee` nor `prevout`: fetch the parents in one batch and put the
    spent outputs where `_fee_of` reads them, so it never calls the node one parent at a time."""
    wanted = [vin for tx in transactions if tx.get("fee") is None
              for vin in (tx.get("vin") or []) if isinstance(vin, dict) and "prevout" not in vin and "txid" in vin]
    if not wanted:
        return
    parents = sorted({str(vin["txid"]) for vin in wanted})
    found = {txid: _ok(answer) for txid, answer in zip(parents, rpc.batch([("getrawtransaction", [t, 1]) for t in parents]))}
    for vin in wanted:
        try:
            vin["prevout"] = found[str(vin["txid"])]["vout"][to_int(vin.get("vout"), "vout")]
        except (KeyError, TypeError, IndexError) as exc:
            raise ChainRpcError(f"cannot read the output {vin.get('txid')}:{vin.get('vout')} spent: {exc!r}"[:200]) from None
