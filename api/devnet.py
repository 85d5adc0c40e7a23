"""`POST /api/v1/devnet/faucet`: devnet money for a sandbox client (devnet registries only).

The route exists only when the app is built with a faucet (the sandbox, the demo, the tests) and
the chain registry is a devnet: a real network has no faucet, so a production API answers 404 as
for any unknown route. Funding the address is the devnet's; crediting the ledger (a deposit of
what the chain then shows) happens only for an address that is the caller's own account holding
that token - see workers.faucet.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from api import schemas
from api.errors import pipeline_errors
from api.routes.common import ClientId

router = APIRouter(tags=["devnet"])


class FaucetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain: StrictStr = Field(min_length=1, max_length=32, description="a devnet chain of GET /chains")
    address: StrictStr = Field(min_length=1, max_length=128, description="the address to fund")
    token_symbol: StrictStr = Field(min_length=1, max_length=16, description="a token of that chain")
    amount: StrictStr = Field(min_length=1, max_length=100, description="decimal string in token units")


class Funding(BaseModel):
    chain: str
    address: str
    token_symbol: str
    amount: str
    credited: bool = Field(description="true when the address is your account holding this token: "
                                       "its balance was credited as a deposit")
    asset_id: str | None
    balance: str | None = Field(description="the credited asset's balance afterwards")


@router.post("/devnet/faucet", response_model=Funding, responses=schemas.errors(401, 422, 429, 503))
def faucet(body: FaucetRequest, request: Request, client_id: ClientId) -> dict[str, Any]:
    """Fund `address` on its devnet with `amount` of `token_symbol`, and credit your ledger."""
    with pipeline_errors(invalid_address="address"):
        funding = request.app.state.faucet.fund(client_id, body.chain, body.address, body.token_symbol, body.amount)
    return funding.view()
