"""The webhook outbox on a migrated SQLite DB: configuration, claims, attempts and their
compare-and-set, the retry schedule, resend and list."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from pipeline import credentials, events
from pipeline.db import Database
from pipeline.errors import InvalidId, InvalidInput, NotFound
from pipeline.models import Client, WebhookAttempt, WebhookEvent, utcnow
from pipeline.sealing import SealedSecretMismatch, SecretBox, new_secrets_key, webhook_context
from pipeline.settings import WEBHOOK_RETRY_SCHEDULE_S
from pipeline.webhook_outbox import (
    AttemptResult,
    Delivery,
    EventSelection,
    Skipped,
    attempts_of,
    claim_due,
    list_events,
    outcome_of,
    parse_moment,
    parse_token,
    prepare_delivery,
    record_attempt,
    resend_events,
    retry_delay,
)
from pipeline.webhooks import (
    InvalidWebhookEvents,
    InvalidWebhookUrl,
    WebhookNotConfigured,
    configure_webhook,
    webhook_config,
    webhook_secret,
)

URL = "http://127.0.0.1:9/hook"
LEASE = 60.0
SCHEDULE = (1.0, 2.0, 4.0)


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(new_secrets_key())


@pytest.fixture
def client_id(db: Database, box: SecretBox) -> str:
    with db.unit_of_work() as s:
        return credentials.create_client(s, box, "Acme")[0].client_id


@pytest.fixture
def hooked(db: Database, box: SecretBox, client_id: str) -> str:
    """A client with a webhook; returns its signing secret."""
    with db.unit_of_work() as s:
        return configure_webhook(s, box, client_id, URL, None, devnet=True)


def ping(db: Database, client_id: str) -> str:
    with db.unit_of_work() as s:
        return events.ping(s, s.get(Client, client_id)).event_id  # type: ignore[arg-type]


def event(db: Database, event_id: str) -> WebhookEvent:
    with db.unit_of_work() as s:
        return s.get(WebhookEvent, event_id)  # type: ignore[return-value]


def claim_one(db: Database, now: datetime | None = None) -> datetime:
    with db.unit_of_work() as s:
        claims = claim_due(s, now or utcnow(), LEASE, 10)
    assert len(claims) == 1
    return parse_token(claims[0].token_text)  # type: ignore[return-value]


def prepare(db: Database, box: SecretBox, event_id: str, claim: datetime | None) -> Delivery | Skipped:
    with db.unit_of_work() as s:
        return prepare_delivery(s, box, event_id, claim, utcnow(), LEASE)


def record(db: Database, delivery: Delivery, status: int | None, error: str | None = None,
           now: datetime | None = None) -> str | None:
    result = AttemptResult(utcnow(), 12, status, error)
    with db.unit_of_work() as s:
        return record_attempt(s, delivery, result, now or utcnow(), SCHEDULE, rand=lambda: 0.0)


# --- configuration -----------------------------------------------------------------------------

def test_configure_returns_a_new_secret_stored_sealed(db: Database, box: SecretBox, client_id: str) -> None:
    with db.unit_of_work() as s:
        first = configure_webhook(s, box, client_id, URL, ["transaction.stage"], devnet=True)
    with db.unit_of_work() as s:
        client = s.get(Client, client_id)
        assert first.startswith("whsec_") and len(first) > 40
        assert first.encode() not in client.webhook_secret_encrypted  # type: ignore[operator]
        assert box.open(client.webhook_secret_encrypted, webhook_context(client_id)) == first  # type: ignore[arg-type]
        assert webhook_secret(box, client) == first  # type: ignore[arg-type]
        assert webhook_config(s, client_id) == {"url": URL, "events": ["transaction.stage"]}
        second = configure_webhook(s, box, client_id, URL + "2", None, devnet=True)
    with db.unit_of_work() as s:
        assert second != first and webhook_secret(box, s.get(Client, client_id)) == second  # type: ignore[arg-type]
        assert webhook_config(s, client_id) == {"url": URL + "2", "events": []}
    with pytest.raises(SealedSecretMismatch):  # another deployment's key does not open it
        with db.unit_of_work() as s:
            webhook_secret(SecretBox(new_secrets_key()), s.get(Client, client_id))  # type: ignore[arg-type]


@pytest.mark.parametrize("url,events_,error", [
    ("http://127.0.0.1/h", ["transaction.pending"], InvalidWebhookEvents),  # always sent: not an opt-in
    ("http://127.0.0.1/h", ["nope"], InvalidWebhookEvents),
    ("http://127.0.0.1/h", "transaction.stage", InvalidWebhookEvents),
    ("http://u:p@127.0.0.1/h", None, InvalidWebhookUrl),
    ("http://127.0.0.1/h", None, InvalidWebhookUrl),  # mainnet mode: https and public only
])
def test_invalid_configuration_writes_nothing(db: Database, box: SecretBox, client_id: str, hooked: str, url: str,
                                              events_: object, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        with db.unit_of_work() as s:
            configure_webhook(s, box, client_id, url, events_, devnet=url.endswith("/h") and events_ is not None)  # type: ignore[arg-type]
    assert isinstance(caught.value, InvalidInput)
    if events_ == ["nope"]:
        assert "'nope'" in str(caught.value)
    with db.unit_of_work() as s:
        assert webhook_config(s, client_id) == {"url": URL, "events": []}
        assert webhook_secret(box, s.get(Client, client_id)) == hooked  # type: ignore[arg-type]


def test_unknown_or_malformed_clients(db: Database, box: SecretBox) -> None:
    with db.unit_of_work() as s:
        with pytest.raises(InvalidId):
            configure_webhook(s, box, "cli_nope", URL, None, devnet=True)
        with pytest.raises(NotFound):
            configure_webhook(s, box, "cli_01J00000000000000000000000", URL, None, devnet=True)
        with pytest.raises(NotFound):
            webhook_config(s, "cli_01J00000000000000000000000")


def test_a_client_without_webhook_has_no_secret(db: Database, box: SecretBox, client_id: str) -> None:
    with db.unit_of_work() as s:
        assert webhook_config(s, client_id) == {"url": None, "events": []}
        with pytest.raises(WebhookNotConfigured):
            webhook_secret(box, s.get(Client, client_id))  # type: ignore[arg-type]


# --- the retry schedule --------------------------------------------------------------------------

def test_the_default_schedule_retries_eleven_times_over_about_a_day() -> None:
    delays = [retry_delay(n, WEBHOOK_RETRY_SCHEDULE_S, rand=lambda: 0.0) for n in range(1, 13)]
    assert delays[:11] == [10, 30, 120, 300, 900, 1800, 3600, 7200, 14400, 28800, 28800]
    assert delays[11] is None  # the twelfth attempt was the last
    assert 23.8 * 3600 < sum(delays[:11]) < 24 * 3600  # type: ignore[arg-type]
    worst = sum(retry_delay(n, WEBHOOK_RETRY_SCHEDULE_S, rand=lambda: 0.999999) for n in range(1, 12))  # type: ignore[misc]
    assert 24 * 3600 < worst < 1.1 * 24 * 3600


def test_jitter_only_adds_up_to_a_tenth() -> None:
    assert retry_delay(2, SCHEDULE, rand=lambda: 0.5) == pytest.approx(2.1)
    assert retry_delay(0, SCHEDULE) is None and retry_delay(4, SCHEDULE) is None


@pytest.mark.parametrize("status,outcome", [(200, "delivered"), (204, "delivered"), (299, "delivered"),
                                            (400, "failed"), (401, "failed"), (404, "failed"), (410, "failed"),
                                            (408, "retry"), (429, "retry"), (500, "retry"), (503, "retry"),
                                            (301, "retry"), (None, "retry")])
def test_outcome_by_status(status: int | None, outcome: str) -> None:
    assert outcome_of(status) == outcome


# --- claims and attempts -------------------------------------------------------------------------

def test_claim_takes_due_events_once_until_the_lease_ends(db: Database, client_id: str, hooked: str) -> None:
    ids = [ping(db, client_id) for _ in range(3)]
    now = utcnow() + timedelta(seconds=1)
    with db.unit_of_work() as s:
        first = claim_due(s, now, LEASE, 2)
        again = claim_due(s, now, LEASE, 10)
    assert [c.event_id for c in first] == ids[:2]  # oldest due first, at most the limit
    assert [c.event_id for c in again] == ids[2:]
    with db.unit_of_work() as s:
        assert claim_due(s, now + timedelta(seconds=LEASE - 1), LEASE, 10) == []
        later = claim_due(s, now + timedelta(seconds=LEASE + 1), LEASE, 10)  # nobody recorded: claimed again
    assert sorted(c.event_id for c in later) == sorted(ids)
    assert all(event(db, i).next_attempt_at == later[0].token for i in ids)


def test_a_delivered_attempt_is_recorded_with_the_event(db: Database, box: SecretBox, client_id: str,
                                                         hooked: str) -> None:
    event_id = ping(db, client_id)
    delivery = prepare(db, box, event_id, claim_one(db))
    assert isinstance(delivery, Delivery)
    assert delivery.secret == hooked and delivery.url == URL
    assert json.loads(delivery.body)["event_id"] == event_id and delivery.body == event(db, event_id).payload.encode()
    assert hooked not in repr(delivery)
    assert record(db, delivery, 204) == "delivered"
    row = event(db, event_id)
    assert (row.status, row.attempts, row.last_status_code, row.next_attempt_at) == ("DELIVERED", 1, 204, None)
    assert row.delivered_at is not None
    with db.unit_of_work() as s:
        assert [(a.status_code, a.outcome, a.latency_ms) for a in attempts_of(s, event_id)] == [(204, "delivered", 12)]
    assert prepare(db, box, event_id, None) == Skipped("already DELIVERED")


def test_retries_follow_the_schedule_then_fail(db: Database, box: SecretBox, client_id: str, hooked: str) -> None:
    event_id = ping(db, client_id)
    now = utcnow()
    answers = [500, 429, None, 503]
    for n, status in enumerate(answers, start=1):
        delivery = prepare(db, box, event_id, claim_one(db, now + timedelta(seconds=1)))
        assert isinstance(delivery, Delivery) and delivery.attempts == n - 1
        outcome = record(db, delivery, status, None if status else "ConnectError: refused", now=now)
        row = event(db, event_id)
        if n <= len(SCHEDULE):
            assert (outcome, row.status, row.attempts) == ("retry", "PENDING", n)
            assert row.next_attempt_at == now + timedelta(seconds=SCHEDULE[n - 1])
            now = row.next_attempt_at
        else:
            assert (outcome, row.status, row.attempts, row.next_attempt_at) == ("failed", "FAILED", n, None)
    with db.unit_of_work() as s:
        assert [(a.status_code, a.outcome) for a in attempts_of(s, event_id)] == [
            (500, "retry"), (429, "retry"), (None, "retry"), (503, "failed")]
        assert attempts_of(s, event_id)[2].error == "ConnectError: refused"


def test_a_4xx_fails_at_once(db: Database, box: SecretBox, client_id: str, hooked: str) -> None:
    event_id = ping(db, client_id)
    delivery = prepare(db, box, event_id, claim_one(db))
    assert record(db, delivery, 400, "HTTP 400") == "failed"  # type: ignore[arg-type]
    row = event(db, event_id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("FAILED", 1, 400, "HTTP 400")
    with db.unit_of_work() as s:
        assert claim_due(s, utcnow() + timedelta(days=2), LEASE, 10) == []


def test_two_copies_of_one_delivery_record_once(db: Database, box: SecretBox, client_id: str, hooked: str) -> None:
    event_id = ping(db, client_id)
    claim = claim_one(db)
    first, second = prepare(db, box, event_id, claim), prepare(db, box, event_id, claim)  # both read the same state
    assert isinstance(first, Delivery) and first == second
    assert record(db, second, 500) == "retry"  # type: ignore[arg-type]
    assert record(db, first, 200) is None  # the state it read is gone: nothing written
    row = event(db, event_id)
    assert (row.status, row.attempts, row.last_status_code) == ("PENDING", 1, 500)
    with db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(WebhookAttempt)) == 1
    assert prepare(db, box, event_id, claim) == Skipped("claim superseded (lease ended or resent)")


def test_a_late_message_from_an_expired_lease_sends_nothing(db: Database, box: SecretBox, client_id: str,
                                                             hooked: str) -> None:
    event_id = ping(db, client_id)
    old = claim_one(db)
    slow = prepare(db, box, event_id, old)
    new = claim_one(db, utcnow() + timedelta(seconds=LEASE + 1))  # lease ended: claimed again
    assert prepare(db, box, event_id, old) == Skipped("claim superseded (lease ended or resent)")
    assert record(db, slow, 200) is None  # type: ignore[arg-type]
    current = prepare(db, box, event_id, new)
    assert record(db, current, 200) == "delivered"  # type: ignore[arg-type]


def test_a_direct_delivery_claims_the_event_itself(db: Database, box: SecretBox, client_id: str, hooked: str) -> None:
    event_id = ping(db, client_id)
    delivery = prepare(db, box, event_id, None)
    assert isinstance(delivery, Delivery) and delivery.token is not None
    with db.unit_of_work() as s:
        assert claim_due(s, utcnow() + timedelta(seconds=1), LEASE, 10) == []  # the relay keeps off it
    assert record(db, delivery, 200) == "delivered"


def test_an_event_whose_client_dropped_its_webhook_fails_with_the_reason(db: Database, box: SecretBox,
                                                                          client_id: str, hooked: str) -> None:
    event_id = ping(db, client_id)
    with db.unit_of_work() as s:
        s.get(Client, client_id).webhook_url = None  # type: ignore[union-attr]
    assert prepare(db, box, event_id, claim_one(db)) == Skipped("no webhook configured for the client")
    row = event(db, event_id)
    assert (row.status, row.last_error, row.attempts) == ("FAILED", "no webhook configured for the client", 0)


def test_a_refused_target_fails_without_retry(db: Database, box: SecretBox, client_id: str, hooked: str) -> None:
    event_id = ping(db, client_id)
    delivery = prepare(db, box, event_id, claim_one(db))
    result = AttemptResult(utcnow(), 0, None, "refused: webhook url must not point to a loopback address",
                           permanent=True)
    with db.unit_of_work() as s:
        assert record_attempt(s, delivery, result, utcnow(), SCHEDULE) == "failed"  # type: ignore[arg-type]
    assert event(db, event_id).status == "FAILED"


def test_long_errors_are_clipped_to_one_line(db: Database, box: SecretBox, client_id: str, hooked: str) -> None:
    event_id = ping(db, client_id)
    delivery = prepare(db, box, event_id, claim_one(db))
    record(db, delivery, None, "line one\nline two " + "x" * 500)  # type: ignore[arg-type]
    error = event(db, event_id).last_error
    assert error is not None and "\n" not in error and len(error) == 300 and error.startswith("line one line two")


# --- resend and list -----------------------------------------------------------------------------

def test_resend_puts_events_back_with_the_same_id_and_body(db: Database, box: SecretBox, client_id: str,
                                                           hooked: str) -> None:
    event_id = ping(db, client_id)
    body = event(db, event_id).payload
    delivery = prepare(db, box, event_id, claim_one(db))
    record(db, delivery, 400)  # type: ignore[arg-type]
    with db.unit_of_work() as s:
        assert resend_events(s, EventSelection(event_ids=(event_id,)), utcnow()) == 1
    row = event(db, event_id)
    assert (row.status, row.attempts, row.payload) == ("PENDING", 0, body)
    again = prepare(db, box, event_id, claim_one(db))
    assert isinstance(again, Delivery) and again.body == body.encode()
    assert record(db, again, 200) == "delivered"
    with db.unit_of_work() as s:
        assert [a.outcome for a in attempts_of(s, event_id)] == ["failed", "delivered"]  # history kept


def test_resend_makes_a_delivery_in_flight_record_nothing(db: Database, box: SecretBox, client_id: str,
                                                         hooked: str) -> None:
    event_id = ping(db, client_id)
    in_flight = prepare(db, box, event_id, claim_one(db))
    with db.unit_of_work() as s:
        resend_events(s, EventSelection(event_ids=(event_id,)), utcnow())
    assert record(db, in_flight, 500) is None  # type: ignore[arg-type]
    assert (event(db, event_id).status, event(db, event_id).attempts) == ("PENDING", 0)


def test_resend_selections_combine(db: Database, box: SecretBox, client_id: str, hooked: str) -> None:
    with db.unit_of_work() as s:
        other = credentials.create_client(s, box, "Other")[0].client_id
        configure_webhook(s, box, other, URL, None, devnet=True)
    mine, theirs = ping(db, client_id), ping(db, other)
    with db.unit_of_work() as s:  # mark both delivered
        for e in s.scalars(select(WebhookEvent)):
            e.status, e.next_attempt_at = "DELIVERED", None
    created = event(db, mine).created_at
    with db.unit_of_work() as s:
        assert resend_events(s, EventSelection(since=created - timedelta(minutes=1), client_id=other), utcnow()) == 1
        assert resend_events(s, EventSelection(until=created - timedelta(minutes=1)), utcnow()) == 0
        assert resend_events(s, EventSelection(transaction_id="tx_01J00000000000000000000000"), utcnow()) == 0
    assert (event(db, mine).status, event(db, theirs).status) == ("DELIVERED", "PENDING")


@pytest.mark.parametrize("selection,error", [
    (EventSelection(), "say which events"),
    (EventSelection(client_id="cli_01J00000000000000000000000"), "say which events"),
    (EventSelection(event_ids=("tx_01J00000000000000000000000",)), "not a valid event id"),
    (EventSelection(transaction_id="ev_01J00000000000000000000000"), "not a valid transaction id"),
    (EventSelection(since=datetime(2026, 2, 1), until=datetime(2026, 1, 1)), "before --until"),
])
def test_resend_refuses_without_a_valid_selector(db: Database, client_id: str, hooked: str,
                                                 selection: EventSelection, error: str) -> None:
    event_id = ping(db, client_id)
    with pytest.raises(InvalidInput, match=error):
        with db.unit_of_work() as s:
            resend_events(s, selection, utcnow())
    assert event(db, event_id).next_attempt_at is not None


def test_resend_of_an_unknown_event_changes_nothing(db: Database, client_id: str, hooked: str) -> None:
    event_id = ping(db, client_id)
    with db.unit_of_work() as s:
        s.get(WebhookEvent, event_id).status = "FAILED"  # type: ignore[union-attr]
    with pytest.raises(NotFound, match="ev_01J00000000000000000000000"):
        with db.unit_of_work() as s:
            resend_events(s, EventSelection(event_ids=(event_id, "ev_01J00000000000000000000000")), utcnow())
    assert event(db, event_id).status == "FAILED"


def test_list_shows_newest_first_and_filters(db: Database, box: SecretBox, client_id: str, hooked: str) -> None:
    ids = [ping(db, client_id) for _ in range(3)]
    delivery = prepare(db, box, ids[0], None)
    record(db, delivery, 410)  # type: ignore[arg-type]
    with db.unit_of_work() as s:
        rows = list_events(s)
        assert [r["event_id"] for r in rows] == ids[::-1]
        assert [r["event_id"] for r in list_events(s, limit=2)] == ids[:0:-1]
        failed = list_events(s, failed_only=True, client_id=client_id)
        assert [(r["event_id"], r["status"], r["attempts"], r["last_status_code"]) for r in failed] == [
            (ids[0], "FAILED", 1, 410)]
        assert failed[0]["type"] == "ping" and failed[0]["resource_id"] == client_id and failed[0]["sequence"] == 0
        with pytest.raises(InvalidInput):
            list_events(s, limit=0)


def test_transaction_events_carry_increasing_sequences(world, db: Database, box: SecretBox) -> None:  # type: ignore[no-untyped-def]
    party = world.onboard(balances={"ETH": 10**18})
    with db.unit_of_work() as s:
        configure_webhook(s, box, party.client_id, URL, ["transaction.stage"], devnet=True)
    tx_id = world.transfer(party, "0.1")
    world.step("resolve_source", tx_id)
    with db.unit_of_work() as s:
        rows = list(s.scalars(select(WebhookEvent).where(WebhookEvent.resource_id == tx_id)
                              .order_by(WebhookEvent.sequence)))
        assert [(r.type, r.sequence) for r in rows][:1] == [("transaction.stage", 1)]
        assert [r.sequence for r in rows] == list(range(1, len(rows) + 1))
        assert "transaction.pending" in [r.type for r in rows]
        assert resend_events(s, EventSelection(transaction_id=tx_id), utcnow()) == len(rows)


@pytest.mark.parametrize("text,expected", [("2026-01-31", datetime(2026, 1, 31)),
                                           ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12)),
                                           ("2026-01-31T14:00:00+02:00", datetime(2026, 1, 31, 12))])
def test_operator_times_become_naive_utc(text: str, expected: datetime) -> None:
    assert parse_moment(text, "--since") == expected


def test_a_bad_operator_time_is_named() -> None:
    with pytest.raises(InvalidInput, match="--until must be an ISO-8601 time"):
        parse_moment("yesterday", "--until")


def test_a_claim_is_used_only_with_a_whole_delivery_of_it_left(db: Database, box: SecretBox, client_id: str,
                                                               hooked: str) -> None:
    event_id = ping(db, client_id)
    claim = claim_one(db)  # LEASE seconds from now
    late = claim - timedelta(seconds=LEASE / 4)  # the task runs with a quarter of the lease left
    with db.unit_of_work() as s:
        assert prepare_delivery(s, box, event_id, claim, late, LEASE, delivery_s=LEASE / 2) == Skipped(
            "too little of the claim left to deliver (the next claim will)")
    assert event(db, event_id).next_attempt_at == claim  # left claimed: the relay takes it when it ends
    with db.unit_of_work() as s:
        delivery = prepare_delivery(s, box, event_id, claim, late, LEASE, delivery_s=LEASE / 5)
        assert isinstance(delivery, Delivery) and delivery.token == claim
        with pytest.raises(ValueError, match="lease must be longer"):
            prepare_delivery(s, box, event_id, claim, utcnow(), LEASE, delivery_s=LEASE + 1)
