"""Fee bumps, fall-backs and nonce gaps over the in-memory fakes: the rules that keep a transfer
from being paid twice, settled with the wrong fee, failed while an attempt may land, or stuck."""

from __future__ import annotations

from datetime import timedelta

from chains.base import FeeQuote, TxState, TxStatus
from chains.errors import BumpRefused, TransactionRejected
from pipeline import nonces
from pipeline.models import ReleasedNonce, Transaction, TransactionAttempt, WebhookEvent, utcnow
from pipeline.sealing import SecretBox, new_secrets_key
from pipeline.steps import OutcomeKind
from pipeline.webhooks import configure_webhook
from signer.base import SignerError
from sqlalchemy import select
from tests.unit.fakes import PENDING, World, included

ETH = 10**18
GWEI = 10**9
FIRST_FEE = 21_000 * GWEI  # the fakes' default quote
BUMPED = FeeQuote(max_fee=21_000 * 3 * GWEI, params={"gas": 21_000, "gasPrice": 3 * GWEI})


class Refusing:
    """The world's signer, refusing every request for good (a policy engine saying no)."""

    def __init__(self, world: World) -> None:
        self.inner = world.signer

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def request_signature(self, *args: object) -> None:
        raise SignerError("policy refuses")


def attempts_of(world: World, tx_id: str) -> list[tuple[str, str, int | None]]:
    with world.db.unit_of_work() as s:
        rows = s.scalars(select(TransactionAttempt).where(TransactionAttempt.transaction_id == tx_id)
                         .order_by(TransactionAttempt.number))
        return [(row.kind, row.state, row.max_fee) for row in rows]


def bump(world: World, tx_id: str) -> None:
    world.adapter().replacement_quotes = [BUMPED]
    assert world.step("bump_fee", tx_id).stage.value == "FUNDS_LOCKED"


def test_a_bump_locks_the_extra_reserve_and_settles_with_the_original_if_that_one_lands(world: World) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = world.sent(alice)
    first = world.tx(tx_id).tx_hash
    bump(world, tx_id)
    assert world.balances(alice, "ETH") == (2 * ETH, ETH + BUMPED.max_fee)  # the extra locked, atomically
    world.step("request_signature", tx_id)
    world.step("broadcast", tx_id)
    # the chain mined the original after all (the confirm step asks about every live attempt)
    world.adapter().statuses = [TxStatus(TxState.NOT_FOUND), included(12, fee_paid=FIRST_FEE // 2)]
    assert world.step("confirm", tx_id).kind is OutcomeKind.FINAL
    tx = world.tx(tx_id)
    assert (tx.status, tx.tx_hash, tx.fee_paid) == ("CONFIRMED", first, FIRST_FEE // 2)
    assert world.balances(alice, "ETH") == (2 * ETH - ETH - FIRST_FEE // 2, 0)  # the fee that was paid, once
    assert attempts_of(world, tx_id) == [("ORIGINAL", "LANDED", FIRST_FEE), ("BUMP", "DEAD", BUMPED.max_fee)]


def test_a_bump_the_signer_refuses_falls_back_to_the_original_and_never_fails(world: World) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = world.sent(alice)
    first = world.tx(tx_id).tx_hash
    bump(world, tx_id)
    world.step("request_signature", tx_id, world.ctx(signer=Refusing(world)))
    tx = world.tx(tx_id)
    assert (tx.status, tx.stage, tx.tx_hash) == ("PENDING", "BROADCAST", first)
    assert "replacement_abandoned" in [e.reason for e in world.events(tx_id)]
    assert world.balances(alice, "ETH")[1] == ETH + BUMPED.max_fee  # locks kept: the original may land


def test_a_bump_refused_at_the_cap_keeps_the_transaction_and_says_why(world: World) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = world.sent(alice)
    world.adapter().replacement_quotes = [BumpRefused("at_fee_cap", "gasPrice cannot rise under the cap")]
    world.step("bump_fee", tx_id)
    tx = world.tx(tx_id)
    assert (tx.stage, tx.stuck_reason, tx.replacement_count) == ("BROADCAST", "at_fee_cap", 0)


def test_no_bump_is_made_for_a_transaction_that_pays_the_market_price(world: World) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = world.sent(alice)
    world.adapter().replacement_quotes = [None]
    world.step("bump_fee", tx_id)
    assert (world.tx(tx_id).stage, world.tx(tx_id).replacement_count) == ("BROADCAST", 0)
    assert world.balances(alice, "ETH")[1] == ETH + FIRST_FEE


def test_a_bump_the_balance_cannot_cover_waits_for_funds(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH + FIRST_FEE})
    tx_id = world.sent(alice)
    world.adapter().replacement_quotes = [BUMPED]
    world.step("bump_fee", tx_id)
    tx = world.tx(tx_id)
    assert (tx.stage, tx.stuck_reason, tx.replacement_count) == ("BROADCAST", "waiting_for_funds", 0)
    assert world.balances(alice, "ETH") == (ETH + FIRST_FEE, ETH + FIRST_FEE)  # nothing more locked


def test_a_nonce_is_given_back_only_if_no_transaction_with_it_was_ever_sent(world: World) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = world.sent(alice)
    nonce = world.tx(tx_id).nonce
    # re-signed at a new nonce after proof that another transaction took the old one
    world.adapter().statuses = [TxStatus(TxState.NOT_FOUND)]
    world.adapter().nonce_taken = "0x" + "ab" * 32
    world.edit(tx_id, lambda tx: setattr(tx, "last_broadcast_at", utcnow() - timedelta(seconds=60)))
    assert world.step("confirm", tx_id).stage.value == "FUNDS_LOCKED"
    world.adapter().chain_nonce = nonce + 5
    world.adapter().nonce_taken = None
    world.step("request_signature", tx_id, world.ctx(signer=Refusing(world)))
    tx = world.tx(tx_id)
    assert tx.status == "FAILED" and tx.nonce != nonce
    with world.db.unit_of_work() as s:
        released = [row.nonce for row in s.scalars(select(ReleasedNonce).where(ReleasedNonce.account_id == alice.account_id))]
    assert released == [tx.nonce]  # the new nonce, never sent, is given back; the used one is not


def test_a_gap_fill_short_of_its_fee_waits_instead_of_failing_and_coming_back_every_tick(world: World) -> None:
    bob = world.onboard(balances={"ETH": 1})
    noop = world.gap_fill(bob, 3)
    outcome = world.step("lock_funds", noop)
    tx = world.tx(noop)
    assert (outcome.kind, tx.status, tx.stuck_reason, tx.nonce) == (OutcomeKind.WAIT, "PENDING", "waiting_for_funds", 3)


def test_a_failed_gap_fill_is_not_made_again_at_once(world: World) -> None:
    bob = world.onboard(balances={"ETH": 2 * ETH})
    later = world.sent(bob)  # nonce 0 in flight
    with world.db.unit_of_work() as s:
        s.get(Transaction, later).nonce = 5
    noop = world.gap_fill(bob, 4)
    world.edit(noop, lambda tx: (setattr(tx, "status", "FAILED"), setattr(tx, "finalized_at", utcnow())))
    with world.db.unit_of_work() as s:
        s.add(ReleasedNonce(account_id=bob.account_id, nonce=4))
    with world.db.unit_of_work() as s:
        assert nonces.find_gaps(s, "ethereum") == []  # within GAP_RETRY_S of the failed fill
    world.edit(noop, lambda tx: setattr(tx, "finalized_at", utcnow() - timedelta(seconds=nonces.GAP_RETRY_S + 1)))
    with world.db.unit_of_work() as s:
        assert nonces.find_gaps(s, "ethereum") == [nonces.Gap(bob.account_id, 4)]


def test_a_gap_fill_sends_no_webhook_to_the_client(world: World) -> None:
    bob = world.onboard(balances={"ETH": 2 * ETH})
    with world.db.unit_of_work() as s:
        configure_webhook(s, SecretBox(new_secrets_key()), bob.client_id, "http://127.0.0.1:9/h", ["transaction.stage"],
                          devnet=True)
    noop = world.gap_fill(bob, 0)
    world.step("lock_funds", noop)
    mine = world.transfer(bob, "1")
    world.step("resolve_source", mine)
    with world.db.unit_of_work() as s:
        assert s.scalar(select(WebhookEvent).where(WebhookEvent.resource_id == noop)) is None
        assert s.scalar(select(WebhookEvent).where(WebhookEvent.resource_id == mine)) is not None  # the client's own: yes


def test_an_underpriced_refusal_is_bumped_not_failed(world: World) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    world.adapter().broadcast_errors = [TransactionRejected("replacement_underpriced", "max fee per gas less than block base fee")]
    world.adapter().replacement_quotes = [BUMPED]
    tx_id = world.transfer(alice, "1")
    world.run_until(tx_id, "request_signature")
    world.step("broadcast", tx_id)
    tx = world.tx(tx_id)
    assert (tx.status, tx.stage, tx.replacement_count, tx.fee_reserved) == ("PENDING", "FUNDS_LOCKED", 1, BUMPED.max_fee)


def test_each_tick_moves_a_cursor_behind_the_chain_up_and_forgets_released_nonces_the_chain_used(world: World) -> None:
    carol = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = world.sent(carol)  # allocates nonce 0: the cursor is at 1
    with world.db.unit_of_work() as s:
        s.add(ReleasedNonce(account_id=carol.account_id, nonce=0))
        s.add(ReleasedNonce(account_id=carol.account_id, nonce=7))
    # the key was used outside the pipeline: the chain has mined up to nonce 4 and holds 5 pending
    with world.db.unit_of_work() as s:
        notes = nonces.reconcile(s, "ethereum", {world.tx(tx_id).from_address: (5, 6)})
    assert notes and "cursor 1 -> 6" in notes[0]
    with world.db.unit_of_work() as s:
        assert [row.nonce for row in s.scalars(select(ReleasedNonce).where(
            ReleasedNonce.account_id == carol.account_id))] == [7]
    world.adapter().statuses = [PENDING]
    later = world.transfer(carol, "0.1")
    world.run_until(later, "request_signature")
    assert world.tx(later).nonce == 7  # the released one first (still above the chain's), then 6, 8, ...
    with world.db.unit_of_work() as s:  # and never down
        assert nonces.reconcile(s, "ethereum", {world.tx(tx_id).from_address: (2, 3)}) == []


def test_a_tick_writes_nothing_for_nonces_when_cursor_and_chain_agree(world: World) -> None:
    dave = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = world.sent(dave)  # nonce 0 out: the cursor is at 1
    address = world.tx(tx_id).from_address
    with world.db.unit_of_work() as s:
        assert not nonces.drifted(s, "ethereum", {address: (0, 1)})  # mined 0, pending 1: in step
        assert nonces.drifted(s, "ethereum", {address: (0, 2)})  # one pending that is not ours
        s.add(ReleasedNonce(account_id=dave.account_id, nonce=0))
    with world.db.unit_of_work() as s:
        assert nonces.drifted(s, "ethereum", {address: (1, 1)})  # a released nonce the chain has used
