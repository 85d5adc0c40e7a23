"""SolanaAdapter's expiry proof against the devnet cluster in-process (no HTTP, no process): the
adapter's RPC is the devnet's JSON-RPC handler, so every answer has the real node's shape, and the
cluster can be made to behave like the nodes that used to fool the proof: one started without
transaction history (searchTransactionHistory silently ignored, getSignaturesForAddress -32011)
and one whose ledger was pruned. A false EXPIRED makes the pipeline re-sign a transfer that
landed: it pays twice. LiteSVM runs for real here."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from solders.keypair import Keypair

from chains.base import SignedTransaction, TransferIntent, TxState
from chains.errors import TransactionRejected
from chains.registry import load_registry
from chains.solana import SolanaAdapter
from chains.solana_rpc import NodeRpcError
from devnet.solana.cluster import Cluster, ClusterConfig
from devnet.solana.server import handle

SPEC = load_registry("devnet").chain("solana")
SOL = 10**9
MAX_AGE, CONFIRM, FINALIZE, CACHE = 10, 1, 3, 20


class DevnetRpc:
    """The adapter's `SolanaRpc`, answered by the devnet's JSON-RPC handler (through JSON, like the wire)."""

    endpoint = "devnet://in-process"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.methods: list[str] = []

    def call(self, method: str, params: list[Any]) -> Any:
        self.methods.append(method)
        request = json.loads(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        answer = json.loads(json.dumps(handle(self.cluster, request)))
        if answer.get("error") is not None:
            raise NodeRpcError.from_error(method, answer["error"])
        return answer["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """A JSON-RPC batch (the build context: blockhash and prioritization fees): per call, its
        result or its NodeRpcError."""
        answers: list[Any] = []
        for method, params in calls:
            try:
                answers.append(self.call(method, params))
            except NodeRpcError as exc:
                answers.append(exc)
        return answers


def _cluster(**config: Any) -> Cluster:
    return Cluster(ClusterConfig(slot_ms=0, blockhash_max_age=MAX_AGE, confirm_depth=CONFIRM, finalize_depth=FINALIZE,
                                 status_cache_slots=CACHE, **config))


def _adapter(cluster: Cluster, **options: Any) -> SolanaAdapter:
    adapter = SolanaAdapter(replace(SPEC, options={**SPEC.options, **options}))
    adapter._rpc = DevnetRpc(cluster)  # type: ignore[assignment]
    return adapter


def _funded(cluster: Cluster) -> Keypair:
    key = Keypair()
    cluster.airdrop(key.pubkey(), 10 * SOL)
    cluster.advance(FINALIZE)  # the airdrop is finalized, and the finalized blockhash is that slot's
    return key


def _signed(adapter: SolanaAdapter, key: Keypair, amount: int = SOL) -> SignedTransaction:
    intent = TransferIntent(str(key.pubkey()), str(Keypair().pubkey()), amount, SPEC.native)
    context = adapter.build_context(intent)
    unsigned = adapter.build(intent, adapter.quote_fee(intent), None, context)
    signed = adapter.attach_signature(unsigned.payload, [bytes(key.sign_message(unsigned.digests[0]))])
    return replace(signed, context=context)  # as the pipeline hands it back: with its build context


def _past_validity(cluster: Cluster) -> None:
    """Far enough that the finalized block height is past any blockhash built before, and the status
    cache has forgotten everything that landed before."""
    cluster.advance(MAX_AGE + FINALIZE + CACHE + 5)


def test_the_context_names_the_slot_of_the_blockhash() -> None:
    cluster = _cluster()
    adapter = _adapter(cluster)
    signed = _signed(adapter, _funded(cluster))
    finalized = cluster.commitment_slot("finalized")
    assert signed.context["blockhash_slot"] == finalized
    assert signed.context["last_valid_block_height"] == finalized + MAX_AGE


def test_a_never_sent_transaction_is_expired_once_the_history_proves_it() -> None:
    cluster = _cluster()
    adapter = _adapter(cluster)
    signed = _signed(adapter, _funded(cluster))
    assert adapter.get_status(signed).state is TxState.NOT_FOUND
    _past_validity(cluster)
    assert adapter.get_status(signed).state is TxState.EXPIRED
    assert adapter.proves_unlandable(signed) is True
    assert adapter._rpc.methods[-3:] == ["getSignatureStatuses", "getEpochInfo", "getSignaturesForAddress"]  # type: ignore[attr-defined]
    with pytest.raises(TransactionRejected) as info:
        adapter.broadcast(signed)
    assert info.value.reason == "expired"


def test_a_landed_transaction_is_never_expired_on_a_node_with_history() -> None:
    cluster = _cluster()
    adapter = _adapter(cluster)
    signed = _signed(adapter, _funded(cluster))
    assert adapter.broadcast(signed) == signed.tx_hash
    _past_validity(cluster)
    assert adapter.get_status(signed).state is TxState.INCLUDED
    assert adapter.proves_unlandable(signed) is False


def test_a_node_without_transaction_history_never_says_expired_for_a_landed_transfer() -> None:
    # The sweeper takes the transfer over after its lease: the node's status cache forgot the
    # signature and the node ignores searchTransactionHistory. Saying EXPIRED here pays twice.
    cluster = _cluster(transaction_history=False)
    adapter = _adapter(cluster)
    key = _funded(cluster)
    signed = _signed(adapter, key)
    assert adapter.broadcast(signed) == signed.tx_hash
    _past_validity(cluster)
    assert cluster.status(signed.tx_hash, search_history=True) is None  # the node forgot it
    assert adapter.get_status(signed).state is TxState.NOT_FOUND
    assert adapter.proves_unlandable(signed) is False
    # and a transaction that was never sent cannot be proven dead there either: no history, no proof
    never_sent = _signed(adapter, key)
    _past_validity(cluster)
    assert adapter.get_status(never_sent).state is TxState.NOT_FOUND
    with pytest.raises(NodeRpcError) as info:
        adapter.broadcast(never_sent)
    assert not isinstance(info.value, TransactionRejected) and info.value.transient


def test_a_pruned_ledger_never_says_expired_for_a_landed_transfer() -> None:
    # History is on, but the ledger keeps only the newest slots: the block that holds it is gone.
    cluster = _cluster(ledger_slots=15)
    adapter = _adapter(cluster)
    signed = _signed(adapter, _funded(cluster))
    assert adapter.broadcast(signed) == signed.tx_hash
    _past_validity(cluster)
    assert cluster.status(signed.tx_hash, search_history=True) is None  # cleaned up
    assert adapter.get_status(signed).state is TxState.NOT_FOUND
    assert adapter.proves_unlandable(signed) is False


def test_a_confirmed_registry_commitment_still_proves_at_finalized() -> None:
    # The confirmed block height is past the last valid height, the finalized one is not yet: a block
    # that could hold it can still be rolled back and replaced. Nothing is proven until finalized.
    cluster = _cluster()
    adapter = _adapter(cluster, commitment="confirmed")
    signed = _signed(adapter, _funded(cluster))
    last_valid = signed.context["last_valid_block_height"]
    cluster.advance(last_valid + 1 + CONFIRM - cluster.slot)  # confirmed height: last_valid + 1
    assert cluster.commitment_slot("confirmed") > last_valid >= cluster.commitment_slot("finalized")
    assert adapter.get_status(signed).state is TxState.NOT_FOUND
    assert adapter.proves_unlandable(signed) is False
    cluster.advance(FINALIZE - CONFIRM)
    assert adapter.get_status(signed).state is TxState.EXPIRED
