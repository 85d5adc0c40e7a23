"""Transfers: `POST /transactions` (idempotent on the Idempotency-Key header) and reading them back.

The API only accepts and records: `workers.services.submit_transfer` writes the transfer with its
first outbox message and publishes it; the pipeline decides the outcome. The destination address
is checked by the pipeline's validate_destination step like for every other entry point, so a
wrong address answers 201 and the transfer ends FAILED with failure_reason `invalid_destination`
(and its `transaction.failed` webhook), the same as from the CLI.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import select

from api import schemas
from api.errors import pipeline_errors
from api.routes.common import DEFAULT_LIMIT, ClientId, Context, Cursor, Limit, checked_id, page
from pipeline.lookup import chain_spec
from pipeline.models import Transaction
from pipeline.transfers import IDEMPOTENCY_KEY_PATTERN, TransferRequest, get_transfer
from pipeline.views import transaction_view

router = APIRouter(tags=["transactions"])

IdempotencyKey = Annotated[str, Header(
    alias="Idempotency-Key", min_length=1, max_length=128, pattern=IDEMPOTENCY_KEY_PATTERN,
    description="1-128 printable ASCII characters, no leading or trailing space; unique per client. The same key "
                "and body again returns the same transaction (200); the same key with another body is 409.")]


@router.post("/transactions", status_code=201, response_model=schemas.Transaction,
             responses={200: {"model": schemas.Transaction, "description": "the same key and body were already accepted"},
                        **schemas.errors(401, 409, 422, 429, 503)})
def create_transaction(body: schemas.TransactionCreate, idempotency_key: IdempotencyKey, response: Response,
                       client_id: ClientId, ctx: Context) -> dict[str, Any]:
    """Accept a transfer: 201 with the new PENDING transaction, or 200 with the one this key made."""
    from workers.services import submit_transfer

    request = TransferRequest(client_id=client_id, from_address=body.from_address, to_address=body.to_address,
                              chain=body.chain, token_symbol=body.token_symbol, amount=body.amount,
                              idempotency_key=idempotency_key)
    with pipeline_errors():
        submission = submit_transfer(ctx, request)
        with ctx.db.unit_of_work() as session:
            view = transaction_view(get_transfer(session, submission.transaction_id, client_id))
    response.status_code = 201 if submission.created else 200
    return view


@router.get("/transactions", response_model=schemas.Page[schemas.Transaction],
            responses=schemas.errors(401, 422, 429, 503))
def list_transactions(
    client_id: ClientId,
    ctx: Context,
    status: Annotated[schemas.TransactionStatus | None, Query()] = None,
    chain: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The client's transactions, newest first, optionally of one status and/or chain. Pages are
    stable under inserts: a transaction created meanwhile is never shown on a later page."""
    with pipeline_errors():
        query = select(Transaction).where(Transaction.client_id == client_id)
        if status is not None:
            query = query.where(Transaction.status == status)
        if chain is not None:
            query = query.where(Transaction.chain == chain_spec(ctx.registry, chain).name)
        with ctx.db.unit_of_work() as session:
            return page(session, query, Transaction.transaction_id, "transaction", limit, cursor, transaction_view)


@router.get("/transactions/{transaction_id}", response_model=schemas.Transaction,
            responses=schemas.errors(401, 404, 429, 503))
def get_transaction(transaction_id: str, client_id: ClientId, ctx: Context) -> dict[str, Any]:
    checked_id("transaction", transaction_id)
    with pipeline_errors(), ctx.db.unit_of_work() as session:
        return transaction_view(get_transfer(session, transaction_id, client_id))
