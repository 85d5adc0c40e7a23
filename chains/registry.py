"""The chain registry: which chains exist and how to reach them, loaded from data files.

A registry is a TOML file (`chains/registry/<name>.toml`, or any path). Chains, tokens, decimals,
contracts and confirmation depths are data, so adding a chain or a token is a data change. RPC
endpoints can be overridden per chain at run time (settings `rpc_urls`: one URL or a list per
chain), which is how the devnet points the pipeline at the nodes it started on free ports.

Several `rpc_urls` make a failover pool (chains/failover.py); the first is the primary. Its
settings are the chain's options `rpc_max_lag` (blocks), `rpc_stall_s` and `rpc_cooldown_s`
(seconds), validated here and kept in `ChainSpec.failover`; they are taken out of
`ChainSpec.options`, which the adapters validate as their own (TRON and Solana refuse keys they
do not know).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from chains.errors import UnknownChain, UnknownToken
from chains.failover import FailoverSettings, split_options

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
    rpc_urls: tuple[str, ...] = field(repr=False)  # may carry credentials or API keys: never in a repr
    chain_id: int | None = None
    eip1559: bool = True
    poll_interval_ms: int = 2000
    tokens: Mapping[str, TokenSpec] = field(default_factory=dict)
    # Family-specific settings (e.g. bitcoin fee floor, TRON fee limit, Solana commitment); each
    # adapter documents and validates the keys it reads.
    options: Mapping[str, Any] = field(default_factory=dict)
    # How a pool of several rpc_urls judges its endpoints (options rpc_*); None: the family's defaults.
    failover: FailoverSettings | None = None

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


LOCAL_NETWORKS = frozenset({"devnet", "regtest"})  # networks that exist only on this machine


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

    @property
    def is_devnet(self) -> bool:
        """Every chain is a local devnet: the faucet exists and webhooks may go to loopback."""
        return bool(self._chains) and all(spec.network in LOCAL_NETWORKS for spec in self._chains.values())

    def with_rpc_urls(self, overrides: Mapping[str, str | Sequence[str]]) -> "Registry":
        """A copy where each named chain talks to the given endpoint (or endpoints, primary first)
        instead. ValueError naming the chain (never a URL) for a value that is not a URL or a
        non-empty list of URLs."""
        chains = dict(self._chains)
        for chain_name, urls in overrides.items():
            chains[chain_name] = replace(self.chain(chain_name), rpc_urls=rpc_url_tuple(urls, f"chain {chain_name!r}"))
        return Registry(chains, self.name)


def rpc_url_tuple(urls: Any, where: str) -> tuple[str, ...]:
    """One URL or a non-empty list of them, as a tuple; ValueError naming `where`, not the URLs."""
    found = [urls] if isinstance(urls, str) else urls
    if not isinstance(found, (list, tuple)) or not found or not all(isinstance(u, str) and u for u in found):
        raise ValueError(f"{where}: rpc_urls must be a URL or a non-empty list of URLs")
    return tuple(found)


def _token(symbol: str, raw: Mapping[str, Any], where: str) -> TokenSpec:
    asset_type = raw.get("asset_type", "NATIVE")
    decimals = raw.get("decimals")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"{where}: symbol must be a non-empty string")
    if asset_type not in ASSET_TYPES:
        raise ValueError(f"{where}: asset_type {asset_type!r} is not one of {sorted(ASSET_TYPES)}")
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 36:
        raise ValueError(f"{where}: decimals must be an integer 0..36")
    contract = raw.get("contract")
    if asset_type != "NATIVE" and not contract:
        raise ValueError(f"{where}: a {asset_type} token needs a contract")
    if asset_type == "NATIVE" and contract:
        raise ValueError(f"{where}: a NATIVE token has no contract")
    if contract is not None and not isinstance(contract, str):
        raise ValueError(f"{where}: contract must be a string")
    return TokenSpec(symbol=symbol, asset_type=asset_type, decimals=decimals, contract=contract)


def _check_contract(family: str, chain_name: str, token: TokenSpec, where: str) -> None:
    """A contract must be a valid address of the family, written in its canonical form.

    Families whose address check is not written yet are not checked here.
    """
    if token.contract is None:
        return
    from chains.errors import InvalidAddress
    from chains.families import ADDRESS_VALIDATORS, address_validator

    if family not in ADDRESS_VALIDATORS:
        return
    try:
        canonical = address_validator(family)(token.contract, chain_name)
    except InvalidAddress as exc:
        raise ValueError(f"{where}: contract {token.contract!r} is invalid: {exc.reason}") from None
    if canonical != token.contract:
        raise ValueError(f"{where}: write the contract in its canonical form {canonical!r}")


def _required(raw: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
    return value


def parse_registry(data: Mapping[str, Any], name: str) -> Registry:
    """Validate a registry document; a mistake in the data file is reported with its place."""
    chains: dict[str, ChainSpec] = {}
    raw_chains = data.get("chains", {})
    if not isinstance(raw_chains, Mapping):
        raise ValueError(f"registry {name}: [chains] must be a table")
    for chain_name, raw in raw_chains.items():
        where = f"registry {name}: chains.{chain_name}"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: must be a table")
        family = raw.get("family")
        if family not in FAMILIES:
            raise ValueError(f"{where}: family {family!r} is not one of {sorted(FAMILIES)}")
        network = _required(raw, "network", str, where)
        native = _token(_required(raw, "native_symbol", str, where), {"decimals": raw.get("native_decimals")}, where)
        raw_tokens = raw.get("tokens", {})
        if not isinstance(raw_tokens, Mapping):
            raise ValueError(f"{where}.tokens: must be a table")
        tokens = {}
        for sym, tok in raw_tokens.items():
            token_where = f"{where}.tokens.{sym}"
            if not isinstance(tok, Mapping):
                raise ValueError(f"{token_where}: must be a table")
            if sym == native.symbol:
                raise ValueError(f"{token_where}: the symbol is the chain's native coin")
            tokens[sym] = _token(sym, tok, token_where)
            if tokens[sym].asset_type == "NATIVE":
                raise ValueError(f"{token_where}: a configured token cannot be NATIVE")
            _check_contract(family, chain_name, tokens[sym], token_where)
        confirmations = raw.get("confirmations")
        if not isinstance(confirmations, int) or isinstance(confirmations, bool) or confirmations < 1:
            raise ValueError(f"{where}: confirmations must be an integer >= 1")
        chain_id = raw.get("chain_id")
        if chain_id is not None and (not isinstance(chain_id, int) or isinstance(chain_id, bool) or chain_id <= 0):
            raise ValueError(f"{where}: chain_id must be a positive integer")
        if family == "evm" and chain_id is None:
            raise ValueError(f"{where}: an evm chain needs a chain_id (EIP-155 replay protection)")
        eip1559 = raw.get("eip1559", True)
        if not isinstance(eip1559, bool):
            raise ValueError(f"{where}: eip1559 must be true or false")
        poll_interval_ms = raw.get("poll_interval_ms", 2000)
        if not isinstance(poll_interval_ms, int) or isinstance(poll_interval_ms, bool) or poll_interval_ms < 1:
            raise ValueError(f"{where}: poll_interval_ms must be a positive integer")
        rpc_urls = raw.get("rpc_urls", [])
        if not isinstance(rpc_urls, list) or not all(isinstance(u, str) and u for u in rpc_urls):
            raise ValueError(f"{where}: rpc_urls must be a list of URLs")
        options = raw.get("options", {})
        if not isinstance(options, Mapping):
            raise ValueError(f"{where}.options: must be a table")
        failover_options, options = split_options(options)
        try:
            failover = FailoverSettings.for_family(family, failover_options, chain_name)
        except ValueError as exc:
            raise ValueError(f"registry {name}: {exc}") from None
        chains[chain_name] = ChainSpec(
            name=chain_name,
            family=family,
            network=network,
            native=native,
            confirmations=confirmations,
            rpc_urls=tuple(rpc_urls),
            chain_id=chain_id,
            eip1559=eip1559,
            poll_interval_ms=poll_interval_ms,
            tokens=tokens,
            options=options,
            failover=failover,
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
