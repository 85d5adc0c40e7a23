"""The devnet Bitcoin node's BIP125 replacement (bitcoind's rules, codes and words), its fee-rate
spike and its withheld transactions, in-process over the same ChainState and RPC methods that
serve HTTP in the integration tests."""

from __future__ import annotations

from decimal import Decimal

import pytest
from eth_keys import keys

from chains import bitcoin_tx as btx
from chains.bitcoin_address import hash160
from devnet.bitcoin.chainstate import RpcFailure
from devnet.bitcoin.replacement import feerate_text, money_text
from devnet.bitcoin.rpc import Methods
from tests.unit.test_chains_bitcoin_devnet import (  # noqa: F401 - `node` is the fixture
    ALICE,
    ALICE_ADDRESS,
    ALICE_SCRIPT,
    FAUCET_ADDRESS,
    funded,
    node,
    refused,
    spend,
)

ELSEWHERE = btx.TxOut(400_000, btx.p2pkh_script(bytes(20)))


def paying(fee: int, total: int = 1_000_000) -> list[btx.TxOut]:
    """400_000 elsewhere, the rest minus `fee` back to alice."""
    return [ELSEWHERE, btx.TxOut(total - 400_000 - fee, ALICE_SCRIPT)]


def signed_with_sequence(outpoint: tuple[str, int], value: int, outputs: list[btx.TxOut], sequence: int) -> bytes:
    """Alice's spend with its one input's nSequence set (the adapter always uses 0xfffffffd)."""
    public = keys.PrivateKey(ALICE).public_key.to_compressed_bytes()
    tx = btx.Tx((btx.TxIn(outpoint[0], outpoint[1], sequence=sequence),), tuple(outputs))
    digest = btx.bip143_sighash(tx, 0, btx.p2wpkh_script_code(hash160(public)), value)
    signature = keys.PrivateKey(ALICE).sign_msg_hash(digest)
    witness = (btx.der_encode(signature.r, signature.s) + bytes([btx.SIGHASH_ALL]), public)
    return btx.Tx((btx.TxIn(outpoint[0], outpoint[1], sequence=sequence, witness=witness),), tuple(outputs)).serialize()


def mine(node: Methods, blocks: int = 1) -> list[str]:
    return node.generatetoaddress(blocks, FAUCET_ADDRESS)


def in_block(node: Methods, txid: str) -> bool:
    return txid in node.getblock(node.getbestblockhash())["tx"]


class TestReplacement:
    def test_a_higher_fee_replaces_and_evicts_the_original(self, node: Methods) -> None:
        outpoint = funded(node)
        original = node.sendrawtransaction(spend(outpoint, 1_000_000, paying(1_000)).hex())
        assert node.getmempoolentry(original)["bip125-replaceable"] is True
        replacement = node.sendrawtransaction(spend(outpoint, 1_000_000, paying(2_000)).hex())
        assert node.getrawmempool() == [replacement]
        with pytest.raises(RpcFailure) as unknown:
            node.getrawtransaction(original, 1)
        assert unknown.value.code == -5  # evicted: the node knows it no more
        mine(node)
        assert in_block(node, replacement) and node.getrawtransaction(replacement, 2)["fee"] == Decimal("0.00002")
        assert node.gettxout(*outpoint) is None

    def test_the_same_fee_rate_is_insufficient(self, node: Methods) -> None:
        outpoint = funded(node)
        original = node.sendrawtransaction(spend(outpoint, 1_000_000, paying(1_000)).hex())
        same_rate = spend(outpoint, 1_000_000, [ELSEWHERE, btx.TxOut(599_000, btx.p2wpkh_script(bytes(20)))])
        failure = refused(node, same_rate)
        txid = btx.parse_tx(same_rate).txid
        assert failure.code == -26
        assert failure.message.startswith(f"insufficient fee, rejecting replacement {txid}; new feerate 0.0000")
        assert "BTC/kvB <= old feerate 0.0000" in failure.message
        assert node.getrawmempool() == [original]

    def test_a_higher_rate_must_still_pay_for_its_relay(self, node: Methods) -> None:
        outpoint = funded(node)
        node.sendrawtransaction(spend(outpoint, 1_000_000, paying(1_000)).hex())
        cheap = spend(outpoint, 1_000_000, paying(1_100))  # +100 sat for ~140 vB: rule 4 wants 1 sat/vB more
        failure = refused(node, cheap)
        vsize = btx.parse_tx(cheap).vsize
        assert failure.message == (f"insufficient fee, rejecting replacement {btx.parse_tx(cheap).txid}, not enough "
                                   f"additional fees to relay; 0.000001 < {money_text(vsize)}")
        assert node.sendrawtransaction(spend(outpoint, 1_000_000, paying(1_000 + vsize)).hex())  # exactly enough

    def test_descendants_are_evicted_and_their_fees_count(self, node: Methods) -> None:
        outpoint = funded(node)
        parent = node.sendrawtransaction(spend(outpoint, 1_000_000, paying(1_000)).hex())
        child = node.sendrawtransaction(spend((parent, 1), 599_000, [btx.TxOut(589_000, ALICE_SCRIPT)]).hex())
        # beats the parent's rate, but not the parent's and the child's fees together (rule 3)
        failure = refused(node, spend(outpoint, 1_000_000, paying(5_000)))
        assert "less fees than conflicting txs; 0.00005 < 0.00011" in failure.message
        winner = node.sendrawtransaction(spend(outpoint, 1_000_000, paying(12_000)).hex())
        assert node.getrawmempool() == [winner] and child not in node.getrawmempool()

    def test_a_transaction_that_does_not_signal_is_not_replaced(self, node: Methods) -> None:
        outpoint = funded(node)
        final = node.sendrawtransaction(signed_with_sequence(outpoint, 1_000_000, paying(1_000), 0xFFFFFFFE).hex())
        assert node.getmempoolentry(final)["bip125-replaceable"] is False
        failure = refused(node, spend(outpoint, 1_000_000, paying(50_000)))
        assert (failure.code, failure.message) == (-26, "txn-mempool-conflict")
        assert node.getrawmempool() == [final]

    def test_a_replacement_may_not_add_unconfirmed_inputs(self, node: Methods) -> None:
        outpoint, other = funded(node), funded(node)
        node.sendrawtransaction(spend(outpoint, 1_000_000, paying(1_000)).hex())
        unconfirmed = node.sendrawtransaction(spend(other, 1_000_000, paying(1_000)).hex())
        both = btx.build_unsigned("regtest", ALICE_ADDRESS,
                                  [btx.Spend(*outpoint, 1_000_000), btx.Spend(unconfirmed, 1, 599_000)],
                                  [btx.TxOut(1_500_000, ALICE_SCRIPT)])
        raw = btx.sign_with_key(both.payload, both.digests, ALICE).raw
        assert refused(node, raw).message.startswith("replacement-adds-unconfirmed, replacement ")

    def test_a_transaction_mined_is_no_longer_replaceable(self, node: Methods) -> None:
        outpoint = funded(node)
        node.sendrawtransaction(spend(outpoint, 1_000_000, paying(1_000)).hex())
        mine(node)
        assert refused(node, spend(outpoint, 1_000_000, paying(9_000))).code == -25  # missingorspent


class TestSpikeAndWithholding:
    def test_a_spike_keeps_cheaper_transactions_in_the_mempool(self, node: Methods) -> None:
        cheap_outpoint, rich_outpoint = funded(node), funded(node)
        cheap = node.sendrawtransaction(spend(cheap_outpoint, 1_000_000, paying(1_000)).hex())  # ~7 sat/vB
        assert node.call("devnet_setminfeerate", [20]) == 20
        assert node.estimatesmartfee(2) == {"feerate": Decimal("0.00020000"), "blocks": 2}
        rich = node.sendrawtransaction(spend(rich_outpoint, 1_000_000, paying(20 * 150)).hex())
        child = node.sendrawtransaction(spend((cheap, 1), 599_000, [btx.TxOut(500_000, ALICE_SCRIPT)]).hex())
        mine(node, 3)
        assert node.getrawmempool() == [cheap, child]  # waiting, not dropped; the child waits for its parent
        assert node.getrawtransaction(rich, 1)["confirmations"] == 3
        assert node.call("devnet_setminfeerate", []) == 0  # the spike ends
        assert node.estimatesmartfee(2)["feerate"] == Decimal("0.00002000")
        mine(node)
        assert node.getrawmempool() == [] and in_block(node, cheap) and in_block(node, child)

    def test_a_replacement_paying_the_spike_rate_is_mined(self, node: Methods) -> None:
        outpoint = funded(node)
        node.call("devnet_setminfeerate", [20])
        stuck = node.sendrawtransaction(spend(outpoint, 1_000_000, paying(1_000)).hex())
        mine(node)
        assert node.getrawmempool() == [stuck]
        bumped = node.sendrawtransaction(spend(outpoint, 1_000_000, paying(20 * 150)).hex())
        mine(node)
        assert in_block(node, bumped) and node.getrawmempool() == []

    def test_a_withheld_transaction_waits_until_released(self, node: Methods) -> None:
        outpoint = funded(node)
        raw = spend(outpoint, 1_000_000, paying(1_000))
        txid = btx.parse_tx(raw).txid
        assert node.call("devnet_withhold", [txid]) is True  # before it is even sent
        node.sendrawtransaction(raw.hex())
        mine(node, 2)
        assert node.getrawmempool() == [txid]
        assert node.call("devnet_withhold", [txid, False]) is False
        mine(node)
        assert in_block(node, txid)

    def test_bad_control_arguments(self, node: Methods) -> None:
        for method, params in [("devnet_setminfeerate", [-1]), ("devnet_setminfeerate", ["x"]),
                               ("devnet_withhold", ["nope"]), ("devnet_withhold", ["ab" * 32, "yes"])]:
            with pytest.raises(RpcFailure):
                node.call(method, params)


def test_bitcoind_number_formats() -> None:
    assert [money_text(s) for s in (1, 140, 100_000, 100_000_000, 123_456_789)] == \
        ["0.00000001", "0.0000014", "0.001", "1.00", "1.23456789"]
    assert feerate_text(2_000) == "0.00002000 BTC/kvB" and feerate_text(150_000_000) == "1.50000000 BTC/kvB"
