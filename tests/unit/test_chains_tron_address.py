"""TRON address policy: known vectors, every one-character typo refused, the hex form refused."""

from __future__ import annotations

import base58
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tronpy.keys import PrivateKey, is_base58check_address, to_base58check_address

import chains
from chains.errors import InvalidAddress, InvalidPublicKey
from chains.tron_address import (
    ZERO_ADDRESS,
    address_from_public_key,
    check_destination,
    from_raw,
    to_raw,
    validate_address,
)

USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
USDT_HEX = "41a614f803b6fd780986a42c78ec9c7f77e6ded13c"
ALPHABET = base58.alphabet.decode()
# Private key 1 and 2 of secp256k1 (public test vectors; never hold funds).
KEY_ONE = PrivateKey((1).to_bytes(32, "big"))
KEY_TWO = PrivateKey((2).to_bytes(32, "big"))


def test_the_usdt_contract_is_valid_and_unchanged() -> None:
    assert validate_address(USDT) == USDT
    assert to_raw(USDT).hex() == USDT_HEX
    assert from_raw(bytes.fromhex(USDT_HEX)) == USDT


@pytest.mark.parametrize("key", [KEY_ONE, KEY_TWO, PrivateKey(bytes.fromhex("11" * 32))])
def test_addresses_of_known_keys_agree_with_tronpy(key: PrivateKey) -> None:
    expected = key.public_key.to_base58check_address()
    assert address_from_public_key(key.public_key.to_bytes()) == expected
    assert address_from_public_key(b"\x04" + key.public_key.to_bytes()) == expected
    assert validate_address(expected) == expected and is_base58check_address(expected)


def test_key_one_is_the_well_known_address() -> None:
    # The address of private key 1: its EVM form is the famous 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf.
    assert address_from_public_key(KEY_ONE.public_key.to_bytes()) == to_base58check_address(
        "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf")


@pytest.mark.parametrize("public_key", [b"", b"\x00" * 64, b"\x04" + b"\x01" * 64, "abc"])
def test_a_bad_public_key_is_refused(public_key: object) -> None:
    with pytest.raises(InvalidPublicKey):
        address_from_public_key(public_key)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(secret=st.integers(min_value=1, max_value=2**255), data=st.data())
def test_every_single_character_change_is_refused(secret: int, data: st.DataObject) -> None:
    # Given a valid address
    address = PrivateKey(secret.to_bytes(32, "big")).public_key.to_base58check_address()
    assert validate_address(address) == address
    # When one character is replaced by any other character
    index = data.draw(st.integers(min_value=0, max_value=len(address) - 1))
    char = data.draw(st.sampled_from(ALPHABET + "0OIl x"))
    if char == address[index]:
        return
    mutated = address[:index] + char + address[index + 1:]
    # Then it is refused: the 4-byte checksum covers every character
    with pytest.raises(InvalidAddress):
        validate_address(mutated)


def test_every_position_of_a_vector_is_covered_by_the_checksum() -> None:
    for index in range(1, len(USDT)):
        for char in ALPHABET:
            if char != USDT[index]:
                with pytest.raises(InvalidAddress):
                    validate_address(USDT[:index] + char + USDT[index + 1:])


@pytest.mark.parametrize("address", [USDT_HEX, "0x" + USDT_HEX, USDT_HEX.upper()])
def test_the_hex_form_is_refused_with_a_pointer_to_base58(address: str) -> None:
    with pytest.raises(InvalidAddress, match="paste the base58 form"):
        validate_address(address)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf", "EVM address"),
        ("", "empty"),
        (" " + USDT, "whitespace"),
        (USDT + "\n", "whitespace"),
        (USDT[:-1], "34 base58 characters"),
        (USDT + "1", "34 base58 characters"),
        ("R7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6tT", "starting with T"),
        ("T" + "0" * 33, "not base58"),
        (USDT[:-1] + "T", "checksum"),
    ],
)
def test_malformed_addresses_are_refused_with_a_reason(address: str, reason: str) -> None:
    with pytest.raises(InvalidAddress, match=reason):
        validate_address(address)


@pytest.mark.parametrize("prefix", [0x40, 0x42, 0x43])
def test_a_t_address_with_another_prefix_byte_is_refused(prefix: int) -> None:
    # 0x40 + ff.., 0x42 + 00.. and 0x43 + 00.. also encode to 34 characters starting with T
    body = b"\xff" * 20 if prefix == 0x40 else bytes(20)
    other = base58.b58encode_check(bytes([prefix]) + body).decode()
    assert other[0] == "T" and len(other) == 34
    with pytest.raises(InvalidAddress, match="prefix byte"):
        validate_address(other)


@pytest.mark.parametrize("value", [None, 123, b"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", ["T"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidAddress, match="not a string"):
        validate_address(value)


def test_destination_policy() -> None:
    recipient = KEY_ONE.public_key.to_base58check_address()
    assert check_destination(recipient, "tron", USDT) == recipient
    assert ZERO_ADDRESS == from_raw(bytes(20))
    with pytest.raises(InvalidAddress, match="zero"):
        check_destination(ZERO_ADDRESS)
    with pytest.raises(InvalidAddress, match="own contract"):
        check_destination(USDT, "tron", USDT)
    with pytest.raises(InvalidAddress, match="paste the base58 form"):
        check_destination(USDT_HEX, "tron", USDT)


def test_the_package_level_checks_use_the_tron_family() -> None:
    registry = chains.load_registry("devnet")
    recipient = KEY_TWO.public_key.to_base58check_address()
    assert chains.validate_address("tron", recipient, registry=registry) == recipient
    with pytest.raises(InvalidAddress, match="own contract"):
        chains.validate_destination("tron", USDT, token="USDT", registry=registry)
    with pytest.raises(InvalidAddress) as info:
        chains.validate_address("tron", USDT_HEX, registry=registry)
    assert info.value.chain == "tron"


def test_the_registry_refuses_a_tron_contract_in_hex_form() -> None:
    doc = {"chains": {"tron": {
        "family": "tron", "network": "mainnet", "native_symbol": "TRX", "native_decimals": 6, "confirmations": 19,
        "tokens": {"USDT": {"asset_type": "TRC20", "contract": USDT_HEX, "decimals": 6}},
    }}}
    with pytest.raises(ValueError, match="paste the base58 form"):
        chains.parse_registry(doc, "t")


def test_checking_an_address_does_not_import_tronpy() -> None:
    import subprocess
    import sys

    code = ("import sys, chains; chains.validate_destination('tron', %r, registry=chains.load_registry('mainnet'));"
            "print('tronpy' in sys.modules)") % KEY_ONE.public_key.to_base58check_address()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
