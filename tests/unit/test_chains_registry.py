"""The bundled registries load, say what the product needs, and bad registry data is refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eth_utils import is_checksum_address

from chains.errors import UnknownChain, UnknownToken
from chains.registry import load_registry, parse_registry

EVM_CHAINS = {"ethereum", "bsc", "polygon", "base", "arbitrum", "optimism", "avalanche"}
# The other families, by chain: family, native symbol and decimals.
OTHER_CHAINS = {"tron": ("tron", "TRX", 6), "bitcoin": ("bitcoin", "BTC", 8), "solana": ("solana", "SOL", 9)}
MAINNET_IDS = {"ethereum": 1, "bsc": 56, "polygon": 137, "base": 8453, "arbitrum": 42161, "optimism": 10, "avalanche": 43114}
DEVNET_IDS = {"ethereum": 31337, "bsc": 31338, "polygon": 31339, "base": 31340, "arbitrum": 31341, "optimism": 31342, "avalanche": 31343}
NATIVE = {"ethereum": "ETH", "bsc": "BNB", "polygon": "MATIC", "base": "ETH", "arbitrum": "ETH", "optimism": "ETH", "avalanche": "AVAX"}
MAINNET_TOKENS = {
    ("ethereum", "USDT"): ("0xdAC17F958D2ee523a2206206994597C13D831ec7", 6, "ERC20"),
    ("ethereum", "USDC"): ("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", 6, "ERC20"),
    ("bsc", "USDT"): ("0x55d398326f99059fF775485246999027B3197955", 18, "BEP20"),
    ("bsc", "USDC"): ("0x8AC76a51cc950d9822D68b83fE1Ad97B32Cd580d", 18, "BEP20"),
    ("polygon", "USDT"): ("0xc2132D05D31c914a87C6611C10748AEb04B58e8F", 6, "ERC20"),
    ("polygon", "USDC"): ("0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359", 6, "ERC20"),
    ("base", "USDC"): ("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 6, "ERC20"),
    ("arbitrum", "USDT"): ("0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9", 6, "ERC20"),
    ("arbitrum", "USDC"): ("0xaf88d065e77c8cC2239327C5EDb3A432268e5831", 6, "ERC20"),
    ("optimism", "USDT"): ("0x94b008aA00579c1307B0EF2c499aD98a8ce58e58", 6, "ERC20"),
    ("optimism", "USDC"): ("0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85", 6, "ERC20"),
    ("avalanche", "USDT"): ("0x9702230A8Ea53601f5cD2dc00fDBc13d4dF4A8c7", 6, "ERC20"),
    ("avalanche", "USDC"): ("0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E", 6, "ERC20"),
}
DEVNET_USDT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


@pytest.mark.parametrize("name", ["mainnet", "devnet"])
def test_bundled_registries_load_with_every_evm_chain(name: str) -> None:
    registry = load_registry(name)
    assert registry.name == name
    assert set(registry.names()) == EVM_CHAINS | set(OTHER_CHAINS)
    for chain, (family, symbol, decimals) in OTHER_CHAINS.items():
        spec = registry.chain(chain)
        assert (spec.family, spec.native.symbol, spec.native.decimals) == (family, symbol, decimals)
        assert spec.native.asset_type == "NATIVE" and spec.native.contract is None
        assert spec.rpc_urls and all(u.startswith(("http://", "https://")) for u in spec.rpc_urls)
    for chain in EVM_CHAINS:
        spec = registry.chain(chain)
        assert spec.family == "evm"
        assert spec.network == name
        assert spec.native.symbol == NATIVE[chain]
        assert spec.native.asset_type == "NATIVE" and spec.native.decimals == 18 and spec.native.contract is None
        assert spec.eip1559 is (chain != "bsc")
        assert spec.rpc_urls and all(u.startswith(("http://", "https://")) for u in spec.rpc_urls)
        for token in spec.tokens.values():
            assert token.contract is not None and is_checksum_address(token.contract), (chain, token)
            assert token.asset_type == ("BEP20" if chain == "bsc" else "ERC20")


def test_mainnet_chain_ids_depths_and_tokens() -> None:
    registry = load_registry("mainnet")
    depths = {"ethereum": 12, "bsc": 15, "polygon": 128, "base": 10, "arbitrum": 10, "optimism": 10, "avalanche": 12}
    for chain, chain_id in MAINNET_IDS.items():
        spec = registry.chain(chain)
        assert spec.chain_id == chain_id
        assert spec.confirmations == depths[chain]
        assert all(u.startswith("https://") for u in spec.rpc_urls)
    configured = {(c, s) for c in EVM_CHAINS for s in registry.chain(c).tokens}
    assert configured == set(MAINNET_TOKENS)
    for (chain, symbol), (contract, decimals, asset_type) in MAINNET_TOKENS.items():
        token = registry.chain(chain).token(symbol)
        assert (token.contract, token.decimals, token.asset_type) == (contract, decimals, asset_type)


def test_devnet_has_distinct_chain_ids_and_the_test_token() -> None:
    registry = load_registry("devnet")
    assert {c: registry.chain(c).chain_id for c in EVM_CHAINS} == DEVNET_IDS
    for chain in EVM_CHAINS:
        spec = registry.chain(chain)
        assert spec.confirmations == 3 and spec.poll_interval_ms == 250
        assert set(spec.tokens) == {"USDT"}
        usdt = spec.token("USDT")
        assert usdt.contract == DEVNET_USDT
        assert usdt.decimals == (18 if chain == "bsc" else 6)


def test_lookups_fail_with_the_known_names() -> None:
    registry = load_registry("mainnet")
    with pytest.raises(UnknownChain, match="known: arbitrum"):
        registry.chain("cosmos")
    with pytest.raises(UnknownToken, match="known: ETH, USDC"):
        registry.chain("base").token("USDT")
    assert registry.chain("ethereum").token("ETH") == registry.chain("ethereum").native
    with pytest.raises(FileNotFoundError, match="bundled: devnet, mainnet"):
        load_registry("nosuchnet")


def test_rpc_overrides_replace_only_the_named_chain() -> None:
    registry = load_registry("devnet").with_rpc_urls({"bsc": "http://127.0.0.1:9999"})
    assert registry.chain("bsc").rpc_url == "http://127.0.0.1:9999"
    assert registry.chain("ethereum").rpc_url == "http://127.0.0.1:8545"
    assert load_registry("devnet").chain("bsc").rpc_url == "http://127.0.0.1:8545"  # the cached one is untouched
    with pytest.raises(UnknownChain):
        registry.with_rpc_urls({"nope": "http://x"})


GOOD: dict[str, Any] = {
    "chains": {
        "ethereum": {
            "family": "evm",
            "network": "testnet",
            "chain_id": 11155111,
            "native_symbol": "ETH",
            "native_decimals": 18,
            "confirmations": 3,
            "rpc_urls": ["https://example.invalid"],
            "tokens": {"USDT": {"asset_type": "ERC20", "contract": DEVNET_USDT, "decimals": 6}},
        }
    }
}


def _mutated(path: list[str], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


_DELETE = object()
ETH = ["chains", "ethereum"]
USDT = ETH + ["tokens", "USDT"]


def test_good_document_parses() -> None:
    spec = parse_registry(GOOD, "t").chain("ethereum")
    assert spec.chain_id == 11155111 and spec.eip1559 is True and spec.poll_interval_ms == 2000
    assert spec.token("USDT").contract == DEVNET_USDT


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (ETH + ["family"], "cosmos", "family"),
        (ETH + ["network"], _DELETE, "network"),
        (ETH + ["native_symbol"], _DELETE, "native_symbol"),
        (ETH + ["native_decimals"], 18.0, "decimals"),
        (ETH + ["confirmations"], 0, "confirmations"),
        (ETH + ["confirmations"], True, "confirmations"),
        (ETH + ["chain_id"], _DELETE, "chain_id"),
        (ETH + ["chain_id"], "1", "chain_id"),
        (ETH + ["eip1559"], "yes", "eip1559"),
        (ETH + ["poll_interval_ms"], 0, "poll_interval_ms"),
        (ETH + ["rpc_urls"], "https://example.invalid", "rpc_urls"),
        (USDT + ["asset_type"], "ERC721", "asset_type"),
        (USDT + ["contract"], _DELETE, "needs a contract"),
        (USDT + ["contract"], "0x5FbDB2315678afecb367f032d93F642f64180aA3", "checksum"),
        (USDT + ["contract"], DEVNET_USDT.lower(), "canonical form"),
        (USDT + ["contract"], "0x5FbDB2315678afecb367f032d93F642f64180a", "wrong length"),
        (USDT + ["decimals"], 37, "decimals"),
        (USDT + ["asset_type"], "NATIVE", "NATIVE"),
        (ETH + ["tokens", "ETH"], {"asset_type": "ERC20", "contract": DEVNET_USDT, "decimals": 18}, "native coin"),
    ],
)
def test_bad_documents_are_refused_with_their_place(path: list[str], value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_registry(_mutated(path, value), "t")
    assert "registry t: chains.ethereum" in str(info.value)


def test_a_non_evm_family_parses() -> None:
    doc = {
        "chains": {
            "tron": {
                "family": "tron",
                "network": "mainnet",
                "native_symbol": "TRX",
                "native_decimals": 6,
                "confirmations": 19,
                "rpc_urls": ["https://api.trongrid.io"],
                "tokens": {"USDT": {"asset_type": "TRC20", "contract": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", "decimals": 6}},
            }
        }
    }
    spec = parse_registry(doc, "t").chain("tron")
    assert spec.chain_id is None and spec.token("USDT").asset_type == "TRC20"
