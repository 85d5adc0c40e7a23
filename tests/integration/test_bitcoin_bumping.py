"""Bitcoin RBF through the whole stack: a transfer whose fee rate falls below the node's estimate
(a fee-rate spike) is replaced by its chain's tracker and the bump step, spending the same inputs
at a higher rate, and the transfer settles with the replacement's fee — against the real Bitcoin
devnet node, the stack's worker, tracker and database.

The transfer is driven here up to its signature (so the spike starts after its fee was quoted)
and sent here; from then on the stack's worker does everything."""

from __future__ import annotations

import time

from sqlalchemy import select

from pipeline.models import Transaction

from pipeline.models import TransactionAttempt
from tests.integration import helpers as h
from workers.stack import EmbeddedStack

SPIKE_SAT_VB = 60  # the devnet's normal estimate is 2 sat/vB: a transfer quoted before waits


def test_a_bitcoin_transfer_below_the_fee_estimate_is_replaced_by_fee_and_settles_once(stack: EmbeddedStack) -> None:
    h.once_per_session(stack, "the bump step's PostgreSQL side runs in the EVM fee-bump tests")
    # Given a BTC transfer signed at the normal fee rate, then a fee-rate spike before it is sent
    node = stack.nodes["bitcoin"]
    f = h.funded(stack, "bitcoin", {"BTC": "1"})
    to = h.fresh_address("bitcoin")
    tx_id = h.record_only(f, "BTC", "0.1", to=to)
    for step in ("resolve_source", "validate_destination", "lock_funds", "request_signature"):
        h.drive(h.ctx(), step, tx_id)
    first = h.load(tx_id)
    node.set_min_fee_rate(SPIKE_SAT_VB)
    try:
        # When it is sent: it stays in the mempool (blocks take only transactions at the spike rate)
        h.drive(h.ctx(), "broadcast", tx_id)
        assert h.load(tx_id).stage == "BROADCAST"
        # Then after rbf_after_s the tracker hands it to the bump step: same inputs, higher rate
        bumped = _replaced(tx_id, timeout=60)
        assert bumped.tx_hash != first.tx_hash
        final = h.wait_final([tx_id], timeout=90)[tx_id]
    finally:
        node.set_min_fee_rate(0)
    # And it settles once, with the replacement's fee, and every attempt is on record
    assert final.status == "CONFIRMED" and final.fee_paid > first.fee_reserved
    assert final.tx_hash == bumped.tx_hash
    with h.ctx().db.unit_of_work() as session:
        states = [(a.kind, a.state) for a in session.scalars(
            select(TransactionAttempt).where(TransactionAttempt.transaction_id == tx_id).order_by(TransactionAttempt.number))]
    assert states[0] == ("ORIGINAL", "DEAD") and states[-1] == ("BUMP", "LANDED")
    assert "fee_bump" in [e.reason for e in h.events(tx_id)]
    assert h.balance_on_chain("bitcoin", to, "BTC") == 10_000_000  # paid once
    h.assert_reconciled(f)


def _replaced(tx_id: str, timeout: float) -> Transaction:
    """The transfer once a replacement of it has been sent."""
    deadline = time.monotonic() + timeout
    while True:
        tx = h.load(tx_id)
        if tx.replacement_count >= 1 and tx.stage in ("BROADCAST", "CONFIRMING", "CONFIRMED"):
            return tx
        assert time.monotonic() < deadline, f"never replaced: {tx.stage} {tx.stuck_reason} {tx.last_error}"
        time.sleep(0.1)
