"""Wallets and their accounts: `POST /wallets` starts key generation in the background (the wallet
answers PROGRESSING/GENERATING and becomes ACTIVE/ACTIVE when the keys exist); accounts can be
opened once it is ACTIVE. Creation runs in `workers.wallets`; this module only reads and renders."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select

from api import schemas
from api.errors import pipeline_errors
from api.routes.common import DEFAULT_LIMIT, ClientId, Context, Cursor, Limit, checked_id, owned, page
from pipeline.models import Account, Wallet
from pipeline.views import account_view, wallet_view

router = APIRouter(tags=["wallets"])


@router.post("/wallets", status_code=201, response_model=schemas.Wallet,
             responses=schemas.errors(401, 409, 422, 429, 503))
def create_wallet(body: schemas.WalletCreate, client_id: ClientId, ctx: Context) -> dict[str, Any]:
    """A new wallet, PROGRESSING / GENERATING until its keys are generated (409 `limit_exceeded` at
    the client's max_wallets; FAILED wallets do not count)."""
    from workers.wallets import request_wallet

    with pipeline_errors(validation_error="wallet_name"):
        return request_wallet(ctx, client_id, body.wallet_name)


@router.get("/wallets", response_model=schemas.Page[schemas.Wallet], responses=schemas.errors(401, 422, 429, 503))
def list_wallets(client_id: ClientId, ctx: Context, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
    """The client's wallets, newest first."""
    with pipeline_errors(), ctx.db.unit_of_work() as session:
        query = select(Wallet).where(Wallet.client_id == client_id)
        return page(session, query, Wallet.wallet_id, "wallet", limit, cursor, wallet_view)


@router.get("/wallets/{wallet_id}", response_model=schemas.Wallet, responses=schemas.errors(401, 404, 429, 503))
def get_wallet(wallet_id: str, client_id: ClientId, ctx: Context) -> dict[str, Any]:
    with pipeline_errors(), ctx.db.unit_of_work() as session:
        return wallet_view(owned(session.get(Wallet, checked_id("wallet", wallet_id)), client_id))


@router.post("/wallets/{wallet_id}/accounts", status_code=201, response_model=schemas.Account,
             responses={200: {"model": schemas.Account, "description": "the account already existed"},
                        **schemas.errors(401, 404, 409, 422, 429, 503)})
def create_account(wallet_id: str, body: schemas.AccountCreate, response: Response, client_id: ClientId,
                   ctx: Context) -> dict[str, Any]:
    """The wallet's account on `chain`: 201 when opened now, 200 when it already existed (one
    account per wallet and chain; EVM chains of one wallet share the address). The wallet must be
    ACTIVE (409 `wallet_not_active`)."""
    from workers.wallets import open_account

    checked_id("wallet", wallet_id)
    with pipeline_errors():
        view, created = open_account(ctx, client_id, wallet_id, body.chain)
    response.status_code = 201 if created else 200
    return view


@router.get("/wallets/{wallet_id}/accounts", response_model=schemas.Page[schemas.Account],
            responses=schemas.errors(401, 404, 422, 429, 503))
def list_accounts(wallet_id: str, client_id: ClientId, ctx: Context, limit: Limit = DEFAULT_LIMIT,
                  cursor: Cursor = None) -> dict[str, Any]:
    """The wallet's accounts, newest first."""
    with pipeline_errors(), ctx.db.unit_of_work() as session:
        owned(session.get(Wallet, checked_id("wallet", wallet_id)), client_id)
        query = select(Account).where(Account.client_id == client_id, Account.wallet_id == wallet_id)
        return page(session, query, Account.account_id, "account", limit, cursor, account_view)
