"""Bitcoin fee bumps (BIP125) against the devnet Bitcoin node in its own process, over bitcoind's
JSON-RPC: a transfer sent at the normal rate stays unmined during a fee-rate spike, the adapter's
replacement quote keeps its inputs and pays the spike's rate, the signed replacement evicts it from
the mempool and is mined, and the tracker reports the replacement only. Also: a replacement paying
too little, change that cannot pay, the cap, and no bump without a spike (even for a transaction
withheld from mining).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from chains import bitcoin_tx as btx
from chains.base import FeeQuote, SignedTransaction, TransferIntent, TxState, Watched
from chains.bitcoin import BitcoinAdapter
from chains.bitcoin_address import dust_limit, p2wpkh_script
from chains.errors import BumpRefused, TransactionRejected
from chains.registry import ChainSpec
from devnet.bitcoin_node import BitcoinNode
from tests.integration.test_bitcoin_adapter import Wallet, adapter, balance, node, spec  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPIKE = 20  # sat/vB; the node's normal estimate is 2


@pytest.fixture
def spike(node: BitcoinNode) -> Iterator[None]:
    """A fee-rate spike for the test's duration (started by the test, always ended)."""
    yield
    node.set_min_fee_rate(0)


def prepared(adapter: BitcoinAdapter, wallet: Wallet, amount: int) -> tuple[TransferIntent, FeeQuote]:
    intent = TransferIntent(wallet.address, Wallet.new(adapter).address, amount, adapter.spec.native)
    return intent, adapter.quote_fee(intent, adapter.list_utxos(wallet.address))


def signed_for(adapter: BitcoinAdapter, wallet: Wallet, intent: TransferIntent, quote: FeeQuote) -> SignedTransaction:
    """build -> sign -> attach, as the pipeline's signing step does for a first send or a bump."""
    unsigned = adapter.build(intent, quote, None, adapter.build_context(intent))
    return adapter.attach_signature(unsigned.payload, wallet.sign(unsigned.digests))


def watched(key: str, signed: SignedTransaction, wallet: Wallet) -> Watched:
    return Watched(key=key, signed=replace(signed, raw=b""), sender=wallet.address)


def test_a_transfer_stuck_in_a_spike_is_replaced_and_the_replacement_confirms(
        node: BitcoinNode, adapter: BitcoinAdapter, spike: None) -> None:
    # Given a transfer quoted and signed at the normal rate, sent once the spike has started
    wallet = Wallet.new(adapter)
    node.fund_sats(wallet.address, 1_000_000)
    intent, first_quote = prepared(adapter, wallet, 400_000)
    assert first_quote.params["fee_rate"] == 2
    first = signed_for(adapter, wallet, intent, first_quote)
    assert all(i.sequence == btx.SEQUENCE_RBF for i in btx.parse_tx(first.raw).inputs)  # BIP125 opt-in
    node.set_min_fee_rate(SPIKE)
    adapter.broadcast(first)
    assert node.rpc("getmempoolentry", first.tx_hash)["bip125-replaceable"] is True
    node.mine(3)
    assert adapter.get_status(first).state is TxState.PENDING  # stays unmined

    # When the adapter quotes its replacement: the same inputs, the spike's rate, from the change
    bump = adapter.replacement_quote(intent, first_quote)
    assert bump is not None and bump.inputs == first_quote.inputs
    assert bump.params["fee_rate"] == SPIKE and bump.max_fee == SPIKE * first_quote.params["vsize"] > first_quote.max_fee
    assert bump.params["change"] == first_quote.params["change"] - (bump.max_fee - first_quote.max_fee)
    second = signed_for(adapter, wallet, intent, bump)
    assert second.tx_hash != first.tx_hash
    assert adapter.broadcast(second) == second.tx_hash

    # Then it evicts the original: unknown to the node, not provably unlandable (its inputs are spent)
    assert node.rpc("getrawmempool") == [second.tx_hash]
    assert adapter.get_status(first).state is TxState.NOT_FOUND
    assert adapter.get_status(second).state is TxState.PENDING
    assert not adapter.proves_unlandable(first)
    with pytest.raises(TransactionRejected) as resent:  # sending the original again loses to the replacement
        adapter.broadcast(first)
    assert resent.value.reason == "replacement_underpriced" and "insufficient fee" in resent.value.detail

    # And blocks mine the replacement; the tracker, watching both attempts, reports it alone
    [block] = node.mine(1)
    observation = adapter.track([watched("attempt-1", first, wallet), watched("attempt-2", second, wallet)], {})
    assert set(observation.statuses) == {"attempt-2"}
    included = observation.statuses["attempt-2"]
    assert (included.state, included.block_hash, included.fee_paid) == (TxState.INCLUDED, block, bump.max_fee)
    node.mine(1)
    final = adapter.get_status(second)
    assert (final.state, final.confirmations, final.fee_paid) == (TxState.INCLUDED, 2, bump.max_fee)
    assert adapter.get_status(first).state is TxState.NOT_FOUND and not adapter.proves_unlandable(first)
    assert balance(adapter, wallet.address) == 1_000_000 - 400_000 - bump.max_fee  # one payment, the higher fee
    with pytest.raises(TransactionRejected, match="rejected_by_node"):
        adapter.broadcast(first)  # its inputs are spent in a block now


def test_a_replacement_paying_too_little_is_refused_as_underpriced(node: BitcoinNode, adapter: BitcoinAdapter) -> None:
    wallet = Wallet.new(adapter)
    node.fund_sats(wallet.address, 500_000)
    intent, quote = prepared(adapter, wallet, 100_000)
    first = signed_for(adapter, wallet, intent, quote)
    adapter.broadcast(first)
    # One more satoshi of fee: a higher rate, but not the incremental relay fee of its size (rule 4)
    stingy = FeeQuote(quote.max_fee + 1, {**quote.params, "change": quote.params["change"] - 1}, quote.inputs)
    with pytest.raises(TransactionRejected) as refused:
        adapter.broadcast(signed_for(adapter, wallet, intent, stingy))
    assert refused.value.reason == "replacement_underpriced" and "not enough additional fees" in refused.value.detail
    assert node.rpc("getrawmempool") == [first.tx_hash]
    node.mine(1)
    assert adapter.get_status(first).state is TxState.INCLUDED


def test_change_below_dust_refuses_the_bump_and_the_transfer_keeps_its_transaction(
        node: BitcoinNode, adapter: BitcoinAdapter, spike: None) -> None:
    # Given a transfer whose change is just above dust at the normal rate
    wallet = Wallet.new(adapter)
    vsize = btx.estimate_vsize(1, [p2wpkh_script(bytes(20))] * 2)
    dust = dust_limit(p2wpkh_script(bytes(20)))
    node.fund_sats(wallet.address, 200_000)
    intent, quote = prepared(adapter, wallet, 200_000 - 2 * vsize - dust - 50)
    assert quote.params["change"] == dust + 50
    first = signed_for(adapter, wallet, intent, quote)
    node.set_min_fee_rate(SPIKE)
    adapter.broadcast(first)
    # When a bump is asked for, the spike's fee would leave less than dust: refused
    with pytest.raises(BumpRefused) as refused:
        adapter.replacement_quote(intent, quote)
    assert refused.value.reason == "change_below_dust"
    # Then the transaction is still the transfer's, and is mined once the spike passes
    node.set_min_fee_rate(0)
    node.mine(1)
    assert adapter.get_status(first).state is TxState.INCLUDED


def test_at_the_fee_cap_the_bump_is_refused(node: BitcoinNode, spec: ChainSpec, spike: None) -> None:
    capped = BitcoinAdapter(replace(spec, options={**spec.options, "fee_cap_sat_vb": 2, "max_fee_rate_sat_vb": 2}))
    wallet = Wallet.new(capped)
    node.fund_sats(wallet.address, 500_000)
    intent, quote = prepared(capped, wallet, 100_000)
    capped.broadcast(signed_for(capped, wallet, intent, quote))
    node.set_min_fee_rate(SPIKE)
    with pytest.raises(BumpRefused) as refused:
        capped.replacement_quote(intent, quote)
    assert refused.value.reason == "at_fee_cap"


def test_no_spike_no_bump_even_for_a_transaction_withheld_from_mining(node: BitcoinNode, adapter: BitcoinAdapter) -> None:
    # Given a transfer paying the node's estimate that the miner withholds
    wallet = Wallet.new(adapter)
    node.fund_sats(wallet.address, 500_000)
    intent, quote = prepared(adapter, wallet, 100_000)
    signed = signed_for(adapter, wallet, intent, quote)
    node.withhold(signed.tx_hash)
    adapter.broadcast(signed)
    node.mine(2)
    assert adapter.get_status(signed).state is TxState.PENDING
    # When a bump is asked for: none is warranted, it already pays the estimate
    assert adapter.replacement_quote(intent, quote) is None
    # Then, released, it is mined as it is
    node.release(signed.tx_hash)
    node.mine(1)
    assert adapter.get_status(signed).state is TxState.INCLUDED
