"""TronAdapter.track against the TRON devnet in-process (its HTTP API in a thread, a manual clock):
the block scan reports what get_status reports, reorgs of stored blocks, bounded requests, the cursor.

Every HTTP request the devnet serves is counted (`served`), so `rpc_calls` is checked, not trusted.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from tronpy.keys import PrivateKey, to_hex_address

from chains import tron_tracking, tron_tx
from chains.base import Observation, SignedTransaction, TxState, Watched
from chains.errors import ChainRpcError
from chains.registry import load_registry
from chains.tron import TronAdapter
from devnet.tron import server as tron_server
from devnet.tron.chain import Token, TronChain
from devnet.tron.fees import Fees

USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
ALICE = PrivateKey(bytes.fromhex("a1" * 32))
BOB = PrivateKey(bytes.fromhex("b0" * 32))
TRX = 1_000_000
DEPTH = 3  # the devnet solidifies a block 3 deep, the registry's depth for it
BOUND = 2 + 2 * tron_tracking.MAX_BLOCKS_PER_TICK + 2 * tron_tracking.MAX_RECHECK_HEIGHTS


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Devnet:
    chain: TronChain
    clock: Clock
    adapter: TronAdapter
    served: list[str]

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.clock.now += 0.25
            self.chain.produce_block()

    def send(self, doc: dict[str, Any]) -> SignedTransaction:
        """Pool a signed transaction on the chain; what the pipeline keeps of it (no raw bytes)."""
        return SignedTransaction(raw=b"", tx_hash=self.chain.broadcast(doc))

    def track(self, watched: list[Watched], cursor: dict[str, Any]) -> Observation:
        before = len(self.served)
        observation = self.adapter.track(watched, cursor)
        assert observation.rpc_calls == len(self.served) - before  # every request counted
        return observation


def address(key: PrivateKey) -> str:
    return key.public_key.to_base58check_address()


def signed_doc(raw_data: dict[str, Any], key: PrivateKey) -> dict[str, Any]:
    txid, raw = tron_tx.txid_of(raw_data)
    return {"raw_data": raw_data, "raw_data_hex": raw.hex(), "txID": txid,
            "signature": [key.sign_msg_hash(bytes.fromhex(txid)).hex()], "visible": False}


def context(chain: TronChain) -> dict[str, Any]:
    ref = chain.solid
    return {"ref_block_bytes": ref.block_id[12:16], "ref_block_hash": ref.block_id[16:32],
            "expiration": chain.head.timestamp + 60_000, "timestamp": chain.head.timestamp}


def trx(chain: TronChain, amount: int) -> dict[str, Any]:
    return signed_doc(tron_tx.trx_transfer_raw_data(address(ALICE), address(BOB), amount, context(chain)), ALICE)


def usdt(chain: TronChain, amount: int, fee_limit: int) -> dict[str, Any]:
    raw = tron_tx.trc20_transfer_raw_data(address(ALICE), USDT, address(BOB), amount, fee_limit, context(chain))
    return signed_doc(raw, ALICE)


def watch(signed: SignedTransaction, key: str | None = None, block: tuple[int, str] | None = None) -> Watched:
    number, block_hash = block if block is not None else (None, None)
    return Watched(key=key or signed.tx_hash, signed=signed, sender=address(ALICE), block_number=number,
                   block_hash=block_hash)


def unknown(count: int) -> list[Watched]:
    return [watch(SignedTransaction(raw=b"", tx_hash=secrets.token_hex(32)), key=f"unknown-{i:05d}") for i in range(count)]


@pytest.fixture
def devnet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Devnet]:
    clock = Clock()
    chain = TronChain([Token(to_hex_address(USDT), "USDT", 6)], Fees(), solidify_depth=DEPTH, clock=clock)
    served: list[str] = []

    def counted(path: str, route: Callable[..., Any]) -> Callable[..., Any]:
        def answer(chain: TronChain, body: dict[str, Any]) -> Any:
            served.append(path)
            return route(chain, body)
        return answer

    for path, route in list(tron_server.ROUTES.items()):
        monkeypatch.setitem(tron_server.ROUTES, path, counted(path, route))
    server = tron_server.make_server(chain, "127.0.0.1", 0, {})
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    spec = load_registry("devnet").chain("tron")
    adapter = TronAdapter(replace(spec, rpc_urls=(f"http://127.0.0.1:{server.server_address[1]}",), confirmations=DEPTH))
    chain.fund(address(ALICE), 1_000 * TRX)
    chain.fund(address(BOB), TRX)
    chain.mint(USDT, address(ALICE), 100)
    try:
        yield Devnet(chain, clock, adapter, served)
    finally:
        server.shutdown()
        server.server_close()


# --- the devnet's gettransactioninfobyblocknum ------------------------------------------------------


def test_the_devnet_lists_a_blocks_transaction_infos_as_java_tron_does(devnet: Devnet) -> None:
    chain, routes = devnet.chain, tron_server.ROUTES
    first, second = devnet.send(trx(chain, TRX)), devnet.send(usdt(chain, 5, 30 * TRX))
    devnet.mine()  # block 1 holds both
    listed = routes["/wallet/gettransactioninfobyblocknum"](chain, {"num": 1})
    assert listed == [chain.transaction_info(first.tx_hash), chain.transaction_info(second.tx_hash)]  # a JSON array
    assert listed[0]["blockNumber"] == 1 and listed[0]["fee"] > 0 and listed[1]["receipt"]["result"] == "SUCCESS"
    devnet.mine()
    assert routes["/wallet/gettransactioninfobyblocknum"](chain, {"num": 2}) == []  # a block without transactions
    assert routes["/wallet/gettransactioninfobyblocknum"](chain, {"num": 99}) == []  # past the head
    assert routes["/wallet/gettransactioninfobyblocknum"](chain, {"num": 0}) == {}  # num <= 0: java-tron's {}
    assert routes["/walletsolidity/gettransactioninfobyblocknum"](chain, {"num": 1}) == []  # not solidified yet
    devnet.mine()
    assert len(routes["/walletsolidity/gettransactioninfobyblocknum"](chain, {"num": 1})) == 2


# --- statuses ---------------------------------------------------------------------------------------


def test_inclusions_are_reported_as_get_status_reports_them_and_nothing_else(devnet: Devnet) -> None:
    chain, adapter = devnet.chain, devnet.adapter
    devnet.mine(2)
    paid = devnet.send(trx(chain, 2 * TRX))  # burns bandwidth: a fee
    starved = devnet.send(usdt(chain, 5, TRX))  # a fee limit below the energy: OUT_OF_ENERGY, the limit burnt
    devnet.mine()  # block 3
    pooled = devnet.send(trx(chain, 3 * TRX))  # in the pool, in no block
    watched = [watch(paid), watch(starved), watch(pooled), *unknown(3)]

    first = devnet.track(watched, {})
    assert set(first.statuses) == {paid.tx_hash, starved.tx_hash} and first.head == 3
    assert first.statuses[paid.tx_hash] == adapter.get_status(paid)
    assert first.statuses[starved.tx_hash] == adapter.get_status(starved)
    included, reverted = first.statuses[paid.tx_hash], first.statuses[starved.tx_hash]
    assert included.state is TxState.INCLUDED and reverted.state is TxState.REVERTED
    assert reverted.detail == "OUT_OF_ENERGY" and reverted.fee_paid == chain.transaction_info(starved.tx_hash)["fee"]
    assert included.block_number == 3 and included.block_hash == chain.blocks[3].block_id
    assert included.confirmations == 1 and included.fee_paid == chain.transaction_info(paid.tx_hash)["fee"] > 0
    assert first.cursor == {"scanned": 3}

    # The pipeline stores the block; once it is solidified the next ticks re-check it and report the depth.
    stored = [watch(paid, block=(3, included.block_hash)), watch(starved, block=(3, reverted.block_hash)), watch(pooled)]
    devnet.mine(DEPTH - 2)  # block 4 takes the pooled one
    later = devnet.track(stored, first.cursor)  # block 3: not solidified yet, already scanned: no news
    assert later.statuses == {pooled.tx_hash: adapter.get_status(pooled)} and later.cursor == {"scanned": 4}
    assert later.statuses[pooled.tx_hash].block_number == 4 and later.rpc_calls == 2 + 1 + 1
    devnet.mine()  # head 5: block 3 is solidified
    deep = devnet.track(stored, {"scanned": chain.head.number})  # nothing left to scan: the re-check alone
    assert deep.statuses == {paid.tx_hash: adapter.get_status(paid), starved.tx_hash: adapter.get_status(starved)}
    assert deep.statuses[paid.tx_hash].confirmations == DEPTH and deep.statuses[paid.tx_hash].fee_paid == included.fee_paid
    assert deep.rpc_calls == 2 + 2  # heads, then block 3 and its infos once for both transactions


def test_a_stored_block_that_is_no_longer_canonical_is_not_found(devnet: Devnet) -> None:
    chain = devnet.chain
    devnet.mine(5)  # head 5, solid 3
    forked_away = chain.blocks[4].block_id
    chain.fork(4)  # a short fork switch replaces blocks 4 and 5
    paid = devnet.send(trx(chain, TRX))
    devnet.mine()  # block 6 holds it
    real = chain.blocks[6].block_id
    devnet.mine(DEPTH)  # blocks 4..6 solidified on the new branch
    ghost = SignedTransaction(raw=b"", tx_hash=secrets.token_hex(32))
    watched = [
        watch(ghost, key="on-the-old-branch", block=(4, forked_away)),
        watch(paid, key="wrong-hash", block=(6, "ff" * 32)),
        watch(paid, key="canonical", block=(6, real)),
    ]
    observation = devnet.track(watched, {"scanned": chain.head.number})
    assert observation.statuses["on-the-old-branch"].state is TxState.NOT_FOUND
    assert observation.statuses["wrong-hash"].state is TxState.NOT_FOUND
    assert observation.statuses["canonical"] == devnet.adapter.get_status(paid)
    assert observation.statuses["canonical"].confirmations >= DEPTH
    # A stored block not solidified yet is not re-checked (the scan reports it while it passes).
    devnet.mine()
    young = devnet.track([watch(ghost, key="young", block=(chain.head.number, "ee" * 32))], {"scanned": chain.head.number})
    assert young.statuses == {} and young.rpc_calls == 2


# --- bounded requests and the cursor -------------------------------------------------------------------


def test_requests_do_not_grow_with_the_number_watched(devnet: Devnet) -> None:
    chain = devnet.chain
    devnet.mine(2)
    paid = devnet.send(trx(chain, TRX))
    devnet.mine(10)
    one = devnet.track([watch(paid)], {"scanned": 0})
    many = devnet.track([watch(paid), *unknown(1_999)], {"scanned": 0})
    assert one.rpc_calls == many.rpc_calls == 2 + 12 + 1  # heads, a block's infos each, block 3 for the match
    assert one.statuses == {paid.tx_hash: many.statuses[paid.tx_hash]} and len(many.statuses) == 1

    # 2,000 watched with stored blocks at 100 solidified heights: the re-checks are capped a tick.
    devnet.mine(100)
    stored = [replace(item, block_number=3 + i % 100, block_hash=chain.blocks[3 + i % 100].block_id)
              for i, item in enumerate(unknown(2_000))]
    capped = devnet.track(stored, {"scanned": chain.head.number})
    # One getblockbynum per height re-checked, the oldest MAX_RECHECK_HEIGHTS; none of these txIDs is
    # in its block, so no infos are needed: all NOT_FOUND.
    assert capped.rpc_calls == 2 + tron_tracking.MAX_RECHECK_HEIGHTS
    assert len(capped.statuses) == 20 * tron_tracking.MAX_RECHECK_HEIGHTS
    assert all(status.state is TxState.NOT_FOUND for status in capped.statuses.values())
    # The most a tick can cost: a full scan with a match, and the capped re-checks.
    busiest = devnet.track([watch(paid, key="paid", block=(3, chain.blocks[3].block_id)), *stored], {"scanned": 0})
    assert busiest.statuses["paid"] == devnet.adapter.get_status(paid)
    assert busiest.rpc_calls == 2 + tron_tracking.MAX_BLOCKS_PER_TICK + 1 + tron_tracking.MAX_RECHECK_HEIGHTS <= BOUND


def test_the_cursor_round_trips_through_json_and_bounds_each_tick(devnet: Devnet) -> None:
    chain = devnet.chain
    early = devnet.send(trx(chain, TRX))
    devnet.mine()  # block 1
    devnet.mine(tron_tracking.MAX_BLOCKS_PER_TICK + 9)  # head 60
    late = devnet.send(trx(chain, 2 * TRX))
    devnet.mine()  # block 61
    watched = [watch(early), watch(late)]

    first = devnet.track(watched, {})  # a window back from the head: blocks 12..61
    assert first.cursor == {"scanned": 61} and set(first.statuses) == {late.tx_hash}  # block 1: before it, no news
    assert first.rpc_calls == 2 + tron_tracking.MAX_BLOCKS_PER_TICK + 1
    cursor = json.loads(json.dumps(first.cursor))
    devnet.mine(3)
    second = devnet.track(watched, cursor)
    assert second.cursor == {"scanned": 64} and second.rpc_calls == 2 + 3 and second.statuses == {}

    behind = devnet.track(watched, {"scanned": 0})  # 64 blocks behind: at most MAX_BLOCKS_PER_TICK a tick
    assert behind.cursor == {"scanned": tron_tracking.MAX_BLOCKS_PER_TICK} and set(behind.statuses) == {early.tx_hash}
    assert devnet.track(watched, json.loads(json.dumps(behind.cursor))).cursor == {"scanned": 64}
    for garbage in ({"scanned": "12"}, {"scanned": -1}, {"scanned": 10_000}):  # unusable, or another chain's
        assert devnet.track(watched, garbage).cursor == {"scanned": 64}
    ahead = devnet.track(watched, {"scanned": 66})  # a backend two blocks behind the last one: wait for it
    assert ahead.cursor == {"scanned": 66} and ahead.rpc_calls == 2


def test_an_unusable_info_list_is_a_transient_rpc_error(devnet: Devnet, monkeypatch: pytest.MonkeyPatch) -> None:
    devnet.mine(2)
    monkeypatch.setitem(tron_server.ROUTES, "/wallet/gettransactioninfobyblocknum", lambda chain, body: {"what": 1})
    with pytest.raises(ChainRpcError, match="no usable info list") as info:
        devnet.adapter.track(unknown(1), {"scanned": 0})
    assert info.value.transient
    monkeypatch.setitem(tron_server.ROUTES, "/wallet/gettransactioninfobyblocknum",
                        lambda chain, body: [{"id": "ab" * 32, "blockNumber": 7}])
    with pytest.raises(ChainRpcError, match="of block 7"):
        devnet.adapter.track(unknown(1), {"scanned": 0})


def test_the_genesis_check_on_first_use_is_counted(devnet: Devnet) -> None:
    spec = devnet.adapter.spec
    devnet.adapter = TronAdapter(replace(spec, options={**spec.options, "genesis_block_id": devnet.chain.blocks[0].block_id}))
    devnet.mine(2)
    assert devnet.track(unknown(1), {"scanned": 0}).rpc_calls == 1 + 2 + 2  # genesis, heads, blocks 1 and 2
    assert devnet.track(unknown(1), {"scanned": 2}).rpc_calls == 2
