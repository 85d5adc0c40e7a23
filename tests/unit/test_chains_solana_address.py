"""Solana address policy: base58 of exactly 32 bytes (PDAs included), the destination policy, and
key derivation; cross-checked against solders, which the runtime itself uses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.pubkey import Pubkey

import chains
from chains.errors import InvalidAddress, InvalidPublicKey
from chains.solana_address import (
    ALPHABET,
    RESERVED_ADDRESSES,
    address_from_public_key,
    b58decode,
    b58encode,
    check_destination,
    is_on_curve,
    validate_address,
)

# RFC 8032 test 1: the ed25519 public key and its Solana address.
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_ADDRESS = "FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDT = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
# The associated token account of RFC8032_ADDRESS for USDC: a PDA, so off the curve.
RFC8032_USDC_ATA = "HU2S9ByyqbnCD2SVfvr9qoLtDTtyTnMZoMaw1xpr6cTb"
SYSTEM_PROGRAM = "11111111111111111111111111111111"  # 32 zero bytes


# --- validate_address ---------------------------------------------------------------------------

@pytest.mark.parametrize("address", [RFC8032_ADDRESS, USDC, USDT, RFC8032_USDC_ATA, SYSTEM_PROGRAM,
                                     "11111111111111111111111111111112", "JEKNVnkbo3jma5nREBBJCDoXFVeKkD56V3xKrvRmWxFG"])
def test_known_addresses_are_valid_and_unchanged(address: str) -> None:
    assert validate_address(address) == address
    assert str(Pubkey.from_string(address)) == address  # solders agrees


def test_the_known_vectors_decode_to_their_bytes() -> None:
    assert b58decode(RFC8032_ADDRESS) == RFC8032_PUBLIC
    assert b58decode(SYSTEM_PROGRAM) == bytes(32)
    assert b58decode("JEKNVnkbo3jma5nREBBJCDoXFVeKkD56V3xKrvRmWxFG") == b"\xff" * 32


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        (None, "not a string"),
        (b"FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z", "not a string"),
        (32, "not a string"),
        ("", "empty"),
        (" " + USDC, "whitespace"),
        (USDC + "\n", "whitespace"),
        (USDC[:20] + " " + USDC[20:], "whitespace"),
        (USDC[:10] + "0" + USDC[11:], "'0' is not in the base58 alphabet"),
        (USDC[:10] + "O" + USDC[11:], "'O' is not in the base58 alphabet"),
        (USDC[:10] + "I" + USDC[11:], "'I' is not in the base58 alphabet"),
        (USDC[:10] + "l" + USDC[11:], "'l' is not in the base58 alphabet"),
        ("0x" + "ab" * 20, "not in the base58 alphabet"),
        (USDC[:-2], "decodes to 31 bytes"),
        ("z" * 44, "decodes to 33 bytes"),
        (USDC + "1", "wrong length: 45 characters"),
        ("1" * 31, "decodes to 31 bytes"),
        (USDC + USDC, "wrong length: 88 characters"),
        ("4" * 10_000, "wrong length"),
    ],
)
def test_malformed_addresses_are_refused_with_the_reason(address: object, reason: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        validate_address(address, "solana")
    assert reason in info.value.reason
    assert info.value.chain == "solana"


def test_a_pda_is_a_valid_address_even_though_it_is_off_curve() -> None:
    assert not Pubkey.from_string(RFC8032_USDC_ATA).is_on_curve()
    assert validate_address(RFC8032_USDC_ATA) == RFC8032_USDC_ATA


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_every_32_byte_value_round_trips_like_solders(raw: bytes) -> None:
    address = b58encode(raw)
    assert address == str(Pubkey(raw))
    assert validate_address(address) == address
    assert b58decode(address) == raw


_mutation = st.tuples(st.integers(min_value=0, max_value=43), st.sampled_from(ALPHABET), st.sampled_from(["insert", "delete", "replace"]))


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=32, max_size=32), _mutation)
def test_a_mutation_passes_exactly_when_it_still_decodes_to_32_bytes(raw: bytes, mutation: tuple[int, str, str]) -> None:
    """Base58 has no checksum: a same-length typo is simply another valid address (accepted),
    while any edit that changes the decoded length is refused. Nothing offline can do better."""
    address = b58encode(raw)
    index, char, kind = mutation
    index %= len(address)
    if kind == "insert":
        mutated = address[:index] + char + address[index:]
    elif kind == "delete":
        mutated = address[:index] + address[index + 1:]
    else:
        mutated = address[:index] + char + address[index + 1:]
    decoded = b58decode(mutated)
    if len(decoded) == 32:
        assert validate_address(mutated) == mutated  # accepted: a different address, by design
        assert (mutated == address) == (decoded == raw)
    else:
        with pytest.raises(InvalidAddress, match="wrong length"):
            validate_address(mutated)


def test_a_same_length_typo_is_accepted_because_base58_has_no_checksum() -> None:
    typo = RFC8032_ADDRESS[:-1] + ("a" if RFC8032_ADDRESS[-1] != "a" else "b")
    assert validate_address(typo) == typo != RFC8032_ADDRESS


def test_even_a_dropped_character_can_still_be_32_bytes() -> None:
    # 43 base58 digits reach 2^251: the USDC mint without its last character is another valid
    # address. Only the decoded length is checked; the destination policy cannot catch this either.
    assert len(USDC[:-1]) == 43
    assert validate_address(USDC[:-1]) == USDC[:-1]


# --- the curve test -------------------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_is_on_curve_agrees_with_solders(raw: bytes) -> None:
    assert is_on_curve(raw) is Pubkey(raw).is_on_curve()


@pytest.mark.parametrize("y", [0, 1, 2, 2**255 - 20, 2**255 - 19, 2**255 - 18, 2**255 - 17, 2**255 - 1])
@pytest.mark.parametrize("sign", [0, 0x80])
def test_is_on_curve_agrees_with_solders_on_edge_encodings(y: int, sign: int) -> None:
    raw = bytearray((y % 2**255).to_bytes(32, "little"))
    raw[31] |= sign
    assert is_on_curve(bytes(raw)) is Pubkey(bytes(raw)).is_on_curve()


# --- check_destination ------------------------------------------------------------------------

def test_a_wallet_address_is_a_fine_destination() -> None:
    assert check_destination(RFC8032_ADDRESS, "solana", USDC, allow_off_curve=False) == RFC8032_ADDRESS


def test_an_off_curve_destination_is_refused_unless_the_chain_opts_in() -> None:
    with pytest.raises(InvalidAddress, match="off-curve") as info:
        check_destination(RFC8032_USDC_ATA, "solana", None, allow_off_curve=False)
    assert "allow_off_curve_destinations" in info.value.reason
    assert check_destination(RFC8032_USDC_ATA, "solana", None, allow_off_curve=True) == RFC8032_USDC_ATA


def test_the_off_curve_policy_defaults_to_the_registry_which_says_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(chains.REGISTRY_ENV, "devnet")
    with pytest.raises(InvalidAddress, match="off-curve"):
        check_destination(RFC8032_USDC_ATA, "solana")
    with pytest.raises(InvalidAddress, match="off-curve"):
        check_destination(RFC8032_USDC_ATA, "no-such-chain")


def test_the_tokens_own_mint_is_refused() -> None:
    with pytest.raises(InvalidAddress, match="token's own mint"):
        check_destination(USDC, "solana", USDC, allow_off_curve=True)
    assert check_destination(USDC, "solana", USDT, allow_off_curve=False) == USDC  # another mint: just an address


@pytest.mark.parametrize("address", sorted(RESERVED_ADDRESSES))
def test_programs_and_sysvars_are_refused(address: str) -> None:
    assert len(b58decode(address)) == 32 and str(Pubkey.from_string(address)) == address
    with pytest.raises(InvalidAddress, match="program or sysvar"):
        check_destination(address, "solana", None, allow_off_curve=True)


def test_the_families_table_serves_solana_through_the_package_api() -> None:
    registry = chains.load_registry("devnet")
    assert chains.validate_address("solana", RFC8032_USDC_ATA, registry=registry) == RFC8032_USDC_ATA
    assert chains.validate_destination("solana", RFC8032_ADDRESS, token="USDC", registry=registry) == RFC8032_ADDRESS
    with pytest.raises(InvalidAddress, match="token's own mint"):
        chains.validate_destination("solana", USDC, token="USDC", registry=registry)
    with pytest.raises(InvalidAddress):
        chains.validate_address("solana", "0x" + "1" * 40, registry=registry)


def test_checking_an_address_imports_no_solana_sdk() -> None:
    code = ("import sys, chains; chains.validate_destination('solana', %r, registry=chains.load_registry('mainnet'));"
            "print(any(m.split('.')[0] in ('solders', 'solana', 'spl') for m in sys.modules))" % RFC8032_ADDRESS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == "False"


# --- address_from_public_key ------------------------------------------------------------------

def test_the_rfc8032_key_gives_its_address() -> None:
    assert address_from_public_key(RFC8032_PUBLIC) == RFC8032_ADDRESS


def test_a_key_from_the_local_signer_format_matches_solders() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from solders.keypair import Keypair

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    expected = str(Keypair.from_seed(key.private_bytes_raw()).pubkey())
    assert address_from_public_key(public) == expected


@pytest.mark.parametrize(
    ("key", "match"),
    [(RFC8032_PUBLIC[:31], "32 bytes"), (RFC8032_PUBLIC + b"\0", "32 bytes"), ("FVen3X669", "must be bytes"),
     (b58decode(RFC8032_USDC_ATA), "off-curve")],
)
def test_malformed_public_keys_are_refused(key: object, match: str) -> None:
    with pytest.raises(InvalidPublicKey, match=match):
        address_from_public_key(key)  # type: ignore[arg-type]
