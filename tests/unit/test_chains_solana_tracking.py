"""SolanaAdapter.track against the devnet Solana node served over real HTTP in a thread (the
node's own JSON-RPC server, batches included, over a cluster the test drives: slot_ms=0, slots
move only when the test says so). LiteSVM runs for real. What must hold: the tracker says what
`get_status` says for a transaction that landed (block, hash, confirmations, the fee to the
lamport), nothing for one that did not, NOT_FOUND for one whose stored block is gone, and a number
of HTTP requests per tick that does not grow with the number of watched transactions."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

from chains.base import FeeQuote, SignedTransaction, TransferIntent, TxState, TxStatus, Watched
from chains.errors import ChainRpcError
from chains.registry import load_registry
from chains.solana import SolanaAdapter
from chains.solana_address import b58encode
from chains.solana_rpc import NodeRpcError
from chains.solana_tracking import STATUS_BATCH, WINDOW
from devnet.solana.cluster import Cluster, ClusterConfig
from devnet.solana.server import make_server

SPEC = load_registry("devnet").chain("solana")
USDC = SPEC.token("USDC")
SOL = 10**9
MAX_AGE, CONFIRM, FINALIZE, CACHE = 50, 1, 3, 20


class Node:
    """A devnet cluster behind its HTTP JSON-RPC server on a free loopback port."""

    def __init__(self, **config: Any) -> None:
        self.cluster = Cluster(ClusterConfig(slot_ms=0, blockhash_max_age=MAX_AGE, confirm_depth=CONFIRM,
                                             finalize_depth=FINALIZE, status_cache_slots=CACHE, **config),
                               [(str(USDC.contract), USDC.decimals)])
        self.server = make_server(self.cluster, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def node() -> Iterator[Node]:
    served = Node()
    yield served
    served.close()


def _adapter(node: Node, **options: Any) -> tuple[SolanaAdapter, list[str]]:
    """The adapter on the node, and the list of HTTP requests it sends (one entry each)."""
    adapter = SolanaAdapter(replace(SPEC, rpc_urls=(node.url,), options={**SPEC.options, **options}))
    requests_sent: list[str] = []
    adapter._rpc._session().hooks["response"].append(lambda response, **_: requests_sent.append(response.url))
    return adapter, requests_sent


def _funded(node: Node, usdc: int = 0) -> Keypair:
    key = Keypair()
    node.cluster.airdrop(key.pubkey(), 10 * SOL)
    if usdc:
        node.cluster.mint_to(key.pubkey(), str(USDC.contract), usdc)
    node.cluster.advance(FINALIZE)
    return key


def _signed(adapter: SolanaAdapter, key: Keypair, amount: int = SOL, token: Any = None,
            fee: FeeQuote | None = None) -> SignedTransaction:
    intent = TransferIntent(str(key.pubkey()), str(Keypair().pubkey()), amount, token or SPEC.native)
    context = adapter.build_context(intent)
    unsigned = adapter.build(intent, fee or adapter.quote_fee(intent), None, context)
    signed = adapter.attach_signature(unsigned.payload, [bytes(key.sign_message(unsigned.digests[0]))])
    return replace(signed, context=context)


def _watched(signed: SignedTransaction, key: Keypair, name: str = "t1", **seen: Any) -> Watched:
    """As the pipeline hands it over: hash and context, never the raw bytes."""
    return Watched(key=name, signed=SignedTransaction(raw=b"", tx_hash=signed.tx_hash, context=signed.context),
                   sender=str(key.pubkey()), **seen)


def _unknown(n: int) -> list[Watched]:
    """`n` watched transactions the node never saw (random signatures)."""
    return [Watched(key=f"u{i:05d}", signed=SignedTransaction(raw=b"", tx_hash=b58encode(os.urandom(64))),
                    sender=str(Keypair().pubkey())) for i in range(n)]


def test_inclusion_is_reported_as_get_status_reports_it(node: Node) -> None:
    adapter, _ = _adapter(node)
    key = _funded(node, usdc=5_000_000)
    sol = _signed(adapter, key)
    spl = _signed(adapter, key, 1_000_000, USDC)  # creates the destination's token account: fee + rent
    assert adapter.broadcast(sol) == sol.tx_hash and adapter.broadcast(spl) == spl.tx_hash
    watched = [_watched(sol, key, "sol"), _watched(spl, key, "spl")]

    first = adapter.track(watched, {})  # processed, not yet at the registry's commitment (finalized)
    assert first.statuses["sol"] == adapter.get_status(sol)
    assert first.statuses["sol"].state is TxState.INCLUDED and first.statuses["sol"].confirmations == 0
    assert first.statuses["sol"].block_hash is None and first.statuses["sol"].fee_paid is None

    node.cluster.advance(FINALIZE + 2)
    tick = adapter.track(watched, {})
    slot = node.cluster.landed(sol.tx_hash).slot
    for name, signed in (("sol", sol), ("spl", spl)):
        status = tick.statuses[name]
        assert status == adapter.get_status(signed)
        assert status.state is TxState.INCLUDED and status.block_number == slot
        assert status.block_hash == node.cluster.block(slot)[0]
        assert status.confirmations == node.cluster.commitment_slot("finalized") - slot + 1 == 3
    assert tick.statuses["sol"].fee_paid == 5000
    assert tick.statuses["spl"].fee_paid == 5000 + adapter._rent_exempt_minimum(165)  # the new account's rent
    assert tick.head == node.cluster.commitment_slot("finalized")
    # two statuses, the head, one batch (one block for the shared slot, two transactions)
    assert tick.rpc_calls == 3


def test_a_reverted_transaction_is_reported_with_the_fee_it_paid(node: Node) -> None:
    adapter, _ = _adapter(node)
    key = _funded(node)
    quote = FeeQuote(max_fee=5000, params={"lamports_per_signature": 5000, "signatures": 1,
                                           "create_ata": False, "ata_rent": 0})
    signed = _signed(adapter, key, 100 * SOL, fee=quote)  # more than it has: fails, pays the fee
    node.cluster.send(VersionedTransaction.from_bytes(signed.raw), preflight=False)
    node.cluster.advance(FINALIZE)
    status = adapter.track([_watched(signed, key)], {}).statuses["t1"]
    assert status.state is TxState.REVERTED and status.fee_paid == 5000
    assert status == adapter.get_status(signed)


def test_a_transaction_not_included_is_no_news(node: Node) -> None:
    adapter, _ = _adapter(node)
    key = _funded(node)
    never_sent = _signed(adapter, key)
    tick = adapter.track([_watched(never_sent, key), *_unknown(3)], {})
    assert tick.statuses == {}
    # unknown and past its validity: still no news (the expiry proof stays with get_status)
    node.cluster.advance(MAX_AGE + FINALIZE + 2)
    assert adapter.track([_watched(never_sent, key)], {}).statuses == {}
    assert adapter.get_status(never_sent).state is TxState.EXPIRED


def test_a_stored_block_that_is_not_canonical_is_not_found(node: Node) -> None:
    adapter, _ = _adapter(node)
    key = _funded(node)
    signed = _signed(adapter, key)
    adapter.broadcast(signed)
    node.cluster.advance(FINALIZE)
    slot = node.cluster.landed(signed.tx_hash).slot
    right = node.cluster.block(slot)[0]
    other = node.cluster.block(slot - 1)[0]
    watched = [
        _watched(signed, key, "same", block_number=slot, block_hash=right),
        _watched(signed, key, "wrong-hash", block_number=slot, block_hash=other),  # its slot holds another block
        _watched(signed, key, "moved", block_number=slot - 1, block_hash=other),  # the status names another slot
    ]
    statuses = adapter.track(watched, {}).statuses
    assert statuses["same"].state is TxState.INCLUDED and statuses["same"].block_hash == right
    assert statuses["wrong-hash"].state is TxState.NOT_FOUND
    assert statuses["moved"].state is TxState.NOT_FOUND


def test_a_seen_transaction_whose_status_is_gone_is_not_found() -> None:
    served = Node(transaction_history=False)  # the status cache forgets after CACHE slots
    try:
        adapter, _ = _adapter(served)
        key = _funded(served)
        signed = _signed(adapter, key)
        adapter.broadcast(signed)
        served.cluster.advance(CACHE + 1)
        slot = served.cluster.landed(signed.tx_hash).slot
        seen = _watched(signed, key, "seen", block_number=slot, block_hash=served.cluster.block(slot)[0])
        unseen = _watched(signed, key, "unseen")
        assert served.cluster.status(signed.tx_hash, True) is None  # forgotten: a node without history
        assert adapter.track([seen, unseen], {}).statuses == {"seen": TxStatus(TxState.NOT_FOUND)}
    finally:
        served.close()


def test_requests_per_tick_do_not_grow_with_the_watched_count(node: Node) -> None:
    adapter, sent = _adapter(node)
    key = _funded(node)
    signed = _signed(adapter, key)
    adapter.broadcast(signed)
    node.cluster.advance(FINALIZE)
    adapter.track([], {})  # the session is open; count from here
    sent.clear()

    one = adapter.track([_watched(signed, key, "u99999")], {})
    assert one.rpc_calls == len(sent) == 3  # statuses, head, one batch for block and fee
    sent.clear()
    many = adapter.track([*_unknown(1999), _watched(signed, key, "u99999")], {})
    assert many.statuses["u99999"] == one.statuses["u99999"] and len(many.statuses) == 1
    assert many.rpc_calls == len(sent) == 8 + 1 + 1  # 2,000 / 256 status calls, head, one batch
    assert many.rpc_calls <= WINDOW // STATUS_BATCH + 2


def test_the_window_rotates_and_the_cursor_survives_json(node: Node) -> None:
    adapter, sent = _adapter(node)
    key = _funded(node)
    signed = _signed(adapter, key)
    adapter.broadcast(signed)
    node.cluster.advance(FINALIZE)
    watched = [*_unknown(3000), _watched(signed, key, "u99999")]  # sorts last: outside the first window
    cursor: dict[str, Any] = {}
    found_at = []
    for tick_number in range(4):
        sent.clear()
        tick = adapter.track(watched, cursor)
        assert tick.rpc_calls == len(sent) <= WINDOW // STATUS_BATCH + 2
        if "u99999" in tick.statuses:
            found_at.append(tick_number)
        cursor = json.loads(json.dumps(tick.cursor))
    # 3,001 watched, 2,048 a tick in key order, wrapping around: ticks 0-3 start at the 1st, 2,049th,
    # 1,096th and 143rd; the last key is in the windows of ticks 1 and 2 only
    assert found_at == [1, 2]


def test_a_malformed_signature_does_not_spoil_its_batch(node: Node) -> None:
    adapter, _ = _adapter(node)
    key = _funded(node)
    signed = _signed(adapter, key)
    adapter.broadcast(signed)
    node.cluster.advance(FINALIZE)
    bad = Watched(key="bad", signed=SignedTransaction(raw=b"", tx_hash="not-a-signature"), sender=str(key.pubkey()))
    statuses = adapter.track([bad, _watched(signed, key)], {}).statuses
    assert set(statuses) == {"t1"} and statuses["t1"].state is TxState.INCLUDED


def test_a_transaction_the_node_cannot_serve_at_depth_is_no_news_for_it_alone() -> None:
    """get_status raises for it (the confirm step retries and holds it); the tick gives no news for
    it instead of failing for every transfer of the chain."""
    served = Node(transaction_history=False)
    try:
        adapter, _ = _adapter(served)
        key = _funded(served)
        signed = _signed(adapter, key)
        adapter.broadcast(signed)
        served.cluster.advance(FINALIZE)
        with pytest.raises(ChainRpcError):
            adapter.get_status(signed)
        observation = adapter.track([_watched(signed, key)], {})
        assert observation.statuses == {}
    finally:
        served.close()


def test_a_batch_keeps_each_answer_in_order(node: Node) -> None:
    adapter, sent = _adapter(node)
    slot, missing = adapter._rpc.batch([("getSlot", [{"commitment": "processed"}]), ("noSuchMethod", [])])
    assert slot == node.cluster.slot and isinstance(missing, NodeRpcError) and missing.code == -32601
    assert len(sent) == 1
