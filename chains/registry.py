"""The chain registry: which chains exist and how to reach them, loaded from data files.

A registry is a TOML file (`chains/registry/<name>.toml`, or any path). Chains, tokens, decimals,
contracts and confirmation depths are data, so adding a chain or a token is a data change. RPC
endpoints can be overridden per chain at run time (settings `rpc_urls`), which is how the devnet
points the pipeline at the nodes it started on free ports.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from chains.errors import UnknownChain, UnknownToken

REGISTRY_DIR = Path(__file__).with_name("registry")
FAMILIES = frozenset({"evm", "tron", "bitcoin", "solana"})
ASSET_TYPES = frozenset({"NATIVE", "ERC20", "BEP20", "TRC20", "SPL"})


@dataclass(frozen=True)
class TokenSpec:
    """A token on one chain. The native coin is a TokenSpec too (asset_type NATIVE, contract None)."""

    symbol: str
    asset_type: str
    decimals: int
    contract: str | None = None


@dataclass(frozen=True)
class ChainSpec:
    """One chain as the registry describes it."""

    name: str
    family: str
    network: str
    native: TokenSpec
    confirmations: int
    rpc_urls: tuple[str, ...]
    chain_id: int | None = None
    eip1559: bool = True
    poll_interval_ms: int = 2000
    tokens: Mapping[str, TokenSpec] = field(default_factory=dict)

    def token(self, symbol: str) -> TokenSpec:
        """The native coin or a configured token; raises UnknownToken."""
        if symbol == self.native.symbol:
            return self.native
        try:
            return self.tokens[symbol]
        except KeyError:
            known = ", ".join(sorted([self.native.symbol, *self.tokens])) or "none"
            raise UnknownToken(f"token {symbol!r} is not configured on {self.name} (known: {known})") from None

    @property
    def rpc_url(self) -> str:
        if not self.rpc_urls:
            raise UnknownChain(f"chain {self.name!r} has no RPC endpoint configured")
        return self.rpc_urls[0]


class Registry:
    """All chains of one registry file, with RPC overrides applied."""

    def __init__(self, chains: Mapping[str, ChainSpec], name: str) -> None:
        self._chains = dict(chains)
        self.name = name

    def chain(self, name: str) -> ChainSpec:
        """The chain's spec; raises UnknownChain naming the chains that exist."""
        try:
            return self._chains[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._chains))
            raise UnknownChain(f"unknown chain {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._chains)

    def with_rpc_urls(self, overrides: Mapping[str, str]) -> "Registry":
        """A copy where each named chain talks to the given endpoint instead."""
        chains = dict(self._chains)
        for chain_name, url in overrides.items():
            chains[chain_name] = replace(self.chain(chain_name), rpc_urls=(url,))
        return Registry(chains, self.name)


def _token(symbol: str, raw: Mapping[str, Any], where: str) -> TokenSpec:
    asset_type = raw.get("asset_type", "NATIVE")
    decimals = raw.get("decimals")
    if asset_type not in ASSET_TYPES:
        raise ValueError(f"{where}: asset_type {asset_type!r} is not one of {sorted(ASSET_TYPES)}")
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 36:
        raise ValueError(f"{where}: decimals must be an integer 0..36")
    contract = raw.get("contract")
    if asset_type != "NATIVE" and not contract:
        raise ValueError(f"{where}: a {asset_type} token needs a contract")
    return TokenSpec(symbol=symbol, asset_type=asset_type, decimals=decimals, contract=contract)


def parse_registry(data: Mapping[str, Any], name: str) -> Registry:
    """Validate a registry document; a mistake in the data file is reported with its place."""
    chains: dict[str, ChainSpec] = {}
    for chain_name, raw in data.get("chains", {}).items():
        where = f"registry {name}: chains.{chain_name}"
        family = raw.get("family")
        if family not in FAMILIES:
            raise ValueError(f"{where}: family {family!r} is not one of {sorted(FAMILIES)}")
        native = _token(raw["native_symbol"], {"decimals": raw.get("native_decimals")}, where)
        tokens = {sym: _token(sym, tok, f"{where}.tokens.{sym}") for sym, tok in raw.get("tokens", {}).items()}
        confirmations = raw.get("confirmations")
        if not isinstance(confirmations, int) or confirmations < 1:
            raise ValueError(f"{where}: confirmations must be an integer >= 1")
        chains[chain_name] = ChainSpec(
            name=chain_name,
            family=family,
            network=raw["network"],
            native=native,
            confirmations=confirmations,
            rpc_urls=tuple(raw.get("rpc_urls", ())),
            chain_id=raw.get("chain_id"),
            eip1559=raw.get("eip1559", True),
            poll_interval_ms=raw.get("poll_interval_ms", 2000),
            tokens=tokens,
        )
    return Registry(chains, name)


@lru_cache(maxsize=8)
def load_registry(name_or_path: str) -> Registry:
    """Load `chains/registry/<name>.toml`, or a TOML file at the given path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = REGISTRY_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in REGISTRY_DIR.glob("*.toml")))
        raise FileNotFoundError(f"chain registry {name_or_path!r} not found (bundled: {available})")
    with path.open("rb") as fh:
        return parse_registry(tomllib.load(fh), path.stem)
