"""SolanaAdapter decisions that need a node, against scripted node answers; and the transport
mapping against a real (tiny) HTTP server. The answers are shaped like a real node's: the
-32002 preflight failure with its simulation result in `data`, RpcResponse `{context, value}`."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from solders.keypair import Keypair

from chains import solana_tx
from chains.base import FeeQuote, SignedTransaction, TransferIntent, TxState
from chains.errors import ChainError, ChainMismatch, ChainRpcError, MalformedTransaction, TransactionRejected
from chains.registry import load_registry
from chains.solana import SolanaAdapter
from chains.solana_rpc import NodeRpcError, SolanaRpc

SPEC = load_registry("devnet").chain("solana")
SOL, USDC = SPEC.native, SPEC.token("USDC")
MINT = USDC.contract or ""
SENDER, RECEIVER = Keypair.from_seed(bytes(range(32))), Keypair.from_seed(bytes(range(1, 33)))
A, B = str(SENDER.pubkey()), str(RECEIVER.pubkey())
A_ATA, B_ATA = solana_tx.associated_token_address(A, MINT), solana_tx.associated_token_address(B, MINT)
BLOCKHASH = "4QjEBrJnATvydaCoPb7j4cneA5vSJNFsAYHQwRAjAjmQ"
CONTEXT = {"blockhash": BLOCKHASH, "last_valid_block_height": 1150, "blockhash_slot": 1000}
RENT_0, RENT_165 = 890_880, 2_039_280
SOL_FEE = FeeQuote(5000, {"lamports_per_signature": 5000, "signatures": 1, "create_ata": False, "ata_rent": 0})
ATA_FEE = FeeQuote(5000 + RENT_165, {**SOL_FEE.params, "create_ata": True, "ata_rent": RENT_165})
# What quote_fee reserves with the devnet registry's priority-fee cap (50,000 micro-lamports per
# compute unit): 1,000 units for SOL, 20,000 for SPL, 60,000 when the transfer creates the account.
CAP = {"max_compute_unit_price": 50_000}
SOL_QUOTE = FeeQuote(5000 + 50, {**SOL_FEE.params, "compute_unit_limit": 1_000, **CAP})
SPL_QUOTE = FeeQuote(5000 + 1_000, {**SOL_FEE.params, "compute_unit_limit": 20_000, **CAP})
ATA_QUOTE = FeeQuote(5000 + 3_000 + RENT_165, {**ATA_FEE.params, "compute_unit_limit": 60_000, **CAP})

Answer = Callable[[list[Any]], Any]


class FakeNode:
    """Scripted answers per method: a value, a callable(params), or a list consumed in order."""

    endpoint = "http://fake:8899"

    def __init__(self, **answers: Any) -> None:
        self.answers: dict[str, Any] = dict(answers)
        self.calls: list[tuple[str, list[Any]]] = []

    def call(self, method: str, params: list[Any]) -> Any:
        self.calls.append((method, params))
        if method not in self.answers:
            raise AssertionError(f"unexpected call {method}{params}")
        answer = self.answers[method]
        if isinstance(answer, list):
            answer = answer.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer(params) if callable(answer) else answer

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]


def _adapter(node: FakeNode, **options: Any) -> SolanaAdapter:
    adapter = SolanaAdapter(replace(SPEC, options={**SPEC.options, **options}))
    adapter._rpc = node  # type: ignore[assignment]
    return adapter


def _ctx(value: Any, slot: int = 100) -> dict[str, Any]:
    return {"context": {"slot": slot}, "value": value}


LAST_VALID = CONTEXT["last_valid_block_height"]
PAST = LAST_VALID + 1  # the first block height at which the transaction can no longer land


def _epoch(height: int, slot: int | None = None) -> dict[str, Any]:
    """getEpochInfo's answer (no RpcResponse wrapper): block height and slot of one bank."""
    slot = height + 10 if slot is None else slot  # a few skipped slots: slot > height
    return {"absoluteSlot": slot, "blockHeight": height, "epoch": 0, "slotIndex": slot, "slotsInEpoch": 432000,
            "transactionCount": 7}


def _unknown(slot: int) -> dict[str, Any]:
    """getSignatureStatuses: the signature is unknown to a node that is at `slot`."""
    return _ctx([None], slot)


BLOCKHASH_SLOT = CONTEXT["blockhash_slot"]
OTHER = "5" * 88  # some other transaction of the fee payer


def _sig(slot: int, signature: str = OTHER, err: Any = None) -> dict[str, Any]:
    """One getSignaturesForAddress entry (at "finalized")."""
    return {"signature": signature, "slot": slot, "err": err, "memo": None, "blockTime": 1, "confirmationStatus": "finalized"}


# The fee payer's finalized history reaching back before the blockhash, without ours: proof of absence.
HISTORY = [_sig(1100), _sig(BLOCKHASH_SLOT - 10)]


def _history(params: list[Any]) -> list[dict[str, Any]]:
    return list(HISTORY)
NO_HISTORY = NodeRpcError("getSignaturesForAddress", -32011, "Transaction history is not available from this node")
BEHIND = NodeRpcError("getSignaturesForAddress", -32016, "Minimum context slot has not been reached", {"contextSlot": 5})


def _signed(token: Any = SOL, amount: int = 1000, fee: FeeQuote = SOL_FEE) -> SignedTransaction:
    adapter = SolanaAdapter(SPEC)
    unsigned = adapter.build(TransferIntent(A, B, amount, token), fee, None, CONTEXT)
    signed = adapter.attach_signature(unsigned.payload, [bytes(SENDER.sign_message(unsigned.digests[0]))])
    return replace(signed, context=CONTEXT)  # as the pipeline hands it back: with its build context


def _preflight(err: Any, message: str, logs: list[str] | None = None) -> NodeRpcError:
    data = {"err": err, "logs": logs or [], "accounts": None, "unitsConsumed": 0, "returnData": None}
    return NodeRpcError("sendTransaction", -32002, f"Transaction simulation failed: {message}", data)


def _token_account(mint: str, owner: str, amount: int) -> dict[str, Any]:
    data = solana_tx.b58decode(mint) + solana_tx.b58decode(owner) + amount.to_bytes(8, "little") + bytes(93)
    return {"lamports": RENT_165, "owner": solana_tx.TOKEN_PROGRAM, "data": [base64.b64encode(data).decode(), "base64"],
            "executable": False, "rentEpoch": 0, "space": 165}


def _status(level: str, slot: int = 90, err: Any = None) -> dict[str, Any]:
    return _ctx([{"slot": slot, "confirmations": None if level == "finalized" else 1, "err": err,
                  "status": {"Ok": None} if err is None else {"Err": err}, "confirmationStatus": level}])


def _transaction(pre: int, post: int, fee: int = 5000, err: Any = None) -> dict[str, Any]:
    return {"slot": 90, "blockTime": 1, "meta": {"err": err, "fee": fee, "preBalances": [pre, 0, 1], "postBalances": [post, 0, 1]},
            "transaction": {"signatures": [], "message": {"accountKeys": [A, B, solana_tx.SYSTEM_PROGRAM]}}}


# --- broadcast --------------------------------------------------------------------------------

def test_broadcast_sends_base64_with_preflight_and_returns_the_signature() -> None:
    signed = _signed()
    node = FakeNode(sendTransaction=signed.tx_hash)
    assert _adapter(node).broadcast(signed) == signed.tx_hash
    (method, params), = node.calls
    assert base64.b64decode(params[0]) == signed.raw
    assert params[1] == {"encoding": "base64", "skipPreflight": False, "preflightCommitment": "confirmed"}


def test_already_processed_is_a_successful_repeat() -> None:
    signed = _signed()
    node = FakeNode(sendTransaction=_preflight("AlreadyProcessed", "This transaction has already been processed"))
    assert _adapter(node).broadcast(signed) == signed.tx_hash


def test_blockhash_not_found_for_a_landed_transaction_is_a_repeat_not_an_expiry() -> None:
    # Given the bytes landed earlier and their blockhash has since expired
    signed = _signed()
    node = FakeNode(sendTransaction=_preflight("BlockhashNotFound", "Blockhash not found"), getSignatureStatuses=_status("finalized"))
    # Then a repeated broadcast (e.g. a redelivered task) is success, never "expired"
    assert _adapter(node).broadcast(signed) == signed.tx_hash
    assert node.methods() == ["sendTransaction", "getSignatureStatuses"]


def test_blockhash_not_found_before_the_last_valid_height_is_transient() -> None:
    # A lagging node (say one backend of a pool) does not know a blockhash that is still valid
    node = FakeNode(sendTransaction=_preflight("BlockhashNotFound", "Blockhash not found"),
                    getSignatureStatuses=_unknown(100), getEpochInfo=_epoch(LAST_VALID))
    with pytest.raises(ChainRpcError) as info:
        _adapter(node).broadcast(_signed())
    assert not isinstance(info.value, TransactionRejected) and info.value.transient


def test_blockhash_not_found_past_the_last_valid_height_and_unknown_is_expired() -> None:
    signed = _signed()
    node = FakeNode(sendTransaction=_preflight("BlockhashNotFound", "Blockhash not found"),
                    getSignatureStatuses=_unknown(1100), getEpochInfo=_epoch(PAST), getSignaturesForAddress=_history)
    with pytest.raises(TransactionRejected) as info:
        _adapter(node).broadcast(signed)
    assert info.value.reason == "expired"
    assert node.calls[2] == ("getEpochInfo", [{"commitment": "finalized"}])
    # then the fee payer's finalized history, from a node at least at the slot the height was seen at
    assert node.calls[3] == ("getSignaturesForAddress", [A, {"commitment": "finalized", "minContextSlot": PAST + 10,
                                                             "limit": 1000}])


@pytest.mark.parametrize("history", [BEHIND, NO_HISTORY])
def test_blockhash_not_found_without_history_from_a_node_far_enough_is_transient(history: NodeRpcError) -> None:
    # The height is past, but the history comes from a node behind that slot, or one without history
    node = FakeNode(sendTransaction=_preflight("BlockhashNotFound", "Blockhash not found"),
                    getSignatureStatuses=_unknown(PAST + 10), getEpochInfo=_epoch(PAST), getSignaturesForAddress=history)
    with pytest.raises(ChainRpcError) as info:
        _adapter(node).broadcast(_signed())
    assert not isinstance(info.value, TransactionRejected)


def test_blockhash_not_found_that_landed_meanwhile_is_a_repeat() -> None:
    signed = _signed()
    node = FakeNode(sendTransaction=_preflight("BlockhashNotFound", "Blockhash not found"),
                    getSignatureStatuses=_unknown(100), getEpochInfo=_epoch(PAST),
                    getSignaturesForAddress=[[_sig(1120, signed.tx_hash), *HISTORY]])
    assert _adapter(node).broadcast(signed) == signed.tx_hash


@pytest.mark.parametrize(
    ("signed", "error", "reason"),
    [
        (_signed(), _preflight("InsufficientFundsForFee", "Insufficient funds for fee"), "insufficient_funds_for_fee"),
        (_signed(), _preflight("AccountNotFound", "Attempt to debit an account but found no record of a prior credit."),
         "insufficient_funds_for_fee"),
        (_signed(), _preflight({"InstructionError": [0, {"Custom": 1}]}, "Error processing Instruction 0: custom program error: 0x1",
                               ["Transfer: insufficient lamports 100, need 1000"]), "insufficient_funds"),
        (_signed(USDC, fee=ATA_FEE), _preflight({"InstructionError": [0, {"Custom": 1}]}, "Error processing Instruction 0: custom program error: 0x1",
                                                ["Transfer: insufficient lamports 100, need 2039280"]), "insufficient_funds_for_fee"),
        (_signed(USDC, fee=ATA_FEE), _preflight({"InstructionError": [1, {"Custom": 1}]}, "Error processing Instruction 1: custom program error: 0x1",
                                                ["Program log: Error: insufficient funds"]), "insufficient_funds"),
        (_signed(USDC, fee=ATA_FEE), _preflight({"InstructionError": [1, {"Custom": 4}]}, "Error processing Instruction 1: custom program error: 0x4"),
         "rejected_by_node"),
        (_signed(), _preflight({"InsufficientFundsForRent": {"account_index": 1}}, "Transaction results in an account (1) with insufficient funds for rent"),
         "rejected_by_node"),
        (_signed(), NodeRpcError("sendTransaction", -32003, "Transaction signature verification failure"), "rejected_by_node"),
        (_signed(), NodeRpcError("sendTransaction", -32602, "invalid transaction: failed to deserialize"), "rejected_by_node"),
    ],
)
def test_refusals_map_to_pipeline_reasons(signed: SignedTransaction, error: NodeRpcError, reason: str) -> None:
    with pytest.raises(TransactionRejected) as info:
        _adapter(FakeNode(sendTransaction=error)).broadcast(signed)
    assert info.value.reason == reason
    assert info.value.detail == error.node_message


@pytest.mark.parametrize("error", [
    NodeRpcError("sendTransaction", -32005, "Node is unhealthy"),
    NodeRpcError("sendTransaction", -32603, "Internal error"),
    ChainRpcError("sendTransaction: cannot reach http://fake:8899 (ConnectionError)"),
])
def test_node_trouble_is_transient_not_a_refusal(error: ChainRpcError) -> None:
    with pytest.raises(ChainRpcError) as info:
        _adapter(FakeNode(sendTransaction=error)).broadcast(_signed())
    assert not isinstance(info.value, TransactionRejected) and info.value.transient


def test_a_node_answering_another_signature_is_an_rpc_error() -> None:
    with pytest.raises(ChainRpcError, match="answered signature"):
        _adapter(FakeNode(sendTransaction="1111")).broadcast(_signed())


def test_signed_bytes_must_carry_the_stored_hash() -> None:
    signed = _signed()
    with pytest.raises(MalformedTransaction):
        _adapter(FakeNode()).broadcast(replace(signed, tx_hash=_signed(amount=5).tx_hash))


# --- status -------------------------------------------------------------------------------------

def test_unknown_up_to_the_last_valid_height_is_not_found() -> None:
    # At a block height equal to the last valid one, a block can still include it
    node = FakeNode(getSignatureStatuses=_unknown(100), getEpochInfo=_epoch(LAST_VALID))
    adapter = _adapter(node)
    assert adapter.get_status(_signed()).state is TxState.NOT_FOUND
    assert node.calls[0][1][1] == {"searchTransactionHistory": True}
    assert node.calls[1] == ("getEpochInfo", [{"commitment": "finalized"}])
    assert node.methods() == ["getSignatureStatuses", "getEpochInfo"]  # no second lookup without the height


@pytest.mark.parametrize("height", [0, LAST_VALID - 150, LAST_VALID])
def test_a_lagging_node_never_yields_expired(height: int) -> None:
    # Every answer comes from a node behind (a load-balanced backend, a node catching up): it says
    # "unknown" and a low block height. However long it is asked, that is never proof.
    node = FakeNode(getSignatureStatuses=lambda params: _unknown(height + 5), getEpochInfo=_epoch(height, height + 5))
    adapter = _adapter(node)
    for _ in range(3):
        assert adapter.get_status(_signed()).state is TxState.NOT_FOUND
        assert adapter.proves_unlandable(_signed()) is False


def test_history_from_a_node_behind_the_height_observation_is_not_proof() -> None:
    # (a) one node is past the last valid height at slot 1200; (b) the history comes from a node whose
    # finalized root is below 1200, which may not have the block that holds it yet: it refuses
    node = FakeNode(getSignatureStatuses=_unknown(1300), getEpochInfo=_epoch(PAST, 1200), getSignaturesForAddress=BEHIND)
    assert _adapter(node).get_status(_signed()).state is TxState.NOT_FOUND
    assert node.calls[-1][1][1]["minContextSlot"] == 1200


def test_past_the_last_valid_height_and_absent_from_the_payers_history_is_expired() -> None:
    node = FakeNode(getSignatureStatuses=_unknown(1100), getEpochInfo=_epoch(PAST, 1200), getSignaturesForAddress=_history)
    assert _adapter(node).get_status(_signed()).state is TxState.EXPIRED
    # asked in this order: unknown, the finalized height, then the history from a node at least that far
    assert node.methods() == ["getSignatureStatuses", "getEpochInfo", "getSignaturesForAddress"]


def test_proves_unlandable_is_the_expiry_proof() -> None:
    node = FakeNode(getSignatureStatuses=_unknown(1100), getEpochInfo=_epoch(PAST, 1200), getSignaturesForAddress=_history)
    assert _adapter(node).proves_unlandable(_signed()) is True
    node = FakeNode(getSignatureStatuses=_unknown(1100), getEpochInfo=_epoch(LAST_VALID, 1200))
    assert _adapter(node).proves_unlandable(_signed()) is False
    node = FakeNode(getSignatureStatuses=_status("finalized"))
    assert _adapter(node).proves_unlandable(_signed()) is False  # it landed


def test_the_proof_is_read_at_finalized_whatever_the_registry_commitment() -> None:
    # A "confirmed" block can still be rolled back: a transaction in it may land again elsewhere
    node = FakeNode(getSignatureStatuses=_unknown(1100), getEpochInfo=_epoch(PAST, 1200), getSignaturesForAddress=_history)
    assert _adapter(node, commitment="confirmed").get_status(_signed()).state is TxState.EXPIRED
    assert node.calls[1] == ("getEpochInfo", [{"commitment": "finalized"}])
    assert node.calls[2][1][1]["commitment"] == "finalized"


# --- the history half of the proof: fail closed -----------------------------------------------------

def test_a_node_without_transaction_history_never_proves_expiry() -> None:
    # A node started without --enable-rpc-transaction-history ignores searchTransactionHistory: once
    # the signature leaves its ~300-slot status cache it says null, landed or not. Its -32011 on
    # getSignaturesForAddress is no proof: a transfer that landed would otherwise be paid twice.
    node = FakeNode(getSignatureStatuses=lambda params: _unknown(5000), getEpochInfo=_epoch(4000, 4990),
                    getSignaturesForAddress=NO_HISTORY)
    adapter = _adapter(node)
    for _ in range(2):
        assert adapter.get_status(_signed()).state is TxState.NOT_FOUND
        assert adapter.proves_unlandable(_signed()) is False


def test_a_pruned_ledger_that_does_not_reach_the_blockhash_is_no_proof() -> None:
    # The node's history ends (fewer than a page) before the blockhash's slot: it cannot see the
    # slots that could hold ours, whether it cleaned them up or the account is newer than that.
    node = FakeNode(getSignatureStatuses=lambda params: _unknown(5000), getEpochInfo=_epoch(4000, 4990),
                    getSignaturesForAddress=lambda params: [_sig(4500), _sig(BLOCKHASH_SLOT + 1)])
    adapter = _adapter(node)
    assert adapter.get_status(_signed()).state is TxState.NOT_FOUND
    assert adapter.proves_unlandable(_signed()) is False
    node.answers["getSignaturesForAddress"] = lambda params: []  # nothing at all
    assert adapter.get_status(_signed()).state is TxState.NOT_FOUND


def test_a_landed_transaction_the_status_cache_forgot_is_found_in_the_history() -> None:
    signed = _signed()
    node = FakeNode(getSignatureStatuses=_unknown(5000), getEpochInfo=_epoch(4000, 4990),
                    getSignaturesForAddress=[[_sig(4500), _sig(1100, signed.tx_hash), *HISTORY]],
                    getTransaction=_transaction(1_000_000, 994_000), getSlot=4990, getBlock={"blockhash": "BLOCK"})
    status = _adapter(node).get_status(signed)
    assert (status.state, status.block_number, status.confirmations, status.fee_paid) == (TxState.INCLUDED, 1100, 3891, 5000)
    node = FakeNode(getSignatureStatuses=_unknown(5000), getEpochInfo=_epoch(4000, 4990),
                    getSignaturesForAddress=[[_sig(1100, signed.tx_hash, err={"InstructionError": [0, {"Custom": 1}]})]],
                    getTransaction=None)
    assert _adapter(node).get_status(signed).state is TxState.REVERTED
    assert _adapter(FakeNode(**{**node.answers, "getSignaturesForAddress": [[_sig(1100, signed.tx_hash)]]})).proves_unlandable(signed) is False


def test_the_history_is_paged_back_to_the_blockhash_slot() -> None:
    first = [_sig(2000 - i // 10, f"{i:04d}" + "1" * 84) for i in range(1000)]  # a full page, all in the window
    node = FakeNode(getSignatureStatuses=_unknown(5000), getEpochInfo=_epoch(4000, 4990),
                    getSignaturesForAddress=[first, [_sig(1050), _sig(BLOCKHASH_SLOT)]])
    assert _adapter(node).get_status(_signed()).state is TxState.EXPIRED
    pages = [params for method, params in node.calls if method == "getSignaturesForAddress"]
    assert "before" not in pages[0][1] and pages[1][1]["before"] == first[-1]["signature"]
    assert pages[1][1]["minContextSlot"] == 4990


def test_a_history_too_long_to_scan_is_no_proof() -> None:
    full = [_sig(2000) for _ in range(1000)]
    node = FakeNode(getSignatureStatuses=_unknown(5000), getEpochInfo=_epoch(4000, 4990),
                    getSignaturesForAddress=lambda params: full)
    assert _adapter(node).get_status(_signed()).state is TxState.NOT_FOUND
    assert node.methods().count("getSignaturesForAddress") == 10


@pytest.mark.parametrize("context", [
    {},  # no stored context (e.g. a row from before contexts were stored)
    {"blockhash": BLOCKHASH},
    {"blockhash": BLOCKHASH, "last_valid_block_height": "1150", "blockhash_slot": 1000},
    {"blockhash": BLOCKHASH, "last_valid_block_height": True, "blockhash_slot": 1000},
    {"blockhash": BLOCKHASH, "last_valid_block_height": 1150, "blockhash_slot": -1},
    {"blockhash": "11111111111111111111111111111111", "last_valid_block_height": 1150, "blockhash_slot": 1000},  # another build's
])
def test_without_a_usable_last_valid_height_nothing_is_proven(context: dict[str, Any]) -> None:
    node = FakeNode(getSignatureStatuses=lambda params: _unknown(10**6), getEpochInfo=_epoch(10**6))
    adapter = _adapter(node)
    signed = replace(_signed(), context=context)
    assert adapter.get_status(signed).state is TxState.NOT_FOUND
    assert adapter.proves_unlandable(signed) is False
    assert "getEpochInfo" not in node.methods()


@pytest.mark.parametrize("context", [
    {"blockhash": BLOCKHASH, "last_valid_block_height": 1150},
    {"blockhash": BLOCKHASH, "last_valid_block_height": 1150, "blockhash_slot": None},
])
def test_a_context_from_before_the_blockhash_slot_was_stored_uses_its_block_height(context: dict[str, Any]) -> None:
    # Signed by a worker of the previous release (a rolling upgrade): the blockhash's block height
    # (last valid - 150) is a lower bound of its slot, so the history must reach back at least as far
    node = FakeNode(getSignatureStatuses=_unknown(1100), getEpochInfo=_epoch(PAST, 1200), getSignaturesForAddress=_history)
    assert _adapter(node).get_status(replace(_signed(), context=context)).state is TxState.EXPIRED
    short = FakeNode(getSignatureStatuses=_unknown(1100), getEpochInfo=_epoch(PAST, 1200),
                     getSignaturesForAddress=[[_sig(1001, "1" * 88)], []])
    assert _adapter(short).get_status(replace(_signed(), context=context)).state is TxState.NOT_FOUND


def test_landing_between_the_two_checks_is_not_expired() -> None:
    signed = _signed()
    node = FakeNode(getSignatureStatuses=_unknown(1100), getEpochInfo=_epoch(PAST, 1200),
                    getSignaturesForAddress=[[_sig(1150, signed.tx_hash), *HISTORY]], getTransaction=None)
    status = _adapter(node).get_status(signed)
    assert (status.state, status.confirmations, status.block_number) == (TxState.INCLUDED, 0, 1150)


@pytest.mark.parametrize("level", ["processed", "confirmed"])
def test_below_the_registry_commitment_counts_no_confirmation(level: str) -> None:
    node = FakeNode(getSignatureStatuses=_status(level))
    status = _adapter(node).get_status(_signed())
    assert (status.state, status.confirmations, status.fee_paid) == (TxState.INCLUDED, 0, None)
    assert node.methods() == ["getSignatureStatuses"]


def test_at_the_commitment_the_fee_is_the_senders_real_drop() -> None:
    # Given a SOL transfer of 1000 lamports that cost the sender 1000 + 5000
    node = FakeNode(getSignatureStatuses=_status("finalized"), getTransaction=_transaction(1_000_000, 994_000),
                    getSlot=95, getBlock={"blockhash": "BLOCK"})
    status = _adapter(node).get_status(_signed(amount=1000))
    assert (status.state, status.block_number, status.block_hash, status.confirmations, status.fee_paid) == (
        TxState.INCLUDED, 90, "BLOCK", 6, 5000)
    assert node.calls[1][1][1] == {"encoding": "json", "commitment": "finalized", "maxSupportedTransactionVersion": 0}


def test_an_spl_transfer_that_created_the_account_reports_fee_plus_rent() -> None:
    node = FakeNode(getSignatureStatuses=_status("finalized"), getTransaction=_transaction(10**9, 10**9 - 5000 - RENT_165),
                    getSlot=90, getBlock={"blockhash": "BLOCK"})
    assert _adapter(node).get_status(_signed(USDC, fee=ATA_FEE)).fee_paid == 5000 + RENT_165


def test_a_confirmed_commitment_settles_at_confirmed() -> None:
    node = FakeNode(getSignatureStatuses=_status("confirmed"), getTransaction=_transaction(10**6, 10**6 - 6000),
                    getSlot=91, getBlock=NodeRpcError("getBlock", -32004, "Block not available for slot 90"))
    status = _adapter(node, commitment="confirmed").get_status(_signed(amount=1000))
    assert (status.confirmations, status.fee_paid, status.block_hash) == (2, 5000, None)


def test_a_failed_transaction_is_reverted_and_paid_only_its_fee() -> None:
    err = {"InstructionError": [0, {"Custom": 1}]}
    node = FakeNode(getSignatureStatuses=_status("finalized", err=err), getTransaction=_transaction(10**6, 10**6 - 5000, err=err),
                    getSlot=90, getBlock={"blockhash": "BLOCK"})
    status = _adapter(node).get_status(_signed(amount=1000))
    assert (status.state, status.fee_paid, status.confirmations) == (TxState.REVERTED, 5000, 1)


def test_a_transaction_not_yet_served_at_the_commitment_waits() -> None:
    node = FakeNode(getSignatureStatuses=_status("finalized"), getTransaction=None)
    assert _adapter(node).get_status(_signed()).confirmations == 0


@pytest.mark.parametrize("answers", [
    {"getSignatureStatuses": {"value": "nope"}},
    {"getSignatureStatuses": _ctx([None, None])},
    {"getSignatureStatuses": _ctx([None]), "getEpochInfo": {"blockHeight": "high", "absoluteSlot": 5}},
    {"getSignatureStatuses": _ctx([None]), "getEpochInfo": {"blockHeight": PAST}},  # no slot: cannot compare
    {"getSignatureStatuses": _ctx([None]), "getEpochInfo": [PAST]},
    {"getSignatureStatuses": {"value": [None]}},  # no context slot
    {"getSignatureStatuses": _ctx([None]), "getEpochInfo": _epoch(PAST), "getSignaturesForAddress": {"value": []}},
    {"getSignatureStatuses": _ctx([None]), "getEpochInfo": _epoch(PAST), "getSignaturesForAddress": [{"slot": 5}]},
    {"getSignatureStatuses": _ctx([None]), "getEpochInfo": _epoch(PAST), "getSignaturesForAddress": [_sig(-1)]},
    {"getSignatureStatuses": _ctx([None]), "getEpochInfo": _epoch(PAST),
     "getSignaturesForAddress": [_sig(1100), _sig(1101), _sig(900)]},  # not newest first: cannot be trusted
    {"getSignatureStatuses": _status("finalized"), "getTransaction": {"meta": {}}},
    {"getSignatureStatuses": _status("finalized"), "getTransaction": _transaction(10**6, 10**6 - 1000)},  # paid < fee
])
def test_unusable_status_answers_are_rpc_errors(answers: dict[str, Any]) -> None:
    with pytest.raises(ChainRpcError):
        _adapter(FakeNode(**answers)).get_status(_signed(amount=0))


def test_status_refuses_a_hash_that_is_not_a_signature() -> None:
    with pytest.raises(MalformedTransaction):
        _adapter(FakeNode()).get_status(replace(_signed(), tx_hash="0xabc"))


# --- quotes --------------------------------------------------------------------------------------

def _balances(**by_address: int) -> Answer:
    return lambda params: _ctx(by_address.get(params[0], 0))


def _accounts(**by_address: dict[str, Any]) -> Answer:
    return lambda params: _ctx(by_address.get(params[0]))


def _rent(params: list[Any]) -> int:
    return {0: RENT_0, 165: RENT_165}[params[0]]


def test_a_sol_quote_is_one_signature() -> None:
    node = FakeNode(getBalance=_balances(**{A: 10**9, B: 10**9}), getMinimumBalanceForRentExemption=_rent)
    quote = _adapter(node).quote_fee(TransferIntent(A, B, 10**6, SOL))
    assert quote == SOL_QUOTE


@pytest.mark.parametrize(
    ("sender", "receiver", "amount", "reason", "match"),
    [(10**6, 10**9, 10**6, "insufficient_funds", "needs 1000000 \\+ fee 5050"),
     (10**6 + 5000 + 100, 10**9, 10**6, "insufficient_funds", "rent-exempt minimum"),
     (10**9, 0, 1000, "rejected_by_node", "does not exist yet")],
)
def test_sol_quotes_refuse_what_the_chain_would(sender: int, receiver: int, amount: int, reason: str, match: str) -> None:
    node = FakeNode(getBalance=_balances(**{A: sender, B: receiver}), getMinimumBalanceForRentExemption=_rent)
    with pytest.raises(TransactionRejected, match=match) as info:
        _adapter(node).quote_fee(TransferIntent(A, B, amount, SOL))
    assert info.value.reason == reason


def test_sending_everything_is_allowed() -> None:
    node = FakeNode(getBalance=_balances(**{A: 10**6 + 5050, B: 1}), getMinimumBalanceForRentExemption=_rent)
    quote = _adapter(node).quote_fee(TransferIntent(A, B, 10**6, SOL))
    assert quote.max_fee == 5050 and quote.params["min_compute_unit_price"] == 50_000  # pays exactly the reserve


def test_a_first_spl_transfer_reserves_the_rent_of_the_new_account() -> None:
    node = FakeNode(getAccountInfo=_accounts(**{A_ATA: _token_account(MINT, A, 10**7)}), getBalance=_balances(**{A: 10**9}),
                    getMinimumBalanceForRentExemption=_rent)
    quote = _adapter(node).quote_fee(TransferIntent(A, B, 10**6, USDC))
    assert quote == ATA_QUOTE


def test_an_spl_transfer_to_an_existing_account_pays_only_the_fee() -> None:
    node = FakeNode(getAccountInfo=_accounts(**{A_ATA: _token_account(MINT, A, 10**7), B_ATA: _token_account(MINT, B, 0)}),
                    getBalance=_balances(**{A: 10**9}), getMinimumBalanceForRentExemption=_rent)
    assert _adapter(node).quote_fee(TransferIntent(A, B, 10**6, USDC)) == SPL_QUOTE


@pytest.mark.parametrize(
    ("accounts", "sol", "reason"),
    [({A_ATA: _token_account(MINT, A, 10)}, 10**9, "insufficient_funds"),
     ({}, 10**9, "insufficient_funds"),  # no token account at all
     ({A_ATA: _token_account(MINT, A, 10**7)}, 5000, "insufficient_funds_for_fee")],  # cannot pay the rent
)
def test_spl_quotes_fail_early_when_the_sender_is_short(accounts: dict[str, Any], sol: int, reason: str) -> None:
    node = FakeNode(getAccountInfo=_accounts(**accounts), getBalance=_balances(**{A: sol}), getMinimumBalanceForRentExemption=_rent)
    with pytest.raises(TransactionRejected) as info:
        _adapter(node).quote_fee(TransferIntent(A, B, 10**6, USDC))
    assert info.value.reason == reason


def test_an_account_at_the_ata_address_that_is_not_that_mints_is_an_error() -> None:
    node = FakeNode(getAccountInfo=_accounts(**{A_ATA: _token_account(solana_tx.SYSTEM_PROGRAM, A, 10**7)}))
    with pytest.raises(ChainError, match="not a token account"):
        _adapter(node).quote_fee(TransferIntent(A, B, 1, USDC))


def test_build_context_is_the_latest_blockhash_at_the_commitment_with_its_slot() -> None:
    # (priority fees off: with them the price comes in the same batch, tests/unit/test_chains_solana_priority.py)
    node = FakeNode(getLatestBlockhash=_ctx({"blockhash": BLOCKHASH, "lastValidBlockHeight": 250}, slot=120))
    assert _adapter(node, max_compute_unit_price_micro_lamports=0).build_context(TransferIntent(A, B, 1, SOL)) == {
        "blockhash": BLOCKHASH, "last_valid_block_height": 250, "blockhash_slot": 120}
    assert node.calls == [("getLatestBlockhash", [{"commitment": "finalized"}])]
    with pytest.raises(ChainRpcError):
        _adapter(FakeNode(getLatestBlockhash=_ctx({"blockhash": 5})), max_compute_unit_price_micro_lamports=0).build_context(
            TransferIntent(A, B, 1, SOL))
    with pytest.raises(ChainRpcError):  # no context slot: the expiry could never be proven
        _adapter(FakeNode(getLatestBlockhash={"value": {"blockhash": BLOCKHASH, "lastValidBlockHeight": 250}}),
                 max_compute_unit_price_micro_lamports=0).build_context(TransferIntent(A, B, 1, SOL))


def test_balances_read_sol_and_the_owners_token_account() -> None:
    node = FakeNode(getBalance=_balances(**{A: 42}), getAccountInfo=_accounts(**{A_ATA: _token_account(MINT, A, 7)}))
    adapter = _adapter(node)
    assert (adapter.balance_of(A, SOL), adapter.balance_of(A, USDC), adapter.balance_of(B, USDC)) == (42, 7, 0)


def test_a_node_of_another_cluster_is_refused_before_any_use() -> None:
    node = FakeNode(getGenesisHash="SomeOtherGenesis", getBalance=_balances())
    with pytest.raises(ChainMismatch, match="genesis"):
        _adapter(node, genesis_hash="5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d").balance_of(A, SOL)
    good = FakeNode(getGenesisHash="5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d", getBalance=_balances(**{A: 1}))
    adapter = _adapter(good, genesis_hash="5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d")
    assert adapter.balance_of(A, SOL) == adapter.balance_of(A, SOL) == 1
    assert good.methods() == ["getGenesisHash", "getBalance", "getBalance"]


# --- transport: a real HTTP server that misbehaves ------------------------------------------------

@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, Any]]]:
    behaviour: dict[str, Any] = {"status": 200, "body": b"{}"}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = behaviour["body"]
            self.send_response(behaviour["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/secret-api-key", behaviour
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [(500, b"oops", "HTTP 500"), (200, b"<html>", "unusable answer"), (200, b"[1]", "not a JSON object"),
     (200, b'{"jsonrpc":"2.0","id":1}', "no result")],
)
def test_transport_trouble_is_a_transient_rpc_error_without_the_url_path(
    http_server: tuple[str, dict[str, Any]], status: int, body: bytes, match: str
) -> None:
    url, behaviour = http_server
    behaviour.update(status=status, body=body)
    with pytest.raises(ChainRpcError, match=match) as info:
        SolanaRpc(url, timeout=2).call("getSlot", [])
    assert info.value.transient and "secret-api-key" not in str(info.value)
    assert info.value.__cause__ is None and not isinstance(info.value, NodeRpcError)


def test_an_error_object_keeps_code_message_and_data(http_server: tuple[str, dict[str, Any]]) -> None:
    url, behaviour = http_server
    behaviour["body"] = json.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -32002, "message": "Transaction simulation failed: x",
                                                                          "data": {"err": "BlockhashNotFound"}}}).encode()
    with pytest.raises(NodeRpcError) as info:
        SolanaRpc(url).call("sendTransaction", [])
    assert (info.value.code, info.value.node_message, info.value.data) == (-32002, "Transaction simulation failed: x",
                                                                          {"err": "BlockhashNotFound"})


def test_an_unreachable_node_is_a_transient_rpc_error() -> None:
    from devnet.ports import free_port

    adapter = SolanaAdapter(replace(SPEC, rpc_urls=(f"http://127.0.0.1:{free_port()}/key",)), timeout=2)
    with pytest.raises(ChainRpcError, match="cannot reach") as info:
        adapter.balance_of(A, SOL)
    assert info.value.transient and "/key" not in str(info.value)
