"""Assets: the tokens of an account; type, contract and decimals always come from the chain registry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select

from api import schemas
from api.errors import pipeline_errors
from api.routes.common import DEFAULT_LIMIT, ClientId, Context, Cursor, Limit, checked_id, owned, page
from pipeline.models import Account, Asset
from pipeline.views import asset_view

router = APIRouter(tags=["assets"])


@router.post("/accounts/{account_id}/assets", status_code=201, response_model=schemas.Asset,
             responses={200: {"model": schemas.Asset, "description": "the asset already existed"},
                        **schemas.errors(401, 404, 422, 429, 503)})
def add_asset(account_id: str, body: schemas.AssetCreate, response: Response, client_id: ClientId,
              ctx: Context) -> dict[str, Any]:
    """The account's asset for `symbol` (type, contract and decimals from the chain registry):
    201 when added now, 200 when it already existed; 422 `unknown_symbol` (field symbol) for a
    token the chain does not have."""
    from workers.wallets import add_asset as add

    checked_id("account", account_id)
    with pipeline_errors(unknown_symbol="symbol"):
        view, created = add(ctx, client_id, account_id, body.symbol)
    response.status_code = 201 if created else 200
    return view


@router.get("/accounts/{account_id}/assets", response_model=schemas.Page[schemas.Asset],
            responses=schemas.errors(401, 404, 422, 429, 503))
def list_assets(account_id: str, client_id: ClientId, ctx: Context, limit: Limit = DEFAULT_LIMIT,
                cursor: Cursor = None) -> dict[str, Any]:
    """The account's assets, newest first."""
    with pipeline_errors(), ctx.db.unit_of_work() as session:
        owned(session.get(Account, checked_id("account", account_id)), client_id)
        query = select(Asset).where(Asset.client_id == client_id, Asset.account_id == account_id)
        return page(session, query, Asset.asset_id, "asset", limit, cursor, asset_view)


@router.get("/assets/{asset_id}", response_model=schemas.Asset, responses=schemas.errors(401, 404, 429, 503))
def get_asset(asset_id: str, client_id: ClientId, ctx: Context) -> dict[str, Any]:
    with pipeline_errors(), ctx.db.unit_of_work() as session:
        return asset_view(owned(session.get(Asset, checked_id("asset", asset_id)), client_id))
