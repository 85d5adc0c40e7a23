"""The devnet Solana node's prioritization fees in-process: getRecentPrioritizationFees answers from
what landed transactions paid (per block, per written account), devnet_setPrioritizationFee sets a
floor, and LiteSVM charges a ComputeBudget price for real (getTransaction's fee, getFeeForMessage
and the balance agree)."""

from __future__ import annotations

import base64

import pytest
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from devnet.solana.cluster import Cluster, ClusterConfig
from devnet.solana.errors import RpcError
from devnet.solana.server import handle

SOL = 10**9


@pytest.fixture
def cluster() -> Cluster:
    return Cluster(ClusterConfig(slot_ms=0, blockhash_max_age=10, confirm_depth=1, finalize_depth=3))


def call(cluster: Cluster, method: str, *params: object) -> object:
    answer = handle(cluster, {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
    assert answer is not None
    if "error" in answer:
        raise RpcError(answer["error"]["code"], answer["error"]["message"])
    return answer["result"]


def _message(cluster: Cluster, key: Keypair, to: Pubkey, price: int | None, limit: int = 1_000) -> Message:
    budget = [set_compute_unit_limit(limit)] + ([set_compute_unit_price(price)] if price is not None else [])
    return Message.new_with_blockhash([*budget, transfer(TransferParams(from_pubkey=key.pubkey(), to_pubkey=to, lamports=SOL))],
                                      key.pubkey(), cluster.svm.latest_blockhash())


def _send(cluster: Cluster, key: Keypair, to: Pubkey, price: int | None, limit: int = 1_000) -> str:
    message = _message(cluster, key, to, price, limit)
    raw = bytes(Transaction([key], message, message.recent_blockhash))
    return str(call(cluster, "sendTransaction", base64.b64encode(raw).decode(), {"encoding": "base64"}))


def _funded(cluster: Cluster) -> Keypair:
    key = Keypair()
    cluster.airdrop(key.pubkey(), 10 * SOL)
    return key


def _fees(cluster: Cluster, *accounts: object) -> dict[int, int]:
    answer = call(cluster, "getRecentPrioritizationFees", [str(a) for a in accounts])
    assert isinstance(answer, list)
    return {entry["slot"]: entry["prioritizationFee"] for entry in answer}


def test_the_answer_covers_the_recent_slots_oldest_first(cluster: Cluster) -> None:
    cluster.advance(200)
    answer = call(cluster, "getRecentPrioritizationFees")
    assert isinstance(answer, list) and len(answer) == 150
    assert [entry["slot"] for entry in answer] == list(range(cluster.slot - 149, cluster.slot + 1))
    assert {entry["prioritizationFee"] for entry in answer} == {0}  # nothing paid


def test_a_slot_reports_what_it_took_to_write_the_accounts(cluster: Cluster) -> None:
    busy, quiet, hot, cold = _funded(cluster), _funded(cluster), Keypair().pubkey(), Keypair().pubkey()
    cluster.advance(1)
    slot = cluster.slot
    _send(cluster, busy, hot, 7_000)
    _send(cluster, quiet, cold, 2_000)
    fees = _fees(cluster, hot)
    assert fees[slot] == 7_000  # the one transaction writing `hot` paid 7,000
    assert _fees(cluster, cold)[slot] == 2_000
    assert _fees(cluster)[slot] == 2_000  # no account: the block's cheapest
    assert _fees(cluster, Keypair().pubkey())[slot] == 2_000  # an account nobody wrote: the block's cheapest
    assert fees[slot - 1] == 0  # the airdrops paid nothing
    _send(cluster, busy, hot, None)  # one more in the block, without a price
    assert _fees(cluster)[slot] == 0 and _fees(cluster, hot)[slot] == 0  # the account's cheapest writer: 0


def test_the_devnet_floor_makes_every_slot_busy(cluster: Cluster) -> None:
    assert call(cluster, "devnet_setPrioritizationFee", 12_345) == 12_345
    assert set(_fees(cluster, Keypair().pubkey()).values()) == {12_345}
    key = _funded(cluster)
    cluster.advance(1)  # the airdrop, paying nothing, wrote the account too: not in this slot
    _send(cluster, key, Keypair().pubkey(), 50_000)
    assert _fees(cluster, key.pubkey())[cluster.slot] == 50_000  # what landed above the floor still shows
    assert call(cluster, "devnet_info")["prioritizationFeeFloor"] == 12_345  # type: ignore[index]
    call(cluster, "devnet_setPrioritizationFee", 0)
    assert _fees(cluster)[cluster.slot - 1] == 0


@pytest.mark.parametrize(("params", "match"), [
    ([["x" * 44]], "Invalid param"), ([[str(Keypair().pubkey())] * 129], "max 128"), (["abc"], "array"),
])
def test_bad_requests_are_refused_like_the_node(cluster: Cluster, params: list[object], match: str) -> None:
    with pytest.raises(RpcError, match=match):
        call(cluster, "getRecentPrioritizationFees", *params)


@pytest.mark.parametrize("price", [-1, "5", True, 2**64])
def test_a_bad_floor_is_refused(cluster: Cluster, price: object) -> None:
    with pytest.raises(RpcError, match="compute-unit price"):
        call(cluster, "devnet_setPrioritizationFee", price)


def test_the_priority_fee_is_charged_for_real(cluster: Cluster) -> None:
    key = _funded(cluster)
    before = cluster.svm.get_balance(key.pubkey()) or 0
    message = _message(cluster, key, Keypair().pubkey(), 1_500_001)
    fee = call(cluster, "getFeeForMessage", base64.b64encode(bytes(message)).decode())["value"]  # type: ignore[index]
    assert fee == 5000 + 1_501  # ceil(1,000 units x 1.500001 lamports)
    signature = _send(cluster, key, Keypair().pubkey(), 1_500_001)
    assert before - (cluster.svm.get_balance(key.pubkey()) or 0) == SOL + fee
    assert cluster.landed(signature).fee == fee  # type: ignore[union-attr]  # getTransaction's meta.fee


def test_a_price_without_a_limit_is_charged_for_the_default_units(cluster: Cluster) -> None:
    key = _funded(cluster)
    message = Message.new_with_blockhash(
        [set_compute_unit_price(10), transfer(TransferParams(from_pubkey=key.pubkey(), to_pubkey=Keypair().pubkey(),
                                                             lamports=SOL))], key.pubkey(), cluster.svm.latest_blockhash())
    fee = call(cluster, "getFeeForMessage", base64.b64encode(bytes(message)).decode())["value"]  # type: ignore[index]
    before = cluster.svm.get_balance(key.pubkey()) or 0
    raw = bytes(Transaction([key], message, message.recent_blockhash))
    call(cluster, "sendTransaction", base64.b64encode(raw).decode(), {"encoding": "base64"})
    assert before - (cluster.svm.get_balance(key.pubkey()) or 0) - SOL == fee == 5000 + 1  # 2 x 3,000 units x 10
