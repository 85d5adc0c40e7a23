"""`SolanaAdapter.track`: one confirmation-tracker tick for many Solana transactions.

Why a module of its own: `get_status` asks about one signature in three to four calls; the tracker
follows thousands, and its cost per tick must not grow with them. So a tick asks:

1. `getSignatureStatuses`, `STATUS_BATCH` (256, the node's limit) signatures a call, over a
   rotating window of at most `WINDOW` (2,048) watched transactions (`rotating_window`; the cursor
   carries the rotation): at most 8 calls;
2. `getSlot` at the registry's commitment: the head `get_status` counts confirmations from. Asked
   after the statuses, so a status that reached the commitment is at or below it;
3. for the statuses that reached the commitment only, in JSON-RPC batches of `DETAIL_BATCH` calls
   an HTTP request: `getBlock` once per distinct slot (the block hash, as `get_status` stores it)
   and, for those at depth, `getTransaction` (the fee, as `get_status` computes it).

The answer per watched transaction mirrors `SolanaAdapter._landed`: a status below the commitment
is INCLUDED/REVERTED at its slot with 0 confirmations and no hash; at the commitment it has the
slot's block hash and confirmations = head - slot + 1 (at least 1); at depth also `fee_paid`, the
fee payer's balance drop less the SOL it sent (here read from the transaction bytes the node
returns with `encoding: base64`, since the tracker does not carry the signed bytes). A watched
one whose status no longer answers (gone), now names another slot, or whose slot now holds a
block of another hash, was last seen in a block that is not canonical: NOT_FOUND. Unknown
signatures are no news: never EXPIRED here (the proof stays with `get_status`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chains import solana_tx
from chains.base import Observation, TxState, TxStatus, Watched
from chains.errors import ChainRpcError, MalformedTransaction
from chains.solana_rpc import NodeRpcError, SolanaRpc, to_int, value_of
from chains.tracking import rotating_window

STATUS_BATCH = 256  # getSignatureStatuses' limit (MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS)
WINDOW = 2048  # signatures looked at per tick: 8 getSignatureStatuses calls at most
# Calls per batched HTTP request: agave refuses request bodies over 50 KiB, and a getTransaction
# call with its config is about 200 bytes.
DETAIL_BATCH = 100
COMMITMENTS = ("processed", "confirmed", "finalized")


@dataclass(frozen=True)
class _Seen:
    """A watched transaction with a status from the node."""

    item: Watched
    slot: int
    state: TxState
    at_commitment: bool


class SignatureTracker:
    """One cluster's tracker: the RPC, the commitment that counts, and the depth in confirmations."""

    def __init__(self, rpc: SolanaRpc, chain: str, commitment: str, depth: int) -> None:
        self.rpc = rpc
        self.chain = chain
        self.commitment = commitment
        self.depth = max(depth, 1)
        self.calls = 0

    def tick(self, watched: Sequence[Watched], cursor: Mapping[str, Any]) -> Observation:
        """Statuses of the window, the head, then blocks and fees for what reached the commitment."""
        self.calls = 0
        window, next_cursor = rotating_window(watched, cursor, WINDOW)
        window = _well_formed(window, self.chain)  # checked in the window only: base58 costs ~10 us each
        found = self._statuses(window)
        head = to_int(self._call("getSlot", [{"commitment": self.commitment}]), "slot")
        statuses: dict[str, TxStatus] = {}
        seen: list[_Seen] = []
        for item in window:
            status = found.get(item.key)
            if status is None:
                if item.block_hash is not None:
                    statuses[item.key] = TxStatus(TxState.NOT_FOUND)  # it was in a block, and is gone
                continue
            entry = self._seen(item, status)
            if item.block_hash is not None and entry.slot != item.block_number:
                statuses[item.key] = TxStatus(TxState.NOT_FOUND)  # landed again elsewhere: its block was dropped
            else:
                seen.append(entry)
        at_depth = [s for s in seen if s.at_commitment and _confirmations(head, s.slot) >= self.depth]
        hashes, transactions = self._details(seen, at_depth)
        for entry in seen:
            try:
                statuses[entry.item.key] = self._status(entry, head, hashes, transactions)
            except ChainRpcError as exc:  # this transaction only: no news (get_status, one by one, later)
                import structlog  # on this path only: `import chains` stays cheap

                structlog.get_logger("paratro.chains.solana").warning(
                    "solana.track.unusable_answer", chain=self.chain, key=entry.item.key, error=str(exc)[:200])
        return Observation(head=head, statuses=statuses, cursor=next_cursor, rpc_calls=self.calls)

    # --- node access -----------------------------------------------------------------------

    def _call(self, method: str, params: list[Any]) -> Any:
        self.calls += 1
        return self.rpc.call(method, params)

    def _batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        answers: list[Any] = []
        for start in range(0, len(calls), DETAIL_BATCH):
            self.calls += 1
            answers += self.rpc.batch(calls[start:start + DETAIL_BATCH])
        return answers

    def _statuses(self, window: list[Watched]) -> dict[str, dict[str, Any]]:
        """Key -> status of those the node knows (history searched, as `get_status` asks)."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(window), STATUS_BATCH):
            chunk = window[start:start + STATUS_BATCH]
            result = self._call("getSignatureStatuses",
                                [[item.signed.tx_hash for item in chunk], {"searchTransactionHistory": True}])
            answer = value_of(result, "signature statuses")
            if not isinstance(answer, list) or len(answer) != len(chunk):
                raise ChainRpcError(f"{self.chain}: getSignatureStatuses answered {_count(answer)} statuses "
                                    f"for {len(chunk)} signatures")
            for item, status in zip(chunk, answer):
                if status is not None and not isinstance(status, dict):
                    raise ChainRpcError(f"{self.chain}: unusable signature status {status!r}"[:200])
                if status is not None:
                    found[item.key] = status
        return found

    def _details(self, seen: list[_Seen], at_depth: list[_Seen]) -> tuple[dict[int, str | None], dict[str, Any]]:
        """(slot -> block hash or None, key -> getTransaction answer) in batched requests: a block
        per distinct slot at the commitment (or whose stored hash is to be checked), a transaction
        per one at depth."""
        slots = sorted({s.slot for s in seen if s.at_commitment or s.item.block_hash is not None})
        block_config = {"commitment": self.commitment, "transactionDetails": "none", "rewards": False,
                        "maxSupportedTransactionVersion": 0}
        tx_config = {"encoding": "base64", "commitment": self.commitment, "maxSupportedTransactionVersion": 0}
        calls = [("getBlock", [slot, block_config]) for slot in slots]
        calls += [("getTransaction", [s.item.signed.tx_hash, tx_config]) for s in at_depth]
        answers = self._batch(calls)
        hashes = {slot: _block_hash(answer) for slot, answer in zip(slots, answers)}
        transactions: dict[str, Any] = {}
        for entry, answer in zip(at_depth, answers[len(slots):]):
            # A node that cannot serve this transaction is an RPC error for it alone (as get_status)
            transactions[entry.item.key] = answer
        return hashes, transactions

    # --- decisions (as SolanaAdapter._landed) ------------------------------------------------

    def _seen(self, item: Watched, status: dict[str, Any]) -> _Seen:
        slot = to_int(status.get("slot"), "slot")
        state = TxState.REVERTED if status.get("err") is not None else TxState.INCLUDED
        reached = status.get("confirmationStatus")
        at_commitment = reached in COMMITMENTS and COMMITMENTS.index(reached) >= COMMITMENTS.index(self.commitment)
        return _Seen(item, slot, state, at_commitment)

    def _status(self, entry: _Seen, head: int, hashes: dict[int, str | None],
                transactions: dict[str, Any]) -> TxStatus:
        item, slot, state = entry.item, entry.slot, entry.state
        block_hash = hashes.get(slot)
        if item.block_hash is not None and block_hash is not None and block_hash != item.block_hash:
            return TxStatus(TxState.NOT_FOUND)  # its slot now holds another block: the one it was in was dropped
        if not entry.at_commitment:
            return TxStatus(state, block_number=slot, confirmations=0)
        confirmations = _confirmations(head, slot)
        if item.key not in transactions:  # at the commitment, not yet at depth: no fee needed yet
            return TxStatus(state, block_number=slot, block_hash=block_hash, confirmations=confirmations)
        found = transactions[item.key]
        if isinstance(found, NodeRpcError):
            raise found
        if not isinstance(found, dict):
            return TxStatus(state, block_number=slot, confirmations=0)  # not served at the commitment yet
        return TxStatus(state, block_number=slot, block_hash=block_hash, confirmations=confirmations,
                        fee_paid=fee_paid(found, item, state, self.chain))


def fee_paid(found: dict[str, Any], item: Watched, state: TxState, chain: str) -> int:
    """The fee payer's balance drop less the SOL it sent (the fee plus rent of accounts it created),
    from a getTransaction answer with encoding base64: the same sum as `SolanaAdapter._fee_paid`,
    over the bytes the node returns, checked to be ours (our signature over them, our sender)."""
    try:
        meta = found["meta"]
        data, encoding = found["transaction"]
        if encoding != "base64":
            raise ValueError(encoding)
        raw = base64.b64decode(data, validate=True)
        pre, post, fee = meta["preBalances"][0], meta["postBalances"][0], meta["fee"]
        tx = solana_tx.decode_signed(raw)
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error, MalformedTransaction):
        raise ChainRpcError(f"{chain}: unusable getTransaction answer for {item.signed.tx_hash}") from None
    if str(tx.signatures[0]) != item.signed.tx_hash or not all(tx.verify_with_results()):
        raise ChainRpcError(f"{chain}: getTransaction for {item.signed.tx_hash} returned other bytes")
    payer = str(tx.message.account_keys[0])
    if payer != item.sender:
        raise ChainRpcError(f"{chain}: getTransaction names fee payer {payer}, not {item.sender}")
    sent = solana_tx.lamports_sent(raw) if state is TxState.INCLUDED else 0
    paid = to_int(pre, "pre balance") - to_int(post, "post balance") - sent
    if paid < to_int(fee, "fee"):
        raise ChainRpcError(f"{chain}: {item.signed.tx_hash} cost {paid} lamports, less than its fee {fee}")
    return paid


def _confirmations(head: int, slot: int) -> int:
    return max(head - slot + 1, 1)


def _block_hash(answer: Any) -> str | None:
    """The block's hash, or None when the node does not serve it (as `SolanaAdapter._block_hash`)."""
    if isinstance(answer, dict) and isinstance(answer.get("blockhash"), str):
        return answer["blockhash"]
    return None


def _well_formed(watched: Sequence[Watched], chain: str) -> list[Watched]:
    """The watched transactions with a real signature: one malformed hash would make the node refuse
    the whole batch of 256. Left out ones get no news; the pipeline's per-transfer step then asks
    `get_status`, which raises MalformedTransaction for them."""
    kept: list[Watched] = []
    for item in watched:
        try:
            solana_tx.signature_bytes(item.signed.tx_hash)
        except MalformedTransaction:
            import structlog  # on this path only: `import chains` stays cheap

            structlog.get_logger("paratro.chains.solana").warning("solana.track.malformed_signature",
                                                                   chain=chain, key=item.key)
            continue
        kept.append(item)
    return kept


def _count(answer: Any) -> str:
    return str(len(answer)) if isinstance(answer, list) else "no list of"
