"""The per-chain confirmation tracker: broadcast transfers are followed by one tick per chain, with
the one-driver rule (token + attempt checked at every write), one tick per chain at a time, the
sweeper taking over when the tracker stops, and unusual cases handed to the confirm step."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from chains.base import TxState, TxStatus
from pipeline.models import Asset, ChainTracker, OutboxMessage, Transaction, utcnow
from pipeline.recovery import claim_stalled
from pipeline.stages import Stage
from pipeline.tracking import TrackerLimits, acquire, decide, read_followed, tick
from tests.unit.fakes import DEFAULT_FEE, DEFAULT_FEE_PAID, PENDING, World, included, reverted

ETH = 10**18
LIMITS = TrackerLimits(recheck_s=15.0, confirm_timeout_s=1800.0, handoffs_per_tick=200, publish_grace_s=120.0)


def broadcast_by_runner(world: World) -> tuple[object, str]:
    """A transfer driven through the runner up to its broadcast: the runner hands it to the tracker."""
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    for step in ("resolve_source", "validate_destination", "lock_funds", "request_signature", "request_signature",
                 "broadcast"):
        if world.tx(tx_id).stage == Stage.BROADCAST.value:
            break
        world.deliver(step, tx_id)
    assert world.tx(tx_id).stage == Stage.BROADCAST.value
    return alice, tx_id


def outbox_rows(world: World, tx_id: str) -> list[OutboxMessage]:
    with world.db.unit_of_work() as s:
        return list(s.scalars(select(OutboxMessage).where(OutboxMessage.transaction_id == tx_id)))


def test_a_broadcast_transfer_is_handed_to_the_tracker_without_a_message(world: World) -> None:
    _, tx_id = broadcast_by_runner(world)
    tx = world.tx(tx_id)
    assert tx.tracked_at is not None and tx.lease_until is None
    assert outbox_rows(world, tx_id) == []


def test_a_tick_moves_a_transfer_to_confirming_then_settles_it_at_depth(world: World) -> None:
    alice, tx_id = broadcast_by_runner(world)
    adapter = world.adapter()
    adapter.statuses = [included(confirmations=1)]
    report = tick(world.ctx(), "ethereum", LIMITS)
    assert (report.tracked, report.news, report.confirming) == (1, 1, 1)
    assert world.tx(tx_id).stage == Stage.CONFIRMING.value
    assert world.balances(alice, "ETH")[1] == 10**17 + DEFAULT_FEE.max_fee  # still locked

    adapter.statuses = [included(confirmations=3)]
    report = tick(world.ctx(), "ethereum", LIMITS)
    assert report.confirmed == 1
    tx = world.tx(tx_id)
    assert (tx.status, tx.tracked_at, tx.fee_paid) == ("CONFIRMED", None, DEFAULT_FEE_PAID)
    assert world.balances(alice, "ETH") == (ETH - 10**17 - DEFAULT_FEE_PAID, 0)
    assert [to for _, to in world.stage_changes(tx_id)][-2:] == ["CONFIRMING", "CONFIRMED"]
    assert tick(world.ctx(), "ethereum", LIMITS).ran is False  # nothing left to follow: no RPC


def test_a_revert_is_settled_as_failed_with_the_fee_paid(world: World) -> None:
    alice, tx_id = broadcast_by_runner(world)
    world.adapter().statuses = [reverted(confirmations=3)]
    assert tick(world.ctx(), "ethereum", LIMITS).failed == 1
    tx = world.tx(tx_id)
    assert (tx.status, tx.failure_reason) == ("FAILED", "reverted")
    assert world.balances(alice, "ETH") == (ETH - DEFAULT_FEE_PAID, 0)


def test_a_transfer_another_driver_took_between_read_and_write_is_not_written(world: World) -> None:
    _, tx_id = broadcast_by_runner(world)
    with world.db.unit_of_work() as s:
        followed = read_followed(s, "ethereum")
    world.edit(tx_id, lambda tx: setattr(tx, "driver_seq", tx.driver_seq + 1))  # e.g. a forced replay
    from pipeline.tracking import TickReport, apply
    from chains.base import Observation
    observation = Observation(head=10, statuses={tx_id: included(confirmations=3)})
    report = TickReport("ethereum")
    apply(world.ctx(), decide(followed, observation, 3, LIMITS, utcnow()), 3, LIMITS, report)
    assert (report.superseded, report.confirmed) == (1, 0)
    assert world.tx(tx_id).status == "PENDING"


def test_one_tick_per_chain_at_a_time(world: World) -> None:
    with world.db.unit_of_work() as s:
        first = acquire(s, "ethereum")
    with world.db.unit_of_work() as s:
        assert acquire(s, "ethereum") is None  # the first tick's lease is live
        assert acquire(s, "bsc") is not None  # another chain is its own tracker
    assert first is not None


def test_a_quiet_transfer_goes_to_the_confirm_step_and_comes_back_when_waiting(world: World) -> None:
    _, tx_id = broadcast_by_runner(world)
    world.adapter().statuses = [PENDING]
    assert tick(world.ctx(), "ethereum", LIMITS).handed == 0  # no news, but not quiet long enough
    world.edit(tx_id, lambda tx: setattr(tx, "tracked_at", utcnow() - timedelta(seconds=60)))
    world.edit(tx_id, lambda tx: setattr(tx, "last_broadcast_at", utcnow() - timedelta(seconds=60)))
    report = tick(world.ctx(), "ethereum", LIMITS)
    assert report.handed == 1 and len(report.dispatches) == 1
    assert world.tx(tx_id).tracked_at is None and [r.step for r in outbox_rows(world, tx_id)] == ["confirm"]
    world.deliver("confirm", tx_id)  # the node has it pending: the confirm step hands it back
    tx = world.tx(tx_id)
    assert tx.tracked_at is not None and outbox_rows(world, tx_id) == []


def test_a_reorg_of_a_seen_block_goes_to_the_confirm_step(world: World) -> None:
    _, tx_id = broadcast_by_runner(world)
    world.adapter().statuses = [included(confirmations=1)]
    tick(world.ctx(), "ethereum", LIMITS)
    world.adapter().statuses = [TxStatus(TxState.NOT_FOUND)]
    report = tick(world.ctx(), "ethereum", LIMITS)
    assert report.handed == 1
    world.deliver("confirm", tx_id)
    assert world.tx(tx_id).stage == Stage.BROADCAST.value  # the confirm step's reorg handling


def test_the_sweeper_leaves_tracked_transfers_to_a_ticking_tracker_and_takes_them_when_it_stops(world: World) -> None:
    _, tx_id = broadcast_by_runner(world)
    world.adapter().statuses = [PENDING]
    tick(world.ctx(), "ethereum", LIMITS)
    world.edit(tx_id, lambda tx: setattr(tx, "heartbeat_at", utcnow() - timedelta(seconds=600)))
    with world.db.unit_of_work() as s:
        assert claim_stalled(s, park_s=120) == []  # the tracker ticked just now
    with world.db.unit_of_work() as s:
        s.get(ChainTracker, "ethereum").ticked_at = utcnow() - timedelta(seconds=600)
    with world.db.unit_of_work() as s:
        claimed = claim_stalled(s, park_s=120)
    assert [(c.transaction_id, c.step) for c in claimed] == [(tx_id, "confirm")]
    assert world.tx(tx_id).tracked_at is None


def test_hand_offs_per_tick_are_bounded_oldest_first(world: World) -> None:
    ids = [broadcast_by_runner(world)[1] for _ in range(3)]
    for age, tx_id in zip((300, 100, 200), ids):
        world.edit(tx_id, lambda tx, age=age: setattr(tx, "tracked_at", utcnow() - timedelta(seconds=age)))
        world.edit(tx_id, lambda tx, age=age: setattr(tx, "last_broadcast_at", utcnow() - timedelta(seconds=age)))
    world.adapter().statuses = [PENDING]
    limits = TrackerLimits(recheck_s=15.0, handoffs_per_tick=2)
    report = tick(world.ctx(), "ethereum", limits)
    assert report.handed == 2
    handed = {d.transaction_id for d in report.dispatches}
    assert handed == {ids[0], ids[2]}  # the two quiet the longest


def test_a_tick_reads_every_tracked_transfer_in_one_adapter_call(world: World) -> None:
    for _ in range(5):
        broadcast_by_runner(world)
    world.adapter().statuses = [PENDING]
    tick(world.ctx(), "ethereum", LIMITS)
    assert world.adapter().track_calls == [5]
    with world.db.unit_of_work() as s:
        assert s.scalar(select(ChainTracker.tracked).where(ChainTracker.chain == "ethereum")) == 5
        assert s.scalar(select(Transaction.tracked_at).limit(1)) is not None


# --- one transfer's trouble stays with that transfer (hostile review F1, F3) ----------------------

class Scripted:
    """The fake adapter with track() answering a per-transfer script."""

    def __init__(self, inner: object, answers: dict[str, TxStatus]) -> None:
        self.inner, self.answers, self.calls = inner, answers, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def track(self, watched, cursor):  # type: ignore[no-untyped-def]
        from chains.base import Observation

        self.calls += 1
        statuses = {w.key: self.answers[w.key] for w in watched if w.key in self.answers}
        return Observation(head=200, statuses=statuses, cursor={"scanned": 200 + self.calls}, rpc_calls=1)


def scripted_ctx(world: World, adapter: Scripted):  # type: ignore[no-untyped-def]
    adapters = dict(world.adapters)
    adapters["ethereum"] = adapter  # type: ignore[assignment]
    return world.ctx(adapter_for=adapters.__getitem__)


@pytest.mark.parametrize("poison", ["fee_paid_missing", "ledger_invariant"])
def test_a_transfer_that_cannot_be_settled_goes_to_the_confirm_step_and_the_others_settle(world: World,
                                                                                         poison: str) -> None:
    bad_party, bad = broadcast_by_runner(world)
    _, good = broadcast_by_runner(world)
    answers = {good: included(confirmations=3)}
    if poison == "fee_paid_missing":  # an adapter breaking the contract for one transaction
        answers[bad] = included(confirmations=3, fee_paid=None)
    else:  # an ops ledger fix left less locked than this transfer holds
        answers[bad] = included(confirmations=3)
        with world.db.unit_of_work() as s:
            s.get(Asset, bad_party.assets["ETH"]).locked_balance -= 1
    report = tick(scripted_ctx(world, Scripted(world.adapter(), answers)), "ethereum", LIMITS)
    assert (report.confirmed, report.errors, report.handed, report.error) == (1, 1, 1, None)
    assert world.tx(good).status == "CONFIRMED"
    bad_tx = world.tx(bad)
    assert (bad_tx.status, bad_tx.stage, bad_tx.tracked_at) == ("PENDING", "BROADCAST", None)
    assert [r.step for r in outbox_rows(world, bad)] == ["confirm"]  # the confirm step holds it with the reason
    assert world.ledger_entries(bad) == []  # nothing of the failed settlement was written


def test_a_failed_tick_does_not_count_as_a_tick(world: World) -> None:
    """The sweeper takes a chain's transfers over only when its tracker stops ticking: a tick that
    fails (node down) must not look like one that followed them, nor move the cursor."""
    _, tx_id = broadcast_by_runner(world)
    adapter = world.adapter()

    def down(watched, cursor):  # type: ignore[no-untyped-def]
        from chains.errors import ChainRpcError

        raise ChainRpcError("connection refused")

    adapter.track = down  # type: ignore[method-assign]
    report = tick(world.ctx(), "ethereum", LIMITS)
    assert report.error is not None and "connection refused" in report.error
    with world.db.unit_of_work() as s:
        row = s.get(ChainTracker, "ethereum")
        assert (row.ticked_at, row.lease_until, row.cursor) == (None, None, "{}")  # lease given back


def test_an_unreadable_row_is_handed_to_the_confirm_step_and_the_rest_is_followed(world: World) -> None:
    _, bad = broadcast_by_runner(world)
    _, good = broadcast_by_runner(world)
    world.edit(bad, lambda tx: setattr(tx, "build_context", "{not json"))
    adapter = Scripted(world.adapter(), {good: included(confirmations=3)})
    report = tick(scripted_ctx(world, adapter), "ethereum", LIMITS)
    assert adapter.calls == 1 and world.tx(good).status == "CONFIRMED"
    assert report.handed == 1 and [r.step for r in outbox_rows(world, bad)] == ["confirm"]


# --- quiet transfers are asked about ever more rarely (hostile review F2) ---------------------------

def test_a_shallow_confirming_transfer_is_rechecked_ever_more_rarely(world: World) -> None:
    _, tx_id = broadcast_by_runner(world)
    adapter = Scripted(world.adapter(), {tx_id: included(confirmations=1)})
    ctx = scripted_ctx(world, adapter)
    tick(ctx, "ethereum", LIMITS)
    adapter.answers.clear()  # seen and shallow: the EVM tracker does not ask again before depth
    hour_old = utcnow() - timedelta(hours=1)
    world.edit(tx_id, lambda tx: setattr(tx, "broadcast_at", hour_old))
    world.edit(tx_id, lambda tx: setattr(tx, "tracked_at", utcnow() - timedelta(minutes=10)))
    world.edit(tx_id, lambda tx: setattr(tx, "last_broadcast_at", utcnow() - timedelta(minutes=10)))
    assert tick(ctx, "ethereum", LIMITS).handed == 0  # an hour old: asked again after a quarter of that
    world.edit(tx_id, lambda tx: setattr(tx, "tracked_at", utcnow() - timedelta(minutes=16)))
    world.edit(tx_id, lambda tx: setattr(tx, "last_broadcast_at", utcnow() - timedelta(minutes=16)))
    assert tick(ctx, "ethereum", LIMITS).handed == 1


def test_the_confirmation_timeout_never_loops_on_an_included_transfer(world: World) -> None:
    _, tx_id = broadcast_by_runner(world)
    adapter = Scripted(world.adapter(), {tx_id: included(confirmations=1)})
    ctx = scripted_ctx(world, adapter)
    tick(ctx, "ethereum", LIMITS)
    adapter.answers.clear()
    world.adapter().statuses = [included(confirmations=1)]
    world.edit(tx_id, lambda tx: setattr(tx, "broadcast_at", utcnow() - timedelta(seconds=1801)))
    handed = 0
    for _ in range(5):
        handed += tick(ctx, "ethereum", LIMITS).handed
        if world.tx(tx_id).tracked_at is None:
            world.deliver("confirm", tx_id)  # included below depth: WAIT, back to the tracker
    assert handed <= 1  # not once per tick


def test_ops_see_each_trackers_last_tick(world: World) -> None:
    from pipeline.stats import snapshot

    broadcast_by_runner(world)
    world.adapter().statuses = [PENDING]
    tick(world.ctx(), "ethereum", LIMITS)
    with world.db.unit_of_work() as s:
        state = snapshot(s, utcnow()).trackers["ethereum"]
    assert state.tracked == 1 and state.last_tick_age_s is not None and state.last_tick_age_s < 5


def test_an_idle_chain_forgets_its_cursor_and_a_live_one_keeps_it(world: World) -> None:
    """Blocks mined while nothing was tracked need no catching up; a tracker that was merely down
    keeps its cursor (its transfers are in those blocks)."""
    from pipeline.tracking import forget_idle_cursors, has_cursor

    _, tx_id = broadcast_by_runner(world)
    adapter = Scripted(world.adapter(), {})
    seen: list[dict] = []

    def track(watched, cursor):  # type: ignore[no-untyped-def]
        seen.append(dict(cursor))
        return Scripted.track(adapter, watched, cursor)

    adapter.track = track  # type: ignore[method-assign]
    tick(scripted_ctx(world, adapter), "ethereum", LIMITS)
    with world.db.unit_of_work() as s:
        s.get(ChainTracker, "ethereum").ticked_at = utcnow() - timedelta(minutes=10)  # down a while
    tick(scripted_ctx(world, adapter), "ethereum", LIMITS)
    assert seen == [{}, {"scanned": 201}]  # it continues where it stopped
    with world.db.unit_of_work() as s:
        assert has_cursor(s, ["ethereum"])
        assert forget_idle_cursors(s, ["ethereum"]) == ["ethereum"]  # (beat calls it for idle chains only)
    tick(scripted_ctx(world, adapter), "ethereum", LIMITS)
    assert seen[2] == {} and world.tx(tx_id).status == "PENDING"


def test_the_tracked_count_is_what_the_tracker_still_follows(world: World) -> None:
    _, tx_id = broadcast_by_runner(world)
    world.adapter().statuses = [included(confirmations=3)]
    tick(world.ctx(), "ethereum", LIMITS)
    with world.db.unit_of_work() as s:
        assert s.get(ChainTracker, "ethereum").tracked == 0  # settled: an idle chain, not a dead tracker


def test_a_database_error_of_one_transfers_own_data_stays_with_that_transfer(world: World, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A DataError (PostgreSQL: a value out of range) caused by one transfer is that transfer's
    trouble; only the database's own trouble (locked, gone) aborts the tick."""
    from sqlalchemy.exc import DataError

    from pipeline import tracking

    _, bad = broadcast_by_runner(world)
    _, good = broadcast_by_runner(world)
    real = tracking.record_inclusion

    def record(session, tx, status, depth):  # type: ignore[no-untyped-def]
        if tx.transaction_id == bad:
            raise DataError("UPDATE", {}, Exception("integer out of range"))
        return real(session, tx, status, depth)

    monkeypatch.setattr(tracking, "record_inclusion", record)
    adapter = Scripted(world.adapter(), {bad: included(confirmations=3), good: included(confirmations=3)})
    report = tick(scripted_ctx(world, adapter), "ethereum", LIMITS)
    assert report.error is None and (report.confirmed, report.errors) == (1, 1)
    assert world.tx(good).status == "CONFIRMED"
    assert [r.step for r in outbox_rows(world, bad)] == ["confirm"]
