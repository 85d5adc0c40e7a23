"""EVM addresses without a node: EIP-55 validation, destination policy, derivation from a key.

Kept apart from `chains.evm` so that checking an address needs neither web3 nor a connection
(the pipeline's validate_destination step and the registry loader both use it), and so the
policy is in one place:

- `0x` followed by exactly 40 hex digits, nothing else (no whitespace, no `0X`);
- mixed case must be a correct EIP-55 checksum. `eth_utils.is_address` accepts a mixed-case
  address with a WRONG checksum, so it is never used here;
- all-lowercase or all-uppercase hex digits carry no checksum (EIP-55 says so) and are accepted,
  normalized to the checksummed form.

Whether an address is a sensible *destination* (not the zero address, not a precompile, not the
token contract itself) is a separate policy: `check_destination`.
"""

from __future__ import annotations

from chains.address_text import require_text
from chains.errors import InvalidAddress, InvalidPublicKey

_HEX = frozenset("0123456789abcdefABCDEF")
ZERO_ADDRESS = "0x" + "0" * 40
# Precompiles live at 0x01..0x11 today (more keep being added); funds sent there are lost.
_RESERVED_MAX = 0xFF


def validate_address(address: object, chain: str = "evm") -> str:
    """Return the EIP-55 checksummed form of `address`, or raise InvalidAddress saying why."""
    address = require_text(address, chain)
    if not address.startswith("0x"):
        raise InvalidAddress(chain, address, "missing 0x prefix")
    digits = address[2:]
    if len(digits) != 40:
        raise InvalidAddress(chain, address, f"wrong length: expected 40 hex digits after 0x, got {len(digits)}")
    bad = next((c for c in digits if c not in _HEX), None)
    if bad is not None:
        raise InvalidAddress(chain, address, f"non-hex character {bad!r}")

    from eth_utils import is_checksum_address, to_checksum_address

    if digits == digits.lower() or digits == digits.upper():
        return to_checksum_address("0x" + digits.lower())
    if not is_checksum_address(address):
        # Never suggest the "corrected" form: a bad checksum usually means a typo in the address.
        raise InvalidAddress(chain, address, "bad EIP-55 checksum (mixed case that does not match)")
    return address


def check_destination(address: object, chain: str = "evm", token_contract: str | None = None) -> str:
    """`validate_address`, then refuse destinations where funds are certainly lost.

    Refused: the zero address, the reserved/precompile range 0x…01-0x…ff, and the token's own
    contract (a classic mistake that burns the tokens).
    """
    normalized = validate_address(address, chain)
    value = int(normalized, 16)
    if value == 0:
        raise InvalidAddress(chain, normalized, "the zero address cannot receive funds")
    if value <= _RESERVED_MAX:
        raise InvalidAddress(chain, normalized, "a reserved precompile address cannot receive funds")
    if token_contract is not None and normalized.lower() == token_contract.lower():
        raise InvalidAddress(chain, normalized, "the destination is the token's own contract")
    return normalized


def address_from_public_key(public_key: bytes) -> str:
    """Checksummed address of a secp256k1 public key.

    Takes the 64-byte uncompressed X||Y the signer returns; also the 65-byte form with its 0x04
    prefix and the 33-byte compressed form. The point must be on the curve.
    """
    if not isinstance(public_key, (bytes, bytearray)):
        raise InvalidPublicKey(f"public key must be bytes, not {type(public_key).__name__}")
    raw = bytes(public_key)
    from eth_keys import keys
    from eth_keys.exceptions import BadSignature, ValidationError
    from eth_utils import keccak, to_checksum_address

    try:
        if len(raw) == 65 and raw[0] == 4:
            raw = raw[1:]
        if len(raw) == 33:
            raw = keys.PublicKey.from_compressed_bytes(raw).to_bytes()
        if len(raw) != 64:
            raise InvalidPublicKey(f"secp256k1 public key must be 64 bytes X||Y, got {len(public_key)} bytes")
        _check_on_curve(raw)
    except (ValidationError, BadSignature, ValueError) as exc:
        if isinstance(exc, InvalidPublicKey):
            raise
        raise InvalidPublicKey(f"not a secp256k1 public key: {exc}") from None
    return to_checksum_address(keccak(raw)[12:])


_P = 2**256 - 2**32 - 977  # secp256k1 field prime


def _check_on_curve(xy: bytes) -> None:
    x, y = int.from_bytes(xy[:32], "big"), int.from_bytes(xy[32:], "big")
    if not (x < _P and y < _P and (y * y - x * x * x - 7) % _P == 0):
        raise InvalidPublicKey("the point is not on the secp256k1 curve")
