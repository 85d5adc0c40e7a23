"""Offline EVM signing: digest + attach_signature gives exactly eth_account's signed bytes.

The signer only ever sees `digest`; these tests prove that a signature over it, attached to the
stored payload, is byte-identical to `Account.sign_transaction` of the same transaction dict
(built here independently of the adapter), for EIP-1559 and legacy, native and ERC20.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_keys import keys
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.base import FeeQuote, TransferIntent
from chains.errors import InvalidSignature, MalformedTransaction, UnknownToken
from chains.evm import EvmAdapter
from chains.secp256k1 import SECP256K1_N
from chains.registry import load_registry

MAINNET = load_registry("mainnet")
ETHEREUM = MAINNET.chain("ethereum")  # EIP-1559
BSC = MAINNET.chain("bsc")  # legacy gasPrice
DEST = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"

FEES_1559 = {"gas": 65_000, "maxFeePerGas": 40 * 10**9, "maxPriorityFeePerGas": 2 * 10**9}
FEES_LEGACY = {"gas": 21_000, "gasPrice": 3 * 10**9}


def _quote(params: dict[str, int]) -> FeeQuote:
    return FeeQuote(max_fee=params["gas"] * params.get("maxFeePerGas", params.get("gasPrice", 0)), params=params)


def _expected_tx(spec, sender_token_symbol: str, to: str, amount: int, nonce: int, fees: dict[str, int]) -> dict:
    token = spec.token(sender_token_symbol)
    if token.asset_type == "NATIVE":
        tx = {"to": to, "value": amount, "data": b""}
    else:
        data = keccak(text="transfer(address,uint256)")[:4] + abi_encode(["address", "uint256"], [to, amount])
        tx = {"to": token.contract, "value": 0, "data": data}
    tx.update(chainId=spec.chain_id, nonce=nonce, **fees)
    if spec.eip1559:
        tx["type"] = 2
    return tx


def _sign(secret: bytes, digest: bytes) -> bytes:
    return keys.PrivateKey(secret).sign_msg_hash(digest).to_bytes()  # r||s||v with v in {0, 1}


CASES = [(ETHEREUM, "ETH", FEES_1559), (ETHEREUM, "USDT", FEES_1559), (BSC, "BNB", FEES_LEGACY), (BSC, "USDC", FEES_LEGACY)]


@settings(max_examples=25, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32).filter(lambda b: 0 < int.from_bytes(b, "big") < SECP256K1_N),
    amount=st.integers(min_value=0, max_value=2**256 - 1),
    nonce=st.integers(min_value=0, max_value=2**64 - 2),
    case=st.sampled_from(CASES),
)
def test_digest_plus_attach_equals_eth_account(secret: bytes, amount: int, nonce: int, case) -> None:
    spec, symbol, fees = case
    adapter = EvmAdapter(spec)
    sender = Account.from_key(secret).address
    intent = TransferIntent(sender, DEST.lower(), amount, spec.token(symbol))

    unsigned = adapter.build(intent, _quote(fees), nonce)
    signed = adapter.attach_signature(unsigned.payload, [_sign(secret, unsigned.digests[0])])

    reference = Account.sign_transaction(_expected_tx(spec, symbol, DEST, amount, nonce, fees), secret)
    assert signed.raw == bytes(reference.raw_transaction)
    assert signed.tx_hash == "0x" + reference.hash.hex()
    assert len(unsigned.digests[0]) == 32
    assert adapter._rpc._w3 is None  # offline: no node was needed


@pytest.mark.parametrize(("spec", "symbol", "fees"), CASES)
def test_payload_is_stable_json_and_digest_is_deterministic(spec, symbol, fees) -> None:
    adapter = EvmAdapter(spec)
    secret = bytes(range(1, 33))
    sender = Account.from_key(secret).address
    intent = TransferIntent(sender, DEST, 10**6, spec.token(symbol))
    first = adapter.build(intent, _quote(fees), 5)
    again = EvmAdapter(spec).build(intent, _quote(fees), 5)
    assert first == again
    doc = json.loads(first.payload)
    assert doc["from"] == sender and doc["tx"]["chainId"] == spec.chain_id and doc["tx"]["nonce"] == 5
    assert all(isinstance(v, int) for k, v in doc["tx"].items() if k not in {"to", "data", "accessList"})
    assert first.payload == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert EvmAdapter(spec).build(intent, _quote(fees), 6).digests[0] != first.digests[0]


def _built(spec=ETHEREUM, symbol="ETH", fees=FEES_1559):
    secret = bytes(range(7, 39))
    adapter = EvmAdapter(spec)
    intent = TransferIntent(Account.from_key(secret).address, DEST, 12345, spec.token(symbol))
    return adapter, secret, adapter.build(intent, _quote(fees), 0)


@pytest.mark.parametrize(("spec", "symbol", "fees"), [(ETHEREUM, "ETH", FEES_1559), (BSC, "BNB", FEES_LEGACY)])
def test_high_s_and_27_28_signatures_are_normalized(spec, symbol, fees) -> None:
    adapter, secret, unsigned = _built(spec, symbol, fees)
    expected = adapter.attach_signature(unsigned.payload, [_sign(secret, unsigned.digests[0])])
    sig = keys.PrivateKey(secret).sign_msg_hash(unsigned.digests[0])
    high_s = sig.r.to_bytes(32, "big") + (SECP256K1_N - sig.s).to_bytes(32, "big") + bytes([sig.v ^ 1])
    assert adapter.attach_signature(unsigned.payload, [high_s]) == expected
    eth_v = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27])
    assert adapter.attach_signature(unsigned.payload, [eth_v]) == expected


def test_a_signature_by_another_key_is_refused() -> None:
    adapter, _, unsigned = _built()
    with pytest.raises(InvalidSignature, match="not by the sender"):
        adapter.attach_signature(unsigned.payload, [_sign(bytes(range(2, 34)), unsigned.digests[0])])


def test_a_signature_over_another_digest_is_refused() -> None:
    adapter, secret, unsigned = _built()
    with pytest.raises(InvalidSignature):
        adapter.attach_signature(unsigned.payload, [_sign(secret, keccak(b"something else"))])


@pytest.mark.parametrize(
    "signature",
    [b"", b"\x01" * 64, b"\x01" * 66, b"\x00" * 64 + b"\x00", b"\x01" * 64 + b"\x02", b"\xff" * 64 + b"\x00", "ab" * 65],
)
def test_malformed_signatures_are_refused(signature) -> None:
    adapter, _, unsigned = _built()
    with pytest.raises(InvalidSignature):
        adapter.attach_signature(unsigned.payload, [signature])


def test_payloads_are_checked() -> None:
    adapter, secret, unsigned = _built()
    with pytest.raises(MalformedTransaction):
        adapter.attach_signature(b"not json", [_sign(secret, unsigned.digests[0])])
    with pytest.raises(MalformedTransaction):
        adapter.attach_signature(b'{"format": "other"}', [_sign(secret, unsigned.digests[0])])
    with pytest.raises(MalformedTransaction, match="chain id"):
        EvmAdapter(MAINNET.chain("polygon")).attach_signature(unsigned.payload, [_sign(secret, unsigned.digests[0])])
    # A tampered payload (value changed after signing) no longer matches the signature.
    doc = json.loads(unsigned.payload)
    doc["tx"]["value"] += 1
    tampered = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(InvalidSignature):
        adapter.attach_signature(tampered, [_sign(secret, unsigned.digests[0])])


def test_build_refuses_what_it_must_not_sign() -> None:
    adapter = EvmAdapter(ETHEREUM)
    sender = Account.from_key(bytes(range(1, 33))).address
    intent = TransferIntent(sender, DEST, 1, ETHEREUM.token("USDT"))
    with pytest.raises(MalformedTransaction, match="nonce"):
        adapter.build(intent, _quote(FEES_1559), None)
    with pytest.raises(MalformedTransaction, match="max_fee"):
        adapter.build(intent, FeeQuote(max_fee=1, params=FEES_1559), 0)
    with pytest.raises(MalformedTransaction, match="maxFeePerGas"):
        adapter.build(intent, _quote(FEES_LEGACY), 0)
    with pytest.raises(MalformedTransaction, match="EIP-1559"):
        EvmAdapter(BSC).build(TransferIntent(sender, DEST, 1, BSC.native), _quote(FEES_1559), 0)
    with pytest.raises(MalformedTransaction, match="registry"):  # contract must come from the registry
        adapter.build(replace(intent, token=replace(intent.token, contract=DEST)), _quote(FEES_1559), 0)
    with pytest.raises(UnknownToken):
        adapter.build(replace(intent, token=BSC.token("USDC").__class__("DOGE", "ERC20", 8, DEST)), _quote(FEES_1559), 0)
    with pytest.raises(MalformedTransaction, match="amount"):
        adapter.build(replace(intent, amount=-1), _quote(FEES_1559), 0)
    with pytest.raises(MalformedTransaction, match="amount"):
        adapter.build(replace(intent, amount=2**256), _quote(FEES_1559), 0)
    with pytest.raises(MalformedTransaction, match="integer"):
        adapter.build(intent, FeeQuote(max_fee=10**30, params={**FEES_1559, "gas": 1.5}), 0)


def test_adapter_exposes_curve_and_address_derivation() -> None:
    adapter = EvmAdapter(ETHEREUM)
    secret = bytes(range(3, 35))
    assert adapter.curve.value == "secp256k1"
    assert adapter.address_from_public_key(keys.PrivateKey(secret).public_key.to_bytes()) == Account.from_key(secret).address
