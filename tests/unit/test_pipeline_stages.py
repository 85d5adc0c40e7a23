"""The transfer state machine is data: every listed move is allowed, everything else is refused."""

from __future__ import annotations

import itertools

import pytest

from pipeline.errors import InvalidTransition, PipelineError
from pipeline.stages import (
    FINAL,
    STEP_FOR_STAGE,
    STEPS,
    TRANSITIONS,
    FailureReason,
    Stage,
    Status,
    check_transition,
    status_for,
)

ALLOWED = [(current, new) for current, exits in TRANSITIONS.items() for new in sorted(exits)]
FORBIDDEN = [
    (current, new)
    for current, new in itertools.product(Stage, Stage)
    if new not in TRANSITIONS[current]
]


def test_every_stage_has_an_entry_in_the_transition_table() -> None:
    assert set(TRANSITIONS) == set(Stage)


@pytest.mark.parametrize(("current", "new"), ALLOWED, ids=[f"{a.value}->{b.value}" for a, b in ALLOWED])
def test_given_an_allowed_move_when_checked_then_it_passes(current: Stage, new: Stage) -> None:
    check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (Stage.RECEIVED, Stage.FUNDS_LOCKED),  # skipping steps
        (Stage.RECEIVED, Stage.CONFIRMED),
        (Stage.SOURCE_RESOLVED, Stage.RECEIVED),  # going backwards
        (Stage.FUNDS_LOCKED, Stage.SIGNED),  # signing without a recorded request
        (Stage.SIGNED, Stage.CONFIRMED),  # confirmed without ever being broadcast
        (Stage.SIGNED, Stage.SIGNED),  # self-loops are not stage changes
        (Stage.BROADCAST, Stage.SIGNED),  # no implicit re-signing
        (Stage.CONFIRMING, Stage.CONFIRMING),
        (Stage.CONFIRMED, Stage.FAILED),  # final is final
        (Stage.FAILED, Stage.RECEIVED),
        (Stage.FAILED, Stage.CONFIRMED),
    ],
)
def test_given_a_forbidden_move_when_checked_then_invalid_transition(current: Stage, new: Stage) -> None:
    with pytest.raises(InvalidTransition, match=f"{current.value} cannot move to {new.value}"):
        check_transition(current, new)


def test_the_whole_complement_of_the_table_is_refused() -> None:
    for current, new in FORBIDDEN:
        with pytest.raises(InvalidTransition):
            check_transition(current, new)


def test_invalid_transition_is_a_permanent_pipeline_error() -> None:
    assert issubclass(InvalidTransition, PipelineError)
    assert InvalidTransition.transient is False


@pytest.mark.parametrize("stage", sorted(FINAL))
def test_final_stages_have_no_exits(stage: Stage) -> None:
    assert TRANSITIONS[stage] == frozenset()
    assert stage not in STEP_FOR_STAGE  # nothing re-drives a finished transfer


def test_every_non_final_stage_can_fail_and_has_a_step_to_re_drive_it() -> None:
    for stage in set(Stage) - FINAL:
        assert Stage.FAILED in TRANSITIONS[stage]
        assert STEP_FOR_STAGE[stage] in STEPS


def test_every_stage_is_reachable_from_received() -> None:
    seen, frontier = {Stage.RECEIVED}, [Stage.RECEIVED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(Stage)


def test_a_reorg_can_send_confirming_back_to_broadcast() -> None:
    check_transition(Stage.CONFIRMING, Stage.BROADCAST)


@pytest.mark.parametrize(
    ("stage", "status"),
    [(Stage.CONFIRMED, Status.CONFIRMED), (Stage.FAILED, Status.FAILED)]
    + [(s, Status.PENDING) for s in Stage if s not in FINAL],
)
def test_status_for_keeps_the_public_status_pending_until_the_end(stage: Stage, status: Status) -> None:
    assert status_for(stage) is status


def test_failure_reasons_are_the_documented_codes() -> None:
    assert {r.value for r in FailureReason} == {
        "source_not_found", "invalid_destination", "insufficient_funds", "insufficient_funds_for_fee",
        "wallet_not_active", "signature_refused", "rejected_by_node", "reverted", "expired", "nonce_consumed",
        "fee_above_cap",
    }


def test_a_transfer_is_re_signed_only_from_signed_broadcast_or_a_stalled_signing() -> None:
    # the recorded replacement (expiry, fee bump) goes back to FUNDS_LOCKED (locks kept, re-signed),
    # and a stalled signing gives its nonce back the same way; nothing else does
    check_transition(Stage.SIGNED, Stage.FUNDS_LOCKED)
    check_transition(Stage.BROADCAST, Stage.FUNDS_LOCKED)
    check_transition(Stage.SIGNATURE_REQUESTED, Stage.FUNDS_LOCKED)
    assert {s for s, exits in TRANSITIONS.items() if Stage.FUNDS_LOCKED in exits} == {
        Stage.DESTINATION_VALID, Stage.SIGNATURE_REQUESTED, Stage.SIGNED, Stage.BROADCAST}


def test_only_a_re_signing_stage_falls_back_to_broadcast() -> None:
    # a bump that cannot be signed or sent goes on with the attempt it was to replace
    assert {s for s, exits in TRANSITIONS.items() if Stage.BROADCAST in exits} == {
        Stage.FUNDS_LOCKED, Stage.SIGNATURE_REQUESTED, Stage.SIGNED, Stage.CONFIRMING}
