"""The devnet Solana cluster in-process (no HTTP): slots, blockhash expiry, commitment levels, the
ledger, faucets, and the JSON-RPC shapes the adapter depends on. LiteSVM runs for real here."""

from __future__ import annotations

import base64

import pytest
from solders.keypair import Keypair
from solders.message import Message
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

from devnet.solana.cluster import Cluster, ClusterConfig
from devnet.solana.errors import RpcError, describe_error
from devnet.solana.methods import METHODS
from devnet.solana.server import handle

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
SOL = 10**9


@pytest.fixture
def cluster() -> Cluster:
    return Cluster(ClusterConfig(slot_ms=0, blockhash_max_age=10, confirm_depth=1, finalize_depth=3), [(USDC, 6)])


def call(cluster: Cluster, method: str, *params: object) -> object:
    answer = handle(cluster, {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
    assert answer is not None and answer["id"] == 7
    if "error" in answer:
        raise RpcError(answer["error"]["code"], answer["error"]["message"], answer["error"].get("data"))
    return answer["result"]


def funded(cluster: Cluster, lamports: int = 10 * SOL) -> Keypair:
    key = Keypair()
    cluster.airdrop(key.pubkey(), lamports)
    return key


def transfer_tx(cluster: Cluster, key: Keypair, lamports: int, blockhash: str | None = None) -> str:
    from solders.hash import Hash

    recent = Hash.from_string(blockhash or call(cluster, "getLatestBlockhash", {"commitment": "processed"})["value"]["blockhash"])
    message = Message.new_with_blockhash(
        [transfer(TransferParams(from_pubkey=key.pubkey(), to_pubkey=Keypair().pubkey(), lamports=lamports))], key.pubkey(), recent)
    return base64.b64encode(bytes(Transaction([key], message, recent))).decode()


def send(cluster: Cluster, raw: str, **config: object) -> str:
    return str(call(cluster, "sendTransaction", raw, {"encoding": "base64", **config}))


# --- slots, blockhashes, commitment -----------------------------------------------------------

def test_each_slot_has_a_new_blockhash_valid_for_max_age_blocks(cluster: Cluster) -> None:
    start = cluster.slot
    assert start == 3  # the cluster starts finalize_depth slots past genesis
    first = call(cluster, "getLatestBlockhash", {"commitment": "processed"})
    assert first["value"]["lastValidBlockHeight"] == start + 10
    cluster.advance(1)
    second = call(cluster, "getLatestBlockhash", {"commitment": "processed"})["value"]
    assert second["blockhash"] != first["value"]["blockhash"] and second["lastValidBlockHeight"] == start + 11
    cluster.advance(9)
    assert call(cluster, "isBlockhashValid", first["value"]["blockhash"], {"commitment": "processed"})["value"] is True
    cluster.advance(1)
    assert call(cluster, "isBlockhashValid", first["value"]["blockhash"], {"commitment": "processed"})["value"] is False
    # the finalized bank is 3 slots behind: it still sees the hash as valid for 3 more slots
    assert call(cluster, "isBlockhashValid", first["value"]["blockhash"], {"commitment": "finalized"})["value"] is True
    assert call(cluster, "isBlockhashValid", "11111111111111111111111111111111")["value"] is False


def test_commitment_levels_trail_the_head(cluster: Cluster) -> None:
    head = cluster.advance(10)
    assert [call(cluster, "getSlot", {"commitment": c}) for c in ("processed", "confirmed", "finalized")] == [
        head, head - 1, head - 3]
    assert call(cluster, "getSlot") == head - 3  # the real node's default commitment is finalized
    assert call(cluster, "getBlockHeight", {"commitment": "confirmed"}) == head - 1
    latest = call(cluster, "getLatestBlockhash", {"commitment": "finalized"})
    assert latest["context"]["slot"] == head - 3 and latest["value"]["lastValidBlockHeight"] == head - 3 + 10


def test_epoch_info_gives_height_and_slot_of_one_bank_at_the_commitment(cluster: Cluster) -> None:
    head = cluster.advance(10)
    info = call(cluster, "getEpochInfo", {"commitment": "finalized"})
    assert (info["blockHeight"], info["absoluteSlot"]) == (head - 3, head - 3)
    assert {"epoch", "slotIndex", "slotsInEpoch", "transactionCount"} <= set(info)
    assert call(cluster, "getEpochInfo", {"commitment": "confirmed"})["blockHeight"] == head - 1
    assert call(cluster, "getEpochInfo")["absoluteSlot"] == head - 3  # default commitment: finalized


def test_signature_statuses_say_how_far_the_node_was(cluster: Cluster) -> None:
    # The context slot is the processed bank's: never behind any commitment's height
    head = cluster.advance(5)
    unknown = call(cluster, "getSignatureStatuses", [str(Keypair().sign_message(b"x"))], {"searchTransactionHistory": True})
    assert unknown == {"context": {"slot": head, "apiVersion": unknown["context"]["apiVersion"]}, "value": [None]}


def test_a_transaction_goes_processed_confirmed_finalized(cluster: Cluster) -> None:
    key = funded(cluster)
    signature = send(cluster, transfer_tx(cluster, key, SOL))
    statuses = []
    for _ in range(4):
        statuses.append(call(cluster, "getSignatureStatuses", [signature])["value"][0])
        cluster.advance(1)
    assert [s["confirmationStatus"] for s in statuses] == ["processed", "confirmed", "confirmed", "finalized"]
    assert [s["confirmations"] for s in statuses] == [0, 1, 2, None]
    assert statuses[0]["err"] is None and statuses[0]["status"] == {"Ok": None}
    assert call(cluster, "getSignatureStatuses", [Keypair().sign_message(b"x").__str__()])["value"] == [None]


def test_get_transaction_is_served_at_its_commitment_with_fee_and_balances(cluster: Cluster) -> None:
    key = funded(cluster)
    signature = send(cluster, transfer_tx(cluster, key, SOL))
    assert call(cluster, "getTransaction", signature, {"commitment": "finalized"}) is None
    cluster.advance(3)
    found = call(cluster, "getTransaction", signature, {"commitment": "finalized", "maxSupportedTransactionVersion": 0})
    meta = found["meta"]
    assert meta["fee"] == 5000 and meta["err"] is None and found["version"] == "legacy"
    assert meta["preBalances"][0] - meta["postBalances"][0] == SOL + 5000
    assert found["transaction"]["message"]["accountKeys"][0] == str(key.pubkey())
    with pytest.raises(RpcError, match="confirmed"):
        call(cluster, "getTransaction", signature, {"commitment": "processed"})
    block = call(cluster, "getBlock", found["slot"], {"transactionDetails": "signatures"})
    assert signature in block["signatures"] and block["blockHeight"] == found["slot"]
    with pytest.raises(RpcError, match="Block not available"):
        call(cluster, "getBlock", cluster.slot + 5)


def test_the_status_cache_forgets_old_signatures_unless_history_is_searched() -> None:
    cluster = Cluster(ClusterConfig(slot_ms=0, status_cache_slots=5))
    key = funded(cluster)
    signature = send(cluster, transfer_tx(cluster, key, SOL))
    cluster.advance(6)
    assert call(cluster, "getSignatureStatuses", [signature])["value"] == [None]
    assert call(cluster, "getSignatureStatuses", [signature], {"searchTransactionHistory": True})["value"][0]["slot"] == 4


def test_latest_blockhash_context_slot_is_the_slot_of_that_blockhash(cluster: Cluster) -> None:
    # The expiry proof needs it: a transaction with this blockhash can only land after that slot
    head = cluster.advance(5)
    for commitment, slot in (("processed", head), ("confirmed", head - 1), ("finalized", head - 3)):
        latest = call(cluster, "getLatestBlockhash", {"commitment": commitment})
        assert latest["context"]["slot"] == slot
        assert call(cluster, "getBlock", slot, {"commitment": "processed", "transactionDetails": "none"})["blockhash"] == \
            latest["value"]["blockhash"]


def test_signatures_for_address_newest_first_at_finalized_with_paging(cluster: Cluster) -> None:
    key = funded(cluster)  # the airdrop names it too
    signatures = [send(cluster, transfer_tx(cluster, key, SOL))]
    cluster.advance(1)
    signatures += [send(cluster, transfer_tx(cluster, key, 2 * SOL)), send(cluster, transfer_tx(cluster, key, 3 * SOL))]
    address = str(key.pubkey())
    confirmed = call(cluster, "getSignaturesForAddress", address, {"commitment": "confirmed"})
    assert (confirmed[0]["signature"], confirmed[0]["confirmationStatus"]) == (signatures[0], "confirmed")  # the newer are not yet
    cluster.advance(3)
    listed = call(cluster, "getSignaturesForAddress", address)  # default commitment: finalized
    assert [entry["signature"] for entry in listed][:3] == signatures[::-1]  # newest first, last executed first
    assert listed[0] == {"signature": signatures[2], "slot": cluster.slot - 3, "err": None, "memo": None,
                         "blockTime": listed[0]["blockTime"], "confirmationStatus": "finalized"}
    assert len(listed) == 4 and listed[3]["slot"] == listed[2]["slot"]  # and the airdrop (same slot) before them
    page = call(cluster, "getSignaturesForAddress", address, {"limit": 2})
    rest = call(cluster, "getSignaturesForAddress", address, {"limit": 2, "before": page[-1]["signature"]})
    assert page + rest == listed
    assert call(cluster, "getSignaturesForAddress", address, {"until": signatures[0]}) == listed[:2]
    assert call(cluster, "getSignaturesForAddress", address, {"before": str(Keypair().sign_message(b"x"))}) == []
    with pytest.raises(RpcError) as info:
        call(cluster, "getSignaturesForAddress", address, {"commitment": "finalized", "minContextSlot": cluster.slot - 2})
    assert info.value.code == -32016 and info.value.data == {"contextSlot": cluster.slot - 3}
    assert call(cluster, "getSignaturesForAddress", address, {"minContextSlot": cluster.slot - 3}) == listed
    for config in ({"commitment": "processed"}, {"limit": 1001}, {"limit": 0}):
        with pytest.raises(RpcError) as info:
            call(cluster, "getSignaturesForAddress", address, config)
        assert info.value.code == -32602


def test_a_node_without_transaction_history() -> None:
    # As a validator started without --enable-rpc-transaction-history: the status cache only
    cluster = Cluster(ClusterConfig(slot_ms=0, status_cache_slots=5, transaction_history=False))
    key = funded(cluster)
    signature = send(cluster, transfer_tx(cluster, key, SOL))
    assert call(cluster, "getSignatureStatuses", [signature], {"searchTransactionHistory": True})["value"][0] is not None
    cluster.advance(6)
    # searchTransactionHistory is silently ignored: "unknown" although it landed
    assert call(cluster, "getSignatureStatuses", [signature], {"searchTransactionHistory": True})["value"] == [None]
    for method, params in (("getSignaturesForAddress", [str(key.pubkey())]), ("getTransaction", [signature]),
                           ("getBlock", [4])):
        with pytest.raises(RpcError) as info:
            call(cluster, method, *params)
        assert (info.value.code, info.value.message) == (-32011, "Transaction history is not available from this node")
    assert call(cluster, "devnet_info")["transactionHistory"] is False


def test_a_pruned_ledger_keeps_the_history_of_the_newest_slots_only() -> None:
    cluster = Cluster(ClusterConfig(slot_ms=0, status_cache_slots=5, ledger_slots=10))
    key = funded(cluster)
    signature = send(cluster, transfer_tx(cluster, key, SOL))
    landed_at = cluster.slot
    cluster.advance(9)
    assert call(cluster, "minimumLedgerSlot") == landed_at
    assert call(cluster, "getSignatureStatuses", [signature], {"searchTransactionHistory": True})["value"][0]["slot"] == landed_at
    cluster.advance(1)
    assert call(cluster, "minimumLedgerSlot") == landed_at + 1
    assert call(cluster, "getSignatureStatuses", [signature], {"searchTransactionHistory": True})["value"] == [None]
    assert call(cluster, "getSignaturesForAddress", str(key.pubkey())) == []
    assert call(cluster, "getTransaction", signature) is None
    with pytest.raises(RpcError) as info:
        call(cluster, "getBlock", landed_at)
    assert info.value.code == -32001 and f"First available block: {landed_at + 1}" in info.value.message


# --- sendTransaction like a validator -----------------------------------------------------------

def test_a_repeat_with_preflight_is_already_processed_and_without_it_the_signature(cluster: Cluster) -> None:
    key = funded(cluster)
    raw = transfer_tx(cluster, key, SOL)
    signature = send(cluster, raw)
    with pytest.raises(RpcError) as info:
        send(cluster, raw)
    assert (info.value.code, info.value.data["err"]) == (-32002, "AlreadyProcessed")
    assert info.value.message == "Transaction simulation failed: This transaction has already been processed"
    assert send(cluster, raw, skipPreflight=True) == signature
    assert cluster.svm.get_balance(key.pubkey()) == 10 * SOL - SOL - 5000  # moved once


def test_an_expired_blockhash_is_refused_in_preflight_and_dropped_without_it(cluster: Cluster) -> None:
    key = funded(cluster)
    raw = transfer_tx(cluster, key, SOL)
    cluster.advance(11)
    with pytest.raises(RpcError) as info:
        send(cluster, raw)
    assert (info.value.code, info.value.data["err"]) == (-32002, "BlockhashNotFound")
    assert "Blockhash not found" in info.value.message
    signature = send(cluster, raw, skipPreflight=True)  # accepted, then dropped by the "leader"
    assert call(cluster, "getSignatureStatuses", [signature], {"searchTransactionHistory": True})["value"] == [None]
    assert cluster.svm.get_balance(key.pubkey()) == 10 * SOL


def test_preflight_failures_carry_the_simulation_result(cluster: Cluster) -> None:
    key = funded(cluster, SOL)
    with pytest.raises(RpcError) as info:
        send(cluster, transfer_tx(cluster, key, 5 * SOL))
    assert info.value.code == -32002
    assert info.value.data["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert info.value.message == "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    assert any("insufficient lamports" in line for line in info.value.data["logs"])
    with pytest.raises(RpcError) as info:
        send(cluster, transfer_tx(cluster, Keypair(), 1))
    assert info.value.data["err"] == "AccountNotFound"


def test_a_bad_signature_is_refused_in_preflight_and_never_lands(cluster: Cluster) -> None:
    key = funded(cluster)
    tx = VersionedTransaction.from_bytes(base64.b64decode(transfer_tx(cluster, key, SOL)))
    forged = Transaction.populate(Message.from_bytes(bytes(tx.message)), [Keypair().sign_message(bytes(tx.message))])
    raw = base64.b64encode(bytes(forged)).decode()
    with pytest.raises(RpcError) as info:
        send(cluster, raw)
    assert (info.value.code, info.value.message) == (-32003, "Transaction signature verification failure")
    send(cluster, raw, skipPreflight=True)
    assert cluster.landed(str(forged.signatures[0])) is None


def test_a_failed_transaction_sent_without_preflight_lands_and_pays_its_fee(cluster: Cluster) -> None:
    key = funded(cluster, SOL)
    signature = send(cluster, transfer_tx(cluster, key, 5 * SOL), skipPreflight=True)
    status = call(cluster, "getSignatureStatuses", [signature])["value"][0]
    assert status["err"] == {"InstructionError": [0, {"Custom": 1}]} and status["status"] == {"Err": status["err"]}
    assert cluster.landed(signature).fee == 5000  # type: ignore[union-attr]
    assert cluster.svm.get_balance(key.pubkey()) == SOL - 5000


@pytest.mark.parametrize(("params", "code"), [([], -32602), (["!!", {"encoding": "base64"}], -32602),
                                              (["abc", {"encoding": "base32"}], -32602)])
def test_undecodable_transactions_are_invalid_params(cluster: Cluster, params: list[object], code: int) -> None:
    with pytest.raises(RpcError) as info:
        call(cluster, "sendTransaction", *params)
    assert info.value.code == code


# --- faucets and accounts -----------------------------------------------------------------------

def test_identical_faucet_requests_in_one_slot_are_distinct_transactions(cluster: Cluster) -> None:
    owner = Keypair().pubkey()
    first, second = cluster.airdrop(owner, SOL), cluster.airdrop(owner, SOL)
    assert first != second and cluster.svm.get_balance(owner) == 2 * SOL
    with pytest.raises(RpcError, match="rent"):
        cluster.airdrop(Keypair().pubkey(), 1)  # a new account below the rent-exempt minimum


def test_minting_creates_the_token_account_and_token_reads_follow_the_real_shapes(cluster: Cluster) -> None:
    from solders.token.associated import get_associated_token_address
    from solders.pubkey import Pubkey

    owner = Keypair().pubkey()
    call(cluster, "devnet_mintTo", {"owner": str(owner), "mint": USDC, "amount": 2_500_000})
    call(cluster, "devnet_mintTo", str(owner), USDC, 1)  # positional form, account exists already
    ata = str(get_associated_token_address(owner, Pubkey.from_string(USDC)))
    assert call(cluster, "getTokenAccountBalance", ata)["value"] == {
        "amount": "2500001", "decimals": 6, "uiAmount": 2.500001, "uiAmountString": "2.500001"}
    info = call(cluster, "getAccountInfo", ata, {"encoding": "base64"})["value"]
    assert info["owner"] == "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA" and info["space"] == 165
    assert call(cluster, "getAccountInfo", str(Keypair().pubkey()), {"encoding": "base64"})["value"] is None
    with pytest.raises(RpcError, match="could not find account"):
        call(cluster, "getTokenAccountBalance", str(Keypair().pubkey()))
    with pytest.raises(RpcError, match="not a Token account"):
        call(cluster, "getTokenAccountBalance", USDC)
    with pytest.raises(RpcError, match="Invalid param"):
        call(cluster, "getBalance", "not-base58-0OIl")
    assert call(cluster, "getMinimumBalanceForRentExemption", 165) == 2_039_280
    assert cluster.svm.get_balance(owner) is None  # the owner paid nothing


def test_the_json_rpc_envelope(cluster: Cluster) -> None:
    assert handle(cluster, {"jsonrpc": "2.0", "id": 1, "method": "nope"})["error"]["code"] == -32601  # type: ignore[index]
    assert handle(cluster, {"jsonrpc": "2.0", "id": 1})["error"]["code"] == -32600  # type: ignore[index]
    assert handle(cluster, {"jsonrpc": "2.0", "id": 1, "method": "getSlot", "params": {}})["error"]["code"] == -32602  # type: ignore[index]
    assert call(cluster, "getHealth") == "ok"
    assert call(cluster, "getGenesisHash") == cluster.genesis_hash
    assert {"getLatestBlockhash", "isBlockhashValid", "sendTransaction", "getSignatureStatuses", "getTransaction",
            "getBalance", "getAccountInfo", "getTokenAccountBalance", "getMinimumBalanceForRentExemption", "getSlot",
            "getBlockHeight", "getEpochInfo", "getHealth", "requestAirdrop", "devnet_mintTo", "getSignaturesForAddress",
            "minimumLedgerSlot", "getBlock"} <= set(METHODS)


@pytest.mark.parametrize(("err", "text"), [
    ("BlockhashNotFound", "Blockhash not found"),
    ({"InstructionError": [1, {"Custom": 17}]}, "Error processing Instruction 1: custom program error: 0x11"),
    ({"InsufficientFundsForRent": {"account_index": 2}}, "Transaction results in an account (2) with insufficient funds for rent"),
    ("SomethingNew", "SomethingNew"),
])
def test_errors_are_worded_like_the_real_node(err: object, text: str) -> None:
    assert describe_error(err) == text
