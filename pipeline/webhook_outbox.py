"""The webhook outbox's bookkeeping: which events are due, who delivers each, what an attempt
did to the event, resends and listings. No HTTP here (workers.webhook_tasks POSTs).

An event row (pipeline.events) is PENDING with `next_attempt_at` = when it is due. Delivering it:

1. `claim_due` (the beat relay, one DB transaction) takes up to N due events, oldest due first,
   and moves each one's `next_attempt_at` a lease ahead. That new value is the claim: it keeps
   other relays off the event, and the delivery task carries it.
2. `prepare_delivery` (the task) reads the event; it goes on only if the event is still PENDING
   under that same claim. A late or duplicated message (Redis redelivery, an expired lease that
   was claimed again) finds another value and sends nothing. Nor does a message that comes with
   less of its lease left than one delivery can take (the POST has a total deadline): a delivery
   that starts always ends before the relay may claim its event again, so two never overlap.
3. After the POST, `record_attempt` writes the attempt and the event's new state in one DB
   transaction, compare-and-set on what step 2 read (status, attempts, claim): of two copies of
   one delivery, one records; the other's attempt is dropped.

At least once, not exactly once: a worker that dies between the POST and the commit leaves the
event PENDING, and it is POSTed again when the lease ends, with the same `event_id` and body, so
a receiver dedupes on `X-Paratro-Event-Id`. Order between events is not guaranteed (the receiver
orders a resource's events by `sequence`); oldest-due-first claiming keeps anyone from starving.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pipeline.errors import InvalidInput, NotFound
from pipeline.ids import check_id
from pipeline.models import Client, WebhookAttempt, WebhookEvent
from pipeline.sealing import SecretBox
from pipeline.views import iso
from pipeline.webhooks import webhook_secret

PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"
RETRIED_4XX = frozenset({408, 429})  # a 4xx that says "later", not "never"
JITTER = 0.1  # each retry waits its delay plus up to 10 %: receivers that failed together do not get hit together
MAX_ERROR_CHARS = 300  # WebhookEvent.last_error / WebhookAttempt.error column width
MAX_LIST = 1000


# --- retries ---------------------------------------------------------------------------------

def retry_delay(attempts_made: int, schedule: Sequence[float], rand: Callable[[], float] = random.random) -> float | None:
    """Seconds to wait after attempt number `attempts_made` (1-based) failed, or None when the
    schedule is used up (the event is FAILED). The default schedule totals about 24 h."""
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    return schedule[attempts_made - 1] * (1 + JITTER * rand())


def outcome_of(status_code: int | None, permanent: bool = False) -> str:
    """`delivered` for 2xx; `failed` for a 4xx other than 408/429 (the receiver said no: a retry
    gets the same answer) or a permanent refusal of ours; `retry` for everything else (5xx, 408,
    429, 3xx - redirects are not followed -, timeouts and connection errors)."""
    if status_code is not None and 200 <= status_code < 300:
        return "delivered"
    if permanent or (status_code is not None and 400 <= status_code < 500 and status_code not in RETRIED_4XX):
        return "failed"
    return "retry"


# --- claiming --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    event_id: str
    token: datetime  # the event's next_attempt_at as the claim set it

    @property
    def token_text(self) -> str:
        return self.token.isoformat()


def claim_due(session: Session, now: datetime, lease_s: float, limit: int) -> list[Claim]:
    """Take up to `limit` due PENDING events (oldest due first) for `lease_s` seconds each."""
    if limit <= 0:
        return []
    query = (select(WebhookEvent.event_id)
             .where(WebhookEvent.status == PENDING, WebhookEvent.next_attempt_at <= now)
             .order_by(WebhookEvent.next_attempt_at, WebhookEvent.event_id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    event_ids = list(session.scalars(query))
    if not event_ids:
        return []
    token = now + timedelta(seconds=lease_s)
    session.execute(update(WebhookEvent).where(WebhookEvent.event_id.in_(event_ids), WebhookEvent.status == PENDING)
                    .values(next_attempt_at=token))
    return [Claim(event_id, token) for event_id in event_ids]


def parse_token(text: str | None) -> datetime | None:
    """A claim token as carried in a task message (ISO text) -> the datetime it was."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidInput("claim token is not an ISO timestamp") from None


# --- one delivery ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Delivery:
    """What one attempt sends, and what it read (the compare-and-set of `record_attempt`)."""

    event_id: str
    client_id: str
    attempts: int
    token: datetime | None
    url: str = field(repr=False)
    body: bytes = field(repr=False)
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Skipped:
    """Nothing to send for this message, and why (for the log)."""

    reason: str


@dataclass(frozen=True)
class AttemptResult:
    """What came back: a status code, or an error line (never the URL or the secret)."""

    started_at: datetime
    latency_ms: int
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False  # refused by us (e.g. the URL now points inside): do not retry


def prepare_delivery(session: Session, box: SecretBox, event_id: str, claim: datetime | None, now: datetime,
                     lease_s: float, delivery_s: float = 0.0) -> Delivery | Skipped:
    """The delivery of `event_id` under `claim`, or why there is none. Without a claim (a direct
    call) the event is claimed here. A claim with less than `delivery_s` (the longest one delivery
    runs) left is not used: the relay claims the event again when it ends, and this delivery would
    still be running. An event whose client has no webhook any more is FAILED here."""
    if delivery_s > lease_s:
        raise ValueError("the lease must be longer than one delivery")
    event = session.get(WebhookEvent, event_id)
    if event is None:
        return Skipped("unknown event")
    if event.status != PENDING:
        return Skipped(f"already {event.status}")
    if claim is None:
        claim = now + timedelta(seconds=lease_s)
        if not _compare_and_set(session, event, event.attempts, event.next_attempt_at, {"next_attempt_at": claim}):
            return Skipped("taken by another delivery")
    elif event.next_attempt_at != claim:
        return Skipped("claim superseded (lease ended or resent)")
    elif (claim - now).total_seconds() < delivery_s:
        return Skipped("too little of the claim left to deliver (the next claim will)")
    client = session.get(Client, event.client_id)
    if client is None or not client.webhook_url or client.webhook_secret_encrypted is None:
        reason = "no webhook configured for the client"
        _compare_and_set(session, event, event.attempts, claim,
                         {"status": FAILED, "next_attempt_at": None, "last_error": reason})
        return Skipped(reason)
    return Delivery(event_id=event.event_id, client_id=event.client_id, attempts=event.attempts, token=claim,
                    url=client.webhook_url, body=event.payload.encode(), secret=webhook_secret(box, client))


def record_attempt(session: Session, delivery: Delivery, result: AttemptResult, now: datetime,
                   schedule: Sequence[float], rand: Callable[[], float] = random.random) -> str | None:
    """Record one attempt and move the event on: DELIVERED, FAILED, or PENDING at its next retry
    time. Returns the outcome (`delivered`, `retry`, `failed`), or None if the event is no longer
    as `delivery` read it (another copy recorded first, its lease was claimed again, or it was
    resent): then nothing is written."""
    outcome = outcome_of(result.status_code, result.permanent)
    attempts = delivery.attempts + 1
    error = _clip(result.error)
    values: dict[str, Any] = {"attempts": attempts, "last_status_code": result.status_code, "last_error": error}
    if outcome == "delivered":
        values.update(status=DELIVERED, delivered_at=now, next_attempt_at=None)
    else:
        delay = retry_delay(attempts, schedule, rand) if outcome == "retry" else None
        if delay is None:
            outcome = "failed"
            values.update(status=FAILED, next_attempt_at=None)
        else:
            values.update(next_attempt_at=now + timedelta(seconds=delay))
    event = session.get(WebhookEvent, delivery.event_id)
    if event is None or not _compare_and_set(session, event, delivery.attempts, delivery.token, values):
        return None
    session.add(WebhookAttempt(event_id=delivery.event_id, attempted_at=result.started_at,
                               status_code=result.status_code, latency_ms=max(0, result.latency_ms), outcome=outcome,
                               error=error))
    return outcome


def _compare_and_set(session: Session, event: WebhookEvent, read_attempts: int, read_token: datetime | None,
                     values: dict[str, Any]) -> bool:
    """Update the event only if it is still PENDING with these attempts and this claim."""
    claim_matches = (WebhookEvent.next_attempt_at.is_(None) if read_token is None
                     else WebhookEvent.next_attempt_at == read_token)
    result = session.execute(update(WebhookEvent)
                             .where(WebhookEvent.event_id == event.event_id, WebhookEvent.status == PENDING,
                                    WebhookEvent.attempts == read_attempts, claim_matches)
                             .values(**values).execution_options(synchronize_session=False))
    session.expire(event)
    return result.rowcount == 1  # type: ignore[attr-defined]


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS - 3] + "..."


# --- operators: resend and list --------------------------------------------------------------

@dataclass(frozen=True)
class EventSelection:
    """Which events an operator means. The filters combine (AND); `client_id` only narrows."""

    event_ids: tuple[str, ...] = ()
    transaction_id: str | None = None
    since: datetime | None = None  # created_at >= since (naive UTC)
    until: datetime | None = None  # created_at < until (naive UTC)
    client_id: str | None = None

    def check(self) -> "EventSelection":
        """Validate ids and the range; InvalidInput if nothing selects events."""
        for event_id in self.event_ids:
            check_id("event", event_id)
        if self.transaction_id is not None:
            check_id("transaction", self.transaction_id)
        if self.client_id is not None:
            check_id("client", self.client_id)
        if not (self.event_ids or self.transaction_id or self.since or self.until):
            raise InvalidInput("say which events: --event ID (repeatable), --transaction ID, or --since/--until")
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("--since must be before --until")
        return self

    def conditions(self) -> list[Any]:
        found: list[Any] = []
        if self.event_ids:
            found.append(WebhookEvent.event_id.in_(self.event_ids))
        if self.transaction_id:
            found.append(WebhookEvent.resource_id == self.transaction_id)
        if self.since:
            found.append(WebhookEvent.created_at >= self.since)
        if self.until:
            found.append(WebhookEvent.created_at < self.until)
        if self.client_id:
            found.append(WebhookEvent.client_id == self.client_id)
        return found


def resend_events(session: Session, selection: EventSelection, now: datetime) -> int:
    """Put the selected events (whatever their status) back to PENDING, due now, with a fresh
    retry schedule: another delivery of the same event (same `event_id`, same body). Attempts
    already made stay in webhook_attempts. A delivery in flight loses its claim and records
    nothing. Returns how many events were put back; NotFound (nothing changed) if a named event
    does not exist."""
    selection.check()
    if selection.event_ids:
        known = set(session.scalars(select(WebhookEvent.event_id).where(WebhookEvent.event_id.in_(selection.event_ids))))
        missing = sorted(set(selection.event_ids) - known)
        if missing:
            raise NotFound(f"no webhook event {', '.join(missing)}")
    result = session.execute(update(WebhookEvent).where(*selection.conditions())
                             .values(status=PENDING, attempts=0, next_attempt_at=now, delivered_at=None)
                             .execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


def list_events(session: Session, failed_only: bool = False, client_id: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
    """The newest events first (`failed_only`: FAILED ones), as plain dicts for a table or JSON."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST}")
    query = select(WebhookEvent).order_by(WebhookEvent.created_at.desc(), WebhookEvent.event_id.desc()).limit(limit)
    if failed_only:
        query = query.where(WebhookEvent.status == FAILED)
    if client_id is not None:
        query = query.where(WebhookEvent.client_id == check_id("client", client_id))
    return [{"event_id": e.event_id, "client_id": e.client_id, "type": e.type, "resource_id": e.resource_id,
             "sequence": e.sequence, "status": e.status, "attempts": e.attempts,
             "last_status_code": e.last_status_code, "last_error": e.last_error,
             "next_attempt_at": iso(e.next_attempt_at), "delivered_at": iso(e.delivered_at),
             "created_at": iso(e.created_at)} for e in session.scalars(query)]


def attempts_of(session: Session, event_id: str) -> list[WebhookAttempt]:
    """Every recorded attempt of an event, oldest first."""
    check_id("event", event_id)
    return list(session.scalars(select(WebhookAttempt).where(WebhookAttempt.event_id == event_id)
                                .order_by(WebhookAttempt.id)))


def parse_moment(text: str, name: str) -> datetime:
    """An operator's ISO-8601 time (`2026-01-31`, `2026-01-31T12:00:00Z`, with an offset) ->
    naive UTC, the columns' representation; a time without offset is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except (AttributeError, ValueError):
        raise InvalidInput(f"{name} must be an ISO-8601 time, e.g. 2026-01-31T12:00:00Z") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment
