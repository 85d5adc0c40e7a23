"""The TRON devnet's chain model in-process: the checks and fees the adapter's integration tests rely on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tronpy.keys import PrivateKey, to_hex_address

from chains import tron_tx
from devnet.tron.chain import Refused, Token, TronChain
from devnet.tron.fees import Fees

USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
ALICE = PrivateKey(bytes.fromhex("a1" * 32))
BOB = PrivateKey(bytes.fromhex("b0" * 32))
TRX = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def address(key: PrivateKey) -> str:
    return key.public_key.to_base58check_address()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_chain(clock: Clock, **fees: int) -> TronChain:
    return TronChain([Token(to_hex_address(USDT), "USDT", 6)], Fees(**fees), solidify_depth=3, clock=clock)


@pytest.fixture
def chain(clock: Clock) -> TronChain:
    return make_chain(clock)


def context(chain: TronChain, expires_in_ms: int = 60_000) -> dict[str, Any]:
    head = chain.head
    return {"ref_block_bytes": head.block_id[12:16], "ref_block_hash": head.block_id[16:32],
            "expiration": head.timestamp + expires_in_ms, "timestamp": head.timestamp}


def signed(raw_data: dict[str, Any], key: PrivateKey) -> dict[str, Any]:
    txid, raw = tron_tx.txid_of(raw_data)
    return {"raw_data": raw_data, "raw_data_hex": raw.hex(), "txID": txid,
            "signature": [key.sign_msg_hash(bytes.fromhex(txid)).hex()], "visible": False}


def trx(chain: TronChain, sender: PrivateKey, to: str, amount: int, **ctx: int) -> dict[str, Any]:
    return signed(tron_tx.trx_transfer_raw_data(address(sender), to, amount, context(chain, **ctx)), sender)


def usdt(chain: TronChain, sender: PrivateKey, to: str, amount: int, fee_limit: int = 30 * TRX) -> dict[str, Any]:
    return signed(tron_tx.trc20_transfer_raw_data(address(sender), USDT, to, amount, fee_limit, context(chain)), sender)


def mine(chain: TronChain, clock: Clock, blocks: int = 1) -> None:
    for _ in range(blocks):
        clock.now += 0.25
        chain.produce_block()


def balance(chain: TronChain, key: PrivateKey | str) -> int:
    found = chain.account(address(key) if isinstance(key, PrivateKey) else key)
    return found["balance"] if found else 0


def tokens(chain: TronChain, key: PrivateKey | str) -> int:
    owner = address(key) if isinstance(key, PrivateKey) else key
    answer = chain.constant_call(USDT, owner, bytes.fromhex("70a08231") + bytes(12) + bytes.fromhex(to_hex_address(owner))[1:])
    return int(answer["constant_result"][0], 16)


def test_a_trx_transfer_that_activates_an_account_burns_the_activation_fees(chain: TronChain, clock: Clock) -> None:
    chain.fund(address(ALICE), 10 * TRX)
    txid = chain.broadcast(trx(chain, ALICE, address(BOB), 2 * TRX))
    assert chain.pending_transaction(txid)["txID"] == txid and chain.transaction_info(txid) == {}
    mine(chain, clock)
    info = chain.transaction_info(txid)
    assert info["fee"] == 1_100_000 and info["receipt"] == {"net_fee": 100_000} and info["blockNumber"] == 1
    assert balance(chain, ALICE) == 10 * TRX - 2 * TRX - 1_100_000 and balance(chain, BOB) == 2 * TRX


def test_a_trx_transfer_to_an_account_burns_bandwidth_or_uses_free_bandwidth(clock: Clock) -> None:
    for free, expect_fee in ((0, True), (600, False)):
        chain = make_chain(clock, free_bandwidth=free)
        chain.fund(address(ALICE), 10 * TRX)
        chain.fund(address(BOB), 1)
        doc = trx(chain, ALICE, address(BOB), TRX)
        size = tron_tx.bandwidth_bytes(doc["raw_data"])
        txid = chain.broadcast(doc)
        mine(chain, clock)
        info = chain.transaction_info(txid)
        if expect_fee:
            assert info["fee"] == size * 1000 and info["receipt"] == {"net_fee": size * 1000}
        else:
            assert "fee" not in info and info["receipt"] == {"net_usage": size}
        assert balance(chain, ALICE) == 9 * TRX - info.get("fee", 0)


def test_a_trc20_transfer_burns_energy_more_for_a_new_holder(chain: TronChain, clock: Clock) -> None:
    chain.fund(address(ALICE), 100 * TRX)
    chain.mint(USDT, address(ALICE), 50)
    first = chain.broadcast(usdt(chain, ALICE, address(BOB), 20))
    mine(chain, clock)
    second = chain.broadcast(usdt(chain, ALICE, address(BOB), 5))
    mine(chain, clock)
    new_holder, holder = chain.transaction_info(first), chain.transaction_info(second)
    assert new_holder["receipt"]["energy_fee"] == 130_000 * 100 and holder["receipt"]["energy_fee"] == 65_000 * 100
    assert new_holder["receipt"]["result"] == "SUCCESS" and new_holder["log"][0]["data"] == f"{20:064x}"
    assert tokens(chain, ALICE) == 25 and tokens(chain, BOB) == 25
    assert balance(chain, ALICE) == 100 * TRX - new_holder["fee"] - holder["fee"]
    assert chain.account(address(BOB)) is None  # receiving a TRC20 does not activate an account
    assert chain.transaction(first)["ret"] == [{"contractRet": "SUCCESS"}]


def test_a_fee_limit_below_the_energy_cost_runs_out_of_energy_and_burns_the_limit(chain: TronChain, clock: Clock) -> None:
    chain.fund(address(ALICE), 100 * TRX)
    chain.mint(USDT, address(ALICE), 50)
    txid = chain.broadcast(usdt(chain, ALICE, address(BOB), 20, fee_limit=TRX))
    mine(chain, clock)
    info = chain.transaction_info(txid)
    assert info["result"] == "FAILED" and info["receipt"]["result"] == "OUT_OF_ENERGY"
    assert info["receipt"]["energy_fee"] == TRX and info["fee"] == TRX + info["receipt"]["net_fee"]
    assert tokens(chain, ALICE) == 50 and tokens(chain, BOB) == 0
    assert balance(chain, ALICE) == 100 * TRX - info["fee"]


def test_a_transfer_of_tokens_the_sender_lacks_reverts_with_a_fee(chain: TronChain, clock: Clock) -> None:
    chain.fund(address(ALICE), 100 * TRX)
    txid = chain.broadcast(usdt(chain, ALICE, address(BOB), 1))
    mine(chain, clock)
    info = chain.transaction_info(txid)
    assert info["receipt"]["result"] == "REVERT" and info["fee"] > 0 and bytes.fromhex(info["resMessage"])


@pytest.mark.parametrize(
    ("prepare", "code"),
    [
        (lambda chain: trx(chain, BOB, address(ALICE), TRX), "CONTRACT_VALIDATE_ERROR"),  # BOB does not exist
        (lambda chain: trx(chain, ALICE, address(BOB), 11 * TRX), "CONTRACT_VALIDATE_ERROR"),  # too little TRX
        (lambda chain: trx(chain, ALICE, address(ALICE), TRX), "CONTRACT_VALIDATE_ERROR"),  # to itself
        (lambda chain: {**trx(chain, ALICE, address(BOB), TRX), "signature": [BOB.sign_msg_hash(b"1" * 32).hex()]},
         "SIGERROR"),
        (lambda chain: {**trx(chain, ALICE, address(BOB), TRX), "signature": []}, "SIGERROR"),
        (lambda chain: trx(chain, ALICE, address(BOB), TRX, expires_in_ms=0), "TRANSACTION_EXPIRATION_ERROR"),
        (lambda chain: trx(chain, ALICE, address(BOB), TRX, expires_in_ms=25 * 3600_000), "TRANSACTION_EXPIRATION_ERROR"),
        (lambda chain: signed({**tron_tx.trx_transfer_raw_data(address(ALICE), address(BOB), TRX, context(chain)),
                               "ref_block_hash": "ff" * 8}, ALICE), "TAPOS_ERROR"),
        (lambda chain: signed(tron_tx.trc20_transfer_raw_data(address(ALICE), address(BOB), address(BOB), 1, TRX,
                                                              context(chain)), ALICE), "CONTRACT_VALIDATE_ERROR"),
    ],
)
def test_broadcasts_are_refused_with_java_trons_codes(chain: TronChain, prepare: Any, code: str) -> None:
    chain.fund(address(ALICE), 10 * TRX)
    with pytest.raises(Refused) as info:
        chain.broadcast(prepare(chain))
    assert info.value.code == code


def test_no_trx_for_the_bandwidth_is_a_bandwidth_error(chain: TronChain) -> None:
    chain.fund(address(ALICE), 1000)
    chain.fund(address(BOB), 1)
    with pytest.raises(Refused) as info:
        chain.broadcast(trx(chain, ALICE, address(BOB), 1))
    assert info.value.code == "BANDWITH_ERROR"


def test_the_same_transaction_twice_is_a_duplicate_pooled_or_mined(chain: TronChain, clock: Clock) -> None:
    chain.fund(address(ALICE), 10 * TRX)
    doc = trx(chain, ALICE, address(BOB), TRX)
    chain.broadcast(doc)
    for _ in range(2):
        with pytest.raises(Refused, match="DUP_TRANSACTION_ERROR"):
            chain.broadcast(json.loads(json.dumps(doc)))
        mine(chain, clock)


def test_pool_members_see_each_other(chain: TronChain) -> None:
    chain.fund(address(ALICE), 3 * TRX)
    chain.fund(address(BOB), 1)
    chain.broadcast(trx(chain, ALICE, address(BOB), 2 * TRX))
    with pytest.raises(Refused, match="balance is not sufficient"):
        chain.broadcast(trx(chain, ALICE, address(BOB), TRX))


def test_blocks_solidify_three_deep(chain: TronChain, clock: Clock) -> None:
    chain.fund(address(ALICE), 10 * TRX)
    txid = chain.broadcast(trx(chain, ALICE, address(BOB), TRX))
    mine(chain, clock)  # block 1 holds it
    assert chain.transaction_info(txid, solid=True) == {} and chain.transaction(txid, solid=True) == {}
    mine(chain, clock)
    assert chain.solid.number == 0
    mine(chain, clock)  # head 3: block 1 has 3 confirmations
    assert chain.solid.number == 1 and chain.transaction_info(txid, solid=True)["blockNumber"] == 1


def test_the_solidity_api_serves_blocks_by_number_only_once_solidified(chain: TronChain, clock: Clock) -> None:
    from devnet.tron.server import ROUTES

    mine(chain, clock, 5)  # head 5, solid 3
    by_num, by_range = ROUTES["/walletsolidity/getblockbynum"], ROUTES["/walletsolidity/getblockbylimitnext"]
    assert by_num(chain, {"num": 3})["blockID"] == chain.blocks[3].block_id
    assert by_num(chain, {"num": 4}) == {}  # not solidified yet: a solidity node does not have it
    assert ROUTES["/wallet/getblockbynum"](chain, {"num": 4})["blockID"] == chain.blocks[4].block_id
    listed = by_range(chain, {"startNum": 1, "endNum": 10})["block"]
    assert [b["block_header"]["raw_data"]["number"] for b in listed] == [1, 2, 3]  # as far as it has them
    assert [b["block_header"]["raw_data"]["parentHash"] for b in listed] == [chain.blocks[n].block_id for n in (0, 1, 2)]
    assert by_range(chain, {"startNum": 4, "endNum": 6}) == {}
    assert by_range(chain, {"startNum": 0, "endNum": 101}) == {}  # java-tron serves at most 100 per call
    assert len(ROUTES["/wallet/getblockbylimitnext"](chain, {"startNum": 1, "endNum": 10})["block"]) == 5


def test_a_pooled_transaction_past_its_expiration_at_block_time_is_dropped(chain: TronChain, clock: Clock) -> None:
    chain.fund(address(ALICE), 10 * TRX)
    mine(chain, clock)
    doc = trx(chain, ALICE, address(BOB), TRX, expires_in_ms=10)
    chain.broadcast(doc)
    # A block without it lands first, past its expiration: at the next block it no longer validates.
    pooled, chain.pending = chain.pending, {}
    clock.now += 1
    chain.produce_block()
    chain.pending = pooled
    mine(chain, clock)
    assert chain.transaction_info(doc["txID"]) == {} and chain.pending_transaction(doc["txID"]) == {}
    assert balance(chain, BOB) == 0


def test_constant_calls(chain: TronChain) -> None:
    chain.mint(USDT, address(ALICE), 123)
    assert tokens(chain, ALICE) == 123
    assert int(chain.constant_call(USDT, None, bytes.fromhex("313ce567"))["constant_result"][0], 16) == 6
    assert chain.constant_call(address(BOB), None, bytes.fromhex("70a08231") + bytes(32))["result"]["code"] == \
        "CONTRACT_VALIDATE_ERROR"
    assert "message" in chain.constant_call(USDT, None, bytes.fromhex("deadbeef"))["result"]


# --- short forks ---------------------------------------------------------------------------------


def test_a_fork_replaces_unsolidified_empty_blocks_only(chain: TronChain, clock: Clock) -> None:
    from devnet.tron.chain import BadRequest

    mine(chain, clock, 5)  # head 5, solid 3
    before = list(chain.blocks)
    replaced = chain.fork(4)
    assert [b.number for b in replaced] == [4, 5] and chain.head.number == 5
    assert chain.blocks[:4] == before[:4]
    assert [chain.blocks[n].block_id for n in (4, 5)] != [before[n].block_id for n in (4, 5)]
    assert chain.blocks[4].parent_id == before[3].block_id and chain.blocks[5].parent_id == chain.blocks[4].block_id
    assert chain.blocks[4].timestamp == before[4].timestamp  # same slots, another witness's blocks
    branch = list(chain.blocks)
    assert chain.fork(5) == branch[5:] and chain.blocks[4] == branch[4] and chain.blocks[5] != branch[5]  # again, shorter
    with pytest.raises(BadRequest, match="unsolidified"):
        chain.fork(3)  # solidified: irreversible
    with pytest.raises(BadRequest, match="unsolidified"):
        chain.fork(6)
    chain.fund(address(ALICE), 10 * TRX)
    chain.broadcast(trx(chain, ALICE, address(BOB), TRX))
    mine(chain, clock)  # block 6 holds a transaction
    with pytest.raises(BadRequest, match="without transactions"):
        chain.fork(5)


def test_a_transaction_whose_reference_was_forked_away_can_never_be_valid(chain: TronChain, clock: Clock) -> None:
    chain.fund(address(ALICE), 10 * TRX)
    mine(chain, clock, 5)
    on_head = trx(chain, ALICE, address(BOB), TRX)  # references the unconfirmed head, block 5
    pooled = trx(chain, ALICE, address(BOB), 2 * TRX)
    chain.broadcast(pooled)
    solid = chain.solid
    safe = signed(tron_tx.trx_transfer_raw_data(address(ALICE), address(BOB), 3 * TRX, {
        "ref_block_bytes": solid.block_id[12:16], "ref_block_hash": solid.block_id[16:32],
        "expiration": chain.head.timestamp + 60_000, "timestamp": chain.head.timestamp}), ALICE)
    chain.fork(4)
    with pytest.raises(Refused) as info:
        chain.broadcast(on_head)
    assert info.value.code == "TAPOS_ERROR"
    mine(chain, clock)  # the pooled one referenced block 5 too: dropped at the next block
    assert chain.transaction_info(pooled["txID"]) == {} and chain.pending_transaction(pooled["txID"]) == {}
    chain.broadcast(safe)  # a solidified reference survives any fork
    mine(chain, clock)
    assert chain.transaction_info(safe["txID"])["blockNumber"] == 7 and balance(chain, BOB) == 3 * TRX


def test_the_fork_endpoint(chain: TronChain, clock: Clock) -> None:
    from devnet.tron.chain import BadRequest
    from devnet.tron.server import ROUTES

    mine(chain, clock, 4)
    old = chain.head.block_id
    answer = ROUTES["/devnet/fork"](chain, {"from": 4})
    assert answer == {"number": 4, "replaced": [old]} and chain.head.block_id != old
    with pytest.raises(BadRequest):
        ROUTES["/devnet/fork"](chain, {})


def test_the_adapter_against_a_fork_that_orphans_the_unconfirmed_head(chain: TronChain, clock: Clock) -> None:
    # TronAdapter over HTTP against this chain (in-process server, manual clock): its build context
    # references the solidified head, which no fork can replace; a transaction built the old way, on
    # the unconfirmed head, is proven dead (EXPIRED, so re-signed) once its expiration is solidified.
    import threading
    from dataclasses import replace

    from chains.base import TransferIntent, TxState
    from chains.errors import ChainRpcError, TransactionRejected
    from chains.registry import load_registry
    from chains.tron import TronAdapter
    from devnet.tron.server import make_server

    server = make_server(chain, "127.0.0.1", 0, {})
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        spec = load_registry("devnet").chain("tron")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        adapter = TronAdapter(replace(spec, rpc_urls=(url,), confirmations=3, options={**spec.options, "expiration_s": 2}))
        chain.fund(address(ALICE), 100 * TRX)
        chain.fund(address(BOB), TRX)
        mine(chain, clock, 5)  # head 5, solid 3
        intent = TransferIntent(address(ALICE), address(BOB), TRX, spec.native)

        def sign(context: dict[str, Any]) -> Any:
            unsigned = adapter.build(intent, adapter.quote_fee(intent), None, context)
            return replace(adapter.attach_signature(unsigned.payload, [ALICE.sign_msg_hash(unsigned.digests[0]).to_bytes()]),
                           context=context)

        built = adapter.build_context(intent)
        assert (built["ref_block_bytes"], built["ref_block_hash"]) == (chain.blocks[3].block_id[12:16], chain.blocks[3].block_id[16:32])
        assert built["timestamp"] == chain.head.timestamp
        safe = sign(built)
        on_head = sign(context(chain, expires_in_ms=2_000))  # as build_context used to: the unconfirmed head
        chain.fork(4)  # a short fork replaces blocks 4 and 5

        assert adapter.broadcast(safe) == safe.tx_hash  # its reference cannot be orphaned
        with pytest.raises(ChainRpcError, match="waiting until its expiration is solidified"):
            adapter.broadcast(on_head)  # TAPOS_ERROR, and not provable yet
        assert adapter.get_status(on_head).state is TxState.NOT_FOUND
        while chain.solid.timestamp < on_head.context["expiration"]:
            mine(chain, clock)
        assert adapter.get_status(on_head).state is TxState.EXPIRED
        assert adapter.proves_unlandable(on_head)
        with pytest.raises(TransactionRejected) as info:
            adapter.broadcast(on_head)
        assert info.value.reason == "expired"
        assert adapter.get_status(safe).state is TxState.INCLUDED
    finally:
        server.shutdown()
        server.server_close()
