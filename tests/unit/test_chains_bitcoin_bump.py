"""Bitcoin fee bumps without a node: the replacement rate math (integers: sat, sat/vB, vB), and
BitcoinAdapter.replacement_quote / options / broadcast refusals against the scripted fake of
bitcoind's JSON-RPC of the adapter's unit tests."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from eth_keys import keys

from chains import bitcoin_tx as btx
from chains.base import FeeQuote, ReplacementPolicy
from chains.bitcoin import BitcoinAdapter
from chains.bitcoin_address import dust_limit, p2wpkh_script
from chains.bitcoin_bump import lowest_acceptable_rate, pays_estimate, replacement_rate
from chains.errors import BumpRefused, ChainError, MalformedTransaction, TransactionRejected
from chains.registry import load_registry
from tests.unit.test_chains_bitcoin_adapter import (
    SECRET,
    SIGNED,
    TXID,
    FakeNode,
    adapter_with,
    intent,
    node_error,
    spec_with,
    utxo,
)

VSIZE_1_IN_2_OUT = btx.estimate_vsize(1, [p2wpkh_script(bytes(20)), p2wpkh_script(bytes(20))])  # 141


def btc_per_kvb(sat_vb: int) -> Decimal:
    return Decimal(sat_vb * 1000) / 100_000_000


# --- the rate math ---------------------------------------------------------------------------------


class TestReplacementRate:
    def test_the_market_rate_wins_a_spike(self) -> None:
        assert replacement_rate(282, 141, 1, percent=20, market=10, incremental=1, cap=1000) == 10

    def test_the_percent_wins_when_the_market_moved_little(self) -> None:
        # 10 sat/vB raised by 20% is 12 sat/vB; the market only says 11
        assert replacement_rate(1410, 141, 1, percent=20, market=11, incremental=1, cap=1000) == 12

    def test_the_percent_is_rounded_up(self) -> None:
        # 2 sat/vB * 1.2 = 2.4 -> 3; the market (2) and the relay rule (3) agree
        assert replacement_rate(282, 141, 1, percent=20, market=2, incremental=1, cap=1000) == 3

    def test_the_incremental_relay_fee_wins_a_small_percent(self) -> None:
        # old: 300 sat for 141 vB (2.13 sat/vB); +1% = 3; rule 4 needs (300 + 141) / 141 -> 4
        assert replacement_rate(300, 141, 1, percent=1, market=2, incremental=1, cap=1000) == 4
        assert replacement_rate(300, 141, 1, percent=1, market=2, incremental=5, cap=1000) == 8

    def test_capped_at_the_cap(self) -> None:
        assert replacement_rate(282, 141, 1, percent=20, market=50, incremental=1, cap=7) == 7

    def test_at_the_cap_the_bump_is_refused(self) -> None:
        with pytest.raises(BumpRefused) as refused:
            replacement_rate(7 * 141, 141, 1, percent=20, market=50, incremental=1, cap=7)
        assert refused.value.reason == "at_fee_cap" and "cap of 7 sat/vB" in refused.value.detail

    def test_near_the_cap_a_shorter_old_signature_is_allowed_for(self) -> None:
        # old: 999 sat/vB at the estimate; rule 4 alone would take 1000, but if the old transaction is
        # 1 vB smaller than estimated it paid 1006.2 sat/vB: the replacement must beat that
        old = 999 * 141
        assert lowest_acceptable_rate(old, 141, 1, 1) == 1007
        with pytest.raises(BumpRefused, match="at_fee_cap"):
            replacement_rate(old, 141, 1, percent=0, market=0, incremental=1, cap=1000)
        assert replacement_rate(old, 141, 1, percent=0, market=0, incremental=1, cap=2000) == 1007

    def test_every_answer_passes_bip125_rules_4_and_6_in_integers(self) -> None:
        rng = random.Random(125)
        for _ in range(5000):
            n = rng.randint(1, 20)
            vsize = btx.estimate_vsize(n, [p2wpkh_script(bytes(20))] * rng.randint(1, 2))
            old_fee = rng.randint(vsize, vsize * 900)
            incremental, percent = rng.randint(1, 3), rng.randint(1, 100)
            rate = replacement_rate(old_fee, vsize, n, percent=percent, market=rng.randint(0, 1000),
                                    incremental=incremental, cap=100_000)
            assert isinstance(rate, int)
            assert rate * vsize >= old_fee + incremental * vsize  # rule 4 at the largest new size
            assert rate * (vsize - n) > old_fee  # rule 6 against the smallest plausible old size
            assert rate * vsize * 100 >= old_fee * (100 + percent)  # the policy's percent

    def test_pays_estimate(self) -> None:
        assert pays_estimate(282, 141, 2) and not pays_estimate(281, 141, 2) and pays_estimate(1410, 141, 10)


# --- the adapter -------------------------------------------------------------------------------------


def market(node: FakeNode, sat_vb: int) -> None:
    """The node's estimate now (estimatesmartfee answers BTC/kvB as a decimal)."""
    node.handlers["estimatesmartfee"] = {"feerate": btc_per_kvb(sat_vb), "blocks": 2}


def quoted(adapter: BitcoinAdapter, amount: int = 100_000, funds: int = 300_000) -> FeeQuote:
    return adapter.quote_fee(intent(adapter, amount), [utxo(funds)])


def built_fee(adapter: BitcoinAdapter, quote: FeeQuote, amount: int = 100_000) -> tuple[int, list[btx.TxOut]]:
    unsigned = adapter.build(intent(adapter, amount), quote, None, adapter.build_context(intent(adapter, amount)))
    signed = adapter.attach_signature(unsigned.payload, [keys.PrivateKey(SECRET).sign_msg_hash(d).to_bytes()
                                                         for d in unsigned.digests])
    decoded = btx.decode_payload(unsigned.payload)
    assert btx.parse_tx(signed.raw).vsize <= quote.params["vsize"]
    return decoded.fee, list(decoded.tx.outputs)


class TestReplacementQuote:
    def test_same_inputs_higher_fee_smaller_change(self) -> None:
        node = FakeNode()
        adapter = adapter_with(node)
        first = quoted(adapter)  # 3 sat/vB
        market(node, 10)
        bump = adapter.replacement_quote(intent(adapter, 100_000), first)
        assert bump is not None and bump.inputs == first.inputs
        assert (bump.params["fee_rate"], bump.params["vsize"]) == (10, first.params["vsize"])
        assert bump.max_fee == 10 * first.params["vsize"] and isinstance(bump.max_fee, int)
        assert bump.params["change"] == first.params["change"] - (bump.max_fee - first.max_fee)
        fee, outputs = built_fee(adapter, bump)
        old_fee, old_outputs = built_fee(adapter, first)
        assert (fee, old_fee) == (bump.max_fee, first.max_fee)
        assert [o.script_pubkey for o in outputs] == [o.script_pubkey for o in old_outputs]
        assert outputs[0].value == old_outputs[0].value == 100_000  # the recipient gets the same

    def test_the_estimate_is_read_exactly_and_rounded_up(self) -> None:
        node = FakeNode()
        adapter = adapter_with(node)
        first = quoted(adapter)
        node.handlers["estimatesmartfee"] = {"feerate": Decimal("0.00010001"), "blocks": 2}  # 10.001 sat/vB
        bump = adapter.replacement_quote(intent(adapter, 100_000), first)
        assert bump is not None and bump.params["fee_rate"] == 11

    def test_no_bump_while_the_transaction_pays_the_estimate(self) -> None:
        node = FakeNode()
        adapter = adapter_with(node)
        first = quoted(adapter)  # 3 sat/vB, the estimate
        assert adapter.replacement_quote(intent(adapter, 100_000), first) is None
        market(node, 2)
        assert adapter.replacement_quote(intent(adapter, 100_000), first) is None

    def test_a_bump_of_a_bump_raises_again(self) -> None:
        node = FakeNode()
        adapter = adapter_with(node)
        first = quoted(adapter)
        market(node, 10)
        second = adapter.replacement_quote(intent(adapter, 100_000), first)
        assert second is not None
        market(node, 11)
        third = adapter.replacement_quote(intent(adapter, 100_000), second)
        assert third is not None and third.params["fee_rate"] == 12 and third.inputs == first.inputs

    def test_the_mempool_minimum_and_incremental_fee_count(self) -> None:
        node = FakeNode(getmempoolinfo={"mempoolminfee": btc_per_kvb(4), "incrementalrelayfee": btc_per_kvb(5)})
        adapter = adapter_with(node)
        first = quoted(adapter)  # 4 sat/vB: the mempool minimum is above the estimate
        assert first.params["fee_rate"] == 4
        node.handlers["getmempoolinfo"] = {"mempoolminfee": btc_per_kvb(6), "incrementalrelayfee": btc_per_kvb(5)}
        bump = adapter.replacement_quote(intent(adapter, 100_000), first)
        assert bump is not None and bump.params["fee_rate"] == 9  # 4 + 5: the incremental relay fee wins

    def test_capped_at_max_fee_rate(self) -> None:
        node = FakeNode()
        adapter = adapter_with(node, fee_cap_sat_vb=3, max_fee_rate_sat_vb=5)
        first = quoted(adapter)
        market(node, 50)
        bump = adapter.replacement_quote(intent(adapter, 100_000), first)
        assert bump is not None and bump.params["fee_rate"] == 5
        with pytest.raises(BumpRefused) as refused:
            adapter.replacement_quote(intent(adapter, 100_000), bump)
        assert refused.value.reason == "at_fee_cap"

    def test_change_below_dust_refuses_the_bump(self) -> None:
        node = FakeNode()
        adapter = adapter_with(node)
        vsize = VSIZE_1_IN_2_OUT
        dust = dust_limit(p2wpkh_script(bytes(20)))
        first = quoted(adapter, 100_000, 100_000 + 3 * vsize + dust + 100)  # change: dust + 100
        assert first.params["change"] == dust + 100
        market(node, 3 + 100 // vsize + 1)  # the extra fee leaves less than dust
        with pytest.raises(BumpRefused) as refused:
            adapter.replacement_quote(intent(adapter, 100_000), first)
        assert refused.value.reason == "change_below_dust" and "dust limit of 294 sat" in refused.value.detail

    def test_a_transaction_without_change_cannot_be_bumped(self) -> None:
        node = FakeNode()
        adapter = adapter_with(node)
        first = quoted(adapter, 100_000, 100_000 + 3 * VSIZE_1_IN_2_OUT + 10)  # change under dust: none
        assert first.params["change"] == 0
        market(node, 50)
        with pytest.raises(BumpRefused, match="change_below_dust"):
            adapter.replacement_quote(intent(adapter, 100_000), first)

    def test_a_quote_that_does_not_add_up_is_malformed(self) -> None:
        adapter = adapter_with(FakeNode())
        first = quoted(adapter)
        with pytest.raises(MalformedTransaction):
            adapter.replacement_quote(intent(adapter, 100_001), first)
        with pytest.raises(MalformedTransaction):
            adapter.replacement_quote(intent(adapter, 100_000), FeeQuote(first.max_fee, {}, first.inputs))


class TestOptions:
    def test_defaults(self) -> None:
        devnet = adapter_with(FakeNode())
        assert devnet.replacement == ReplacementPolicy(after_s=3.0, percent=20)  # devnet registry: 3 s
        mainnet = BitcoinAdapter(load_registry("mainnet").chain("bitcoin"))
        assert (mainnet.replacement, mainnet.max_fee_rate) == (ReplacementPolicy(after_s=600.0, percent=20), 1000)
        spec = spec_with()
        unset = BitcoinAdapter(replace(spec, options={k: v for k, v in spec.options.items() if k != "rbf_after_s"}))
        assert (unset.replacement.after_s, unset.max_fee_rate) == (600.0, 1000)
        assert BitcoinAdapter(spec_with(fee_cap_sat_vb=2000)).max_fee_rate == 2000  # never below the quote cap

    def test_configured(self) -> None:
        adapter = BitcoinAdapter(spec_with(rbf_after_s=30, bump_percent=50, max_fee_rate_sat_vb=700))
        assert (adapter.replacement, adapter.max_fee_rate) == (ReplacementPolicy(after_s=30.0, percent=50), 700)

    @pytest.mark.parametrize(("option", "value"), [
        ("rbf_after_s", 0), ("rbf_after_s", "600"), ("rbf_after_s", 1.5), ("bump_percent", 0), ("bump_percent", True),
        ("max_fee_rate_sat_vb", 499), ("max_fee_rate_sat_vb", 2.5),
    ])
    def test_validated(self, option: str, value: Any) -> None:
        with pytest.raises(ChainError, match=f"option {option} must be an integer"):
            BitcoinAdapter(spec_with(**{option: value}))


class TestReplacementRefusals:
    @pytest.mark.parametrize("message", [
        f"insufficient fee, rejecting replacement {TXID}; new feerate 0.00002000 BTC/kvB <= old feerate 0.00002000 BTC/kvB",
        f"insufficient fee, rejecting replacement {TXID}, less fees than conflicting txs; 0.00001 < 0.00002",
        f"insufficient fee, rejecting replacement {TXID}, not enough additional fees to relay; 0.00000001 < 0.0000014",
        "insufficient feerate: does not improve feerate diagram",
    ])
    def test_paying_too_little_is_replacement_underpriced(self, message: str) -> None:
        with pytest.raises(TransactionRejected) as rejected:
            adapter_with(FakeNode(sendrawtransaction=node_error(-26, message))).broadcast(SIGNED)
        assert (rejected.value.reason, rejected.value.detail) == ("replacement_underpriced", message)

    @pytest.mark.parametrize("message", [
        "txn-mempool-conflict",  # the conflicting spend does not signal BIP125: no fee replaces it
        f"replacement-adds-unconfirmed, replacement {TXID} adds unconfirmed input, idx 1",
        f"too many potential replacements, rejecting replacement {TXID}; too many potential replacements (101 > 100)",
        f"bad-txns-spends-conflicting-tx, {TXID} spends conflicting transaction {TXID}",
    ])
    def test_other_replacement_refusals_are_rejected_by_node(self, message: str) -> None:
        with pytest.raises(TransactionRejected) as rejected:
            adapter_with(FakeNode(sendrawtransaction=node_error(-26, message))).broadcast(SIGNED)
        assert rejected.value.reason == "rejected_by_node"
