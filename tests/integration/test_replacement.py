"""An expired transaction is re-signed as an explicit, recorded replacement — against the real TRON
devnet node, the real database and the real signer (the steps run in this process so the test can
use a one-second expiration window; everything else is the stack's)."""

from __future__ import annotations

import time
from dataclasses import replace

from chains.base import TxState
from chains.tron import TronAdapter
from pipeline.amounts import parse_amount
from pipeline.steps import OutcomeKind
from pipeline.steps.context import signed_of
from pipeline.stages import Stage
from tests.integration import helpers as h


def test_an_expired_tron_transfer_is_replaced_once_and_confirms(stack):
    # Given a TRON transfer signed with a 1-second expiration window, held from the sweeper
    f = h.funded(stack, "tron", {"TRX": "50"})
    spec = h.ctx().registry.chain("tron")
    hasty = TronAdapter(replace(spec, options={**spec.options, "expiration_s": 1}))
    ctx = replace(h.ctx(), adapter_for=lambda chain: hasty if chain == "tron" else h.ctx().adapter_for(chain))
    to = h.fresh_address("tron")
    tx_id = h.record_only(f, "TRX", "5", to=to)  # never published: the stack's worker leaves it to us
    for step in ("resolve_source", "validate_destination", "lock_funds", "request_signature"):
        assert h.drive(ctx, step, tx_id).kind is OutcomeKind.ADVANCED
    first = h.load(tx_id)
    signed = signed_of(first)

    # When its expiration passes before it is broadcast (proven: past the solidified head, unknown)
    deadline = time.monotonic() + 30
    while hasty.get_status(signed).state is not TxState.EXPIRED:
        assert time.monotonic() < deadline, "never became provably expired"
        time.sleep(0.2)
    outcome = h.drive(ctx, "broadcast", tx_id)

    # Then it goes back to FUNDS_LOCKED with an `expired` event naming the old hash, locks kept
    assert (outcome.kind, outcome.stage, outcome.step) == (OutcomeKind.RESTART, Stage.FUNDS_LOCKED, "request_signature")
    replaced = h.load(tx_id)
    assert replaced.replacement_count == 1 and replaced.tx_hash is None
    event = h.events(tx_id)[-1]
    assert (event.to_stage, event.reason) == ("FUNDS_LOCKED", "expired") and first.tx_hash in event.detail
    assert h.asset(f.assets["TRX"]).locked_balance == replaced.amount + replaced.fee_reserved

    # And the re-signed transaction (new request id, new hash) is broadcast and confirmed once
    assert h.drive(ctx, "request_signature", tx_id).stage is Stage.SIGNED
    second = h.load(tx_id)
    assert second.signature_request_id == f"{tx_id}.1" and second.tx_hash != first.tx_hash
    assert h.drive(ctx, "broadcast", tx_id).stage is Stage.BROADCAST
    deadline = time.monotonic() + 30
    while h.drive(ctx, "confirm", tx_id).kind is not OutcomeKind.FINAL:
        assert time.monotonic() < deadline, "replacement never confirmed"
        time.sleep(0.25)
    final = h.load(tx_id)
    assert (final.status, final.broadcast_count) == ("CONFIRMED", 1)
    assert h.balance_on_chain("tron", to, "TRX") == parse_amount("5", 6)  # paid once, not twice
    h.assert_reconciled(f)
