"""Accepting a transfer: validate everything a caller can get wrong, then write it once.

`create_transfer` is the only way a transfer enters the system. It writes the row and its first
event in one transaction *before* anything is enqueued, and it is idempotent on
(client_id, idempotency_key): the same request again returns the same transfer, a different
request under the same key is refused. Address *format* is checked later by the pipeline's
validate_destination step (it needs the chain adapter); here we only refuse what is not an
address at all.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chains.registry import Registry
from pipeline import events
from pipeline.amounts import parse_amount
from pipeline.driving import hand_off
from pipeline.errors import IdempotencyConflict, InvalidInput, NotFound
from pipeline.ids import check_id, new_id
from pipeline.lookup import token_spec
from pipeline.models import Client, Transaction, TransactionEvent, utcnow
from pipeline.stages import STEP_FOR_STAGE, Stage, Status

# 1-128 printable ASCII characters, no leading or trailing space (HTTP strips those from a header
# value, so such a key could not arrive intact through the API's Idempotency-Key header).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
IDEMPOTENCY_KEY_MAX = 128
_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_PRINTABLE_ADDRESS = re.compile(r"^[\x21-\x7e]{1,256}$")


@dataclass(frozen=True)
class TransferRequest:
    """A transfer as the API receives it: amount is a decimal string in token units."""

    client_id: str
    from_address: str
    to_address: str
    chain: str
    token_symbol: str
    amount: str
    idempotency_key: str


def _check_address_text(field: str, value: object, max_length: int) -> str:
    if not isinstance(value, str) or len(value) > max_length or not _PRINTABLE_ADDRESS.fullmatch(value):
        raise InvalidInput(f"{field} must be a non-empty address string of at most {max_length} printable characters")
    return value


def _fingerprint(req: TransferRequest, amount: int) -> str:
    canonical = json.dumps(
        [req.from_address, req.to_address, req.chain, req.token_symbol, str(amount)], separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_transfer(session: Session, registry: Registry, req: TransferRequest,
                    publish_grace_s: float = 120.0) -> tuple[Transaction, bool]:
    """Validate and record a transfer with its first message in the outbox; returns (transaction, created).

    The row, its RECEIVED event and its "to dispatch" record commit together, so a transfer can
    never be stored without a message on its way (the caller publishes it after the commit, and
    the relay does if the caller could not).

    Raises InvalidInput subclasses (InvalidId, UnknownChainError, UnknownSymbol, InvalidAmount,
    IdempotencyConflict) and NotFound for an unknown client; nothing is written in those cases.
    """
    check_id("client", req.client_id)
    if (not isinstance(req.idempotency_key, str) or len(req.idempotency_key) > IDEMPOTENCY_KEY_MAX
            or not _KEY.fullmatch(req.idempotency_key)):
        raise InvalidInput("idempotency_key must be 1-128 printable ASCII characters without leading or trailing spaces")
    _check_address_text("from_address", req.from_address, 128)  # the width of transactions.from_address
    _check_address_text("to_address", req.to_address, 256)
    spec, token = token_spec(registry, req.chain, req.token_symbol)
    amount = parse_amount(req.amount, token.decimals)
    fingerprint = _fingerprint(req, amount)

    if session.get(Client, req.client_id) is None:
        raise NotFound(f"client {req.client_id} not found")
    existing = _by_key(session, req.client_id, req.idempotency_key)
    if existing is not None:
        return _same_or_conflict(existing, fingerprint), False

    now = utcnow()
    tx = Transaction(
        transaction_id=new_id("transaction"),
        client_id=req.client_id,
        idempotency_key=req.idempotency_key,
        request_fingerprint=fingerprint,
        from_address=req.from_address,
        to_address=req.to_address,
        chain=spec.name,
        network=spec.network,
        token_symbol=token.symbol,
        amount=amount,
        decimals=token.decimals,
        event_seq=0,
        status=Status.PENDING.value,
        stage=Stage.RECEIVED.value,
        confirmations=0,
        broadcast_count=0,
        driver_seq=0,
        generation=0,
        send_attempts=0,
        replacement_count=0,
        created_at=now,
        stage_changed_at=now,
        heartbeat_at=now,
    )
    try:
        with session.begin_nested():
            session.add(tx)
            session.flush()
            session.add(TransactionEvent(transaction_id=tx.transaction_id, from_stage=None,
                                         to_stage=Stage.RECEIVED.value, reason="created", at=now))
            hand_off(session, tx, STEP_FOR_STAGE[Stage.RECEIVED], publish_grace_s=publish_grace_s)
            events.transaction_changed(session, tx, status_changed=True)
            session.flush()
    except IntegrityError:
        # Another request with the same key won the race (PostgreSQL); theirs is the transfer.
        existing = _by_key(session, req.client_id, req.idempotency_key)
        if existing is None:
            raise
        return _same_or_conflict(existing, fingerprint), False
    return tx, True


def _by_key(session: Session, client_id: str, key: str) -> Transaction | None:
    return session.scalar(
        select(Transaction).where(Transaction.client_id == client_id, Transaction.idempotency_key == key)
    )


def _same_or_conflict(existing: Transaction, fingerprint: str) -> Transaction:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"idempotency key {existing.idempotency_key!r} was already used for a different transfer "
            f"({existing.transaction_id})"
        )
    return existing


def get_transfer(session: Session, transaction_id: str, client_id: str | None = None) -> Transaction:
    """Load a transfer by id (scoped to a client when given); raises InvalidId or NotFound."""
    check_id("transaction", transaction_id)
    tx = session.get(Transaction, transaction_id)
    if tx is None or (client_id is not None and tx.client_id != client_id):
        raise NotFound(f"transaction {transaction_id} not found")
    return tx
