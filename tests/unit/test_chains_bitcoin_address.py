"""Bitcoin address checks: every BIP173 and BIP350 test vector, base58check, networks, policy.

Vectors are copied from the BIPs (bitcoin/bips bip-0173.mediawiki and bip-0350.mediawiki, also
sipa/bech32 ref/python/tests.py). BIP350 changed the meaning of BIP173's v1+ examples: they carry
a bech32 checksum, so they are *invalid* addresses today (they stay valid bech32 strings).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chains
from chains import bitcoin_address as ba
from chains.bitcoin_address import (
    AddressKind,
    Bech32Error,
    Encoding,
    address_from_public_key,
    bech32_decode,
    check_destination,
    decode_address,
    validate_address,
)
from chains.errors import InvalidAddress, InvalidPublicKey, UnknownChain

# --- BIP173 / BIP350 checksum vectors ---------------------------------------------------------------

VALID_BECH32 = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqc8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]

VALID_BECH32M = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]

INVALID_BECH32 = [
    " 1nwldj5",  # HRP character out of range
    "\x7f" + "1axkwrx",  # HRP character out of range
    "\x80" + "1eym55h",  # HRP character out of range
    "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",  # too long
    "pzry9x0s0muk",  # no separator character
    "1pzry9x0s0muk",  # empty HRP
    "x1b4n0q5v",  # invalid data character
    "li1dgmt3",  # too short checksum
    "de1lg7wt" + "\xff",  # invalid character in checksum
    "A1G7SGD8",  # checksum calculated with uppercase form of HRP
    "10a06t8",  # empty HRP
    "1qzzfhee",  # empty HRP
]

INVALID_BECH32M = [
    " 1xj0phk",  # HRP character out of range
    "\x7f" + "1g6xzxy",  # HRP character out of range
    "\x80" + "1vctc34",  # HRP character out of range
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",  # too long
    "qyrz8wqd2c9m",  # no separator character
    "1qyrz8wqd2c9m",  # empty HRP
    "y1b0jsk6g",  # invalid data character
    "lt1igcx5c0",  # invalid data character
    "in1muywd",  # too short checksum
    "mm1crxm3i",  # invalid character in checksum
    "au1s5cgom",  # invalid character in checksum
    "M1VUXWEZ",  # checksum calculated with uppercase form of HRP
    "16plkw9",  # empty HRP
    "1p2gdwpf",  # empty HRP
]

# --- segwit address vectors: (address, scriptPubKey hex) --------------------------------------------

BIP350_VALID_ADDRESSES = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
     "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
    ("bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
     "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("BC1SW50QGDZ25J", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    ("tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
     "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
     "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
     "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
]

BIP350_INVALID_ADDRESSES = [
    "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",  # invalid HRP
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",  # bech32 instead of bech32m
    "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",  # bech32 instead of bech32m
    "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",  # bech32 instead of bech32m
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # bech32m instead of bech32
    "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",  # bech32m instead of bech32
    "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",  # invalid character in checksum
    "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",  # invalid witness version
    "bc1pw5dgrnzv",  # invalid program length (1 byte)
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",  # 41 bytes
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # invalid program length for witness version 0
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",  # mixed case
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",  # zero padding of more than 4 bits
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",  # non-zero padding in 8-to-5
    "bc1gmk9yu",  # empty data section
]

BIP173_VALID_V0_ADDRESSES = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
     "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
    ("tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
     "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
]

# BIP173's v1/v16/v2 examples use bech32: superseded by BIP350, so refused now.
BIP173_V1_PLUS_NOW_INVALID = [
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx",
    "BC1SW50QA3JX3S",
    "bc1zw508d6qejxtdg4y5r3zarvaryvg6kdaj",
]

BIP173_INVALID_ADDRESSES = [
    "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty",  # invalid human-readable part
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",  # invalid checksum
    "BC13W508D6QEJXTDG4Y5R3ZARVARY0C5XW7KN40WF2",  # invalid witness version
    "bc1rw5uspcuh",  # invalid program length
    "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",  # invalid program length
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # invalid program length for witness version 0
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7",  # mixed case
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",  # zero padding of more than 4 bits
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv",  # non-zero padding in 8-to-5
    "bc1gmk9yu",  # empty data section
]

REGTEST_VALID = [  # Bitcoin Core's regtest encodings of the BIP173 programs
    ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("bcrt1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvseswlauz7",
     "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
]

BASE58 = [  # (address, network it belongs to, kind, scriptPubKey hex)
    ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "mainnet", AddressKind.P2PKH,
     "76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac"),
    ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "mainnet", AddressKind.P2SH, None),
    ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "testnet", AddressKind.P2PKH,
     "76a914243f1394f44554f4ce3fd68649c19adc483ce92488ac"),
    ("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", "testnet", AddressKind.P2SH, None),
]  # None: the hash is cross-checked against bitcoinlib below


def _network_of_hrp(address: str) -> str:
    return "mainnet" if address.lower().startswith("bc1") else "testnet"


class TestChecksums:
    @pytest.mark.parametrize("text", VALID_BECH32)
    def test_valid_bech32(self, text: str) -> None:
        assert bech32_decode(text)[2] is Encoding.BECH32

    @pytest.mark.parametrize("text", VALID_BECH32M)
    def test_valid_bech32m(self, text: str) -> None:
        assert bech32_decode(text)[2] is Encoding.BECH32M

    @pytest.mark.parametrize("text", VALID_BECH32 + VALID_BECH32M)
    def test_flipping_the_first_data_character_breaks_the_checksum(self, text: str) -> None:
        pos = text.rfind("1")
        mutated = text[:pos + 1] + chr(ord(text[pos + 1]) ^ 1) + text[pos + 2:]
        with pytest.raises(Bech32Error):
            bech32_decode(mutated)

    @pytest.mark.parametrize("text", INVALID_BECH32)
    def test_invalid_bech32(self, text: str) -> None:
        with pytest.raises(Bech32Error):
            if bech32_decode(text)[2] is Encoding.BECH32:
                raise AssertionError(f"{text!r} decoded as bech32")
            raise Bech32Error("decoded, but not as bech32")

    @pytest.mark.parametrize("text", INVALID_BECH32M)
    def test_invalid_bech32m(self, text: str) -> None:
        with pytest.raises(Bech32Error):
            if bech32_decode(text)[2] is Encoding.BECH32M:
                raise AssertionError(f"{text!r} decoded as bech32m")
            raise Bech32Error("decoded, but not as bech32m")


class TestSegwitAddresses:
    @pytest.mark.parametrize(("address", "script"), BIP350_VALID_ADDRESSES + BIP173_VALID_V0_ADDRESSES + REGTEST_VALID)
    def test_valid_address_gives_its_script_and_normalizes_to_lowercase(self, address: str, script: str) -> None:
        network = "regtest" if address.startswith("bcrt1") else _network_of_hrp(address)
        decoded = decode_address(address, network)
        assert decoded.script_pubkey.hex() == script
        assert decoded.address == address.lower()
        assert ba.encode_segwit(ba.network_of(network).hrp, decoded.witness_version or 0, decoded.program) == address.lower()

    @pytest.mark.parametrize("address", BIP350_INVALID_ADDRESSES + BIP173_INVALID_ADDRESSES + BIP173_V1_PLUS_NOW_INVALID)
    @pytest.mark.parametrize("network", ["mainnet", "testnet", "signet", "regtest"])
    def test_invalid_address_is_refused_on_every_network(self, address: str, network: str) -> None:
        with pytest.raises(InvalidAddress):
            validate_address(address, "bitcoin", network)

    @pytest.mark.parametrize(("hrp", "version", "length"), [("bc", 0, 21), ("bc", 17, 32), ("bc", 1, 1), ("bc", 16, 41)])
    def test_encoder_refuses_what_bip350_forbids(self, hrp: str, version: int, length: int) -> None:
        with pytest.raises(ValueError):
            ba.encode_segwit(hrp, version, bytes(length))

    def test_kinds(self) -> None:
        assert decode_address("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "mainnet").kind is AddressKind.P2WPKH
        assert decode_address(BIP350_VALID_ADDRESSES[1][0], "testnet").kind is AddressKind.P2WSH
        assert decode_address(BIP350_VALID_ADDRESSES[7][0], "mainnet").kind is AddressKind.P2TR
        assert decode_address("BC1SW50QGDZ25J", "mainnet").kind is AddressKind.WITNESS_UNKNOWN

    def test_v0_with_bech32m_and_v1_with_bech32_say_why(self) -> None:
        with pytest.raises(InvalidAddress, match="bech32 checksum, not bech32m"):
            validate_address("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh", "bitcoin", "mainnet")
        with pytest.raises(InvalidAddress, match="bech32m checksum, not bech32"):
            validate_address("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd", "bitcoin", "mainnet")

    def test_mixed_case_is_refused(self) -> None:
        with pytest.raises(InvalidAddress, match="mixed"):
            validate_address("bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "bitcoin", "mainnet")


class TestNetworks:
    @pytest.mark.parametrize(("address", "network", "kind", "script"), BASE58)
    def test_base58_addresses_on_their_network(self, address: str, network: str, kind: AddressKind,
                                               script: str | None) -> None:
        decoded = decode_address(address, network)
        assert (decoded.address, decoded.kind) == (address, kind)
        if script is not None:
            assert decoded.script_pubkey.hex() == script

    @pytest.mark.parametrize(("address", "network"), [(a, n) for a, n, *_ in BASE58] + [
        (a, "regtest" if a.startswith("bcrt") else _network_of_hrp(a)) for a, _ in BIP350_VALID_ADDRESSES[:2] + REGTEST_VALID])
    def test_hashes_agree_with_bitcoinlib(self, address: str, network: str) -> None:
        from chains.bitcoin_tx import load_bitcoinlib

        load_bitcoinlib()
        from bitcoinlib.keys import Address

        decoded = decode_address(address, network)
        assert decoded.program == Address.parse(decoded.address).hash_bytes  # bitcoinlib wants lower case

    @pytest.mark.parametrize(("address", "network"), [(a, "regtest") for a, n, *_ in BASE58 if n == "testnet"]
                             + [(a, "signet") for a, n, *_ in BASE58 if n == "testnet"])
    def test_testnet_base58_is_also_signet_and_regtest(self, address: str, network: str) -> None:
        assert validate_address(address, "bitcoin", network) == address

    @pytest.mark.parametrize(("address", "network", "named"), [
        ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "mainnet", "testnet/signet address"),
        ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "mainnet", "regtest address"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "regtest", "mainnet address"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "testnet", "mainnet address"),
        ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "regtest", "testnet/signet address"),
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "testnet", "mainnet address"),
        ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "regtest", "mainnet address"),
        ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "mainnet", "testnet/signet/regtest address"),
        ("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", "mainnet", "testnet/signet/regtest address"),
    ])
    def test_wrong_network_is_refused_naming_the_network(self, address: str, network: str, named: str) -> None:
        with pytest.raises(InvalidAddress) as caught:
            validate_address(address, "bitcoin", network)
        assert named in caught.value.reason and f"not a {network} one" in caught.value.reason

    @pytest.mark.parametrize("bad", ["", " bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4\n",
                                     "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN0",
                                     "0x52908400098527886E0F7030069857D2E4169EE7", "not an address", None, 42, b"bc1q"])
    def test_garbage_is_refused(self, bad: object) -> None:
        with pytest.raises(InvalidAddress):
            validate_address(bad, "bitcoin", "mainnet")

    def test_base58_payload_of_the_wrong_size_is_refused(self) -> None:
        with pytest.raises(InvalidAddress, match="payload of 22 bytes"):
            validate_address(ba.b58encode_check(b"\x00" * 22), "bitcoin", "mainnet")

    def test_unknown_network_is_unknown_chain(self) -> None:
        with pytest.raises(UnknownChain):
            validate_address("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "bitcoin", "moonnet")


class TestPackageEntryPoints:
    def test_registry_network_by_default_and_override_for_bitcoin(self) -> None:
        mainnet = chains.load_registry("mainnet")
        assert chains.validate_address("bitcoin", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", registry=mainnet) == \
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
        regtest_address = REGTEST_VALID[0][0]
        with pytest.raises(InvalidAddress, match="regtest address"):
            chains.validate_address("bitcoin", regtest_address, registry=mainnet)
        assert chains.validate_address("bitcoin", regtest_address, "regtest", registry=mainnet) == regtest_address
        assert chains.validate_address("bitcoin", "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "testnet", registry=mainnet)

    def test_other_families_keep_their_network_rule(self) -> None:
        with pytest.raises(UnknownChain):
            chains.validate_address("bitcoin", REGTEST_VALID[0][0], "devnet", registry=chains.load_registry("mainnet"))
        with pytest.raises(UnknownChain):
            chains.validate_address("ethereum", "0x" + "11" * 20, "regtest", registry=chains.load_registry("mainnet"))

    def test_validate_destination_applies_the_policy(self) -> None:
        devnet = chains.load_registry("devnet")
        with pytest.raises(InvalidAddress, match="anyone"):
            chains.validate_destination("bitcoin", "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "mainnet", registry=devnet)
        assert chains.validate_destination("bitcoin", REGTEST_VALID[1][0], token="BTC", registry=devnet) == REGTEST_VALID[1][0]


class TestDestinationPolicy:
    @pytest.mark.parametrize("address", [a for a, _ in BIP350_VALID_ADDRESSES if a.lower().startswith("bc1")])
    def test_spendable_kinds_are_accepted_and_future_versions_refused(self, address: str) -> None:
        kind = decode_address(address, "mainnet").kind
        if kind is AddressKind.WITNESS_UNKNOWN:
            with pytest.raises(InvalidAddress, match="can be taken by anyone"):
                check_destination(address, "bitcoin", None, "mainnet")
        else:
            assert check_destination(address, "bitcoin", None, "mainnet") == address.lower()

    def test_v1_program_that_is_not_32_bytes_is_refused(self) -> None:
        v1_20 = ba.encode_segwit("bc", 1, bytes(range(20)))
        assert decode_address(v1_20, "mainnet").kind is AddressKind.WITNESS_UNKNOWN
        with pytest.raises(InvalidAddress, match="witness v1 with a 20-byte program"):
            check_destination(v1_20, "bitcoin", None, "mainnet")

    def test_base58_destinations_and_tokens(self) -> None:
        assert check_destination("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "bitcoin", None, "mainnet")
        with pytest.raises(InvalidAddress, match="no token"):
            check_destination("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "bitcoin", "TOKEN", "mainnet")


class TestKeys:
    # BIP143's P2WPKH example key: public key 025476c2...6357, key hash 1d0f172a...71a1.
    SECRET = bytes.fromhex("619c335025c7f4012e556c2a58b2506e30b8511b53ade95ea316fd8c3286feb9")
    COMPRESSED = bytes.fromhex("025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee6357")

    def _xy(self) -> bytes:
        from eth_keys import keys

        return keys.PrivateKey(self.SECRET).public_key.to_bytes()

    def test_p2wpkh_address_of_the_bip143_key(self) -> None:
        address = address_from_public_key(self._xy(), "mainnet")
        assert decode_address(address, "mainnet").program.hex() == "1d0f172a0ecb48aee1be1f2687d2963ae33f71a1"
        assert address == address_from_public_key(self.COMPRESSED, "mainnet") == \
            address_from_public_key(b"\x04" + self._xy(), "mainnet")
        assert address_from_public_key(self._xy(), "regtest").startswith("bcrt1q")
        assert address_from_public_key(self._xy(), "testnet").startswith("tb1q")

    @pytest.mark.parametrize("bad", [b"", b"\x02" + bytes(31), bytes(64), b"\x05" + bytes(32), "02" * 33,
                                     b"\x02" + (2**256 - 2**32 - 977 + 1).to_bytes(33, "big")[1:]])
    def test_invalid_keys_are_refused(self, bad: object) -> None:
        with pytest.raises(InvalidPublicKey):
            address_from_public_key(bad, "mainnet")  # type: ignore[arg-type]


def test_dust_limits_match_bitcoin_core() -> None:
    scripts = {
        "p2pkh": (ba.p2pkh_script(bytes(20)), 546), "p2sh": (ba.p2sh_script(bytes(20)), 540),
        "p2wpkh": (ba.p2wpkh_script(bytes(20)), 294), "p2wsh": (ba.witness_script(0, bytes(32)), 330),
        "p2tr": (ba.witness_script(1, bytes(32)), 330),
    }
    assert {name: ba.dust_limit(script) for name, (script, _) in scripts.items()} == \
        {name: limit for name, (_, limit) in scripts.items()}


# --- properties -----------------------------------------------------------------------------------

VALID_FOR_MUTATION = [(a, "regtest" if a.startswith("bcrt") else _network_of_hrp(a)) for a, _ in
                      BIP350_VALID_ADDRESSES + REGTEST_VALID] + [(a, n) for a, n, *_ in BASE58]
_ALPHABET = sorted(set(ba.CHARSET + ba.CHARSET.upper() + ba.B58_ALPHABET + "1"))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VALID_FOR_MUTATION), st.data())
def test_any_single_character_change_is_refused(case: tuple[str, str], data: st.DataObject) -> None:
    """Given a valid address, when one character is replaced by another, then it is refused: the
    bech32/bech32m checksum detects any single substitution (the HRP is covered too), base58check's
    4-byte checksum any change of the payload, and a case flip is mixed case."""
    address, network = case
    position = data.draw(st.integers(0, len(address) - 1))
    replacement = data.draw(st.sampled_from([c for c in _ALPHABET if c != address[position]]))
    mutated = address[:position] + replacement + address[position + 1:]
    with pytest.raises(InvalidAddress):
        validate_address(mutated, "bitcoin", network)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["mainnet", "testnet", "regtest"]), st.integers(0, 16), st.binary(min_size=2, max_size=40))
def test_encode_then_validate_round_trips(network: str, version: int, program: bytes) -> None:
    if version == 0 and len(program) not in (20, 32):
        program = program[:20].ljust(20, b"\0")
    address = ba.encode_segwit(ba.network_of(network).hrp, version, program)
    decoded = decode_address(address.upper(), network)
    assert (decoded.address, decoded.witness_version, decoded.program) == (address, version, program)
