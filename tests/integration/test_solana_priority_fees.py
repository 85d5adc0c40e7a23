"""Solana priority fees against the devnet node process (LiteSVM behind Solana JSON-RPC, over HTTP).

A transfer is built with the compute-unit price the node's getRecentPrioritizationFees reports
for the accounts it writes (`set_prioritization_fee` makes the cluster busy), capped at the
registry's `max_compute_unit_price_micro_lamports`; it lands, the runtime charges the priority
fee, and the fee the adapter reports (get_status and the tracker alike) is what the sender's
balance lost. A transaction re-signed after its blockhash expired, from the same stored quote,
carries the price of the moment. The node's clock is manual (`slot_ms=0`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.message import Message

from chains import solana_tx
from chains.base import FeeQuote, SignedTransaction, TransferIntent, TxState, TxStatus, Watched
from chains.registry import ChainSpec, TokenSpec, load_registry
from chains.solana import SolanaAdapter
from devnet.solana_node import SolanaNode

pytestmark = pytest.mark.integration

SOL = 10**9
FINALITY = 4  # the node's default finalize depth
CAP = 50_000  # devnet.toml's max_compute_unit_price_micro_lamports
COMPUTE_BUDGET = "ComputeBudget111111111111111111111111111111"


@pytest.fixture(scope="module")
def node() -> Iterator[SolanaNode]:
    with SolanaNode(slot_ms=0, blockhash_max_age=20) as running:
        yield running


@pytest.fixture(scope="module")
def spec(node: SolanaNode) -> ChainSpec:
    return replace(load_registry("devnet").chain("solana"), rpc_urls=(node.rpc_url,))


@pytest.fixture
def adapter(spec: ChainSpec, node: SolanaNode) -> Iterator[SolanaAdapter]:
    yield SolanaAdapter(spec)
    node.set_prioritization_fee(0)


def _wallet(node: SolanaNode, spec: ChainSpec, usdc: int = 0) -> Keypair:
    key = Keypair()
    node.fund(str(key.pubkey()), spec.native, 10 * SOL)
    if usdc:
        node.fund(str(key.pubkey()), spec.token("USDC"), usdc)
    node.advance_slots(FINALITY)
    return key


def _budget(raw_or_payload: Message) -> dict[str, int]:
    """The message's ComputeBudget instructions, decoded by hand: tag 2 = limit (u32), 3 = price (u64)."""
    keys = [str(k) for k in raw_or_payload.account_keys]
    found: dict[str, int] = {}
    for ix in raw_or_payload.instructions:
        data = bytes(ix.data)
        if keys[ix.program_id_index] == COMPUTE_BUDGET:
            found[{2: "limit", 3: "price"}[data[0]]] = int.from_bytes(data[1:], "little")
    return found


def _signed(adapter: SolanaAdapter, key: Keypair, intent: TransferIntent, quote: FeeQuote) -> SignedTransaction:
    context = adapter.build_context(intent)
    unsigned = adapter.build(intent, quote, None, context)
    signed = adapter.attach_signature(unsigned.payload, [bytes(key.sign_message(unsigned.digests[0]))])
    return replace(signed, context=context)


def _landed(node: SolanaNode, adapter: SolanaAdapter, signed: SignedTransaction, sender: str) -> tuple[TxStatus, TxStatus]:
    """(get_status, the tracker's status) once finalized."""
    assert adapter.broadcast(signed) == signed.tx_hash
    node.advance_slots(FINALITY)
    status = adapter.get_status(signed)
    bare = SignedTransaction(raw=b"", tx_hash=signed.tx_hash, context=signed.context)  # the tracker has no bytes
    watched = Watched(key="t", signed=bare, sender=sender)
    tracked = adapter.track([watched], {}).statuses["t"]
    assert status.state is tracked.state is TxState.INCLUDED and status.confirmations >= 1
    return status, tracked


def _transfer(node: SolanaNode, adapter: SolanaAdapter, key: Keypair, token: TokenSpec,
              amount: int) -> tuple[FeeQuote, SignedTransaction, int, TxStatus, TxStatus]:
    sender = str(key.pubkey())
    intent = TransferIntent(sender, str(Keypair().pubkey()), amount, token)
    quote = adapter.quote_fee(intent)
    signed = _signed(adapter, key, intent, quote)
    before = node.balance(sender)
    status, tracked = _landed(node, adapter, signed, sender)
    lost = before - node.balance(sender) - (amount if token.asset_type == "NATIVE" else 0)
    return quote, signed, lost, status, tracked


def test_a_transfer_pays_the_price_the_node_reports_and_the_ledger_follows_the_chain(
        node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    key = _wallet(node, spec)
    node.set_prioritization_fee(20_000)
    quote, signed, lost, status, tracked = _transfer(node, adapter, key, spec.native, SOL)
    assert _budget(solana_tx.decode_signed(signed.raw).message) == {"limit": 1_000, "price": 20_000}
    assert signed.context["compute_unit_price"] == 20_000
    # 1,000 compute units at 0.02 lamports: the runtime charged 20 lamports on top of the signature
    assert status.fee_paid == tracked.fee_paid == lost == 5000 + 20
    assert quote.max_fee == 5000 + 50 >= status.fee_paid  # reserved at the cap


def test_the_price_is_capped_at_the_registry_option(node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    key = _wallet(node, spec)
    node.set_prioritization_fee(10 * CAP)  # the market is above what this registry allows
    quote, signed, lost, status, tracked = _transfer(node, adapter, key, spec.native, SOL)
    assert _budget(solana_tx.decode_signed(signed.raw).message) == {"limit": 1_000, "price": CAP}
    assert status.fee_paid == tracked.fee_paid == lost == quote.max_fee == 5000 + 50


def test_an_spl_transfer_pays_fee_priority_and_rent(node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    key = _wallet(node, spec, usdc=5_000_000)
    rent = node.rpc("getMinimumBalanceForRentExemption", [165])
    node.set_prioritization_fee(30_000)
    quote, signed, lost, status, tracked = _transfer(node, adapter, key, spec.token("USDC"), 1_000_000)
    assert _budget(solana_tx.decode_signed(signed.raw).message) == {"limit": 60_000, "price": 30_000}
    assert status.fee_paid == tracked.fee_paid == lost == 5000 + 1_800 + rent  # 60,000 units x 0.03
    assert quote.max_fee == 5000 + 3_000 + rent


def test_a_transfer_re_signed_after_expiry_carries_the_price_of_that_moment(
        node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec) -> None:
    key = _wallet(node, spec)
    sender = str(key.pubkey())
    intent = TransferIntent(sender, str(Keypair().pubkey()), SOL, spec.native)
    quote = adapter.quote_fee(intent)  # stored once, at lock time
    node.set_prioritization_fee(1_000)
    first = _signed(adapter, key, intent, quote)  # signed, never landed (lost on the way)
    node.advance_slots(20 + FINALITY + 5)  # past its blockhash's validity, finalized
    assert adapter.get_status(first).state is TxState.EXPIRED
    node.set_prioritization_fee(40_000)  # the market moved meanwhile
    again = _signed(adapter, key, intent, quote)  # the pipeline re-signs from the same quote
    assert _budget(solana_tx.decode_signed(first.raw).message)["price"] == 1_000
    assert _budget(solana_tx.decode_signed(again.raw).message)["price"] == 40_000
    before = node.balance(sender)
    status, _ = _landed(node, adapter, again, sender)
    assert status.fee_paid == before - node.balance(sender) - SOL == 5000 + 40 <= quote.max_fee


def test_the_price_follows_what_landed_on_the_senders_accounts(node: SolanaNode, adapter: SolanaAdapter,
                                                                spec: ChainSpec) -> None:
    # No floor: the node reports what recent blocks paid to write these accounts.
    key, elsewhere = _wallet(node, spec), _wallet(node, spec)
    sender = str(key.pubkey())
    node.advance_slots(150)  # the other tests' transactions leave the window of recent blocks
    intent = TransferIntent(sender, str(Keypair().pubkey()), SOL, spec.native)
    bidder = SolanaAdapter(replace(spec, options={**spec.options, "max_compute_unit_price_micro_lamports": 10**6}))
    node.set_prioritization_fee(7_777)
    bid = _signed(bidder, key, intent, bidder.quote_fee(intent))  # someone bids 7,777 to write the sender's account
    node.set_prioritization_fee(0)
    node.airdrop(str(Keypair().pubkey()), SOL)  # in the same block, a transaction paying nothing
    _landed(node, bidder, bid, sender)

    def price(owner: Keypair) -> int:
        return int(adapter.build_context(TransferIntent(str(owner.pubkey()), str(Keypair().pubkey()), SOL,
                                                        spec.native))["compute_unit_price"])

    assert price(key) == 7_777  # the one recent block that wrote it cost that much
    assert price(elsewhere) == 0  # the block's cheapest paid nothing: no bid needed for other accounts


def test_the_build_context_is_one_http_request(node: SolanaNode, adapter: SolanaAdapter, spec: ChainSpec,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import requests

    posts: list[Any] = []
    original = requests.Session.send

    def counted(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        posts.append(json.loads(request.body or b"null"))
        return original(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", counted)
    node.set_prioritization_fee(3_000)
    context = adapter.build_context(TransferIntent(str(Keypair().pubkey()), str(Keypair().pubkey()), SOL, spec.native))
    assert context["compute_unit_price"] == 3_000
    assert len(posts) == 1 and [call["method"] for call in posts[0]] == ["getLatestBlockhash", "getRecentPrioritizationFees"]
