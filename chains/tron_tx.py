"""TRON transactions offline: build raw_data, its txID (the digest that gets signed), attach a signature.

Why its own module: this decides what gets signed, so it is pure (no node, no clock, no
randomness); the reference block and the expiration come from `build_context`, stored with the
transfer. A TRON transaction is the protobuf `Transaction{raw_data, signature[]}`; its txID is
sha256 of the serialized raw_data, and that 32-byte hash is what the sender's key signs.

The raw_data is kept as the JSON the node's HTTP API speaks with `visible=false` (hex addresses
"41..."), exactly the shape tronpy builds, and encoded to protobuf here with tronpy's generated
messages. Every build cross-checks the txID against tronpy's own `calculate_txid_from_raw_data`,
and `/wallet/broadcasttransaction` re-serializes the same JSON on the node, so a field the two
encoders disagree on fails here, before anything is signed.

    payload (stored, handed to attach_signature): canonical JSON
        {"format": "tron-tx/1", "from": <base58 owner>, "txID": hex, "raw_data": {...}, "raw_data_hex": hex}
    signed raw (stored, broadcast as is): canonical JSON, the broadcasttransaction body
        {"raw_data": {...}, "raw_data_hex": hex, "signature": [r||s||v hex], "txID": hex, "visible": false}
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from chains import tron_address
from chains.base import SignedTransaction, UnsignedTransaction
from chains.errors import InvalidSignature, MalformedTransaction

PAYLOAD_FORMAT = "tron-tx/1"
TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
RESULT_BYTES = 64  # java-tron charges bandwidth for the result too (MAX_RESULT_SIZE_IN_TX)
_INT64_MAX = 2**63 - 1
_UINT256_MAX = 2**256 - 1
_TYPE_URL = "type.googleapis.com/protocol."
_HEX_RE = re.compile(r"^[0-9a-f]*$")
_TXID_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTEXT_KEYS = ("ref_block_bytes", "ref_block_hash", "expiration", "timestamp")


def _hex(value: Any, what: str, length: int | None = None) -> str:
    if not isinstance(value, str) or not _HEX_RE.match(value) or len(value) % 2 or (length is not None and len(value) != length):
        size = f" of {length} digits" if length else ""
        raise MalformedTransaction(f"{what} must be lowercase hex{size}, got {value!r}"[:200])
    return value


def _int(value: Any, what: str, high: int = _INT64_MAX, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MalformedTransaction(f"{what} must be an integer in [{low}, {high}], got {value!r}"[:200])
    return value


def hex_address(address: str) -> str:
    """The node's hex form ("41" + 40 hex digits) of a base58check address."""
    return tron_address.to_raw(address).hex()


def check_context(context: Any) -> dict[str, Any]:
    """The reference block and times from `build_context`, checked: a bad one is a bug or bad data."""
    if not isinstance(context, dict) or any(key not in context for key in _CONTEXT_KEYS):
        raise MalformedTransaction(f"a TRON build context needs {', '.join(_CONTEXT_KEYS)}, got {context!r}"[:300])
    return {
        "ref_block_bytes": _hex(context["ref_block_bytes"], "ref_block_bytes", 4),
        "ref_block_hash": _hex(context["ref_block_hash"], "ref_block_hash", 16),
        "expiration": _int(context["expiration"], "expiration", low=1),
        "timestamp": _int(context["timestamp"], "timestamp", low=1),
    }


def trc20_transfer_data(to: str, amount: int) -> bytes:
    """ABI calldata of `transfer(to, amount)`; the ABI address is the 20-byte body (no 0x41)."""
    _int(amount, "amount", _UINT256_MAX)
    return TRANSFER_SELECTOR + bytes(12) + tron_address.to_raw(to)[1:] + amount.to_bytes(32, "big")


def trc20_transfer_parameter(to: str, amount: int) -> str:
    """The hex ABI parameters of `transfer(to, amount)` (without the selector), for the node's
    `function_selector` + `parameter` calls (energy estimates)."""
    return trc20_transfer_data(to, amount)[len(TRANSFER_SELECTOR):].hex()


def trc20_balance_of_parameter(owner: str) -> str:
    """The hex ABI parameter of `balanceOf(owner)` (without the selector)."""
    return (bytes(12) + tron_address.to_raw(owner)[1:]).hex()


def _contract(kind: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"parameter": {"value": value, "type_url": _TYPE_URL + kind}, "type": kind}


def trx_transfer_raw_data(owner: str, to: str, amount: int, context: dict[str, Any]) -> dict[str, Any]:
    """raw_data of a TRX transfer of `amount` sun (addresses pre-validated)."""
    value = {"owner_address": hex_address(owner), "to_address": hex_address(to), "amount": _int(amount, "amount", low=1)}
    return {"contract": [_contract("TransferContract", value)], **check_context(context)}


def trc20_transfer_raw_data(owner: str, contract: str, to: str, amount: int, fee_limit: int,
                            context: dict[str, Any]) -> dict[str, Any]:
    """raw_data of a TRC20 `transfer(to, amount)` call that may burn up to `fee_limit` sun for energy."""
    value = {"owner_address": hex_address(owner), "contract_address": hex_address(contract),
             "data": trc20_transfer_data(to, amount).hex()}
    return {"contract": [_contract("TriggerSmartContract", value)], **check_context(context),
            "fee_limit": _int(fee_limit, "fee_limit", low=1)}


def _pb() -> Any:
    from google.protobuf import any_pb2
    from tronpy.proto import tron_pb2

    return tron_pb2, any_pb2


def _inner_message(kind: str, value: dict[str, Any]) -> Any:
    tron_pb2, _ = _pb()
    if kind == "TransferContract":
        return tron_pb2.TransferContract(
            owner_address=bytes.fromhex(value["owner_address"]),
            to_address=bytes.fromhex(value["to_address"]),
            amount=value["amount"],
        )
    if kind == "TriggerSmartContract":
        return tron_pb2.TriggerSmartContract(
            owner_address=bytes.fromhex(value["owner_address"]),
            contract_address=bytes.fromhex(value["contract_address"]),
            data=bytes.fromhex(value["data"]),
            call_value=value.get("call_value", 0),
        )
    raise MalformedTransaction(f"unsupported contract type {kind!r}")


def raw_data_bytes(raw_data: dict[str, Any]) -> bytes:
    """The protobuf serialization of raw_data (what the txID hashes)."""
    tron_pb2, any_pb2 = _pb()
    try:
        (contract,) = raw_data["contract"]
        kind = contract["type"]
        if contract["parameter"]["type_url"] != _TYPE_URL + kind:
            raise MalformedTransaction(f"type_url {contract['parameter']['type_url']!r} does not match {kind}")
        inner = _inner_message(kind, contract["parameter"]["value"])
        raw = tron_pb2.Transaction.raw(
            ref_block_bytes=bytes.fromhex(raw_data["ref_block_bytes"]),
            ref_block_hash=bytes.fromhex(raw_data["ref_block_hash"]),
            expiration=raw_data["expiration"],
            timestamp=raw_data["timestamp"],
            contract=[tron_pb2.Transaction.Contract(
                type=getattr(tron_pb2.Transaction.Contract.ContractType, kind),
                parameter=any_pb2.Any(type_url=_TYPE_URL + kind, value=inner.SerializeToString()),
            )],
        )
        if "fee_limit" in raw_data:
            raw.fee_limit = raw_data["fee_limit"]
        return bytes(raw.SerializeToString())
    except MalformedTransaction:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedTransaction(f"not a TRON raw_data this adapter builds: {exc!r}"[:300]) from None


def txid_of(raw_data: dict[str, Any]) -> tuple[str, bytes]:
    """(txID hex, raw_data bytes), cross-checked against tronpy's own txID computation."""
    from tronpy.proto import calculate_txid_from_raw_data

    raw = raw_data_bytes(raw_data)
    txid = hashlib.sha256(raw).hexdigest()
    try:
        theirs = calculate_txid_from_raw_data(raw_data)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedTransaction(f"tronpy cannot serialize this raw_data: {exc!r}"[:300]) from None
    if theirs != txid:
        raise MalformedTransaction(f"txID mismatch: ours {txid}, tronpy's {theirs}; refusing to sign")
    return txid, raw


def owner_of(raw_data: dict[str, Any]) -> str:
    """Base58check owner (sender) of a raw_data built here."""
    try:
        return tron_address.from_raw(bytes.fromhex(raw_data["contract"][0]["parameter"]["value"]["owner_address"]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MalformedTransaction(f"raw_data has no usable owner_address: {exc!r}"[:200]) from None


def bandwidth_bytes(raw_data: dict[str, Any], signatures: int = 1) -> int:
    """Bandwidth the node charges: the serialized signed transaction plus the result allowance."""
    raw = len(raw_data_bytes(raw_data))
    return 1 + _varint_len(raw) + raw + signatures * (1 + 1 + 65) + RESULT_BYTES


def _varint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def build_unsigned(raw_data: dict[str, Any]) -> UnsignedTransaction:
    txid, raw = txid_of(raw_data)
    doc = {"format": PAYLOAD_FORMAT, "from": owner_of(raw_data), "txID": txid, "raw_data": raw_data,
           "raw_data_hex": raw.hex()}
    return UnsignedTransaction(payload=_canonical(doc), digests=(bytes.fromhex(txid),))


def _load(blob: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(blob)
    except (ValueError, TypeError) as exc:
        raise MalformedTransaction(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("raw_data"), dict):
        raise MalformedTransaction(f"{what} is not a TRON transaction document")
    txid, raw = txid_of(doc["raw_data"])
    if doc.get("txID") != txid or doc.get("raw_data_hex") != raw.hex():
        raise MalformedTransaction(f"{what}: txID or raw_data_hex does not match raw_data (tampered?)")
    return doc


def decode_payload(payload: bytes) -> tuple[str, dict[str, Any], str]:
    """(sender, raw_data, txID) of a payload made by build_unsigned, re-verified."""
    doc = _load(payload, "payload")
    if doc.get("format") != PAYLOAD_FORMAT:
        raise MalformedTransaction(f"payload is not a {PAYLOAD_FORMAT} document")
    if doc.get("from") != owner_of(doc["raw_data"]):
        raise MalformedTransaction("payload sender does not match the raw_data owner")
    return doc["from"], doc["raw_data"], doc["txID"]


def decode_signed(raw: bytes) -> dict[str, Any]:
    """The broadcasttransaction document of a SignedTransaction.raw made by attach, re-verified."""
    doc = _load(raw, "signed transaction")
    signatures = doc.get("signature")
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise MalformedTransaction("signed transaction must carry exactly one signature")
    return doc


def expiration_of(raw: bytes) -> int:
    """Expiration (ms) of a signed transaction made by attach."""
    return int(decode_signed(raw)["raw_data"]["expiration"])


def is_txid(value: Any) -> bool:
    return isinstance(value, str) and bool(_TXID_RE.match(value))


def normalize_signature(signature: bytes) -> bytes:
    """r||s||v with v 0/1 (27/28 accepted) and low s, as tronpy's PrivateKey.sign_msg_hash makes."""
    from chains.secp256k1 import split_signature

    recovery_id, r, s = split_signature(signature)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([recovery_id])


def signer_of(txid: str, signature: bytes) -> str:
    """Base58check address whose key made `signature` over the txID."""
    from tronpy.exceptions import BadSignature
    from tronpy.keys import Signature

    try:
        public = Signature(signature).recover_public_key_from_msg_hash(bytes.fromhex(txid))
    except (BadSignature, ValueError) as exc:
        raise InvalidSignature(f"signature does not recover a public key: {exc}") from None
    return str(public.to_base58check_address())


def attach(payload: bytes, signature: bytes) -> SignedTransaction:
    """The broadcastable document; refuses a signature that is not by the sender's key."""
    sender, raw_data, txid = decode_payload(payload)
    signature = normalize_signature(signature)
    signer = signer_of(txid, signature)
    if signer != sender:
        raise InvalidSignature(f"signature is by {signer}, not by the sender {sender}")
    doc = {"raw_data": raw_data, "raw_data_hex": raw_data_bytes(raw_data).hex(), "signature": [signature.hex()],
           "txID": txid, "visible": False}
    return SignedTransaction(raw=_canonical(doc), tx_hash=txid)
