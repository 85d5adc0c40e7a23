"""EVM transactions offline: build the unsigned form, its signing digest, and attach a signature.

Why its own module: this is the part that decides what gets signed, so it must be pure (no node,
no clock, no randomness) and checkable byte-for-byte against eth_account. The MPC signer only
ever sees the 32-byte digest; the pipeline stores the payload and hands it back later, possibly
in another process, so the payload is a stable, self-describing serialisation:

    canonical JSON (sorted keys, no spaces) of
    {"format": "evm-tx/1", "from": <checksummed sender>, "tx": {<eth_account-style tx dict>}}

with integers as JSON integers, `to` checksummed and `data` as 0x-hex. Keeping `from` lets
`attach_signature` refuse a signature made by any key but the sender's, before anything is sent.

EIP-1559 (type 2) transactions go through eth_account's public `TypedTransaction`; legacy
EIP-155 transactions are RLP-encoded here (eth_account only has a private helper for them).
"""

from __future__ import annotations

import json
from typing import Any

from chains.base import SignedTransaction, TransferIntent, UnsignedTransaction
from chains.errors import InvalidSignature, MalformedTransaction
from chains.secp256k1 import split_signature

PAYLOAD_FORMAT = "evm-tx/1"
TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
BALANCE_OF_SELECTOR = bytes.fromhex("70a08231")  # balanceOf(address)
_UINT256_MAX = 2**256 - 1

_DYNAMIC_FEE_KEYS = ("gas", "maxFeePerGas", "maxPriorityFeePerGas")
_LEGACY_FEE_KEYS = ("gas", "gasPrice")


def erc20_transfer_data(to: str, amount: int) -> bytes:
    """ABI calldata of `transfer(to, amount)`."""
    if not 0 <= amount <= _UINT256_MAX:
        raise MalformedTransaction(f"amount {amount} does not fit uint256")
    return TRANSFER_SELECTOR + bytes(12) + bytes.fromhex(to[2:]) + amount.to_bytes(32, "big")


def erc20_balance_of_data(owner: str) -> bytes:
    """ABI calldata of `balanceOf(owner)`."""
    return BALANCE_OF_SELECTOR + bytes(12) + bytes.fromhex(owner[2:])


def _uint(params: dict[str, Any], key: str) -> int:
    value = params.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _UINT256_MAX:
        raise MalformedTransaction(f"fee parameter {key!r} must be a non-negative integer, got {value!r}")
    return value


def fee_fields(params: dict[str, Any], eip1559: bool) -> dict[str, int]:
    """The gas and price fields of a stored FeeQuote.params, checked against the chain's fee model."""
    if eip1559:
        fields = {key: _uint(params, key) for key in _DYNAMIC_FEE_KEYS}
        if fields["maxPriorityFeePerGas"] > fields["maxFeePerGas"]:
            raise MalformedTransaction("maxPriorityFeePerGas exceeds maxFeePerGas")
        return fields
    if "maxFeePerGas" in params:
        raise MalformedTransaction("EIP-1559 fee parameters on a legacy-gas chain")
    return {key: _uint(params, key) for key in _LEGACY_FEE_KEYS}


def max_fee_of(fields: dict[str, int]) -> int:
    """Most native base units the transaction can ever be charged (L2 data fees aside)."""
    return fields["gas"] * fields.get("maxFeePerGas", fields.get("gasPrice", 0))


def transfer_tx(
    intent: TransferIntent, to: str, chain_id: int, nonce: int, fees: dict[str, int], eip1559: bool
) -> dict[str, Any]:
    """The eth_account-style transaction dict for a native or token transfer (`to` pre-validated)."""
    if not isinstance(nonce, int) or isinstance(nonce, bool) or nonce < 0:
        raise MalformedTransaction(f"an EVM transaction needs a non-negative integer nonce, got {nonce!r}")
    if not isinstance(intent.amount, int) or isinstance(intent.amount, bool) or intent.amount < 0:
        raise MalformedTransaction(f"amount must be a non-negative integer of base units, got {intent.amount!r}")
    token = intent.token
    if token.asset_type == "NATIVE":
        if intent.amount > _UINT256_MAX:
            raise MalformedTransaction(f"amount {intent.amount} does not fit uint256")
        tx: dict[str, Any] = {"to": to, "value": intent.amount, "data": "0x"}
    else:
        if not token.contract:
            raise MalformedTransaction(f"token {token.symbol} has no contract")
        tx = {"to": token.contract, "value": 0, "data": "0x" + erc20_transfer_data(to, intent.amount).hex()}
    tx.update(chainId=chain_id, nonce=nonce, **fees)
    if eip1559:
        tx.update(type=2, accessList=[])
    return tx


def encode_payload(sender: str, tx: dict[str, Any]) -> bytes:
    return json.dumps(
        {"format": PAYLOAD_FORMAT, "from": sender, "tx": tx}, sort_keys=True, separators=(",", ":")
    ).encode()


def decode_payload(payload: bytes) -> tuple[str, dict[str, Any]]:
    try:
        doc = json.loads(payload)
    except (ValueError, TypeError) as exc:
        raise MalformedTransaction(f"payload is not an {PAYLOAD_FORMAT} document: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != PAYLOAD_FORMAT or not isinstance(doc.get("tx"), dict):
        raise MalformedTransaction(f"payload is not an {PAYLOAD_FORMAT} document")
    return doc["from"], doc["tx"]


def _legacy_fields(tx: dict[str, Any]) -> list[Any]:
    return [
        tx["nonce"],
        tx["gasPrice"],
        tx["gas"],
        bytes.fromhex(tx["to"][2:]),
        tx["value"],
        bytes.fromhex(tx["data"][2:]),
    ]


def _typed(tx: dict[str, Any]) -> Any:
    from eth_account.typed_transactions import TypedTransaction

    try:
        return TypedTransaction.from_dict(dict(tx))
    except (TypeError, ValueError) as exc:
        raise MalformedTransaction(f"not a valid typed transaction: {exc}") from None


def signing_digest(tx: dict[str, Any]) -> bytes:
    """The 32-byte hash the sender's key signs (EIP-1559 typed, or legacy with EIP-155)."""
    from eth_utils import keccak
    import rlp

    try:
        if tx.get("type") == 2:
            return bytes(_typed(tx).hash())
        return keccak(rlp.encode(_legacy_fields(tx) + [tx["chainId"], 0, 0]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, MalformedTransaction):
            raise
        raise MalformedTransaction(f"not a valid transaction: {exc!r}") from None


def build_unsigned(sender: str, tx: dict[str, Any]) -> UnsignedTransaction:
    return UnsignedTransaction(payload=encode_payload(sender, tx), digests=(signing_digest(tx),))


def attach(payload: bytes, signature: bytes) -> SignedTransaction:
    """Raw signed bytes and tx hash exactly as eth_account's sign_transaction would produce them."""
    from eth_keys import keys
    from eth_keys.exceptions import BadSignature
    from eth_utils import keccak
    import rlp

    sender, tx = decode_payload(payload)
    digest = signing_digest(tx)
    recovery_id, r, s = split_signature(signature)
    try:
        signer = keys.Signature(vrs=(recovery_id, r, s)).recover_public_key_from_msg_hash(digest)
    except (BadSignature, ValueError) as exc:
        raise InvalidSignature(f"signature does not recover a public key: {exc}") from None
    if signer.to_checksum_address() != sender:
        raise InvalidSignature(f"signature is by {signer.to_checksum_address()}, not by the sender {sender}")
    if tx.get("type") == 2:
        raw = bytes(_typed({**tx, "v": recovery_id, "r": r, "s": s}).encode())
    else:
        v = recovery_id + 35 + 2 * tx["chainId"]  # EIP-155
        raw = rlp.encode(_legacy_fields(tx) + [v, r, s])
    return SignedTransaction(raw=raw, tx_hash="0x" + keccak(raw).hex())
