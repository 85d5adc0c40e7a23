"""`GET /chains`: the chain registry as clients need it (never its RPC endpoints)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api import schemas
from api.routes.common import ClientId, Context
from chains.registry import ChainSpec, TokenSpec

router = APIRouter(tags=["chains"])


def token_view(token: TokenSpec) -> dict[str, Any]:
    return {"symbol": token.symbol, "asset_type": token.asset_type, "contract_address": token.contract,
            "decimals": token.decimals}


def chain_view(spec: ChainSpec) -> dict[str, Any]:
    """One chain: the native coin first, then its tokens by symbol."""
    tokens = [spec.native, *(spec.tokens[symbol] for symbol in sorted(spec.tokens))]
    return {"chain": spec.name, "network": spec.network, "family": spec.family, "native_symbol": spec.native.symbol,
            "tokens": [token_view(token) for token in tokens], "confirmations": spec.confirmations}


@router.get("/chains", response_model=schemas.ChainList, responses=schemas.errors(401, 429, 503))
def list_chains(_client_id: ClientId, ctx: Context) -> dict[str, Any]:
    """Every chain of the registry: network, family, native symbol, tokens and confirmation depth."""
    return {"data": [chain_view(ctx.registry.chain(name)) for name in ctx.registry.names()]}
