"""Webhook events, written in the DB transaction of the change they report.

A client with a webhook URL gets an event row for every transaction status change (PENDING on
creation, CONFIRMED, FAILED) and every wallet status change; a client that opted in to
`transaction.stage` also gets one per stage change. The row is the outbox: it commits with the
change or not at all, and the dispatcher (workers) delivers it. The body is fixed here, once, so
`event_id`, `sequence` (increasing per resource) and `data` are identical on every attempt.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from pipeline.ids import new_id
from pipeline.models import Client, Transaction, Wallet, WebhookEvent, utcnow
from pipeline.views import iso, transaction_view, wallet_view

STAGE_EVENT = "transaction.stage"
PING_EVENT = "ping"
OPTIONAL_EVENTS = frozenset({STAGE_EVENT})  # what `PUT /webhook {"events": [...]}` may ask for
TRANSACTION_STATUS_EVENTS = {"PENDING": "transaction.pending", "CONFIRMED": "transaction.confirmed",
                             "FAILED": "transaction.failed"}
WALLET_STATUS_EVENTS = {"PROGRESSING": "wallet.progressing", "ACTIVE": "wallet.active", "FAILED": "wallet.failed"}
EVENT_TYPES = (*TRANSACTION_STATUS_EVENTS.values(), STAGE_EVENT, *WALLET_STATUS_EVENTS.values(), PING_EVENT)


def subscriber(session: Session, client_id: str) -> Client | None:
    """The client if it has a webhook URL (identity-mapped: one read per unit of work)."""
    client = session.get(Client, client_id)
    return client if client is not None and client.webhook_url else None


def opted_in(client: Client) -> frozenset[str]:
    try:
        return frozenset(json.loads(client.webhook_events or "[]"))
    except ValueError:
        return frozenset()


def transaction_changed(session: Session, tx: Transaction, status_changed: bool) -> None:
    """After `tx` moved stage (and maybe status): its events, if its client listens."""
    client = subscriber(session, tx.client_id)
    if client is None:
        return
    tx.updated_at = utcnow()
    data = transaction_view(tx)
    if STAGE_EVENT in opted_in(client):
        _add(session, client, STAGE_EVENT, tx, data)
    if status_changed:
        _add(session, client, TRANSACTION_STATUS_EVENTS[tx.status], tx, data)


def wallet_changed(session: Session, wallet: Wallet) -> None:
    """After `wallet` was created or changed status: its event, if its client listens."""
    client = subscriber(session, wallet.client_id)
    if client is None:
        return
    wallet.updated_at = utcnow()
    _add(session, client, WALLET_STATUS_EVENTS[wallet.status], wallet, wallet_view(wallet))


def ping(session: Session, client: Client) -> WebhookEvent:
    """A `ping` event for `POST /webhook/test` (sequence 0: it belongs to no resource)."""
    return _write(session, client, PING_EVENT, client.client_id, 0, {"client_id": client.client_id})


def _add(session: Session, client: Client, event_type: str, resource: Transaction | Wallet, data: dict[str, Any]) -> None:
    resource.event_seq = (resource.event_seq or 0) + 1
    resource_id = resource.transaction_id if isinstance(resource, Transaction) else resource.wallet_id
    _write(session, client, event_type, resource_id, resource.event_seq, data)


def _write(session: Session, client: Client, event_type: str, resource_id: str, sequence: int,
           data: dict[str, Any]) -> WebhookEvent:
    now = utcnow()
    event_id = new_id("event")
    body = {"event_id": event_id, "type": event_type, "created_at": iso(now), "sequence": sequence, "data": data}
    event = WebhookEvent(event_id=event_id, client_id=client.client_id, type=event_type, resource_id=resource_id,
                         sequence=sequence, payload=json.dumps(body, separators=(",", ":")), status="PENDING",
                         attempts=0, next_attempt_at=now, created_at=now)
    session.add(event)
    return event
