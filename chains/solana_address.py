"""Solana addresses without a node or an SDK: base58 validation, destination policy, derivation.

Kept apart from `chains.solana` (and free of solders) so that the registry loader and the
pipeline's validate_destination step check addresses for the price of a few integer operations.

An address is any base58 string that decodes to exactly 32 bytes. That includes
program-derived addresses (PDAs) and associated token accounts (ATAs), which are not points on
the ed25519 curve: they are valid *addresses*, so `validate_address` accepts them. Base58 has no
checksum: a typo that still decodes to 32 bytes is a different, valid address and nothing offline
can tell (the same as any checksum-less format). What it does catch: characters outside the
alphabet (0, O, I, l, ...), whitespace, and a dropped or added character that changes the decoded
length.

Whether an address is a sensible *destination* is a separate policy: `check_destination`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chains.address_text import require_text
from chains.errors import InvalidAddress, InvalidPublicKey

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
ADDRESS_BYTES = 32
MAX_ADDRESS_CHARS = 44  # 32 bytes never need more; longer input is refused before decoding

# Programs, sysvars and the native mint: SOL or tokens sent to these are lost.
RESERVED_ADDRESSES = frozenset({
    "11111111111111111111111111111111",  # System Program
    "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",  # SPL Token
    "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb",  # SPL Token-2022
    "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL",  # Associated Token Account program
    "So11111111111111111111111111111111111111112",  # wrapped SOL mint
    "ComputeBudget111111111111111111111111111111",
    "Vote111111111111111111111111111111111111111",
    "Stake11111111111111111111111111111111111111",
    "Config1111111111111111111111111111111111111",
    "AddressLookupTab1e1111111111111111111111111",
    "BPFLoader2111111111111111111111111111111111",
    "BPFLoaderUpgradeab1e11111111111111111111111",
    "NativeLoader1111111111111111111111111111111",
    "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr",
    "Sysvar1111111111111111111111111111111111111",
    "SysvarC1ock11111111111111111111111111111111",
    "SysvarRent111111111111111111111111111111111",
    "SysvarRecentB1ockHashes11111111111111111111",
    "SysvarS1otHashes111111111111111111111111111",
    "SysvarS1otHistory11111111111111111111111111",
    "SysvarStakeHistory1111111111111111111111111",
    "SysvarEpochSchedu1e111111111111111111111111",
    "SysvarFees111111111111111111111111111111111",
    "Sysvar1nstructions1111111111111111111111111",
    "SysvarRewards111111111111111111111111111111",
})

OFF_CURVE_OPTION = "allow_off_curve_destinations"


# --- base58 -----------------------------------------------------------------------------------

def b58encode(raw: bytes) -> str:
    """Bitcoin-alphabet base58, one leading '1' per leading zero byte."""
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    value = int.from_bytes(raw, "big")
    digits = []
    while value:
        value, rest = divmod(value, 58)
        digits.append(ALPHABET[rest])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """The bytes of a base58 string; ValueError names the first character outside the alphabet."""
    value = 0
    for char in text:
        digit = _INDEX.get(char)
        if digit is None:
            raise ValueError(char)
        value = value * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return b"\0" * zeros + body


# --- the ed25519 curve test (what solders' Pubkey.is_on_curve answers, without solders) --------

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P


def is_on_curve(raw: bytes) -> bool:
    """True if the 32 bytes decompress to an ed25519 point (curve25519-dalek's rule).

    y is the low 255 bits (reduced mod p, as dalek does); the point exists when
    x^2 = (y^2 - 1) / (d*y^2 + 1) has a square root. Wallet keys are on the curve; PDAs and ATAs
    are made off-curve on purpose, so that no private key can ever sign for them.
    """
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    yy = y * y % _P
    u = (yy - 1) % _P
    v = (_D * yy + 1) % _P
    if u == 0:
        return True
    if v == 0:
        return False
    x2 = u * pow(v, _P - 2, _P) % _P
    return pow(x2, (_P - 1) // 2, _P) == 1


# --- addresses --------------------------------------------------------------------------------

def decode_address(address: object, chain: str = "solana") -> bytes:
    """The 32 bytes of a Solana address, or InvalidAddress saying why."""
    address = require_text(address, chain)
    if not address:
        raise InvalidAddress(chain, address, "empty")
    if any(c.isspace() for c in address):
        raise InvalidAddress(chain, address, "contains whitespace")
    if len(address) > MAX_ADDRESS_CHARS:
        raise InvalidAddress(chain, address, f"wrong length: {len(address)} characters, a 32-byte address has at most 44")
    try:
        raw = b58decode(address)
    except ValueError as exc:
        raise InvalidAddress(chain, address, f"character {exc.args[0]!r} is not in the base58 alphabet") from None
    if len(raw) != ADDRESS_BYTES:
        raise InvalidAddress(chain, address, f"wrong length: decodes to {len(raw)} bytes, expected 32")
    return raw


def validate_address(address: object, chain: str = "solana") -> str:
    """Return `address` (base58 is canonical: one string per 32 bytes) or raise InvalidAddress.

    Accepts every 32-byte address, PDAs included. No checksum exists, so a same-length typo passes.
    """
    return b58encode(decode_address(address, chain))


def check_destination(
    address: object,
    chain: str = "solana",
    token_contract: str | None = None,
    *,
    allow_off_curve: bool | None = None,
) -> str:
    """`validate_address`, then refuse destinations where funds are lost or stuck.

    Refused:
    - programs, sysvars and the wrapped-SOL mint (`RESERVED_ADDRESSES`);
    - the token's own mint (sending a token to its mint address is a classic loss);
    - an off-curve address (a PDA or a token account), unless the chain opts in with
      `options.allow_off_curve_destinations = true`. SOL sent to a PDA can only ever be moved
      by the program that owns the PDA, and a token transfer to an off-curve owner creates an
      associated token account that no private key controls; a very common mistake is pasting
      one's *token account* instead of the wallet address, which is off-curve too. Custody
      sends to PDAs (program vaults, multisigs) only after an explicit, per-chain opt-in.

    `allow_off_curve=None` reads the option from the default registry's entry for `chain` (the
    adapter passes its own spec's value).
    """
    normalized = validate_address(address, chain)
    if normalized in RESERVED_ADDRESSES:
        raise InvalidAddress(chain, normalized, "a program or sysvar address cannot receive funds")
    if token_contract is not None and normalized == token_contract:
        raise InvalidAddress(chain, normalized, "the destination is the token's own mint")
    if not is_on_curve(b58decode(normalized)):
        if allow_off_curve is None:
            allow_off_curve = _registry_allows_off_curve(chain)
        if not allow_off_curve:
            raise InvalidAddress(
                chain, normalized,
                "off-curve address (a program-derived or token account address, not a wallet); "
                f"set options.{OFF_CURVE_OPTION} on the chain to allow it",
            )
    return normalized


def off_curve_allowed(options: Mapping[str, Any], chain: str = "solana") -> bool:
    """The chain's `allow_off_curve_destinations` option (default false); a non-bool is a config error."""
    value = options.get(OFF_CURVE_OPTION, False)
    if not isinstance(value, bool):
        raise ValueError(f"{chain}: options.{OFF_CURVE_OPTION} must be true or false, got {value!r}")
    return value


def _registry_allows_off_curve(chain: str) -> bool:
    from chains import default_registry
    from chains.errors import UnknownChain

    try:
        spec = default_registry().chain(chain)
    except UnknownChain:
        return False
    return spec.family == "solana" and off_curve_allowed(spec.options, chain)


def address_from_public_key(public_key: bytes) -> str:
    """The address of an ed25519 wallet key: its 32 bytes in base58. The key must be on the curve."""
    if not isinstance(public_key, (bytes, bytearray)):
        raise InvalidPublicKey(f"public key must be bytes, not {type(public_key).__name__}")
    raw = bytes(public_key)
    if len(raw) != ADDRESS_BYTES:
        raise InvalidPublicKey(f"ed25519 public key must be 32 bytes, got {len(raw)}")
    if not is_on_curve(raw):
        raise InvalidPublicKey("the bytes are not an ed25519 point (off-curve)")
    return b58encode(raw)
