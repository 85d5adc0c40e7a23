"""The chain registry asked on behalf of a caller: a chain or token the caller named that the
registry does not have is bad input (UnknownChainError, UnknownSymbol: nothing written, a 422 at
the API), not a chain-layer error. One place for that translation."""

from __future__ import annotations

from chains.errors import UnknownChain, UnknownToken
from chains.registry import ChainSpec, Registry, TokenSpec
from pipeline.errors import UnknownChainError, UnknownSymbol


def chain_spec(registry: Registry, chain: str) -> ChainSpec:
    """The chain's spec; UnknownChainError naming the chains that exist."""
    try:
        return registry.chain(chain)
    except UnknownChain as exc:
        raise UnknownChainError(str(exc)) from None


def token_spec(registry: Registry, chain: str, symbol: str) -> tuple[ChainSpec, TokenSpec]:
    """The chain's spec and its token `symbol`; UnknownChainError or UnknownSymbol."""
    spec = chain_spec(registry, chain)
    try:
        return spec, spec.token(symbol)
    except UnknownToken as exc:
        raise UnknownSymbol(str(exc)) from None
