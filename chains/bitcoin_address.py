"""Bitcoin addresses without a node: BIP173/BIP350 segwit, base58check, and derivation from a key.

Written from the BIP reference algorithms rather than taken from bitcoinlib, whose parser does
not check the address's network (a testnet `tb1` address "parses" as mainnet). Accepted forms:

    network            segwit HRP   base58 P2PKH (version)   base58 P2SH (version)
    mainnet            bc           1...  (0x00)             3...  (0x05)
    testnet / signet   tb           m/n   (0x6f)             2...  (0xc4)
    regtest            bcrt         m/n   (0x6f)             2...  (0xc4)

Segwit rules (BIP173 as amended by BIP350): witness version 0..16; program 2..40 bytes; v0
programs are exactly 20 (P2WPKH) or 32 (P2WSH) bytes and use the bech32 checksum; v1+ use
bech32m (BIP173's own v1+ examples are bech32 and are therefore *invalid* today). At most 90
characters, one case only (upper-case input is accepted and normalized to lower case), padding
of at most 4 zero bits. Base58 addresses are 25 bytes: version, 20-byte hash, 4-byte checksum,
and are case-sensitive, so they are returned unchanged.

Destination policy (`check_destination`), separate from the format check: a *valid* address is
not always a sensible place to send funds. Refused as destinations:

- witness versions 2..16, and v1 programs that are not 32 bytes: no soft fork gives them spending
  rules yet, so an output paying them is anyone-can-spend today (BIP350 asks wallets to treat
  them as valid recipients so future upgrades work; for a custody service the risk of handing
  the coins to the first miner wins, so they are refused until such a version is activated);
- tokens: Bitcoin has none, so a token contract is never accepted.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from chains.address_text import require_text
from chains.errors import InvalidAddress, InvalidPublicKey, UnknownChain

# --- networks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BitcoinNetwork:
    """The prefixes one network's addresses carry."""

    name: str
    hrp: str
    p2pkh_version: int
    p2sh_version: int


MAINNET = BitcoinNetwork("mainnet", "bc", 0x00, 0x05)
TESTNET = BitcoinNetwork("testnet", "tb", 0x6F, 0xC4)
SIGNET = BitcoinNetwork("signet", "tb", 0x6F, 0xC4)
REGTEST = BitcoinNetwork("regtest", "bcrt", 0x6F, 0xC4)
NETWORKS: dict[str, BitcoinNetwork] = {n.name: n for n in (MAINNET, TESTNET, SIGNET, REGTEST)}
NETWORKS["testnet4"] = BitcoinNetwork("testnet4", "tb", 0x6F, 0xC4)

# Which networks an address prefix can belong to (for error messages that name the network).
_HRP_NETWORKS = {"bc": "mainnet", "tb": "testnet/signet", "bcrt": "regtest"}
_VERSION_NETWORKS = {0x00: "mainnet", 0x05: "mainnet", 0x6F: "testnet/signet/regtest", 0xC4: "testnet/signet/regtest"}


def network_of(name: str) -> BitcoinNetwork:
    """The network called `name` (mainnet, testnet, testnet4, signet, regtest); UnknownChain otherwise."""
    try:
        return NETWORKS[name]
    except (KeyError, TypeError):
        raise UnknownChain(f"unknown bitcoin network {name!r} (known: {', '.join(sorted(NETWORKS))})") from None


# --- bech32 / bech32m (BIP173, BIP350) ----------------------------------------------------------

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
BECH32M_CONST = 0x2BC830A3
MAX_LENGTH = 90


class Encoding(enum.Enum):
    BECH32 = 1
    BECH32M = BECH32M_CONST


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= _GENERATOR[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _create_checksum(hrp: str, data: list[int], encoding: Encoding) -> list[int]:
    polymod = _polymod(_hrp_expand(hrp) + data + [0] * 6) ^ encoding.value
    return [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]


class Bech32Error(ValueError):
    """The string is not valid bech32/bech32m; the message says why."""


def bech32_decode(text: str) -> tuple[str, list[int], Encoding]:
    """(hrp, data without checksum, encoding) of a bech32 or bech32m string; Bech32Error if invalid."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise Bech32Error("character out of range (only printable US-ASCII)")
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("mixed upper and lower case")
    if len(text) > MAX_LENGTH:
        raise Bech32Error(f"too long ({len(text)} characters, at most {MAX_LENGTH})")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1:
        raise Bech32Error("empty human-readable part" if pos == 0 else "no separator '1'")
    if pos + 7 > len(text):
        raise Bech32Error("checksum too short")
    hrp, rest = text[:pos], text[pos + 1:]
    bad = next((c for c in rest if c not in _CHARSET_INDEX), None)
    if bad is not None:
        raise Bech32Error(f"invalid data character {bad!r}")
    data = [_CHARSET_INDEX[c] for c in rest]
    check = _polymod(_hrp_expand(hrp) + data)
    for encoding in Encoding:
        if check == encoding.value:
            return hrp, data[:-6], encoding
    raise Bech32Error("bad checksum")


def bech32_encode(hrp: str, data: list[int], encoding: Encoding) -> str:
    return hrp + "1" + "".join(CHARSET[d] for d in data + _create_checksum(hrp, data, encoding))


def convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int] | None:
    """Regroup bits (8->5 to encode, 5->8 to decode); None if the padding is invalid."""
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            return None
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or (acc << (tobits - bits)) & maxv:
        return None
    return out


def decode_segwit(text: str) -> tuple[str, int, bytes]:
    """(hrp, witness version, program) of a segwit address, all BIP350 rules checked; Bech32Error."""
    hrp, data, encoding = bech32_decode(text)
    if not data:
        raise Bech32Error("empty data section")
    version = data[0]
    if version > 16:
        raise Bech32Error(f"invalid witness version {version}")
    program = convertbits(data[1:], 5, 8, False)
    if program is None:
        raise Bech32Error("invalid padding in the witness program")
    if not 2 <= len(program) <= 40:
        raise Bech32Error(f"invalid witness program length {len(program)} (2..40 bytes)")
    if version == 0 and len(program) not in (20, 32):
        raise Bech32Error(f"invalid witness v0 program length {len(program)} (20 or 32 bytes)")
    expected = Encoding.BECH32 if version == 0 else Encoding.BECH32M
    if encoding is not expected:
        raise Bech32Error(
            f"witness v{version} must use the {expected.name.lower()} checksum, not {encoding.name.lower()}"
        )
    return hrp, version, bytes(program)


def encode_segwit(hrp: str, version: int, program: bytes) -> str:
    """The segwit address of (version, program); ValueError on an invalid combination."""
    encoding = Encoding.BECH32 if version == 0 else Encoding.BECH32M
    address = bech32_encode(hrp, [version] + (convertbits(program, 8, 5, True) or []), encoding)
    decode_segwit(address)  # the encoder must never produce something the decoder refuses
    return address


# --- base58check ------------------------------------------------------------------------------

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(B58_ALPHABET)}


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data)); pycryptodome's RIPEMD160 where OpenSSL no longer has it."""
    digest = hashlib.sha256(data).digest()
    try:
        return hashlib.new("ripemd160", digest).digest()
    except ValueError:  # OpenSSL 3 without the legacy provider
        from Crypto.Hash import RIPEMD160

        return RIPEMD160.new(digest).digest()


def b58encode_check(payload: bytes) -> str:
    data = payload + sha256d(payload)[:4]
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rem = divmod(number, 58)
        out = B58_ALPHABET[rem] + out
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + out


def b58decode_check(text: str) -> bytes:
    """The payload of a base58check string; ValueError saying why if it is not one."""
    bad = next((c for c in text if c not in _B58_INDEX), None)
    if bad is not None:
        raise ValueError(f"invalid base58 character {bad!r}")
    number = 0
    for c in text:
        number = number * 58 + _B58_INDEX[c]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    data = b"\0" * zeros + body
    if len(data) < 5:
        raise ValueError("too short for base58check")
    payload, checksum = data[:-4], data[-4:]
    if sha256d(payload)[:4] != checksum:
        raise ValueError("bad base58check checksum")
    return payload


# --- addresses --------------------------------------------------------------------------------


class AddressKind(str, enum.Enum):
    P2PKH = "p2pkh"
    P2SH = "p2sh"
    P2WPKH = "p2wpkh"
    P2WSH = "p2wsh"
    P2TR = "p2tr"
    WITNESS_UNKNOWN = "witness_unknown"  # v1 of another length, v2..v16: valid, not yet spendable


@dataclass(frozen=True)
class Destination:
    """A decoded address: its normalized text, kind and the output script that pays it."""

    address: str
    kind: AddressKind
    script_pubkey: bytes
    witness_version: int | None = None
    program: bytes = b""


def witness_script(version: int, program: bytes) -> bytes:
    """scriptPubKey of a witness program: OP_n <program>."""
    return bytes([0x50 + version if version else 0, len(program)]) + program


def p2wpkh_script(pubkey_hash: bytes) -> bytes:
    return witness_script(0, pubkey_hash)


def p2pkh_script(pubkey_hash: bytes) -> bytes:
    return b"\x76\xa9\x14" + pubkey_hash + b"\x88\xac"


def p2sh_script(script_hash: bytes) -> bytes:
    return b"\xa9\x14" + script_hash + b"\x87"


def _segwit_kind(version: int, program: bytes) -> AddressKind:
    if version == 0:
        return AddressKind.P2WPKH if len(program) == 20 else AddressKind.P2WSH
    if version == 1 and len(program) == 32:
        return AddressKind.P2TR
    return AddressKind.WITNESS_UNKNOWN


def _looks_segwit(text: str) -> bool:
    lowered = text.lower()
    return any(lowered.startswith(hrp + "1") for hrp in _HRP_NETWORKS)


def decode_address(address: object, network: str, chain: str = "bitcoin") -> Destination:
    """The decoded address on `network`; InvalidAddress with the reason otherwise."""
    net = network_of(network)
    address = require_text(address, chain)
    if not address:
        raise InvalidAddress(chain, address, "empty")
    try:
        hrp, version, program = decode_segwit(address)
    except Bech32Error as exc:
        if _looks_segwit(address):
            raise InvalidAddress(chain, address, f"not a valid segwit address: {exc}") from None
        return _decode_base58(address, net, chain)
    if hrp != net.hrp:
        where = _HRP_NETWORKS.get(hrp)
        reason = (f"a {where} address (prefix {hrp}1), not a {net.name} one" if where
                  else f"unknown human-readable part {hrp!r} (a {net.name} address starts with {net.hrp}1)")
        raise InvalidAddress(chain, address, reason)
    return Destination(address.lower(), _segwit_kind(version, program), witness_script(version, program),
                       version, program)


def _decode_base58(address: str, net: BitcoinNetwork, chain: str) -> Destination:
    try:
        payload = b58decode_check(address)
    except ValueError as exc:
        raise InvalidAddress(chain, address, f"neither a segwit nor a base58 address: {exc}") from None
    if len(payload) != 21:
        raise InvalidAddress(chain, address, f"base58 payload of {len(payload)} bytes (an address has 21)")
    version, digest = payload[0], payload[1:]
    if version == net.p2pkh_version:
        return Destination(address, AddressKind.P2PKH, p2pkh_script(digest), program=digest)
    if version == net.p2sh_version:
        return Destination(address, AddressKind.P2SH, p2sh_script(digest), program=digest)
    where = _VERSION_NETWORKS.get(version)
    reason = (f"a {where} address (version byte 0x{version:02x}), not a {net.name} one" if where
              else f"unknown base58 version byte 0x{version:02x}")
    raise InvalidAddress(chain, address, reason)


def _network_for(chain: str, network: str | None) -> str:
    if network is not None:
        return network
    from chains import default_registry

    return default_registry().chain(chain).network


def validate_address(address: object, chain: str = "bitcoin", network: str | None = None) -> str:
    """The normalized address (bech32 lower-cased, base58 unchanged), or InvalidAddress saying why.

    `network` defaults to the chain's network in the default registry (UnknownChain if absent).
    """
    return decode_address(address, _network_for(chain, network), chain).address


def check_destination(address: object, chain: str = "bitcoin", token_contract: str | None = None,
                      network: str | None = None) -> str:
    """`validate_address`, then refuse outputs nobody can safely own yet (see the module docstring)."""
    destination = decode_address(address, _network_for(chain, network), chain)
    if token_contract is not None:
        raise InvalidAddress(chain, destination.address, "bitcoin has no token contracts")
    if destination.kind is AddressKind.WITNESS_UNKNOWN:
        raise InvalidAddress(
            chain, destination.address,
            f"witness v{destination.witness_version} with a {len(destination.program)}-byte program has no "
            "spending rules yet: coins sent there can be taken by anyone",
        )
    return destination.address


# --- keys -------------------------------------------------------------------------------------

_P = 2**256 - 2**32 - 977  # secp256k1 field prime


def compress_public_key(public_key: bytes) -> bytes:
    """The 33-byte compressed form of a secp256k1 key given as 64-byte X||Y (the signer's form),
    65-byte 04||X||Y or 33-byte compressed; InvalidPublicKey if it is not a point on the curve."""
    if not isinstance(public_key, (bytes, bytearray)):
        raise InvalidPublicKey(f"public key must be bytes, not {type(public_key).__name__}")
    raw = bytes(public_key)
    if len(raw) == 33 and raw[0] in (2, 3):
        x = int.from_bytes(raw[1:], "big")
        y_squared = (pow(x, 3, _P) + 7) % _P
        if x >= _P or pow(y_squared, (_P - 1) // 2, _P) not in (0, 1):
            raise InvalidPublicKey("the compressed key's x is not on the secp256k1 curve")
        return raw
    if len(raw) == 65 and raw[0] == 4:
        raw = raw[1:]
    if len(raw) != 64:
        raise InvalidPublicKey(f"secp256k1 public key must be 64 bytes X||Y (or 33/65), got {len(public_key)}")
    x, y = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    if not (x < _P and y < _P and (y * y - x * x * x - 7) % _P == 0):
        raise InvalidPublicKey("the point is not on the secp256k1 curve")
    return bytes([2 + (y & 1)]) + raw[:32]


def address_from_public_key(public_key: bytes, network: str = "mainnet") -> str:
    """The P2WPKH (native segwit v0) address of a secp256k1 key on `network`, from its compressed form."""
    return encode_segwit(network_of(network).hrp, 0, hash160(compress_public_key(public_key)))


def p2wpkh_program(address: str, network: str, chain: str = "bitcoin") -> bytes:
    """The 20-byte key hash of a P2WPKH address; InvalidAddress for any other kind."""
    destination = decode_address(address, network, chain)
    if destination.kind is not AddressKind.P2WPKH:
        raise InvalidAddress(chain, destination.address, f"a {destination.kind.value} address, not P2WPKH")
    return destination.program


def dust_limit(script_pubkey: bytes) -> int:
    """Bitcoin Core's dust threshold at the default 3 sat/vB dust relay fee: an output worth less
    than the cost of creating and later spending it is non-standard (546 P2PKH, 540 P2SH, 294
    P2WPKH, 330 P2WSH/P2TR)."""
    if script_pubkey[:1] == b"\x6a":
        return 0  # OP_RETURN outputs are unspendable, so never dust
    size = 8 + _varint_len(len(script_pubkey)) + len(script_pubkey)
    is_witness = (len(script_pubkey) >= 4 and (script_pubkey[0] == 0 or 0x51 <= script_pubkey[0] <= 0x60)
                  and script_pubkey[1] + 2 == len(script_pubkey))
    size += 67 if is_witness else 148  # the input that would spend it (witness discounted)
    return 3 * size


def _varint_len(n: int) -> int:
    return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5 if n <= 0xFFFFFFFF else 9


__all__ = [
    "AddressKind", "Destination", "NETWORKS", "address_from_public_key", "check_destination",
    "compress_public_key", "decode_address", "dust_limit", "hash160", "network_of", "p2wpkh_program",
    "validate_address",
]
