"""SQLAlchemy 2.0 models of the resource hierarchy and the transfer audit trail.

Client -> Wallet -> Account -> Asset -> Transaction (+ TransactionEvent, LedgerEntry). Amounts are
integers in base units stored losslessly: NUMERIC(78,0) on PostgreSQL (uint256 fits), decimal
text on SQLite (whose NUMERIC would silently turn values above 2**63 into floats).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine


def utcnow() -> datetime:
    """Naive UTC: the same representation on SQLite and PostgreSQL, so comparisons hold on both."""
    return datetime.now(UTC).replace(tzinfo=None)


class BaseUnits(TypeDecorator[int]):
    """An exact non-float integer amount column."""

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(78, 0))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"amounts are integers in base units, got {type(value).__name__}")
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class Base(DeclarativeBase):
    pass


class Client(Base):
    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    api_key_id: Mapped[str] = mapped_column(String(64), unique=True)
    # The API secret verifies HMAC-signed requests, so the server needs it back: it is sealed
    # (AES-256-GCM under PARATRO_SECRETS_KEY, client id as associated data), never stored plain.
    api_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    api_secret_hash: Mapped[str | None] = mapped_column(String(200))  # pre-0003 clients: rotate to sign
    max_wallets: Mapped[int] = mapped_column(Integer, default=100)
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    webhook_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)  # sealed like the API secret
    webhook_events: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of opt-in types ("transaction.stage")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Wallet(Base):
    __tablename__ = "wallets"

    wallet_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    wallet_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="PROGRESSING")
    key_status: Mapped[str] = mapped_column(String(16), default="GENERATING")
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    failure_detail: Mapped[str | None] = mapped_column(Text)
    key_attempts: Mapped[int] = mapped_column(Integer, default=0)  # key generation runs started
    # While GENERATING: when the key generation message is due to be published (again). Written
    # with the wallet, so a message lost on the way is published again by the relay.
    key_due_at: Mapped[datetime | None] = mapped_column(DateTime)
    event_seq: Mapped[int] = mapped_column(Integer, default=0)  # webhook `sequence` of the last event
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("chain", "address", name="uq_account_chain_address"),
        UniqueConstraint("wallet_id", "chain", name="uq_account_wallet_chain"),
    )

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.wallet_id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    chain: Mapped[str] = mapped_column(String(32))
    network: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Asset(Base):
    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("account_id", "symbol", name="uq_asset_account_symbol"),)

    asset_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    chain: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(16))
    asset_type: Mapped[str] = mapped_column(String(8))
    contract_address: Mapped[str | None] = mapped_column(String(128))
    decimals: Mapped[int] = mapped_column(Integer)
    balance: Mapped[int] = mapped_column(BaseUnits, default=0)
    locked_balance: Mapped[int] = mapped_column(BaseUnits, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    @property
    def available(self) -> int:
        return self.balance - self.locked_balance


class Transaction(Base):
    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("client_id", "idempotency_key", name="uq_tx_client_idempotency"),
        Index("ix_tx_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_tx_hash", "chain", "tx_hash"),
        Index("ix_tx_tracked", "chain", "tracked_at"),
    )

    transaction_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    from_address: Mapped[str] = mapped_column(String(128))
    to_address: Mapped[str] = mapped_column(String(256))
    chain: Mapped[str] = mapped_column(String(32))
    network: Mapped[str | None] = mapped_column(String(32))
    token_symbol: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BaseUnits)
    decimals: Mapped[int | None] = mapped_column(Integer)  # the token's, from the registry at creation
    event_seq: Mapped[int] = mapped_column(Integer, default=0)  # webhook `sequence` of the last event
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    stage: Mapped[str] = mapped_column(String(32), default="RECEIVED")
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    failure_detail: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)  # latest trouble, for ops
    # Set when a step hit an error no retry can cure (a misconfigured node, a signer bug): the
    # sweeper leaves held transfers alone until ops fixes the cause and runs `paratro replay`.
    held_at: Mapped[datetime | None] = mapped_column(DateTime)
    wallet_id: Mapped[str | None] = mapped_column(String(40))
    account_id: Mapped[str | None] = mapped_column(String(40))
    asset_id: Mapped[str | None] = mapped_column(String(40))
    fee_asset_id: Mapped[str | None] = mapped_column(String(40))
    normalized_to_address: Mapped[str | None] = mapped_column(String(256))
    fee_params: Mapped[str | None] = mapped_column(Text)  # JSON of the FeeQuote fixed at lock time
    fee_reserved: Mapped[int | None] = mapped_column(BaseUnits)
    fee_paid: Mapped[int | None] = mapped_column(BaseUnits)
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    signature_request_id: Mapped[str | None] = mapped_column(String(64))
    unsigned_payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    signing_payloads: Mapped[str | None] = mapped_column(Text)  # JSON list of hex: what the signer signs
    build_context: Mapped[str | None] = mapped_column(Text)  # JSON: fresh chain data the build used
    replacement_count: Mapped[int] = mapped_column(Integer, default=0)  # explicit re-signs (expiry)
    signed_payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    tx_hash: Mapped[str | None] = mapped_column(String(128))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(String(128))
    confirmations: Mapped[int] = mapped_column(Integer, default=0)
    broadcast_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    stage_changed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Touched by every step run (and every confirmation poll); the sweeper re-drives transfers
    # whose heartbeat is older than its deadline, which a lost Celery message leaves behind.
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # One driver at a time. `driver_seq` is the fencing token: it moves on every hand-over (a
    # step picking up its message, a step handing the transfer to the next message, a re-drive),
    # and every write of a step checks it is still the one the step took. `lease_until` is the
    # running step's lease; NULL while the transfer waits in the outbox/queue or is final/held.
    driver_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    generation: Mapped[int] = mapped_column(Integer, default=0)  # re-drives by the sweeper or replay
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)  # committed before each send RPC
    broadcast_at: Mapped[datetime | None] = mapped_column(DateTime)  # first broadcast
    last_broadcast_at: Mapped[datetime | None] = mapped_column(DateTime)
    finalized_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Set while the chain's confirmation tracker drives it (BROADCAST/CONFIRMING): no message, no lease.
    tracked_at: Mapped[datetime | None] = mapped_column(DateTime)
    # TRANSFER (a client's), or NOOP: a zero-value self-transfer the pipeline sends to fill an
    # account nonce that its transfer can no longer use while later nonces wait behind it.
    kind: Mapped[str] = mapped_column(String(8), default="TRANSFER", server_default="TRANSFER")
    # Why it waits, while something is being done about it: bumping, waiting_for_funds,
    # at_fee_cap, change_below_dust, nonce_released (`paratro stuck`); None when nothing is.
    stuck_reason: Mapped[str | None] = mapped_column(String(32))
    # The bump clock: the head and time when the tracker first saw the latest send (or the last
    # bump check); the tracker hands the transfer to the bump step once the chain's replacement
    # policy has passed since. NULL: not armed yet (the next tick arms it).
    bump_armed_head: Mapped[int | None] = mapped_column(BigInteger)
    bump_armed_at: Mapped[datetime | None] = mapped_column(DateTime)


class TransactionAttempt(Base):
    """One signed transaction of a transfer: the original, each fee bump (same nonce or inputs),
    each re-signing after a proven expiry. The transfer row holds the latest; these rows keep
    every one that may still land, so the tracker watches them all and the ledger settles with the
    one that did (`state`: LIVE may land; DEAD proven never to; LANDED settled the transfer)."""

    __tablename__ = "transaction_attempts"
    __table_args__ = (UniqueConstraint("transaction_id", "number", name="uq_attempt_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("transactions.transaction_id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # the transfer's replacement_count when it was signed
    kind: Mapped[str] = mapped_column(String(8))  # ORIGINAL, BUMP, RESIGN, NOOP
    tx_hash: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    fee_params: Mapped[str | None] = mapped_column(Text)  # the FeeQuote it was built with (JSON)
    max_fee: Mapped[int | None] = mapped_column(BaseUnits)
    signed_payload: Mapped[bytes] = mapped_column(LargeBinary)
    build_context: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(8), default="LIVE")
    signed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)  # first send (committed before the RPC)


class TransactionEvent(Base):
    """One row per stage change: the audit trail of a transfer."""

    __tablename__ = "transaction_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("transactions.transaction_id"), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(32))
    to_stage: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ChainTracker(Base):
    """One row per chain: the confirmation tracker's lease (one live tick per chain), its
    adapter cursor, and when it last finished a tick (the sweeper leaves tracked transfers alone
    while that is recent)."""

    __tablename__ = "chain_trackers"

    chain: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text, default="{}")  # the adapter's JSON state
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    ticked_at: Mapped[datetime | None] = mapped_column(DateTime)
    head: Mapped[int | None] = mapped_column(BigInteger)
    tracked: Mapped[int] = mapped_column(Integer, default=0)  # transfers it still followed after its last tick


class OutboxMessage(Base):
    """A message to publish, written in the same DB transaction as the change that calls for it.

    Publishing follows the commit; a row stays until the step it dispatches picks it up (which
    deletes it), so a message lost on the way (broker down, process killed, Redis restarted) is
    published again by the relay once `due_at` passes. `seq` is the transfer's fencing token the
    message carries: a copy published twice is harmless, the second pick-up finds it superseded.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), default="step")
    transaction_id: Mapped[str] = mapped_column(String(40), index=True)
    step: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(Integer, default=0)  # transient errors so far (retry backoff)
    countdown_ms: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # publications by the relay
    due_at: Mapped[datetime] = mapped_column(DateTime)  # publish (again) if still here by then
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WebhookEvent(Base):
    """One event for a client's webhook, written in the DB transaction of the change it reports.

    The row is its own outbox: the dispatcher delivers rows whose `next_attempt_at` has passed,
    and records every attempt. `payload` is the exact JSON body sent on every attempt, so
    `event_id`, `sequence` and `data` are the same across retries and resends.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_due", "status", "next_attempt_at"),)

    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    type: Mapped[str] = mapped_column(String(40))
    resource_id: Mapped[str] = mapped_column(String(40), index=True)
    sequence: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="PENDING")  # PENDING, DELIVERED, FAILED
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WebhookAttempt(Base):
    """One POST of an event: what came back and how long it took (never the URL or the secret)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.event_id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered, retry, failed
    error: Mapped[str | None] = mapped_column(String(300))


class LedgerEntry(Base):
    """Every change of an asset's balance, so that DB balances can be explained and reconciled."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[str] = mapped_column(ForeignKey("assets.asset_id"), index=True)
    transaction_id: Mapped[str | None] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # DEPOSIT, DEBIT, FEE
    amount: Mapped[int] = mapped_column(BaseUnits)  # signed: credits > 0, debits < 0
    reference: Mapped[str | None] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class UtxoReservation(Base):
    """An output a pending transfer will spend. The primary key makes a second claim on the same
    output fail inside the DB transaction, so two transfers never select the same UTXO."""

    __tablename__ = "utxo_reservations"

    chain: Mapped[str] = mapped_column(String(32), primary_key=True)
    outpoint: Mapped[str] = mapped_column(String(80), primary_key=True)  # txid:vout
    transaction_id: Mapped[str] = mapped_column(String(40), index=True)
    address: Mapped[str] = mapped_column(String(128))  # the spending address
    value: Mapped[int] = mapped_column(BaseUnits)
    reserved_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class NonceCursor(Base):
    """Next nonce to hand out for an account on an account-nonce chain (EVM)."""

    __tablename__ = "nonce_cursors"

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)


class ReleasedNonce(Base):
    """A nonce that was handed out but never reached the chain; the next allocation reuses it,
    so a failed-before-broadcast transfer leaves no gap that would stall the account."""

    __tablename__ = "released_nonces"

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    nonce: Mapped[int] = mapped_column(BigInteger, primary_key=True)
