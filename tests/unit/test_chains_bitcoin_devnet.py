"""The devnet Bitcoin node's chain state and RPC methods, in-process: what it accepts, what it
refuses (with bitcoind's words), mining and reorgs. The same code runs behind HTTP in the
integration tests."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest
from eth_keys import keys

from chains import bitcoin_tx as btx
from chains.secp256k1 import SECP256K1_N
from chains.bitcoin_address import address_from_public_key, compress_public_key, hash160, p2pkh_script, p2wpkh_script
from devnet.bitcoin.chainstate import COINBASE_MATURITY, ChainState, RpcFailure, faucet_key
from devnet.bitcoin.rpc import Methods
from devnet.bitcoin_node import _encode

ALICE = bytes.fromhex("44" * 32)


def key_script(secret: bytes) -> tuple[str, bytes]:
    public = compress_public_key(keys.PrivateKey(secret).public_key.to_bytes())
    return address_from_public_key(public, "regtest"), p2wpkh_script(hash160(public))


FAUCET_ADDRESS, FAUCET_SCRIPT = key_script(faucet_key())
ALICE_ADDRESS, ALICE_SCRIPT = key_script(ALICE)


@pytest.fixture
def node() -> Methods:
    state = ChainState(fee_rate_sat_vb=2)
    state.mine(COINBASE_MATURITY + 1, FAUCET_SCRIPT)
    return Methods(state, faucet_key(), FAUCET_SCRIPT)


def funded(node: Methods, sats: int = 1_000_000) -> tuple[str, int]:
    """Given alice holds one confirmed output of `sats`: its outpoint."""
    txid = node.sendtoaddress(ALICE_ADDRESS, Decimal(sats) / 100_000_000)
    node.generatetoaddress(1, FAUCET_ADDRESS)
    vout = next(n for n, o in enumerate(node.state.txs[txid].outputs) if o.script_pubkey == ALICE_SCRIPT)
    return txid, vout


def spend(outpoint: tuple[str, int], value: int, outputs: list[btx.TxOut], secret: bytes = ALICE) -> bytes:
    unsigned = btx.build_unsigned("regtest", ALICE_ADDRESS, [btx.Spend(outpoint[0], outpoint[1], value)], outputs)
    return btx.sign_with_key(unsigned.payload, unsigned.digests, secret).raw


def refused(node: Methods, raw: bytes) -> RpcFailure:
    with pytest.raises(RpcFailure) as caught:
        node.sendrawtransaction(raw.hex())
    return caught.value


PAY = [btx.TxOut(400_000, p2pkh_script(bytes(20))), btx.TxOut(599_000, ALICE_SCRIPT)]


class TestAccepting:
    def test_a_valid_spend_enters_the_mempool_then_a_block(self, node: Methods) -> None:
        outpoint = funded(node)
        raw = spend(outpoint, 1_000_000, PAY)
        txid = node.sendrawtransaction(raw.hex())
        assert node.getmempoolentry(txid)["fees"]["base"] == Decimal("0.00001")
        assert node.sendrawtransaction(raw.hex()) == txid  # bitcoind answers the txid again
        node.generatetoaddress(1, FAUCET_ADDRESS)
        assert node.getrawtransaction(txid, 2)["fee"] == Decimal("0.00001")
        assert node.getrawtransaction(txid, 1)["confirmations"] == 1
        with pytest.raises(RpcFailure) as caught:
            node.sendrawtransaction(raw.hex())
        assert caught.value.code == -27

    def test_gettxout_sees_spends_and_outputs_in_the_mempool_only_when_asked(self, node: Methods) -> None:
        outpoint = funded(node)
        found = node.gettxout(*outpoint)
        assert (found["bestblock"], found["confirmations"], found["value"]) == (node.getbestblockhash(), 1, Decimal("0.01"))
        assert found["scriptPubKey"]["address"] == ALICE_ADDRESS and found["coinbase"] is False
        txid = node.sendrawtransaction(spend(outpoint, 1_000_000, PAY).hex())
        assert node.gettxout(*outpoint, True) is None  # spent in the mempool
        assert node.gettxout(*outpoint, False)["confirmations"] == 1  # the chain alone still has it
        assert node.gettxout(txid, 1, True)["confirmations"] == 0 and node.gettxout(txid, 1, False) is None
        node.generatetoaddress(1, FAUCET_ADDRESS)
        assert node.gettxout(*outpoint, False) is None and node.gettxout(txid, 1)["confirmations"] == 1
        assert node.gettxout("ee" * 32, 0) is None

    def test_unconfirmed_parents_can_be_spent(self, node: Methods) -> None:
        outpoint = funded(node)
        parent = node.sendrawtransaction(spend(outpoint, 1_000_000, PAY).hex())
        child = spend((parent, 1), 599_000, [btx.TxOut(598_000, ALICE_SCRIPT)])
        assert node.sendrawtransaction(child.hex()) in node.getrawmempool()
        node.generatetoaddress(1, FAUCET_ADDRESS)
        assert node.getrawmempool() == []


class TestRefusing:
    def test_a_tampered_signature(self, node: Methods) -> None:
        tx = btx.parse_tx(spend(funded(node), 1_000_000, PAY))
        sig, public = tx.inputs[0].witness
        r, s = btx.der_decode(sig[:-1])
        forged = btx.der_encode(r ^ 1, s) + sig[-1:]
        bad = replace(tx, inputs=(replace(tx.inputs[0], witness=(forged, public)),))
        failure = refused(node, bad.serialize())
        assert failure.code == -26 and "mandatory-script-verify-flag-failed" in failure.message

    def test_a_signature_by_another_key(self, node: Methods) -> None:
        outpoint = funded(node)
        tx = btx.parse_tx(spend(outpoint, 1_000_000, PAY))
        alice_public = tx.inputs[0].witness[1]
        mallory = keys.PrivateKey(bytes.fromhex("55" * 32))
        digest = btx.build_unsigned("regtest", ALICE_ADDRESS, [btx.Spend(*outpoint, 1_000_000)], PAY).digests[0]
        _, r, s = btx.split_signature(mallory.sign_msg_hash(digest).to_bytes())
        signature = btx.der_encode(r, s) + b"\x01"
        with_her_key = replace(tx, inputs=(replace(tx.inputs[0], witness=(signature, compress_public_key(
            mallory.public_key.to_bytes()))),))
        assert "Witness program hash mismatch" in refused(node, with_her_key.serialize()).message
        with_alices_key = replace(tx, inputs=(replace(tx.inputs[0], witness=(signature, alice_public)),))
        assert "Signature must be zero" in refused(node, with_alices_key.serialize()).message

    def test_high_s(self, node: Methods) -> None:
        tx = btx.parse_tx(spend(funded(node), 1_000_000, PAY))
        sig, public = tx.inputs[0].witness
        r, s = btx.der_decode(sig[:-1])
        high = btx.der_encode(r, SECP256K1_N - s) + sig[-1:]
        bad = replace(tx, inputs=(replace(tx.inputs[0], witness=(high, public)),))
        assert "S value is unnecessarily high" in refused(node, bad.serialize()).message

    def test_double_spend_and_missing_inputs(self, node: Methods) -> None:
        outpoint = funded(node)
        node.sendrawtransaction(spend(outpoint, 1_000_000, PAY).hex())
        # the same fee for the same size: BIP125 wants a replacement to pay more (devnet.bitcoin.replacement)
        conflict = spend(outpoint, 1_000_000, [btx.TxOut(400_000, p2pkh_script(b"\x01" * 20)), PAY[1]])
        assert refused(node, conflict).message.startswith("insufficient fee, rejecting replacement")
        node.generatetoaddress(1, FAUCET_ADDRESS)
        failure = refused(node, conflict)
        assert (failure.code, failure.message) == (-25, "bad-txns-inputs-missingorspent")
        assert refused(node, spend(("cd" * 32, 0), 5_000, [btx.TxOut(4_000, ALICE_SCRIPT)])).code == -25

    @pytest.mark.parametrize(("outputs", "reason"), [
        ([btx.TxOut(293, ALICE_SCRIPT), btx.TxOut(998_000, ALICE_SCRIPT)], "dust"),
        ([btx.TxOut(999_950, ALICE_SCRIPT)], "min relay fee not met"),
        ([btx.TxOut(1_000_001, ALICE_SCRIPT)], "bad-txns-in-belowout"),
        ([btx.TxOut(900_000, b"\x51")], "scriptpubkey"),
    ])
    def test_policy(self, node: Methods, outputs: list[btx.TxOut], reason: str) -> None:
        outpoint = funded(node)
        unsigned_payload = btx.encode_payload("regtest", ALICE_ADDRESS, [btx.Spend(*outpoint, 1_000_000)], outputs)
        if reason == "bad-txns-in-belowout":  # our builder refuses this one; write the bytes by hand
            good = btx.parse_tx(spend(outpoint, 1_000_000, [btx.TxOut(900_000, ALICE_SCRIPT)]))
            raw = replace(good, outputs=tuple(outputs)).serialize()
        else:
            decoded = btx.decode_payload(unsigned_payload)
            raw = btx.sign_with_key(unsigned_payload, decoded.digests(), ALICE).raw
        assert refused(node, raw).message.startswith(reason)

    def test_immature_coinbase(self, node: Methods) -> None:
        node.generatetoaddress(1, ALICE_ADDRESS)
        coinbase = node.state.active[-1]
        txid = node.state.blocks[coinbase].txids[0]
        raw = spend((txid, 0), 50 * 10**8, [btx.TxOut(49 * 10**8, ALICE_SCRIPT)])
        assert "premature-spend-of-coinbase" in refused(node, raw).message
        node.generatetoaddress(COINBASE_MATURITY - 1, FAUCET_ADDRESS)
        assert node.sendrawtransaction(raw.hex())

    def test_garbage(self, node: Methods) -> None:
        for raw in ("zz", "00", ""):
            with pytest.raises(RpcFailure) as caught:
                node.sendrawtransaction(raw)
            assert caught.value.code == -22


class TestReorg:
    def test_invalidated_blocks_return_their_transactions_to_the_mempool(self, node: Methods) -> None:
        outpoint = funded(node)
        txid = node.sendrawtransaction(spend(outpoint, 1_000_000, PAY).hex())
        [old] = node.generatetoaddress(1, FAUCET_ADDRESS)
        height = node.getblockcount()
        node.invalidateblock(old)
        assert node.getblockcount() == height - 1
        assert node.getblockheader(old)["confirmations"] == -1
        assert txid in node.getrawmempool() and "blockhash" not in node.getrawtransaction(txid, 1)
        [new] = node.generatetoaddress(1, FAUCET_ADDRESS)
        assert new != old and node.getrawtransaction(txid, 1)["blockhash"] == new

    def test_deeper_reorg_restores_the_spent_outputs(self, node: Methods) -> None:
        outpoint = funded(node)
        first = node.getblockhash(node.getblockcount())
        node.invalidateblock(first)  # the funding transaction goes back to the mempool
        assert outpoint[0] in node.getrawmempool()
        assert node.scantxoutset("start", [f"addr({ALICE_ADDRESS})"])["unspents"] == []
        node.generatetoaddress(1, FAUCET_ADDRESS)
        assert len(node.scantxoutset("start", [f"addr({ALICE_ADDRESS})"])["unspents"]) == 1


class TestRpcShapes:
    def test_scan_and_listunspent(self, node: Methods) -> None:
        outpoint = funded(node, 1_000_000)
        change_tx = node.sendrawtransaction(spend(outpoint, 1_000_000, PAY).hex())
        scan = node.scantxoutset("start", [f"addr({ALICE_ADDRESS})"])
        assert [(u["txid"], u["amount"]) for u in scan["unspents"]] == [(outpoint[0], Decimal("0.01"))]  # confirmed view
        listed = node.listunspent(0, 9_999_999, [ALICE_ADDRESS], False)
        assert [(u["txid"], u["amount"], u["confirmations"], u["safe"]) for u in listed] == \
            [(change_tx, Decimal("0.00599"), 0, True)]  # mempool-aware: the spent output is gone

    def test_fee_estimate_and_chain_info(self, node: Methods) -> None:
        assert node.estimatesmartfee(2) == {"feerate": Decimal("0.00002000"), "blocks": 2}
        assert node.getblockchaininfo()["chain"] == "regtest"
        node.state.fee_rate_sat_vb = 0
        assert "errors" in node.estimatesmartfee(2)

    def test_unknown_things(self, node: Methods) -> None:
        for call, code in [(lambda: node.getrawtransaction("ab" * 32, 1), -5), (lambda: node.getblockheader("ab" * 32), -5),
                           (lambda: node.getblockhash(10**6), -8), (lambda: node.call("nosuch", []), -32601),
                           (lambda: node.getmempoolentry("ab" * 32), -5), (lambda: node.sendtoaddress("bc1qnope", 1), -5)]:
            with pytest.raises(RpcFailure) as caught:
                call()
            assert caught.value.code == code

    def test_amounts_are_written_as_exact_json_numbers(self) -> None:
        text = _encode({"amount": Decimal("20999999.99999999"), "list": [Decimal("0.00000001")], "s": "x"})
        assert text == '{"amount": 20999999.99999999, "list": [0.00000001], "s": "x"}'
        assert json.loads(text, parse_float=Decimal)["amount"] == Decimal("20999999.99999999")
