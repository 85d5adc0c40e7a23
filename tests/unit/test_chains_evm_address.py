"""EVM address policy: EIP-55 vectors, the checksum property, and everything else rejected."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from eth_keys import keys
from eth_utils import is_checksum_address, to_checksum_address
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import chains
from chains.errors import InvalidAddress, InvalidPublicKey, UnknownChain
from chains.evm_address import address_from_public_key, check_destination, validate_address

# The test vectors published in EIP-55.
EIP55_MIXED = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]
EIP55_ALL_CAPS = ["0x52908400098527886E0F7030069857D2E4169EE7", "0x8617E340B3D01FA5F11F306F4090FD50E238070D"]
EIP55_ALL_LOWER = ["0xde709f2102306220921060314715629080e2fb77", "0x27b1fdb04752bbc536007a920d24acb045561c26"]


@pytest.mark.parametrize("address", EIP55_MIXED)
def test_eip55_checksummed_vectors_pass_unchanged(address: str) -> None:
    assert validate_address(address) == address


@pytest.mark.parametrize("address", EIP55_ALL_CAPS + EIP55_ALL_LOWER)
def test_uniform_case_vectors_are_accepted_and_normalized(address: str) -> None:
    normalized = validate_address(address)
    assert normalized.lower() == address.lower()
    assert is_checksum_address(normalized)
    assert normalized == to_checksum_address(address)


@pytest.mark.parametrize("address", EIP55_MIXED)
def test_upper_and_lower_forms_of_vectors_normalize_to_the_vector(address: str) -> None:
    assert validate_address("0x" + address[2:].lower()) == address
    assert validate_address("0x" + address[2:].upper()) == address


def _flip(address: str, index: int) -> str:
    char = address[index]
    return address[:index] + (char.lower() if char.isupper() else char.upper()) + address[index + 1 :]


@pytest.mark.parametrize("address", EIP55_MIXED)
def test_flipping_one_letter_of_a_vector_is_a_bad_checksum(address: str) -> None:
    for index, char in enumerate(address[2:], start=2):
        if char.isalpha():
            with pytest.raises(InvalidAddress, match="checksum") as info:
                validate_address(_flip(address, index))
            assert info.value.reason.startswith("bad EIP-55 checksum")


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=20, max_size=20), pick=st.integers(min_value=0))
def test_flipping_any_single_letter_of_a_checksummed_address_is_rejected(raw: bytes, pick: int) -> None:
    address = to_checksum_address(raw)
    letters = [i for i, c in enumerate(address) if i >= 2 and c.isalpha()]
    assume(letters)
    flipped = _flip(address, letters[pick % len(letters)])
    digits = flipped[2:]
    # EIP-55's own blind spot: a flip that leaves the address uniformly cased carries no checksum.
    assume(digits != digits.lower() and digits != digits.upper())
    with pytest.raises(InvalidAddress, match="checksum"):
        validate_address(flipped)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=20, max_size=20))
def test_any_checksummed_address_roundtrips(raw: bytes) -> None:
    address = to_checksum_address(raw)
    assert validate_address(address) == address
    assert validate_address(address.lower()) == address


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe", "wrong length"),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed0", "wrong length"),
        ("0x", "wrong length"),
        ("", "missing 0x prefix"),
        ("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "missing 0x prefix"),
        ("0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "missing 0x prefix"),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg", "non-hex"),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA d", "non-hex"),
        (" 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "whitespace"),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n", "whitespace"),
        ("TJRyWwFs9wTFGZg3JbrVriFbNfCug5tDeC", "missing 0x prefix"),  # a TRON address
    ],
)
def test_malformed_addresses_are_rejected_with_a_reason(address: str, reason: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        validate_address(address, "ethereum")
    assert reason in info.value.reason
    assert info.value.chain == "ethereum"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [None, 123, b"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", ["0x"]])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidAddress, match="not a string"):
        validate_address(value)


def test_destination_policy_is_separate_from_the_format_check() -> None:
    zero = "0x" + "0" * 40
    assert validate_address(zero) == zero  # well-formed...
    with pytest.raises(InvalidAddress, match="zero address"):
        check_destination(zero)  # ...but never a destination
    with pytest.raises(InvalidAddress, match="precompile"):
        check_destination("0x0000000000000000000000000000000000000001")
    usdt = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
    with pytest.raises(InvalidAddress, match="own contract"):
        check_destination(usdt.lower(), "ethereum", token_contract=usdt)
    assert check_destination(EIP55_MIXED[0], "ethereum", token_contract=usdt) == EIP55_MIXED[0]
    with pytest.raises(InvalidAddress, match="checksum"):
        check_destination(_flip(EIP55_MIXED[0], 3))


def test_address_from_public_key_matches_eth_account() -> None:
    for _ in range(20):
        secret = os.urandom(32)
        public = keys.PrivateKey(secret).public_key
        expected = Account.from_key(secret).address
        assert address_from_public_key(public.to_bytes()) == expected
        assert address_from_public_key(b"\x04" + public.to_bytes()) == expected
        assert address_from_public_key(public.to_compressed_bytes()) == expected


@pytest.mark.parametrize("bad", [b"", b"\x01" * 63, b"\x05" + b"\x01" * 64, b"\x01" * 64, "00" * 64])
def test_bad_public_keys_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidPublicKey):
        address_from_public_key(bad)  # type: ignore[arg-type]


# --- the module-level check the pipeline calls (no node) --------------------------------------


def test_module_validate_address_uses_the_registry_and_its_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(chains.REGISTRY_ENV, raising=False)
    address = EIP55_MIXED[0]
    assert chains.validate_address("ethereum", address.lower()) == address
    assert chains.validate_address("bsc", address, network="mainnet") == address
    with pytest.raises(UnknownChain, match="network"):
        chains.validate_address("ethereum", address, network="devnet")
    with pytest.raises(UnknownChain, match="unknown chain"):
        chains.validate_address("dogecoin", address)
    with pytest.raises(InvalidAddress):
        chains.validate_address("polygon", _flip(address, 3))

    monkeypatch.setenv(chains.REGISTRY_ENV, "devnet")
    assert chains.default_registry().name == "devnet"
    assert chains.validate_address("ethereum", address, network="devnet") == address


def test_module_validate_destination_knows_the_token_contract() -> None:
    registry = chains.load_registry("mainnet")
    usdc = registry.chain("base").token("USDC").contract
    assert usdc is not None
    with pytest.raises(InvalidAddress, match="own contract"):
        chains.validate_destination("base", usdc, "mainnet", "USDC", registry=registry)
    assert chains.validate_destination("base", EIP55_MIXED[1], token="USDC", registry=registry) == EIP55_MIXED[1]


def test_import_chains_does_not_import_web3() -> None:
    import subprocess
    import sys

    from pathlib import Path

    root = str(Path(chains.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    code = "import sys, chains; chains.validate_address('ethereum', '0x' + '1' * 40); print('web3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"
