"""BitcoinAdapter.track against the devnet Bitcoin node served in-process over HTTP: a ChainState
the test mines and reorganises itself, behind the node's own JSON-RPC server (batches included),
with every HTTP request counted at the server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest

from chains import bitcoin_tracking
from chains.base import SignedTransaction, TxState, TxStatus, Watched
from chains.bitcoin import BitcoinAdapter
from chains.bitcoin_address import address_from_public_key, compress_public_key, hash160, p2wpkh_script
from chains.bitcoin_rpc import BitcoinRpcClient, NodeRpcError
from chains.errors import ChainRpcError
from chains.registry import load_registry
from devnet.bitcoin.chainstate import COINBASE_MATURITY, ChainState, faucet_key
from devnet.bitcoin.rpc import Methods
from devnet.bitcoin_node import make_server
from devnet.ports import free_port
from eth_keys import keys

ALICE = address_from_public_key(keys.PrivateKey(b"\x44" * 32).public_key.to_bytes(), "regtest")
FAUCET_SCRIPT = p2wpkh_script(hash160(compress_public_key(keys.PrivateKey(faucet_key()).public_key.to_bytes())))
UNKNOWN = [f"{n:064x}" for n in range(1, 2001)]  # txids no block holds


@dataclass
class Devnet:
    """The chain, its RPC methods, and the number of HTTP requests the server has answered."""

    state: ChainState
    methods: Methods
    url: str
    requests: int = 0

    def call(self, method: str, *params: Any) -> Any:
        return self.methods.call(method, list(params))

    def send(self, sats: int = 100_000) -> str:
        """A faucet payment to alice, in the mempool."""
        return str(self.call("sendtoaddress", ALICE, Decimal(sats) / 100_000_000))

    def mine(self, blocks: int = 1) -> list[str]:
        return self.state.mine(blocks, FAUCET_SCRIPT)


@pytest.fixture
def devnet() -> Iterator[Devnet]:
    state = ChainState(fee_rate_sat_vb=2)
    state.mine(COINBASE_MATURITY + 1, FAUCET_SCRIPT)
    server = make_server(Methods(state, faucet_key(), FAUCET_SCRIPT))
    node = Devnet(state, server.methods, f"http://127.0.0.1:{server.server_address[1]}")

    class Counting(server.RequestHandlerClass):  # type: ignore[misc, name-defined]
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            node.requests += 1
            super().do_POST()

    server.RequestHandlerClass = Counting
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield node
    server.shutdown()
    server.server_close()


@pytest.fixture
def adapter(devnet: Devnet) -> BitcoinAdapter:
    spec = load_registry("devnet").chain("bitcoin")  # confirmations = 2
    return BitcoinAdapter(replace(spec, rpc_urls=(devnet.url,)), timeout=5)


def watch(txid: str, key: str | None = None, block_number: int | None = None, block_hash: str | None = None) -> Watched:
    return Watched(key=key or f"tx_{txid}", signed=SignedTransaction(raw=b"", tx_hash=txid), sender=ALICE,
                   block_number=block_number, block_hash=block_hash)


def counted_tick(adapter: BitcoinAdapter, devnet: Devnet, watched: list[Watched], cursor: dict[str, Any]) -> Any:
    """One track call; its rpc_calls must be the HTTP requests the server saw."""
    before = devnet.requests
    observation = adapter.track(watched, cursor)
    assert observation.rpc_calls == devnet.requests - before
    return observation


def test_a_first_tick_starts_a_bounded_window_back_from_the_tip(adapter: BitcoinAdapter, devnet: Devnet) -> None:
    early = devnet.send()
    devnet.mine(1)
    devnet.mine(30)
    late = devnet.send()
    [block] = devnet.mine(1)
    first = counted_tick(adapter, devnet, [watch(early), watch(late)], {})
    tip = devnet.state.height
    assert first.head == tip and first.cursor == {"scanned": tip, "hash": block}
    assert set(first.statuses) == {watch(late).key}  # mined before the window: not news
    # chain identity (once per adapter), tip + hashes, the window's hashes, the blocks, the fee
    assert first.rpc_calls == 5


def test_inclusion_carries_block_hash_confirmations_and_the_fee_get_status_reports(adapter: BitcoinAdapter,
                                                                                     devnet: Devnet) -> None:
    cursor = adapter.track([], {}).cursor
    txid = devnet.send()
    watched = [watch(txid), watch(UNKNOWN[0])]
    pending = counted_tick(adapter, devnet, watched, cursor)
    assert pending.statuses == {} and pending.rpc_calls == 1  # in the mempool: no news; no new block to read
    [block] = devnet.mine(1)
    seen = counted_tick(adapter, devnet, watched, pending.cursor)
    status = seen.statuses[watch(txid).key]
    expected = adapter.get_status(SignedTransaction(raw=b"", tx_hash=txid))
    assert (status.state, status.block_number, status.block_hash, status.confirmations) == \
        (TxState.INCLUDED, devnet.state.height, block, 1)
    assert status.fee_paid == expected.fee_paid == devnet.state.prevouts[txid][0].value - \
        sum(o.value for o in devnet.state.txs[txid].outputs) > 0
    assert set(seen.statuses) == {watch(txid).key} and seen.cursor == {"scanned": devnet.state.height, "hash": block}

    stored = [watch(txid, block_number=status.block_number, block_hash=block), watch(UNKNOWN[0])]
    shallow = counted_tick(adapter, devnet, stored, seen.cursor)
    assert shallow.statuses == {}  # seen, canonical, below depth: no news
    devnet.mine(1)
    deep = counted_tick(adapter, devnet, stored, shallow.cursor).statuses[watch(txid).key]
    assert (deep.state, deep.block_hash, deep.confirmations, deep.fee_paid) == (TxState.INCLUDED, block, 2, status.fee_paid)
    assert deep == adapter.get_status(SignedTransaction(raw=b"", tx_hash=txid))


def test_a_block_reorganised_away_is_not_found_and_the_new_inclusion_is_reported(adapter: BitcoinAdapter,
                                                                                   devnet: Devnet) -> None:
    cursor = adapter.track([], {}).cursor
    txid = devnet.send()
    [old_block] = devnet.mine(1)
    height = devnet.state.height
    first = adapter.track([watch(txid)], cursor)
    assert first.statuses[watch(txid).key].block_hash == old_block
    stored = [watch(txid, block_number=height, block_hash=old_block)]

    devnet.call("invalidateblock", old_block)  # the transaction goes back to the mempool
    gone = counted_tick(adapter, devnet, stored, first.cursor)
    assert gone.statuses == {watch(txid).key: TxStatus(TxState.NOT_FOUND)} and gone.head == height - 1
    assert gone.cursor["scanned"] < height  # rewound below the block that left

    [new_block, _] = devnet.mine(2)  # re-mined at the same height in another block
    again = counted_tick(adapter, devnet, stored, gone.cursor).statuses[watch(txid).key]
    assert (again.state, again.block_number, again.block_hash, again.confirmations) == \
        (TxState.INCLUDED, height, new_block, 2)
    assert new_block != old_block and again.fee_paid == first.statuses[watch(txid).key].fee_paid


def test_a_reorg_below_the_cursor_rescans_and_finds_the_transaction_in_its_new_block(adapter: BitcoinAdapter,
                                                                                      devnet: Devnet) -> None:
    cursor = adapter.track([], {}).cursor
    txid = devnet.send()
    [old_block] = devnet.mine(1)
    first = adapter.track([watch(txid)], cursor)
    stored = [watch(txid, block_number=devnet.state.height, block_hash=old_block)]
    devnet.call("invalidateblock", old_block)
    [new_block, _] = devnet.mine(2)  # between two ticks: the cursor's block is no longer the chain's
    after = counted_tick(adapter, devnet, stored, first.cursor)
    status = after.statuses[watch(txid).key]
    assert (status.state, status.block_hash) == (TxState.INCLUDED, new_block)  # not NOT_FOUND: found again
    assert after.cursor == {"scanned": devnet.state.height, "hash": devnet.state.tip.hash}


def test_a_stored_block_hash_that_is_not_the_chains_is_not_found(adapter: BitcoinAdapter, devnet: Devnet) -> None:
    txid = devnet.send()
    devnet.mine(3)
    cursor = adapter.track([], {}).cursor
    height = devnet.state.height - 2
    wrong = [watch(txid, block_number=height, block_hash="ab" * 32),
             watch(UNKNOWN[0], key="beyond_tip", block_number=devnet.state.height + 5, block_hash="cd" * 32),
             # the chain's block at that height, but it does not hold the transaction
             watch(UNKNOWN[1], key="not_in_block", block_number=height, block_hash=devnet.state.active[height])]
    observation = counted_tick(adapter, devnet, wrong, cursor)
    assert {key: s.state for key, s in observation.statuses.items()} == \
        {watch(txid).key: TxState.NOT_FOUND, "beyond_tip": TxState.NOT_FOUND, "not_in_block": TxState.NOT_FOUND}


def test_rpc_requests_do_not_grow_with_the_number_watched(adapter: BitcoinAdapter, devnet: Devnet) -> None:
    cursor = adapter.track([], {}).cursor
    txid = devnet.send()
    devnet.mine(1)
    one = counted_tick(adapter, devnet, [watch(txid)], cursor)
    many_watched = [watch(txid)] + [watch(t) for t in UNKNOWN[:1900]] + \
        [watch(t, block_number=50 + n, block_hash="ef" * 32) for n, t in enumerate(UNKNOWN[1900:1999])]
    many = counted_tick(adapter, devnet, many_watched, cursor)
    assert one.rpc_calls == many.rpc_calls == 3  # tip + hashes, the block, the fee
    assert many.statuses[watch(txid).key] == one.statuses[watch(txid).key]
    assert sum(s.state is TxState.NOT_FOUND for s in many.statuses.values()) == 99 and len(many.statuses) == 100


def test_a_long_gap_is_read_at_most_max_blocks_per_tick(adapter: BitcoinAdapter, devnet: Devnet) -> None:
    cursor = adapter.track([], {}).cursor
    devnet.mine(bitcoin_tracking.MAX_BLOCKS_PER_TICK + 5)
    txid = devnet.send()
    [block] = devnet.mine(1)
    first = counted_tick(adapter, devnet, [watch(txid)], cursor)
    assert first.statuses == {} and first.cursor["scanned"] == cursor["scanned"] + bitcoin_tracking.MAX_BLOCKS_PER_TICK
    second = counted_tick(adapter, devnet, [watch(txid)], first.cursor)
    assert second.statuses[watch(txid).key].block_hash == block and second.cursor["hash"] == block


def test_the_cursor_round_trips_through_json(adapter: BitcoinAdapter, devnet: Devnet) -> None:
    start = adapter.track([], {})
    stored = json.loads(json.dumps(start.cursor))
    assert stored == start.cursor
    txid = devnet.send()
    [block] = devnet.mine(1)
    observation = counted_tick(adapter, devnet, [watch(txid)], stored)
    assert observation.statuses[watch(txid).key].block_hash == block
    assert json.loads(json.dumps(observation.cursor)) == observation.cursor == {"scanned": devnet.state.height, "hash": block}


@pytest.mark.parametrize("garbage", [{"scanned": "7"}, {"scanned": 5}, {"scanned": True, "hash": "ab" * 32},
                                     {"scanned": -1, "hash": "ab" * 32}, {"hash": "x"}])
def test_an_unusable_cursor_is_a_first_tick(adapter: BitcoinAdapter, devnet: Devnet, garbage: dict[str, Any]) -> None:
    observation = adapter.track([], garbage)
    assert observation.cursor == {"scanned": devnet.state.height, "hash": devnet.state.tip.hash}


def test_an_unusable_txid_is_skipped_not_fatal(adapter: BitcoinAdapter, devnet: Devnet) -> None:
    cursor = adapter.track([], {}).cursor
    txid = devnet.send()
    devnet.mine(1)
    observation = adapter.track([watch("0x" + txid, key="bad"), watch(txid.upper(), key="upper")], cursor)
    assert set(observation.statuses) == {"upper"}


class OldNode:
    """The devnet behind a client that answers like a node too old for `fee` and `prevout`."""

    def __init__(self, client: BitcoinRpcClient) -> None:
        self.client = client
        self.batches: list[list[str]] = []

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        self.batches.append([method for method, _ in calls])
        answers = self.client.batch(calls)
        for answer in answers:
            if isinstance(answer, dict) and "vin" in answer:
                answer.pop("fee", None)
                for vin in answer["vin"]:
                    vin.pop("prevout", None)
        return answers


def test_on_an_old_node_the_fee_is_summed_from_the_parents_in_one_batch(adapter: BitcoinAdapter, devnet: Devnet) -> None:
    cursor = adapter.track([], {}).cursor
    txid = devnet.send()
    devnet.mine(1)
    old = OldNode(BitcoinRpcClient(devnet.url))
    observation = bitcoin_tracking.track(old, adapter.spec, adapter._fee_of, [watch(txid)], cursor)  # type: ignore[arg-type]
    assert observation.statuses[watch(txid).key].fee_paid == adapter.get_status(SignedTransaction(b"", txid)).fee_paid
    assert old.batches[-1] == ["getrawtransaction"] * len(devnet.state.txs[txid].inputs) and observation.rpc_calls == 4


def test_a_batch_answers_each_call_or_its_error(devnet: Devnet) -> None:
    client = BitcoinRpcClient(devnet.url)
    count, missing, unknown = client.batch([("getblockcount", []), ("getblockhash", [10_000]), ("nosuchmethod", [])])
    assert count == devnet.state.height and devnet.requests == 1
    assert isinstance(missing, NodeRpcError) and missing.code == -8 and missing.method == "getblockhash"
    assert isinstance(unknown, NodeRpcError) and unknown.code == -32601
    assert client.batch([]) == [] and devnet.requests == 1
    with pytest.raises(ChainRpcError, match="cannot reach"):
        BitcoinRpcClient(f"http://u:pw@127.0.0.1:{free_port()}", timeout=1).batch([("getblockcount", [])])


class ReorgBeforeBlocks:
    """Forwards batches to the devnet; just before the first `getblock` batch, the chain's last
    block is replaced (a reorg racing the tick, after the hashes were read)."""

    def __init__(self, client: BitcoinRpcClient, devnet: Devnet) -> None:
        self.client, self.devnet, self.done = client, devnet, False

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        if calls[0][0] == "getblock" and not self.done:
            self.done = True
            self.devnet.call("invalidateblock", self.devnet.state.tip.hash)
            self.devnet.mine(2)
        return self.client.batch(calls)


def test_a_reorg_during_the_tick_ends_the_window_before_the_block_that_left(adapter: BitcoinAdapter, devnet: Devnet) -> None:
    cursor = adapter.track([], {}).cursor
    devnet.mine(2)
    txid = devnet.send()
    [old_block] = devnet.mine(1)
    racing = ReorgBeforeBlocks(BitcoinRpcClient(devnet.url), devnet)
    raced = bitcoin_tracking.track(racing, adapter.spec, adapter._fee_of, [watch(txid)], cursor)  # type: ignore[arg-type]
    assert raced.statuses == {} and raced.cursor["scanned"] == cursor["scanned"] + 2  # the two blocks that held
    after = adapter.track([watch(txid)], raced.cursor)
    status = after.statuses[watch(txid).key]
    assert status.block_hash not in (None, old_block) and status.block_hash == devnet.state.active[status.block_number]
