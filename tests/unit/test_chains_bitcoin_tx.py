"""Bitcoin transactions offline: BIP143 vectors, DER and low-s, building, attaching, sizes, and a
cross-check of everything against bitcoinlib (an independent implementation)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eth_keys import keys

from chains import bitcoin_tx as btx
from chains.bitcoin_address import (
    address_from_public_key,
    compress_public_key,
    decode_address,
    hash160,
    p2pkh_script,
    p2wpkh_script,
    witness_script,
)
from chains.secp256k1 import SECP256K1_N
from chains.errors import InvalidSignature, MalformedTransaction

# BIP143 "Native P2WPKH" example: input 1 spends a P2WPKH output of 6 BTC.
BIP143_UNSIGNED = bytes.fromhex(
    "0100000002fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f0000000000eeffffffef51e1b804cc89d182"
    "d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb206000000001976a9148280b37df378db99f66f"
    "85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe6a21b2d50ce2f0167faa815988ac11000000"
)
BIP143_SIGNED = bytes.fromhex(
    "01000000000102fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f00000000494830450221008b9d1dc26b"
    "a6a9cb62127b02742fa9d754cd3bebf337f7a55d114c8e5cdd30be022040529b194ba3f9281a99f2b1c0a19c0489bc22ede944ccf4ecba"
    "b4cc618ef3ed01eeffffffef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202c"
    "b206000000001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe6a21b2"
    "d50ce2f0167faa815988ac000247304402203609e17b84f6a7d30c80bfa610b5b4542f32a8a0d5447a12fb1366d7f01cc44a0220573a95"
    "4c4518331561406f90300e8f3358f51928d43c212a8caed02de67eebee0121025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253"
    "f62fc70f07aeee635711000000"
)
BIP143_KEY = bytes.fromhex("619c335025c7f4012e556c2a58b2506e30b8511b53ade95ea316fd8c3286feb9")
BIP143_PKH = bytes.fromhex("1d0f172a0ecb48aee1be1f2687d2963ae33f71a1")
BIP143_SIGHASH = "c37af31116d1b27caf68aae9e3ac82f1477929014d5b917657d0eb49478cb670"
BIP143_DER = ("304402203609e17b84f6a7d30c80bfa610b5b4542f32a8a0d5447a12fb1366d7f01cc44a0220573a954c4518331561406f9030"
              "0e8f3358f51928d43c212a8caed02de67eebee")

# BIP143 "P2SH-P2WPKH" example: the scriptCode is the P2PKH of the redeem script's key hash.
BIP143_P2SH_UNSIGNED = bytes.fromhex(
    "0100000001db6b1b20aa0fd7b23880be2ecbd4a98130974cf4748fb66092ac4d3ceb1a54770100000000feffffff02b8b4eb0b00000000"
    "1976a914a457b684d7f0d539a46a45bbc043f35b59d0d96388ac0008af2f000000001976a914fd270b1ee6abcaea97fea7ad0402e8bd8a"
    "d6d77c88ac92040000"
)

SECRET = bytes.fromhex("11" * 32)
N = SECP256K1_N


def _sender() -> tuple[str, bytes]:
    public = compress_public_key(keys.PrivateKey(SECRET).public_key.to_bytes())
    return address_from_public_key(public, "regtest"), hash160(public)


def _unsigned(outputs: list[btx.TxOut] | None = None) -> tuple[str, btx.UnsignedTransaction]:
    sender, pkh = _sender()
    spends = [btx.Spend("aa" * 32, 1, 50_000), btx.Spend("bb" * 32, 0, 70_000)]
    outputs = outputs or [btx.TxOut(100_000, p2pkh_script(b"\x01" * 20)), btx.TxOut(19_000, p2wpkh_script(pkh))]
    return sender, btx.build_unsigned("regtest", sender, spends, outputs)


def _sign(digests: tuple[bytes, ...], secret: bytes = SECRET) -> list[bytes]:
    return [keys.PrivateKey(secret).sign_msg_hash(d).to_bytes() for d in digests]


class TestBip143:
    def test_native_p2wpkh_sighash(self) -> None:
        tx = btx.parse_tx(BIP143_UNSIGNED)
        assert tx.serialize() == BIP143_UNSIGNED
        digest = btx.bip143_sighash(tx, 1, btx.p2wpkh_script_code(BIP143_PKH), 600_000_000)
        assert digest.hex() == BIP143_SIGHASH

    def test_deterministic_signature_and_witness_match_the_bip(self) -> None:
        digest = bytes.fromhex(BIP143_SIGHASH)
        v, r, s = btx.split_signature(keys.PrivateKey(BIP143_KEY).sign_msg_hash(digest).to_bytes())
        assert btx.der_encode(r, s).hex() == BIP143_DER  # RFC6979 nonces, as Bitcoin Core signs
        public = btx.recover_public_key(digest, v, r, s)
        assert hash160(public) == BIP143_PKH
        signed = btx.parse_tx(BIP143_SIGNED)
        assert signed.inputs[1].witness == (bytes.fromhex(BIP143_DER + "01"), public)
        assert signed.serialize() == BIP143_SIGNED
        assert signed.txid != signed.wtxid and signed.vsize < len(BIP143_SIGNED)

    def test_p2sh_p2wpkh_sighash(self) -> None:
        tx = btx.parse_tx(BIP143_P2SH_UNSIGNED)
        code = btx.p2wpkh_script_code(bytes.fromhex("79091972186c449eb1ded22b78e40d009bdf0089"))
        assert btx.bip143_sighash(tx, 0, code, 1_000_000_000).hex() == \
            "64f3b0f4dd2bb3aa1ce8566d220cc74dda9df97d8490cc81d89d735c92e59fb6"

    def test_only_sighash_all(self) -> None:
        with pytest.raises(MalformedTransaction):
            btx.bip143_sighash(btx.parse_tx(BIP143_UNSIGNED), 1, b"", 1, sighash_type=3)


class TestSignatures:
    def test_high_s_is_made_low_and_the_recovery_id_flips(self) -> None:
        digest = bytes(range(32))
        v, r, s = btx.split_signature(_sign((digest,))[0])
        high = r.to_bytes(32, "big") + (N - s).to_bytes(32, "big") + bytes([v ^ 1])
        assert btx.split_signature(high) == (v, r, s)
        assert btx.split_signature(r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v + 27])) == (v, r, s)

    @pytest.mark.parametrize("bad", [b"", bytes(64), bytes(65), b"\x01" * 64 + b"\x02", b"\xff" * 64 + b"\x00"])
    def test_malformed_signatures(self, bad: bytes) -> None:
        with pytest.raises(InvalidSignature):
            btx.split_signature(bad)

    @pytest.mark.parametrize(("r", "s"), [(1, 1), (2**255, 2**255 - 1), (0x7F, 0x80), (N - 1, N // 2)])
    def test_der_round_trip(self, r: int, s: int) -> None:
        assert btx.der_decode(btx.der_encode(r, s)) == (r, s)

    @pytest.mark.parametrize("bad", ["30050200020101", "300702010102020001", "30060201ff020101",
                                     "3007020101020101", "30070201010201010000", "3106020101020101"])
    def test_der_strictness(self, bad: str) -> None:
        with pytest.raises(ValueError):
            btx.der_decode(bytes.fromhex(bad))


class TestBuildAndAttach:
    def test_digests_are_bip143_per_input_and_the_signed_tx_verifies(self) -> None:
        sender, unsigned = _unsigned()
        assert len(unsigned.digests) == 2 and all(len(d) == 32 for d in unsigned.digests)
        signed = btx.attach(unsigned.payload, _sign(unsigned.digests))
        tx = btx.parse_tx(signed.raw)
        assert tx.txid == signed.tx_hash and tx.version == 2 and tx.locktime == 0
        assert all(i.sequence == btx.SEQUENCE_RBF and not i.script_sig for i in tx.inputs)
        _, pkh = _sender()
        for n, (i, value) in enumerate(zip(tx.inputs, (50_000, 70_000))):
            sig, public = i.witness
            r, s = btx.der_decode(sig[:-1])
            assert sig[-1] == btx.SIGHASH_ALL and s <= N // 2 and hash160(public) == pkh
            assert btx.verify_signature(public, btx.bip143_sighash(tx, n, btx.p2wpkh_script_code(pkh), value), r, s)

    def test_payload_is_canonical_json_and_fee_is_inputs_minus_outputs(self) -> None:
        _, unsigned = _unsigned()
        doc = json.loads(unsigned.payload)
        assert doc["format"] == "btc-p2wpkh/1" and doc["network"] == "regtest"
        assert btx.decode_payload(unsigned.payload).fee == 120_000 - 119_000

    def test_a_signature_by_another_key_is_refused(self) -> None:
        _, unsigned = _unsigned()
        with pytest.raises(InvalidSignature, match="not by the key"):
            btx.attach(unsigned.payload, _sign(unsigned.digests, bytes.fromhex("22" * 32)))

    def test_a_signature_over_another_digest_is_refused(self) -> None:
        _, unsigned = _unsigned()
        sigs = _sign(unsigned.digests)
        with pytest.raises(InvalidSignature):
            btx.attach(unsigned.payload, [sigs[1], sigs[0]])

    def test_signature_count_must_match_inputs(self) -> None:
        _, unsigned = _unsigned()
        with pytest.raises(InvalidSignature, match="2 inputs"):
            btx.attach(unsigned.payload, _sign(unsigned.digests)[:1])

    def test_a_tampered_payload_changes_the_digests(self) -> None:
        _, unsigned = _unsigned()
        doc = json.loads(unsigned.payload)
        doc["inputs"][0]["value"] += 1  # BIP143 commits to the spent amount
        tampered = json.dumps(doc).encode()
        assert btx.decode_payload(tampered).digests()[0] != unsigned.digests[0]
        with pytest.raises(InvalidSignature):
            btx.attach(tampered, _sign(unsigned.digests))

    @pytest.mark.parametrize("mutate", [
        lambda d: d.update(format="evm-tx/1"),
        lambda d: d.update(version=1),
        lambda d: d.update(inputs=[]),
        lambda d: d["inputs"][0].update(txid="AA" * 32),
        lambda d: d["inputs"][0].update(vout=-1),
        lambda d: d["outputs"][0].update(value=10**16),
        lambda d: d["outputs"][0].update(value=1.5),
        lambda d: d.update({"from": "bcrt1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqc8gma6"}),
        lambda d: d.update(network="mainnet"),
        lambda d: d.pop("outputs"),
    ])
    def test_malformed_payloads(self, mutate) -> None:  # type: ignore[no-untyped-def]
        _, unsigned = _unsigned()
        doc = json.loads(unsigned.payload)
        mutate(doc)
        with pytest.raises(MalformedTransaction):
            btx.decode_payload(json.dumps(doc).encode())
        with pytest.raises(MalformedTransaction):
            btx.decode_payload(b"not json")

    def test_outputs_above_inputs_are_refused(self) -> None:
        sender, _ = _sender()
        with pytest.raises(MalformedTransaction, match="exceed"):
            btx.build_unsigned("regtest", sender, [btx.Spend("aa" * 32, 0, 1000)], [btx.TxOut(1001, p2pkh_script(bytes(20)))])


class TestSizes:
    @pytest.mark.parametrize("n_inputs", [1, 2, 3, 7])
    @pytest.mark.parametrize("destination", [p2wpkh_script(bytes(20)), p2pkh_script(bytes(20)), witness_script(1, bytes(32))])
    def test_estimate_is_an_upper_bound_within_a_few_vbytes(self, n_inputs: int, destination: bytes) -> None:
        sender, pkh = _sender()
        spends = [btx.Spend(f"{n:064x}", n, 10_000) for n in range(n_inputs)]
        outputs = [btx.TxOut(5_000, destination), btx.TxOut(4_000, p2wpkh_script(pkh))]
        unsigned = btx.build_unsigned("regtest", sender, spends, outputs)
        actual = btx.parse_tx(btx.attach(unsigned.payload, _sign(unsigned.digests)).raw).vsize
        estimate = btx.estimate_vsize(n_inputs, [o.script_pubkey for o in outputs])
        assert actual <= estimate <= actual + n_inputs  # at most a byte of signature per input

    def test_parse_refuses_garbage(self) -> None:
        for raw in (b"", BIP143_SIGNED[:-1], BIP143_SIGNED + b"\0", bytes.fromhex("0100000000000000000000")):
            with pytest.raises(ValueError):
                btx.parse_tx(raw)


class TestAgainstBitcoinlib:
    def test_bitcoinlib_agrees_on_txid_sighash_outputs_and_verifies_our_signatures(self) -> None:
        btx.load_bitcoinlib()
        from bitcoinlib.transactions import Transaction

        destination = decode_address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "regtest")
        sender, unsigned = _unsigned([btx.TxOut(100_000, destination.script_pubkey),
                                      btx.TxOut(19_000, p2wpkh_script(_sender()[1]))])
        signed = btx.attach(unsigned.payload, _sign(unsigned.digests))
        theirs = Transaction.parse_hex(signed.raw.hex(), network="regtest")
        for i, value in zip(theirs.inputs, (50_000, 70_000)):
            i.value = value
        assert theirs.txid == signed.tx_hash
        assert [o.address for o in theirs.outputs] == [destination.address, sender]
        assert [theirs.signature_hash(n) for n in range(2)] == list(unsigned.digests)
        assert theirs.verify()
        theirs.inputs[0].value = 50_001  # the amount is committed to: the signature no longer verifies
        assert not theirs.verify()

    def test_bitcoinlib_stays_out_of_home_and_quiet(self, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        import logging
        import os

        btx.load_bitcoinlib()
        data_dir = btx.bitcoinlib_data_dir()
        assert os.environ["BCL_DATA_DIR"] == str(data_dir)
        assert not str(data_dir).startswith(os.path.expanduser("~/.bitcoinlib"))
        assert "enable_bitcoinlib_logging = False" in (data_dir / "config.ini").read_text()
        assert logging.getLogger("bitcoinlib").propagate is False
        monkeypatch.delenv("BCL_DATA_DIR")
        monkeypatch.setenv("PARATRO_HOME", str(tmp_path))
        assert btx.bitcoinlib_data_dir() == tmp_path.resolve() / ".devnet" / "bitcoinlib"


def test_replace_recomputes_the_txid() -> None:
    tx = btx.parse_tx(BIP143_UNSIGNED)
    assert tx.txid != replace(tx, locktime=0).txid
