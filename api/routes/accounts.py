"""Accounts: one address of a wallet on one chain (opened under POST /wallets/{wallet_id}/accounts)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api import schemas
from api.errors import pipeline_errors
from api.routes.common import ClientId, Context, checked_id, owned
from pipeline.models import Account
from pipeline.views import account_view

router = APIRouter(tags=["accounts"])


@router.get("/accounts/{account_id}", response_model=schemas.Account, responses=schemas.errors(401, 404, 429, 503))
def get_account(account_id: str, client_id: ClientId, ctx: Context) -> dict[str, Any]:
    with pipeline_errors(), ctx.db.unit_of_work() as session:
        return account_view(owned(session.get(Account, checked_id("account", account_id)), client_id))
