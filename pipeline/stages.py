"""The transfer state machine as data.

Public `status` is what clients see (PENDING -> CONFIRMED | FAILED); the internal `stage` says
where the pipeline is. `TRANSITIONS` lists every allowed move; `ensure_stage` is the single check
each step makes before doing its work, so a redelivered task finds its work done and stands down.
"""

from __future__ import annotations

import enum

from pipeline.errors import InvalidTransition


class Status(str, enum.Enum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"


class Stage(str, enum.Enum):
    RECEIVED = "RECEIVED"
    SOURCE_RESOLVED = "SOURCE_RESOLVED"
    DESTINATION_VALID = "DESTINATION_VALID"
    FUNDS_LOCKED = "FUNDS_LOCKED"
    SIGNATURE_REQUESTED = "SIGNATURE_REQUESTED"
    SIGNED = "SIGNED"
    BROADCAST = "BROADCAST"
    CONFIRMING = "CONFIRMING"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"


class FailureReason(str, enum.Enum):
    """Why a transfer ended FAILED: the chain or the ledger said no."""

    SOURCE_NOT_FOUND = "source_not_found"
    INVALID_DESTINATION = "invalid_destination"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INSUFFICIENT_FUNDS_FOR_FEE = "insufficient_funds_for_fee"
    WALLET_NOT_ACTIVE = "wallet_not_active"
    SIGNATURE_REFUSED = "signature_refused"
    REJECTED_BY_NODE = "rejected_by_node"
    REVERTED = "reverted"
    EXPIRED = "expired"  # used as the reason of a replacement, never a final failure
    # Another transaction of the same account (the key used outside the pipeline) took this
    # transfer's nonce, proven from the block that holds it: the reason of a re-signing with a
    # new nonce; final only for a NOOP gap fill (the gap it was to fill is filled).
    NONCE_CONSUMED = "nonce_consumed"
    FEE_ABOVE_CAP = "fee_above_cap"  # the fee the chain would charge now exceeds the registry's cap


FINAL = frozenset({Stage.CONFIRMED, Stage.FAILED})

TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.RECEIVED: frozenset({Stage.SOURCE_RESOLVED, Stage.FAILED}),
    Stage.SOURCE_RESOLVED: frozenset({Stage.DESTINATION_VALID, Stage.FAILED}),
    Stage.DESTINATION_VALID: frozenset({Stage.FUNDS_LOCKED, Stage.FAILED}),
    # -> BROADCAST from the re-signing stages: a fee bump that cannot be signed or sent falls back
    # to the transaction it was to replace, which was sent and may still land.
    Stage.FUNDS_LOCKED: frozenset({Stage.SIGNATURE_REQUESTED, Stage.FAILED, Stage.BROADCAST}),
    Stage.SIGNATURE_REQUESTED: frozenset({Stage.SIGNED, Stage.FAILED, Stage.BROADCAST, Stage.FUNDS_LOCKED}),
    # Back to FUNDS_LOCKED = an explicit, recorded replacement: the signed transaction expired
    # (TRON expiration, Solana blockhash) and is proven not on chain, or is bumped to a higher fee
    # (EVM, Bitcoin); locks stay, it is re-signed. SIGNATURE_REQUESTED -> FUNDS_LOCKED: a signing
    # that stalled gives its nonce back (later nonces of the account wait behind it).
    Stage.SIGNED: frozenset({Stage.BROADCAST, Stage.FAILED, Stage.FUNDS_LOCKED}),
    Stage.BROADCAST: frozenset({Stage.CONFIRMING, Stage.CONFIRMED, Stage.FAILED, Stage.FUNDS_LOCKED}),
    # A receipt whose block left the canonical chain sends the transfer back to BROADCAST.
    Stage.CONFIRMING: frozenset({Stage.CONFIRMED, Stage.FAILED, Stage.BROADCAST}),
    Stage.CONFIRMED: frozenset(),
    Stage.FAILED: frozenset(),
}

# The step that moves a transfer out of each stage; the sweeper and `replay` re-drive from here.
STEP_FOR_STAGE: dict[Stage, str] = {
    Stage.RECEIVED: "resolve_source",
    Stage.SOURCE_RESOLVED: "validate_destination",
    Stage.DESTINATION_VALID: "lock_funds",
    Stage.FUNDS_LOCKED: "request_signature",
    Stage.SIGNATURE_REQUESTED: "request_signature",
    Stage.SIGNED: "broadcast",
    Stage.BROADCAST: "confirm",
    Stage.CONFIRMING: "confirm",
}

# Followed by the chain's confirmation tracker (pipeline.tracking), not by step messages.
TRACKED_STAGES = frozenset({Stage.BROADCAST, Stage.CONFIRMING})

STEPS: tuple[str, ...] = (
    "resolve_source",
    "validate_destination",
    "lock_funds",
    "request_signature",
    "broadcast",
    "confirm",
    "bump_fee",  # not in the line: the tracker hands a transfer to it when its transaction waits too long
)


def status_for(stage: Stage) -> Status:
    if stage is Stage.CONFIRMED:
        return Status.CONFIRMED
    if stage is Stage.FAILED:
        return Status.FAILED
    return Status.PENDING


def check_transition(current: Stage, new: Stage) -> None:
    """Raise InvalidTransition unless `current -> new` is allowed."""
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"stage {current.value} cannot move to {new.value}")
