"""Chain access for the pipeline: the registry, address checks, and one adapter per chain.

`import chains` is cheap on purpose (no web3, no eth_* packages): the API process and the
pipeline's validate_destination step only need the registry and the pure address checks, and a
worker imports a family's SDK only when it first asks for that family's adapter.

    validate_address(chain, address, network=None) -> normalized address   (no node needed)
    validate_destination(chain, address, network=None, token=None)          (+ destination policy)
    get_adapter(spec) -> ChainAdapter   (one per chain and endpoint list per process)
    endpoint_health(adapter, refresh=False) -> {"rpc": [{endpoint, healthy, status, reason, head, failures}, ...]}
    default_registry() -> Registry      (env PARATRO_CHAIN_REGISTRY, default "mainnet")
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import Any

from chains.base import (
    ChainAdapter,
    Curve,
    FeeQuote,
    SignedTransaction,
    TransferIntent,
    TxState,
    TxStatus,
    UnsignedTransaction,
)
from chains.errors import (
    ChainError,
    ChainMismatch,
    ChainRpcError,
    InvalidAddress,
    InvalidPublicKey,
    InvalidSignature,
    MalformedTransaction,
    TransactionRejected,
    UnknownChain,
    UnknownToken,
)
from chains.families import address_validator, adapter_class, destination_check
from chains.registry import ChainSpec, Registry, TokenSpec, load_registry, parse_registry

REGISTRY_ENV = "PARATRO_CHAIN_REGISTRY"
DEFAULT_REGISTRY = "mainnet"
# A bitcoin address names its network (bc1/1/3, tb1/m/n/2, bcrt1), so a caller may check one
# against another network than the registry entry's; the bitcoin checks take `network=`.
BITCOIN_NETWORKS = frozenset({"mainnet", "testnet", "signet", "regtest"})


def _network_kwargs(spec: ChainSpec) -> dict[str, Any]:
    return {"network": spec.network} if spec.family == "bitcoin" else {}


def _destination_kwargs(spec: ChainSpec) -> dict[str, Any]:
    """The registry settings a family's destination policy reads (so a given `registry=` counts)."""
    if spec.family == "solana":
        from chains.solana_address import off_curve_allowed

        return {"allow_off_curve": off_curve_allowed(spec.options, spec.name)}
    return _network_kwargs(spec)

__all__ = [
    "ChainAdapter", "ChainError", "ChainMismatch", "ChainRpcError", "ChainSpec", "Curve", "FeeQuote",
    "InvalidAddress", "InvalidPublicKey", "InvalidSignature", "MalformedTransaction", "Registry",
    "SignedTransaction", "TokenSpec", "TransactionRejected", "TransferIntent", "TxState", "TxStatus",
    "UnknownChain", "UnknownToken", "UnsignedTransaction", "clear_adapter_cache", "default_registry",
    "endpoint_health", "get_adapter", "load_registry", "parse_registry", "validate_address", "validate_destination",
]


def default_registry() -> Registry:
    """The registry address checks use when none is given: env PARATRO_CHAIN_REGISTRY or mainnet.

    The one place to wire to the pipeline's settings later.
    """
    return load_registry(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


def _chain_spec(chain: str, network: str | None, registry: Registry | None) -> ChainSpec:
    registry = registry if registry is not None else default_registry()
    spec = registry.chain(chain)
    if network is not None and network != spec.network:
        if spec.family == "bitcoin" and network in BITCOIN_NETWORKS:
            return replace(spec, network=network)  # bc1 / tb1 / bcrt1: checkable on any network
        raise UnknownChain(
            f"chain {chain!r} is on network {spec.network!r} in registry {registry.name!r}, not {network!r}"
        )
    return spec


def validate_address(chain: str, address: str, network: str | None = None, *, registry: Registry | None = None) -> str:
    """The chain's normalized form of `address`, or InvalidAddress with the reason; no node needed.

    UnknownChain if the chain is not in the registry or is on another network than `network`.
    """
    spec = _chain_spec(chain, network, registry)
    return address_validator(spec.family)(address, spec.name, **_network_kwargs(spec))


def validate_destination(
    chain: str,
    address: str,
    network: str | None = None,
    token: str | None = None,
    *,
    registry: Registry | None = None,
) -> str:
    """`validate_address` plus the family's destination policy (e.g. no zero address on EVM).

    `token` is the symbol being sent; sending a token to its own contract is refused.
    """
    spec = _chain_spec(chain, network, registry)
    contract = spec.token(token).contract if token is not None else None
    return destination_check(spec.family)(address, spec.name, contract, **_destination_kwargs(spec))


_adapters: dict[tuple[object, ...], ChainAdapter] = {}
_adapters_lock = threading.Lock()


def get_adapter(spec: ChainSpec) -> ChainAdapter:
    """The adapter for `spec`, created once per (chain, network, chain id, endpoints and their
    failover settings) per process: two lists of endpoints are two adapters, each with its pool."""
    spec.rpc_url  # noqa: B018 - raises UnknownChain when the chain has no endpoint at all
    key = (spec.name, spec.network, spec.chain_id, spec.rpc_urls, spec.failover)
    adapter = _adapters.get(key)
    if adapter is None:
        with _adapters_lock:
            adapter = _adapters.get(key)
            if adapter is None:
                adapter = adapter_class(spec.family)(spec)
                _adapters[key] = adapter
    return adapter


def endpoint_health(adapter: ChainAdapter, *, refresh: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The health of every RPC endpoint pool an adapter holds (chains/failover.py), by the name of
    the adapter's client ("rpc"; TRON: "api", "solidity_api"), endpoints redacted. `refresh`
    probes them first and waits (a status command's fresh process has no health data yet)."""
    from chains.failover import PooledClient

    pools: dict[str, PooledClient[Any]] = {}
    for name, value in vars(adapter).items():
        if isinstance(value, PooledClient) and all(value is not seen for seen in pools.values()):
            pools[name.lstrip("_")] = value
    return {name: client.refresh() if refresh else client.health() for name, client in pools.items()}


def clear_adapter_cache() -> None:
    """Forget every adapter (tests; also done in a forked child, which must not share sockets)."""
    with _adapters_lock:
        _adapters.clear()


def _after_fork_in_child() -> None:
    global _adapters_lock
    _adapters_lock = threading.Lock()
    _adapters.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
