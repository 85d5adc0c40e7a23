"""pipeline.stats.snapshot on the migrated SQLite schema: every count and age from a few known rows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from itertools import count

import pytest

from pipeline.db import Database
from pipeline.models import Client, OutboxMessage, Transaction, WebhookAttempt, WebhookEvent
from pipeline.stats import NO_REASON, Snapshot, snapshot

NOW = datetime(2026, 6, 1, 12, 0, 0)
_ids = count(1)


def _tx(chain: str, status: str, stage: str, created_ago_s: float, *, reason: str | None = None,
        finalized_ago_s: float | None = None, held: bool = False) -> Transaction:
    n = next(_ids)
    return Transaction(
        transaction_id=f"tx_{n:026d}", client_id="cli_1", idempotency_key=f"k{n}", request_fingerprint="f" * 64,
        from_address="a", to_address="b", chain=chain, token_symbol="ETH", amount=1, status=status, stage=stage,
        failure_reason=reason, created_at=NOW - timedelta(seconds=created_ago_s),
        finalized_at=None if finalized_ago_s is None else NOW - timedelta(seconds=finalized_ago_s),
        held_at=NOW if held else None)


def _event(status: str, next_in_s: float | None) -> WebhookEvent:
    n = next(_ids)
    return WebhookEvent(event_id=f"ev_{n:026d}", client_id="cli_1", type="transaction.pending", resource_id="tx_1",
                        sequence=1, payload="{}", status=status, attempts=0, created_at=NOW - timedelta(hours=1),
                        next_attempt_at=None if next_in_s is None else NOW + timedelta(seconds=next_in_s))


@pytest.fixture
def seeded(db: Database) -> Database:
    with db.unit_of_work() as s:
        s.add(Client(client_id="cli_1", name="c", api_key_id="key_1"))
        s.flush()
        s.add_all([
            _tx("ethereum", "PENDING", "RECEIVED", 100),
            _tx("ethereum", "PENDING", "RECEIVED", 40),
            _tx("ethereum", "PENDING", "BROADCAST", 30, held=True),
            _tx("ethereum", "CONFIRMED", "CONFIRMED", 500, finalized_ago_s=400),
            _tx("tron", "PENDING", "CONFIRMING", 250),  # the oldest pending
            _tx("tron", "FAILED", "FAILED", 4000, reason="insufficient_funds", finalized_ago_s=3600),
            _tx("tron", "FAILED", "FAILED", 3 * 86400, reason="insufficient_funds", finalized_ago_s=3 * 86400),
            _tx("bitcoin", "FAILED", "FAILED", 7300, reason="reverted", finalized_ago_s=7200),
            _tx("bitcoin", "FAILED", "FAILED", 2 * 86400, reason=None, finalized_ago_s=2 * 86400),
        ])
        s.flush()
        s.add_all([
            OutboxMessage(kind="step", transaction_id="tx_1", step="resolve_source", seq=1,
                          due_at=NOW - timedelta(seconds=30), created_at=NOW - timedelta(seconds=90)),
            OutboxMessage(kind="step", transaction_id="tx_2", step="resolve_source", seq=1,
                          due_at=NOW - timedelta(seconds=5), created_at=NOW - timedelta(seconds=60)),
            OutboxMessage(kind="step", transaction_id="tx_5", step="confirm", seq=3,  # not due: not lag
                          due_at=NOW + timedelta(seconds=60), created_at=NOW - timedelta(seconds=600)),
            _event("PENDING", -20), _event("PENDING", -3), _event("PENDING", 600),
            _event("FAILED", None), _event("DELIVERED", None), _event("DELIVERED", None),
        ])
        s.flush()
        event_id = s.query(WebhookEvent.event_id).first()[0]
        s.add_all([WebhookAttempt(event_id=event_id, status_code=code, latency_ms=5, outcome=outcome)
                   for code, outcome in ((200, "delivered"), (200, "delivered"), (500, "retry"), (400, "failed"))])
    return db


def _snap(db: Database, now: datetime = NOW) -> Snapshot:
    with db.unit_of_work() as s:
        return snapshot(s, now)


def test_counts_by_chain_and_status(seeded: Database) -> None:
    snap = _snap(seeded)
    assert snap.transfers == {("ethereum", "PENDING"): 3, ("ethereum", "CONFIRMED"): 1, ("tron", "PENDING"): 1,
                              ("tron", "FAILED"): 2, ("bitcoin", "FAILED"): 2}


def test_pending_by_stage_held_and_oldest(seeded: Database) -> None:
    snap = _snap(seeded)
    assert snap.pending_by_stage == {"RECEIVED": 2, "BROADCAST": 1, "CONFIRMING": 1}
    assert snap.pending == 4
    assert snap.held == 1
    assert snap.oldest_pending is not None
    assert (snap.oldest_pending.chain, snap.oldest_pending.stage, snap.oldest_pending.age_s) == ("tron", "CONFIRMING", 250.0)
    assert snap.oldest_pending.transaction_id.startswith("tx_")


def test_failures_by_reason_total_and_last_24h(seeded: Database) -> None:
    snap = _snap(seeded)
    assert snap.failures_total == {"insufficient_funds": 2, "reverted": 1, NO_REASON: 1}
    assert snap.failures_24h == {"insufficient_funds": 1, "reverted": 1}


def test_outbox_lag_counts_only_due_step_messages(seeded: Database) -> None:
    snap = _snap(seeded)
    assert (snap.outbox_due, snap.outbox_lag_s) == (2, 90.0)
    later = _snap(seeded, NOW + timedelta(seconds=61))  # the confirm poll is due too by then
    assert (later.outbox_due, later.outbox_lag_s) == (3, 661.0)


def test_webhook_backlog_and_attempts(seeded: Database) -> None:
    snap = _snap(seeded)
    assert (snap.webhooks_pending, snap.webhooks_due, snap.webhooks_oldest_due_s, snap.webhooks_failed) == (3, 2, 20.0, 1)
    assert snap.webhook_attempts == {"delivered": 2, "retry": 1, "failed": 1}


def test_empty_database(db: Database) -> None:
    snap = _snap(db)
    assert (snap.transfers, snap.pending_by_stage, snap.oldest_pending, snap.failures_total) == ({}, {}, None, {})
    assert (snap.outbox_due, snap.outbox_lag_s, snap.webhooks_due, snap.webhooks_oldest_due_s) == (0, None, 0, None)


def test_to_dict_is_json(seeded: Database) -> None:
    data = json.loads(json.dumps(_snap(seeded).to_dict()))
    assert data["transfers"] == {"bitcoin": {"FAILED": 2}, "ethereum": {"CONFIRMED": 1, "PENDING": 3},
                                 "tron": {"FAILED": 2, "PENDING": 1}}
    assert data["taken_at"] == "2026-06-01T12:00:00Z"
    assert data["pending"] == 4 and data["oldest_pending"]["age_s"] == 250.0
