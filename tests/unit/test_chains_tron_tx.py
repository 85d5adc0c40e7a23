"""TRON transactions offline: what gets signed matches tronpy byte for byte, and signatures are checked."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from eth_keys import keys
from tronpy import Contract, Tron
from tronpy.keys import PrivateKey

from chains import tron_tx
from chains.base import FeeQuote, TransferIntent
from chains.errors import InvalidSignature, MalformedTransaction
from chains.secp256k1 import SECP256K1_N
from chains.registry import load_registry
from chains.tron import TronAdapter

SPEC = load_registry("devnet").chain("tron")
USDT = SPEC.token("USDT")
SENDER_KEY = PrivateKey(bytes.fromhex("11" * 32))
SENDER = SENDER_KEY.public_key.to_base58check_address()
RECIPIENT = PrivateKey(bytes.fromhex("22" * 32)).public_key.to_base58check_address()
CONTEXT = {"ref_block_bytes": "1a2b", "ref_block_hash": "0102030405060708", "expiration": 1_700_000_060_000,
           "timestamp": 1_700_000_000_000}
REF_BLOCK_ID = "0" * 12 + "1a2b" + "0102030405060708" + "00" * 16
TRX_FEE = FeeQuote(max_fee=1_368_000, params={"kind": "TRX", "bandwidth_sun": 268_000, "activation_sun": 1_100_000})
TRC20_FEE = FeeQuote(max_fee=30_345_000, params={"kind": "TRC20", "bandwidth_sun": 345_000, "fee_limit": 30_000_000})
TRANSFER_ABI = [{"name": "transfer", "type": "function", "stateMutability": "nonpayable",
                 "inputs": [{"name": "_to", "type": "address"}, {"name": "_value", "type": "uint256"}],
                 "outputs": [{"name": "", "type": "bool"}]}]


@pytest.fixture
def adapter() -> TronAdapter:
    return TronAdapter(SPEC)  # makes no call: building and attaching are offline


def _pinned(builder: Any) -> Any:
    """tronpy stamps builders with the wall clock; pin them to the test's context."""
    builder._raw_data.update(timestamp=CONTEXT["timestamp"], expiration=CONTEXT["expiration"])
    return builder.build(offline=True, ref_block_id=REF_BLOCK_ID)


def test_a_trx_transfer_is_what_tronpy_builds(adapter: TronAdapter) -> None:
    unsigned = adapter.build(TransferIntent(SENDER, RECIPIENT, 1_234_567, SPEC.native), TRX_FEE, None, CONTEXT)
    theirs = _pinned(Tron(network="nile").trx.transfer(SENDER, RECIPIENT, 1_234_567))
    assert unsigned.digests == (bytes.fromhex(theirs.txid),)
    assert json.loads(unsigned.payload)["raw_data"] == theirs._raw_data


def test_a_trc20_transfer_is_what_tronpy_builds(adapter: TronAdapter) -> None:
    unsigned = adapter.build(TransferIntent(SENDER, RECIPIENT, 10**6, USDT), TRC20_FEE, None, CONTEXT)
    contract = Contract(USDT.contract, abi=TRANSFER_ABI, client=Tron(network="nile"))
    theirs = _pinned(contract.functions.transfer(RECIPIENT, 10**6).with_owner(SENDER).fee_limit(30_000_000))
    assert unsigned.digests == (bytes.fromhex(theirs.txid),)
    ours = json.loads(unsigned.payload)["raw_data"]
    assert ours["fee_limit"] == 30_000_000
    assert ours["contract"][0]["parameter"]["value"]["data"] == theirs._raw_data["contract"][0]["parameter"]["value"]["data"]


def test_building_is_deterministic_and_the_digest_is_sha256_of_raw_data(adapter: TronAdapter) -> None:
    import hashlib

    intent = TransferIntent(SENDER, RECIPIENT, 5, SPEC.native)
    first, second = (adapter.build(intent, TRX_FEE, None, dict(CONTEXT)) for _ in range(2))
    assert first == second
    doc = json.loads(first.payload)
    assert hashlib.sha256(bytes.fromhex(doc["raw_data_hex"])).digest() == first.digests[0]
    assert doc["from"] == SENDER and doc["format"] == "tron-tx/1"


def _signed_like_tronpy(adapter: TronAdapter, signature: bytes) -> dict[str, Any]:
    unsigned = adapter.build(TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), TRX_FEE, None, CONTEXT)
    signed = adapter.attach_signature(unsigned.payload, [signature])
    assert signed.tx_hash == unsigned.digests[0].hex()
    return json.loads(signed.raw)


def _digest(adapter: TronAdapter) -> bytes:
    return adapter.build(TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), TRX_FEE, None, CONTEXT).digests[0]


def test_signatures_from_tronpy_and_eth_keys_give_tronpys_encoding(adapter: TronAdapter) -> None:
    digest = _digest(adapter)
    tronpy_sig = SENDER_KEY.sign_msg_hash(digest).to_bytes()
    eth_sig = keys.PrivateKey(SENDER_KEY.to_bytes()).sign_msg_hash(digest).to_bytes()
    assert tronpy_sig == eth_sig  # both RFC 6979, low s, v in {0, 1}
    doc = _signed_like_tronpy(adapter, eth_sig)
    assert doc["signature"] == [tronpy_sig.hex()]
    assert doc["visible"] is False and doc["txID"] == digest.hex()
    assert doc["raw_data_hex"] == tron_tx.raw_data_bytes(doc["raw_data"]).hex()


def test_v_of_27_28_and_a_high_s_twin_normalize_to_the_same_signature(adapter: TronAdapter) -> None:
    digest = _digest(adapter)
    canonical = SENDER_KEY.sign_msg_hash(digest).to_bytes()
    r, s, v = canonical[:32], int.from_bytes(canonical[32:64], "big"), canonical[64]
    high_s_twin = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([v ^ 1])
    for variant in (canonical[:64] + bytes([v + 27]), high_s_twin):
        assert _signed_like_tronpy(adapter, variant)["signature"] == [canonical.hex()]


@pytest.mark.parametrize(
    ("signatures", "match"),
    [
        (lambda d: [PrivateKey(bytes.fromhex("33" * 32)).sign_msg_hash(d).to_bytes()], "not by the sender"),
        (lambda d: [SENDER_KEY.sign_msg_hash(d).to_bytes()[:64]], "65 bytes"),
        (lambda d: [SENDER_KEY.sign_msg_hash(d).to_bytes()[:64] + b"\x05"], "recovery id"),
        (lambda d: [bytes(65)], "out of range"),
        (lambda d: [SENDER_KEY.sign_msg_hash(d).to_bytes()] * 2, "one signature"),
        (lambda d: [], "one signature"),
    ],
)
def test_a_signature_not_by_the_sender_is_refused(adapter: TronAdapter, signatures: Any, match: str) -> None:
    unsigned = adapter.build(TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), TRX_FEE, None, CONTEXT)
    with pytest.raises(InvalidSignature, match=match):
        adapter.attach_signature(unsigned.payload, signatures(unsigned.digests[0]))


def _tampered(payload: bytes, change: Any) -> bytes:
    doc = json.loads(payload)
    change(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc["raw_data"]["contract"][0]["parameter"]["value"].update(amount=8),
        lambda doc: doc.update(raw_data_hex=doc["raw_data_hex"][:-2] + "00"),
        lambda doc: doc.update(txID="00" * 32),
        lambda doc: doc.update(format="evm-tx/1"),
        lambda doc: doc.update(**{"from": RECIPIENT}),
        lambda doc: doc["raw_data"]["contract"][0].update(type="TransferAssetContract"),
    ],
)
def test_a_tampered_payload_is_refused_before_signing_it(adapter: TronAdapter, change: Any) -> None:
    unsigned = adapter.build(TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), TRX_FEE, None, CONTEXT)
    signature = SENDER_KEY.sign_msg_hash(unsigned.digests[0]).to_bytes()
    with pytest.raises(MalformedTransaction):
        adapter.attach_signature(_tampered(unsigned.payload, change), [signature])


@pytest.mark.parametrize("payload", [b"", b"not json", b"[]", b'{"raw_data": 1}'])
def test_garbage_payloads_are_malformed(adapter: TronAdapter, payload: bytes) -> None:
    with pytest.raises(MalformedTransaction):
        adapter.attach_signature(payload, [bytes(65)])


@pytest.mark.parametrize(
    ("intent", "fee", "context", "match"),
    [
        (TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), replace(TRX_FEE, max_fee=1), CONTEXT, "max_fee"),
        (TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), TRC20_FEE, CONTEXT, "for 'TRC20'"),
        (TransferIntent(SENDER, RECIPIENT, 7, USDT), TRX_FEE, CONTEXT, "for 'TRX'"),
        (TransferIntent(SENDER, RECIPIENT, 7, replace(USDT, decimals=18)), TRC20_FEE, CONTEXT, "registry"),
        (TransferIntent(SENDER, RECIPIENT, 0, SPEC.native), TRX_FEE, CONTEXT, "positive"),
        (TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), TRX_FEE, None, "build context"),
        (TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), TRX_FEE, {**CONTEXT, "ref_block_hash": "zz"}, "ref_block_hash"),
        (TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), TRX_FEE, {"expiration": 1}, "needs"),
        (TransferIntent(SENDER, RECIPIENT, 2**63, SPEC.native), TRX_FEE, CONTEXT, "amount"),
        (TransferIntent(SENDER, RECIPIENT, 7, USDT),
         FeeQuote(max_fee=10, params={"kind": "TRC20", "bandwidth_sun": 0, "fee_limit": 0}), CONTEXT, "fee_limit"),
    ],
)
def test_unusable_build_inputs_are_malformed(adapter: TronAdapter, intent: TransferIntent, fee: FeeQuote,
                                             context: Any, match: str) -> None:
    with pytest.raises(MalformedTransaction, match=match):
        adapter.build(intent, fee, None, context)


def test_the_bandwidth_estimate_is_what_the_devnet_charges() -> None:
    from devnet.tron.chain import TronChain

    for raw in (tron_tx.trx_transfer_raw_data(SENDER, RECIPIENT, 10**12, CONTEXT),
                tron_tx.trc20_transfer_raw_data(SENDER, USDT.contract or "", RECIPIENT, 10**6, 30_000_000, CONTEXT)):
        txid, _ = tron_tx.txid_of(raw)
        signature = SENDER_KEY.sign_msg_hash(bytes.fromhex(txid)).hex()
        assert tron_tx.bandwidth_bytes(raw) == TronChain._bandwidth_bytes({"raw_data": raw, "signature": [signature]})


def test_the_expiration_is_read_back_from_the_signed_bytes(adapter: TronAdapter) -> None:
    unsigned = adapter.build(TransferIntent(SENDER, RECIPIENT, 7, SPEC.native), TRX_FEE, None, CONTEXT)
    signed = adapter.attach_signature(unsigned.payload, [SENDER_KEY.sign_msg_hash(unsigned.digests[0]).to_bytes()])
    assert tron_tx.expiration_of(signed.raw) == CONTEXT["expiration"]
    with pytest.raises(MalformedTransaction):
        tron_tx.expiration_of(_tampered(signed.raw, lambda doc: doc["raw_data"].update(expiration=1)))
