"""The pipeline steps as plain functions of (StepContext, Run) -> Outcome: the six of every
transfer, and bump_fee for a sent transaction that waits too long."""

from pipeline.steps.bumping import bump_fee
from pipeline.steps.context import Outcome, OutcomeKind, StepContext
from pipeline.steps.prepare import lock_funds, resolve_source, validate_destination
from pipeline.steps.settlement import broadcast, confirm
from pipeline.steps.signing import request_signature

STEP_FUNCTIONS = {
    "resolve_source": resolve_source,
    "validate_destination": validate_destination,
    "lock_funds": lock_funds,
    "request_signature": request_signature,
    "broadcast": broadcast,
    "confirm": confirm,
    "bump_fee": bump_fee,
}

__all__ = ["Outcome", "OutcomeKind", "StepContext", "STEP_FUNCTIONS", *STEP_FUNCTIONS]
