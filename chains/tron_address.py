"""TRON addresses without a node: base58check validation, destination policy, derivation from a key.

Kept apart from `chains.tron` so that checking an address imports neither tronpy (0.4 s: its
package `__init__` pulls in the HTTP clients) nor anything else heavy: the registry loader and
the pipeline's validate_destination step use it. Only `base58` (the library tronpy itself uses)
is needed; `address_from_public_key` also needs a keccak, imported on first use.

The one accepted form is base58check ("T..."): 25 bytes = 0x41 prefix + 20-byte body + a
4-byte double-sha256 checksum, so any single-character typo is caught. The hex form
("41" + 40 hex digits, which the node's `visible=false` API uses) is refused on purpose: it has
no checksum, so a typo in it would silently become another valid address.
"""

from __future__ import annotations

from chains.address_text import require_text
from chains.errors import InvalidAddress

ADDRESS_PREFIX = 0x41
ADDRESS_LENGTH = 34  # characters of every base58check address with the 0x41 prefix
# 0x41 followed by twenty zero bytes: the "black hole" address; funds sent there are burnt.
ZERO_ADDRESS = "T9yD14Nj9j7xAB4dbGeiX9h8unkKHxuWwb"
_HEX = frozenset("0123456789abcdefABCDEF")


def _decode(address: str, chain: str) -> bytes:
    import base58

    try:
        raw = base58.b58decode_check(address)
    except ValueError as exc:
        reason = "bad base58check checksum (a typo?)" if "checksum" in str(exc).lower() else f"not base58: {exc}"
        raise InvalidAddress(chain, address, reason) from None
    if len(raw) != 21:
        raise InvalidAddress(chain, address, f"decodes to {len(raw)} bytes, a TRON address has 21 (+4 checksum)")
    if raw[0] != ADDRESS_PREFIX:
        raise InvalidAddress(chain, address, f"prefix byte 0x{raw[0]:02x} is not TRON's 0x41")
    return raw


def validate_address(address: object, chain: str = "tron") -> str:
    """Return the base58check address unchanged, or raise InvalidAddress saying why."""
    address = require_text(address, chain)
    if not address:
        raise InvalidAddress(chain, address, "empty")
    digits = address[2:] if address[:2] in ("0x", "0X") else address
    if len(digits) == 42 and digits[:2] == "41" and set(digits) <= _HEX:
        raise InvalidAddress(
            chain, address, "this is the hex form of a TRON address, which has no checksum; paste the base58 form (T...)"
        )
    if len(digits) == 40 and set(digits) <= _HEX:
        raise InvalidAddress(chain, address, "this looks like an EVM address; a TRON address is base58 (T...)")
    if len(address) != ADDRESS_LENGTH or address[0] != "T":
        raise InvalidAddress(chain, address, f"a TRON address is {ADDRESS_LENGTH} base58 characters starting with T")
    _decode(address, chain)
    return address


def to_raw(address: str, chain: str = "tron") -> bytes:
    """The 21 bytes (0x41 + body) of a valid base58check address; raises InvalidAddress."""
    return _decode(validate_address(address, chain), chain)


def from_raw(raw: bytes) -> str:
    """The base58check form of 21 address bytes (0x41 + body), or of a 20-byte body."""
    import base58

    if len(raw) == 20:
        raw = bytes([ADDRESS_PREFIX]) + raw
    if len(raw) != 21 or raw[0] != ADDRESS_PREFIX:
        raise ValueError(f"not TRON address bytes: {raw.hex()}")
    return base58.b58encode_check(raw).decode()


def check_destination(address: object, chain: str = "tron", token_contract: str | None = None) -> str:
    """`validate_address`, then refuse destinations where funds are certainly lost.

    Refused: the all-zero-body address (T9yD14Nj9j7xAB4dbGeiX9h8unkKHxuWwb) and the token's own
    contract (the classic mistake that strands the tokens in the contract).
    """
    normalized = validate_address(address, chain)
    if normalized == ZERO_ADDRESS:
        raise InvalidAddress(chain, normalized, "the zero (black hole) address cannot receive funds")
    if token_contract is not None and normalized == token_contract:
        raise InvalidAddress(chain, normalized, "the destination is the token's own contract")
    return normalized


def address_from_public_key(public_key: bytes) -> str:
    """Base58check address of a secp256k1 public key: 0x41 + keccak256(X||Y)[-20:].

    Takes the 64-byte uncompressed X||Y the signer returns; also the 65-byte form with its 0x04
    prefix and the 33-byte compressed form. The point must be on the curve.
    """
    from chains.evm_address import address_from_public_key as evm_address_of

    # TRON's body is exactly the EVM address of the key; the EVM helper also checks the point.
    return from_raw(bytes.fromhex(evm_address_of(public_key)[2:]))
