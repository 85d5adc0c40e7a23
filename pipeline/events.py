"""Webhook events, written in the DB transaction of the change they report.

A client with a webhook URL gets an event row for every transaction status change (PENDING on
creation, CONFIRMED, FAILED) and every wallet status change; a client that opted in to
`transaction.stage` also gets one per stage change. The row is the outbox: it commits with the
change or not at all, and the dispatcher (workers) delivers it. The body is fixed here, once, so
`event_id`, `sequence` (increasing per resource) and `data` are identical on every attempt.

Stage changes (`pipeline.lifecycle.advance`, the workers' path) learn whether the client listens
from a per-process cache of clients that have a webhook, kept SUBSCRIPTION_TTL_S: a transfer
changes stage several times a second under load, and each change would otherwise read the client
row again. Only listening clients are cached, so a webhook just configured is never missed: what
the cache can make late (by at most SUBSCRIPTION_TTL_S, in a worker) is an opt-in change or a
removal, whose extra events the dispatcher skips. Creation and wallet changes (the API's path,
right after `PUT /webhook`) always read the row.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
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
SUBSCRIPTION_TTL_S = 1.0  # how long a worker reuses what it read of a listening client
_SUBSCRIPTIONS_MAX = 10_000  # cached clients per process; the cache starts over beyond


@dataclass(frozen=True)
class Subscription:
    """A client with a webhook URL, and the optional events it asked for."""

    client_id: str
    events: frozenset[str]


_subscriptions: dict[str, tuple[float, Subscription]] = {}  # client id -> (monotonic expiry, subscription)
_subscriptions_lock = threading.Lock()


def subscriber(session: Session, client_id: str, *, cached: bool = False) -> Subscription | None:
    """The client's subscription if it has a webhook URL, else None. `cached`: a listening client
    read less than SUBSCRIPTION_TTL_S ago in this process is not read again (module docstring)."""
    if cached:
        hit = _subscriptions.get(client_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
    client = session.get(Client, client_id)
    if client is None or not client.webhook_url:
        return None
    subscription = Subscription(client.client_id, opted_in(client))
    if cached:
        with _subscriptions_lock:
            if len(_subscriptions) >= _SUBSCRIPTIONS_MAX:
                _subscriptions.clear()
            _subscriptions[client_id] = (time.monotonic() + SUBSCRIPTION_TTL_S, subscription)
    return subscription


def forget_subscriptions() -> None:
    """Drop the cache (tests; a process that has just changed a webhook and reads it back)."""
    with _subscriptions_lock:
        _subscriptions.clear()


def _after_fork_in_child() -> None:
    global _subscriptions_lock
    _subscriptions_lock = threading.Lock()  # a parent thread may have held it at the fork
    _subscriptions.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def opted_in(client: Client) -> frozenset[str]:
    try:
        return frozenset(json.loads(client.webhook_events or "[]"))
    except ValueError:
        return frozenset()


def transaction_changed(session: Session, tx: Transaction, status_changed: bool, *, cached: bool = False) -> None:
    """After `tx` moved stage (and maybe status): its events, if its client listens (`cached`: see
    `subscriber`; stage changes in workers pass True)."""
    if tx.kind == "NOOP":
        return  # the pipeline's own gap fill: not a transfer the client asked for (the API lists it, kind NOOP)
    subscription = subscriber(session, tx.client_id, cached=cached)
    if subscription is None:
        return
    tx.updated_at = utcnow()
    data = transaction_view(tx)
    if STAGE_EVENT in subscription.events:
        _add(session, subscription.client_id, STAGE_EVENT, tx, data)
    if status_changed:
        _add(session, subscription.client_id, TRANSACTION_STATUS_EVENTS[tx.status], tx, data)


def wallet_changed(session: Session, wallet: Wallet) -> None:
    """After `wallet` was created or changed status: its event, if its client listens."""
    subscription = subscriber(session, wallet.client_id)
    if subscription is None:
        return
    wallet.updated_at = utcnow()
    _add(session, subscription.client_id, WALLET_STATUS_EVENTS[wallet.status], wallet, wallet_view(wallet))


def ping(session: Session, client: Client) -> WebhookEvent:
    """A `ping` event for `POST /webhook/test` (sequence 0: it belongs to no resource)."""
    return _write(session, client.client_id, PING_EVENT, client.client_id, 0, {"client_id": client.client_id})


def _add(session: Session, client_id: str, event_type: str, resource: Transaction | Wallet,
         data: dict[str, Any]) -> None:
    resource.event_seq = (resource.event_seq or 0) + 1
    resource_id = resource.transaction_id if isinstance(resource, Transaction) else resource.wallet_id
    _write(session, client_id, event_type, resource_id, resource.event_seq, data)


def _write(session: Session, client_id: str, event_type: str, resource_id: str, sequence: int,
           data: dict[str, Any]) -> WebhookEvent:
    now = utcnow()
    event_id = new_id("event")
    body = {"event_id": event_id, "type": event_type, "created_at": iso(now), "sequence": sequence, "data": data}
    event = WebhookEvent(event_id=event_id, client_id=client_id, type=event_type, resource_id=resource_id,
                         sequence=sequence, payload=json.dumps(body, separators=(",", ":")), status="PENDING",
                         attempts=0, next_attempt_at=now, created_at=now)
    session.add(event)
    return event
