"""SolanaAdapter against the devnet Solana node (solders' LiteSVM behind Solana JSON-RPC).

The whole life of a transfer as the pipeline drives it: quote, blockhash context, build, sign the
message with a plain ed25519 key (standing in for the MPC signer), attach, broadcast (twice: the
second is a no-op), status up to the registry's commitment ("finalized"), and the fee reported
equal to what the sender's SOL balance really lost. Most tests run the node with a manual clock
(`slot_ms=0`) and move slots explicitly, so finality and blockhash expiry are deterministic.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from solders.keypair import Keypair
from solders.signature import Signature
from solders.transaction import Transaction

from chains.base import FeeQuote, SignedTransaction, TransferIntent, TxState, TxStatus
from chains.errors import ChainMismatch, ChainRpcError, InvalidSignature, TransactionRejected
from chains.registry import ChainSpec, TokenSpec, load_registry
from chains.solana import SolanaAdapter
from chains.solana_address import b58encode
from devnet.solana_node import SolanaNode, SolanaRpcError

pytestmark = pytest.mark.integration

SOL = 10**9
FINALITY = 4  # the node's default finalize depth


@pytest.fixture(scope="module")
def node() -> Iterator[SolanaNode]:
    with SolanaNode(slot_ms=0) as running:
        yield running


@pytest.fixture(scope="module")
def spec(node: SolanaNode) -> ChainSpec:
    return replace(load_registry("devnet").chain("solana"), rpc_urls=(node.rpc_url,))


@pytest.fixture(scope="module")
def adapter(spec: ChainSpec) -> SolanaAdapter:
    return SolanaAdapter(spec)


def _wallet(node: SolanaNode, spec: ChainSpec, lamports: int = 10 * SOL, usdc: int = 0) -> Keypair:
    """A fresh key funded through the node's faucet (the stack's DevnetNode.fund), finalized."""
    key = Keypair()
    if lamports:
        node.fund(str(key.pubkey()), spec.native, lamports)
    if usdc:
        node.fund(str(key.pubkey()), spec.token("USDC"), usdc)
    node.advance_slots(FINALITY)  # the adapter reads at "finalized"
    return key


def _addr(key: Keypair) -> str:
    return str(key.pubkey())


def _sign_and_attach(adapter: SolanaAdapter, key: Keypair, intent: TransferIntent, quote: FeeQuote) -> SignedTransaction:
    """Signed bytes carrying their build context, as the pipeline hands them back (it stores both)."""
    context = adapter.build_context(intent)
    unsigned = adapter.build(intent, quote, None, context)
    signed = adapter.attach_signature(unsigned.payload, [bytes(key.sign_message(unsigned.digests[0]))])
    return replace(signed, context=context)


def _send(adapter: SolanaAdapter, key: Keypair, to: str, amount: int, token: TokenSpec) -> tuple[FeeQuote, SignedTransaction]:
    intent = TransferIntent(_addr(key), to, amount, token)
    quote = adapter.quote_fee(intent)
    signed = _sign_and_attach(adapter, key, intent, quote)
    assert adapter.broadcast(signed) == signed.tx_hash
    return quote, signed


def _finalized(node: SolanaNode, adapter: SolanaAdapter, signed: SignedTransaction) -> TxStatus:
    node.advance_slots(FINALITY)
    status = adapter.get_status(signed)
    assert status.confirmations >= 1, status
    return status


# --- the node itself --------------------------------------------------------------------------

def test_the_node_creates_the_registry_mints_with_a_devnet_authority(node: SolanaNode, spec: ChainSpec) -> None:
    info = node.info()
    for symbol in ("USDC", "USDT"):
        token = spec.token(symbol)
        assert info["mints"][token.contract] == token.decimals == 6
        account = node.rpc("getAccountInfo", [token.contract, {"encoding": "base64"}])["value"]
        assert account["owner"] == "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA" and account["space"] == 82
        data = base64.b64decode(account["data"][0])
        # Mint layout: COption tag 1 + mint authority, supply, decimals, is_initialized
        assert data[:4] == b"\x01\x00\x00\x00" and b58encode(data[4:36]) == info["mintAuthority"]
        assert (data[44], data[45]) == (6, 1)


def test_minting_creates_the_owners_token_account(node: SolanaNode, spec: ChainSpec) -> None:
    key = _wallet(node, spec, lamports=0, usdc=1_500_000)
    from chains.solana_tx import associated_token_address

    ata = associated_token_address(_addr(key), spec.token("USDC").contract or "")
    balance = node.rpc("getTokenAccountBalance", [ata])["value"]
    assert balance == {"amount": "1500000", "decimals": 6, "uiAmount": 1.5, "uiAmountString": "1.5"}
    with pytest.raises(SolanaRpcError, match="not a devnet mint"):
        node.mint_to(_addr(key), _addr(Keypair()), 1)


# --- happy paths ------------------------------------------------------------------------------

def test_a_sol_transfer_reaches_finalized_and_reports_its_fee_exactly(node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    sender, receiver = _wallet(node, spec), Keypair()
    before = adapter.balance_of(_addr(sender), spec.native)
    quote, signed = _send(adapter, sender, _addr(receiver), SOL, spec.native)
    assert quote.max_fee == 5000 + 50  # and the priority fee at the devnet cap: 1,000 units x 0.05 lamports

    # processed, then confirmed: included but not yet at the registry commitment
    status = adapter.get_status(signed)
    assert (status.state, status.confirmations) == (TxState.INCLUDED, 0)
    node.advance_slots(1)
    assert adapter.get_status(signed).confirmations == 0
    status = _finalized(node, adapter, signed)
    assert (status.state, status.fee_paid) == (TxState.INCLUDED, 5000)
    assert status.block_hash and status.block_number is not None
    assert before - adapter.balance_of(_addr(sender), spec.native) == SOL + status.fee_paid
    assert adapter.balance_of(_addr(receiver), spec.native) == SOL


def test_usdc_transfers_create_the_destination_account_once_and_the_ledger_matches(
    node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec
) -> None:
    usdc = spec.token("USDC")
    sender, receiver = _wallet(node, spec, usdc=10_000_000), Keypair()
    rent = node.rpc("getMinimumBalanceForRentExemption", [165])

    # Given no token account for the receiver: the first transfer creates it, paid by the sender
    sol_before = adapter.balance_of(_addr(sender), spec.native)
    quote, signed = _send(adapter, sender, _addr(receiver), 4_000_000, usdc)
    assert quote.params["create_ata"] is True and quote.max_fee == 5000 + 3_000 + rent  # 60,000 units x 0.05
    status = _finalized(node, adapter, signed)
    assert status.fee_paid == 5000 + rent == sol_before - adapter.balance_of(_addr(sender), spec.native)
    assert adapter.balance_of(_addr(receiver), usdc) == 4_000_000
    assert adapter.balance_of(_addr(sender), usdc) == 6_000_000

    # Then the second transfer finds the account and pays the fee only
    sol_before = adapter.balance_of(_addr(sender), spec.native)
    quote, signed = _send(adapter, sender, _addr(receiver), 1_000_000, usdc)
    assert quote.params["create_ata"] is False and quote.max_fee == 5000 + 1_000  # 20,000 units x 0.05
    status = _finalized(node, adapter, signed)
    assert status.fee_paid == 5000 == sol_before - adapter.balance_of(_addr(sender), spec.native)
    assert adapter.balance_of(_addr(receiver), usdc) == 5_000_000
    assert adapter.balance_of(_addr(receiver), spec.native) == 0  # the receiver paid nothing


def test_broadcasting_the_same_bytes_again_is_a_no_op(node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    sender, receiver = _wallet(node, spec), Keypair()
    _, signed = _send(adapter, sender, _addr(receiver), SOL, spec.native)
    assert adapter.broadcast(signed) == signed.tx_hash  # still processed
    _finalized(node, adapter, signed)
    assert adapter.broadcast(signed) == signed.tx_hash  # finalized
    node.advance_slots(200)  # and after its blockhash expired: still a repeat, never "expired"
    assert adapter.broadcast(signed) == signed.tx_hash
    assert adapter.get_status(signed).state is TxState.INCLUDED
    assert adapter.balance_of(_addr(receiver), spec.native) == SOL  # moved once


def test_status_advances_to_finalized_on_the_running_clock(spec: ChainSpec) -> None:
    with SolanaNode(slot_ms=20) as clocked:
        adapter = SolanaAdapter(replace(spec, rpc_urls=(clocked.rpc_url,)))
        sender = Keypair()
        clocked.airdrop(_addr(sender), 2 * SOL)
        deadline = time.monotonic() + 10
        while adapter.balance_of(_addr(sender), spec.native) == 0:  # until the airdrop is finalized
            assert time.monotonic() < deadline
            time.sleep(0.02)
        _, signed = _send(adapter, sender, _addr(Keypair()), SOL, spec.native)
        while (status := adapter.get_status(signed)).confirmations < 1:
            assert status.state is TxState.INCLUDED and time.monotonic() < deadline
            time.sleep(0.02)
        assert status.fee_paid == 5000


# --- refusals ----------------------------------------------------------------------------------

def test_insufficient_funds_fail_at_the_quote(node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    usdc = spec.token("USDC")
    rich_in_tokens = _wallet(node, spec, lamports=0, usdc=5_000_000)
    poor = _wallet(node, spec, lamports=SOL)
    cases = [
        (TransferIntent(_addr(poor), _addr(Keypair()), 2 * SOL, spec.native), "insufficient_funds"),
        (TransferIntent(_addr(poor), _addr(Keypair()), 1, usdc), "insufficient_funds"),
        (TransferIntent(_addr(rich_in_tokens), _addr(Keypair()), 1_000_000, usdc), "insufficient_funds_for_fee"),
    ]
    for intent, reason in cases:
        with pytest.raises(TransactionRejected) as info:
            adapter.quote_fee(intent)
        assert info.value.reason == reason, intent


def test_tokens_gone_after_the_quote_are_refused_at_broadcast(node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    usdc = spec.token("USDC")
    sender = _wallet(node, spec, usdc=5_000_000)
    # Given a transfer quoted and signed while the tokens were there
    intent = TransferIntent(_addr(sender), _addr(Keypair()), 5_000_000, usdc)
    first = _sign_and_attach(adapter, sender, intent, adapter.quote_fee(intent))
    # When another transfer spends them first
    _send(adapter, sender, _addr(Keypair()), 5_000_000, usdc)
    # Then the node's preflight refuses the first, for a reason the pipeline understands
    with pytest.raises(TransactionRejected) as info:
        adapter.broadcast(first)
    assert info.value.reason == "insufficient_funds"
    assert "custom program error: 0x1" in info.value.detail


def test_a_failed_transaction_that_lands_is_reverted_with_its_fee(node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    usdc = spec.token("USDC")
    sender, receiver = _wallet(node, spec, usdc=1_000_000), _wallet(node, spec)
    node.mint_to(_addr(receiver), usdc.contract or "", 1)  # the receiver's account exists
    node.advance_slots(FINALITY)
    intent = TransferIntent(_addr(sender), _addr(receiver), 2_000_000, usdc)  # more than it holds
    quote = FeeQuote(5000, {"lamports_per_signature": 5000, "signatures": 1, "create_ata": False, "ata_rent": 0})
    signed = _sign_and_attach(adapter, sender, intent, quote)
    before = adapter.balance_of(_addr(sender), spec.native)
    # sent without preflight (as another client might): it lands, fails, and pays its fee
    node.rpc("sendTransaction", [base64.b64encode(signed.raw).decode(), {"encoding": "base64", "skipPreflight": True}])
    status = _finalized(node, adapter, signed)
    assert (status.state, status.fee_paid) == (TxState.REVERTED, 5000)
    assert before - adapter.balance_of(_addr(sender), spec.native) == 5000
    assert adapter.balance_of(_addr(sender), usdc) == 1_000_000


def test_a_transaction_past_its_blockhash_is_expired_only_once_provably_dead(
    node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec
) -> None:
    sender = _wallet(node, spec)
    intent = TransferIntent(_addr(sender), _addr(Keypair()), SOL, spec.native)
    signed = _sign_and_attach(adapter, sender, intent, adapter.quote_fee(intent))
    # Never sent, blockhash still valid: unknown, may still land
    assert adapter.get_status(signed).state is TxState.NOT_FOUND
    assert not adapter.proves_unlandable(signed)
    # When the cluster moves past its lastValidBlockHeight
    node.advance_slots(160)
    # Then the node refuses it and the adapter proves it dead from the sender's finalized history
    # (back to the blockhash's slot, without it): the pipeline re-signs
    assert signed.context["blockhash_slot"] <= node.slot("finalized")
    with pytest.raises(TransactionRejected) as info:
        adapter.broadcast(signed)
    assert info.value.reason == "expired"
    assert adapter.get_status(signed).state is TxState.EXPIRED
    assert adapter.proves_unlandable(signed)
    # Without its stored last valid block height and blockhash slot nothing is proven: never EXPIRED
    assert adapter.get_status(replace(signed, context={})).state is TxState.NOT_FOUND
    assert not adapter.proves_unlandable(replace(signed, context={}))
    # Built before the blockhash slot was stored: its block height (a lower bound of the slot) stands in
    legacy = {k: v for k, v in signed.context.items() if k != "blockhash_slot"}
    assert adapter.get_status(replace(signed, context=legacy)).state is TxState.EXPIRED
    # and a fresh build of the same intent goes through
    _, replacement = _send(adapter, sender, intent.to_address, SOL, spec.native)
    assert _finalized(node, adapter, replacement).state is TxState.INCLUDED


@pytest.mark.parametrize("history", [{"transaction_history": False}, {"ledger_slots": 50}],
                         ids=["without-transaction-history", "pruned-ledger"])
def test_a_node_that_cannot_see_a_landed_transfer_never_calls_it_expired(spec: ChainSpec, history: dict[str, int]) -> None:
    # A node started without --enable-rpc-transaction-history, or one whose ledger keeps only its
    # newest slots: once the status cache (300 slots) forgets the signature, the node says "unknown"
    # for a transfer that landed. EXPIRED there would make the pipeline re-sign it and pay twice.
    with SolanaNode(slot_ms=0, **history) as forgetful:
        adapter = SolanaAdapter(replace(spec, rpc_urls=(forgetful.rpc_url,)))
        sender, receiver = _wallet(forgetful, spec), Keypair()
        _, signed = _send(adapter, sender, _addr(receiver), SOL, spec.native)
        forgetful.advance_slots(FINALITY)
        if "transaction_history" in history:  # no getTransaction either: included, but never settled there
            with pytest.raises(ChainRpcError, match="-32011"):
                adapter.get_status(signed)
        else:
            assert adapter.get_status(signed).state is TxState.INCLUDED
        forgetful.advance_slots(400)  # past the status cache, the blockhash long expired
        status = forgetful.rpc("getSignatureStatuses", [[signed.tx_hash], {"searchTransactionHistory": True}])
        assert status["value"] == [None]  # the node itself says "unknown"
        assert adapter.get_status(signed).state is TxState.NOT_FOUND  # ... which is no proof: never EXPIRED
        assert not adapter.proves_unlandable(signed)
        assert adapter.balance_of(_addr(receiver), spec.native) == SOL  # it did land


def test_a_signature_that_is_not_the_senders_is_refused(node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    sender, mallory = _wallet(node, spec), Keypair()
    intent = TransferIntent(_addr(sender), _addr(mallory), SOL, spec.native)
    quote = adapter.quote_fee(intent)
    unsigned = adapter.build(intent, quote, None, adapter.build_context(intent))
    # attach refuses it offline ...
    with pytest.raises(InvalidSignature):
        adapter.attach_signature(unsigned.payload, [bytes(mallory.sign_message(unsigned.digests[0]))])
    # ... and bytes forged past attach are refused by the node's signature check
    good = adapter.attach_signature(unsigned.payload, [bytes(sender.sign_message(unsigned.digests[0]))])
    forged_sig = mallory.sign_message(unsigned.digests[0])
    forged = Transaction.populate(Transaction.from_bytes(good.raw).message, [forged_sig])
    with pytest.raises(TransactionRejected) as info:
        adapter.broadcast(SignedTransaction(raw=bytes(forged), tx_hash=str(forged_sig)))
    assert info.value.reason == "rejected_by_node" and "signature verification" in info.value.detail
    assert adapter.get_status(SignedTransaction(raw=bytes(forged), tx_hash=str(Signature.default()))).state is TxState.NOT_FOUND


def test_an_adapter_pinned_to_another_cluster_refuses_the_node(spec: ChainSpec) -> None:
    other = SolanaAdapter(replace(spec, options={**spec.options, "genesis_hash": "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"}))
    with pytest.raises(ChainMismatch):
        other.balance_of(_addr(Keypair()), spec.native)
