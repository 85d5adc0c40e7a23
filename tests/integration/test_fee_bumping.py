"""Nothing stuck on an EVM chain, against a real anvil: fee bumps through a base-fee spike, a bump
at the fee cap that keeps the original, a bump waiting for funds, a send refused as underpriced,
a nonce gap filled by a NOOP transfer, and a nonce used outside the pipeline.

Each test drives one transfer's steps and the chain's tracker ticks in this process, against its
own anvil that mines only when the test says (`--no-mining`), so "not included after 3 blocks" is
exact. The stack's worker is stopped meanwhile (its tracker would follow the same transfers on the
stack's node); the database, the signer and the registry are the stack's.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from sqlalchemy import select

from chains.base import Curve, TransferIntent
from chains.evm import EvmAdapter
from devnet.anvil import AnvilNode
from devnet.gas_spike import GasSpike
from pipeline import credentials, ledger
from pipeline.models import OutboxMessage, ReleasedNonce, Transaction, TransactionAttempt
from pipeline.stages import Stage
from pipeline.driving import load_tx, take
from pipeline.steps import StepContext
from pipeline.steps.handover import StepReport
from pipeline.steps.runner import run_taken
from pipeline.tracking import TrackerLimits, tick
from signer.base import KeyRef, SignerError
from tests.integration import helpers as h
from workers.services import onboard_wallet
from workers.stack import EmbeddedStack

ETH = 10**18
GWEI = 10**9
LIMITS = TrackerLimits(recheck_s=3600.0)  # nothing goes one by one to the confirm step unless asked


@dataclass
class Chain:
    """A private anvil, the adapter on it, and a step context whose ethereum adapter is it."""

    node: AnvilNode
    adapter: EvmAdapter
    ctx: StepContext

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.node.mine(1)
            time.sleep(0.06)  # the gas spike sets the next block's base fee after each block

    def tick(self) -> Any:
        report = tick(self.ctx, "ethereum", LIMITS)
        assert report.error is None, report.error
        return report

    def wallet(self, eth: int) -> h.Funded:
        c = self.ctx
        with c.db.unit_of_work() as session:
            client = credentials.create_client(session, credentials.secret_box(), f"bump {secrets.token_hex(3)}")[0]
        wallet = onboard_wallet(c, client.client_id, "bump wallet", {"ethereum": ["ETH"]})
        address = wallet.accounts["ethereum"]
        self.node.set_balance(address, eth)
        asset_id = wallet.assets[("ethereum", "ETH")]
        with c.db.unit_of_work() as session:
            ledger.credit(session, asset_id, eth, reference="test-faucet")
        return h.Funded(client.client_id, wallet.wallet_id, "ethereum", address, {"ETH": asset_id})


@pytest.fixture(scope="module")
def private_anvil(stack: EmbeddedStack) -> Iterator[AnvilNode]:
    """One anvil for the module's tests (each uses wallets of its own), the stack's worker stopped
    while they run: stopping and starting it costs ~10 s a time."""
    concurrency = stack.options.concurrency
    stack.stop_worker("w1")
    try:
        with AnvilNode(chain_id=31337, extra_args=["--no-mining"]) as node:
            yield node
    finally:
        stack.start_worker("w1", concurrency, beat=stack.options.beat)


@pytest.fixture
def chain(private_anvil: AnvilNode) -> Iterator[Chain]:
    """The base fee back at anvil's 1 gwei start (a test before may have left it anywhere), a fresh
    adapter (no cached price) and a context on it."""
    private_anvil.rpc("anvil_setNextBlockBaseFeePerGas", [hex(GWEI)])
    private_anvil.mine(1)
    spec = replace(h.ctx().registry.chain("ethereum"), rpc_urls=(private_anvil.rpc_url,))
    adapter = EvmAdapter(spec)
    base = h.ctx()
    ctx = replace(base, adapter_for=lambda name: adapter if name == "ethereum" else base.adapter_for(name))
    yield Chain(private_anvil, adapter, ctx)


def run(ctx: StepContext, step: str, tx_id: str) -> StepReport:
    """Take the transfer for `step` and run it to its conclusion, as a worker does (no next step
    run inline: each test says which step comes next)."""
    with ctx.db.unit_of_work() as session:
        taken = take(session, tx_id, load_tx(session, tx_id).driver_seq, step, 3600.0)
    assert taken is not None, f"{tx_id} cannot be driven"
    return run_taken(ctx, taken)


def drive_to(chain: Chain, tx_id: str, *steps: str) -> None:
    for step in steps:
        report = run(chain.ctx, step, tx_id)
        assert report.result in ("advanced", "noop", "restart", "wait"), (step, report)


def sent(chain: Chain, f: h.Funded, amount: str = "1") -> str:
    tx_id = h.record_only(f, "ETH", amount)
    drive_to(chain, tx_id, "resolve_source", "validate_destination", "lock_funds", "request_signature", "broadcast")
    assert h.load(tx_id).stage == Stage.BROADCAST.value
    return tx_id


def attempts_of(tx_id: str) -> list[TransactionAttempt]:
    with h.ctx().db.unit_of_work() as session:
        rows = list(session.scalars(select(TransactionAttempt).where(TransactionAttempt.transaction_id == tx_id)
                                    .order_by(TransactionAttempt.number)))
        session.expunge_all()
        return rows


def handed_to(tx_id: str) -> str | None:
    """The step a message waits for (its outbox row), if any."""
    with h.ctx().db.unit_of_work() as session:
        return session.scalar(select(OutboxMessage.step).where(OutboxMessage.transaction_id == tx_id))


def until_final(chain: Chain, tx_id: str, blocks: int = 8, limits: TrackerLimits = LIMITS) -> Transaction:
    """Mine and tick until the transfer is final, running here any step the tick handed it to."""
    for _ in range(blocks):
        chain.mine()
        assert tick(chain.ctx, "ethereum", limits).error is None
        handed = handed_to(tx_id)
        if handed is not None:
            run(chain.ctx, handed, tx_id)
        if h.load(tx_id).status != "PENDING":
            break
    return h.load(tx_id)


def bump_due(chain: Chain, tx_id: str) -> None:
    """Blocks pass without the transfer's transaction: the first tick arms its bump clock, the one
    3 blocks later hands it to the bump step, which runs here."""
    chain.mine(2)
    assert chain.tick().armed >= 1
    chain.mine(3)
    assert chain.tick().bumps == 1
    drive_to(chain, tx_id, "bump_fee")


def assert_chain_agrees(chain: Chain, f: h.Funded) -> None:
    row = h.asset(f.assets["ETH"])
    assert (row.balance, row.locked_balance) == (chain.node.balance(f.address), 0)


def test_a_transaction_stuck_under_a_base_fee_spike_is_bumped_and_settles_with_the_bump(stack, chain):
    # Given a transfer sent at 2 x base fee + tip, then a 5x base-fee spike before it is mined
    f = chain.wallet(10 * ETH)
    tx_id = sent(chain, f)
    first = h.load(tx_id)
    with GasSpike(chain.node.rpc_url, 5):
        chain.mine(2)
        assert chain.tick().armed == 1  # the bump clock starts at the first tick that sees it
        chain.mine(3)
        # When 3 blocks pass without it
        report = chain.tick()
        # Then the tracker hands it to the bump step, which re-signs it at the same nonce for more
        assert (report.bumps, report.handed) == (1, 1)
        drive_to(chain, tx_id, "bump_fee", "request_signature", "broadcast")
        bumped = h.load(tx_id)
        assert (bumped.nonce, bumped.replacement_count, bumped.signature_request_id) == (first.nonce, 1, f"{tx_id}.1")
        assert bumped.tx_hash != first.tx_hash and bumped.fee_reserved > first.fee_reserved
        final = until_final(chain, tx_id)
    # And it settles once, with the fee the bump actually paid, and every attempt is on record
    assert final.status == "CONFIRMED" and final.tx_hash == bumped.tx_hash
    receipt = chain.node.rpc("eth_getTransactionReceipt", [bumped.tx_hash])
    assert final.fee_paid == int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    assert [(a.kind, a.state, a.tx_hash) for a in attempts_of(tx_id)] == [
        ("ORIGINAL", "DEAD", first.tx_hash), ("BUMP", "LANDED", bumped.tx_hash)]
    assert "fee_bump" in [e.reason for e in h.events(tx_id)]
    assert chain.node.balance(final.normalized_to_address) == ETH  # paid once
    assert_chain_agrees(chain, f)


def test_a_bump_at_the_fee_cap_keeps_the_original_which_lands_when_the_spike_ends(stack, chain):
    h.once_per_session(stack, "its logic is the database's only through the bump and gap-fill paths, which run on both")
    # Given a chain whose fee cap is the transfer's own fee: no bump can clear the node's +10% rule
    f = chain.wallet(10 * ETH)
    tx_id = sent(chain, f)
    first = h.load(tx_id)
    cap = int(first.fee_reserved // 21_000)
    capped = EvmAdapter(replace(chain.adapter.spec, options={"max_fee_per_gas_cap": cap}))
    chain.ctx = replace(chain.ctx, adapter_for=lambda name: capped)
    with GasSpike(chain.node.rpc_url, 5):
        bump_due(chain, tx_id)
        # Then the transfer keeps its transaction, says why, and is asked about one by one
        held = h.load(tx_id)
        assert (held.stage, held.stuck_reason, held.tx_hash, held.replacement_count) == (
            "BROADCAST", "at_fee_cap", first.tx_hash, 0)
        assert handed_to(tx_id) == "confirm" and held.bump_armed_head is None
    # And when the spike is over the original is mined and settles the transfer
    # (anvil drops a transaction its next block's base fee excludes: the confirm step, asking about
    # the quiet transfer one by one, sends the same bytes again once the node takes them)
    final = until_final(chain, tx_id, blocks=80)
    assert (final.status, final.tx_hash, final.stuck_reason) == ("CONFIRMED", first.tx_hash, None)
    assert_chain_agrees(chain, f)


def test_a_bump_the_balance_cannot_cover_waits_for_funds_then_goes_through(stack, chain):
    h.once_per_session(stack, "its logic is the database's only through the bump and gap-fill paths, which run on both")
    # Given an account holding just the amount and the first fee reserve
    probe = chain.wallet(10 * ETH)
    quote = chain.adapter.quote_fee(TransferIntent(probe.address, h.fresh_address(), ETH, chain.adapter.spec.native))
    f = chain.wallet(ETH + quote.max_fee)
    tx_id = sent(chain, f)
    with GasSpike(chain.node.rpc_url, 5):
        bump_due(chain, tx_id)
        # Then the bump waits, saying so, with nothing locked beyond the first reserve
        waiting = h.load(tx_id)
        assert (waiting.stage, waiting.stuck_reason, waiting.replacement_count) == ("BROADCAST", "waiting_for_funds", 0)
        assert h.asset(f.assets["ETH"]).locked_balance == ETH + quote.max_fee
        assert run(chain.ctx, "confirm", tx_id).result == "wait"  # asked once: still waiting, back to the tracker
        # When funds arrive, the next check bumps it
        chain.node.set_balance(f.address, 2 * ETH + quote.max_fee)
        with h.ctx().db.unit_of_work() as session:
            ledger.credit(session, f.assets["ETH"], ETH, reference="top-up")
        chain.mine(1)
        chain.tick()  # re-arms the clock
        chain.mine(3)
        assert chain.tick().bumps == 1
        drive_to(chain, tx_id, "bump_fee", "request_signature", "broadcast")
        assert h.load(tx_id).replacement_count == 1
        final = until_final(chain, tx_id)
    assert final.status == "CONFIRMED"
    assert_chain_agrees(chain, f)


def test_a_send_refused_as_underpriced_is_bumped_not_failed(stack, chain):
    h.once_per_session(stack, "its logic is the database's only through the bump and gap-fill paths, which run on both")
    # Given a transfer signed before a spike and sent during it (the node refuses the old fee)
    f = chain.wallet(10 * ETH)
    tx_id = h.record_only(f, "ETH", "1")
    drive_to(chain, tx_id, "resolve_source", "validate_destination", "lock_funds", "request_signature")
    first = h.load(tx_id)
    with GasSpike(chain.node.rpc_url, 5):
        chain.mine(1)
        # When it is broadcast: refused ("max fee per gas less than block base fee")
        report = run(chain.ctx, "broadcast", tx_id)
        # Then it is re-signed at a higher fee at once (never FAILED), sent, and confirmed
        assert h.load(tx_id).stage == Stage.FUNDS_LOCKED.value, report
        drive_to(chain, tx_id, "request_signature", "broadcast")
        final = until_final(chain, tx_id)
    assert final.status == "CONFIRMED" and final.tx_hash != first.tx_hash and final.nonce == first.nonce
    assert "replacement_underpriced" in [e.reason for e in h.events(tx_id)]
    assert_chain_agrees(chain, f)


class ScriptedSigner:
    """The stack's signer, except for one request id: it never answers it, then (once `refuse`
    is set) refuses it for good, as a policy engine would."""

    def __init__(self, inner: Any, request_id: str) -> None:
        self.inner, self.request_id, self.refuse = inner, request_id, False

    def request_signature(self, request_id: str, key: Any, payloads: list[bytes]) -> None:
        if request_id != self.request_id:
            return self.inner.request_signature(request_id, key, payloads)
        if self.refuse:
            raise SignerError("policy refuses this transfer")

    def fetch_signature(self, request_id: str) -> Any:
        return None if request_id == self.request_id else self.inner.fetch_signature(request_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def blocked_account(chain: Chain) -> tuple[h.Funded, str, str, ScriptedSigner]:
    """Transfer a holds nonce n and waits for its signature; transfer b has n+1 and is sent."""
    f = chain.wallet(10 * ETH)
    a, b = h.record_only(f, "ETH", "1"), h.record_only(f, "ETH", "2")
    drive_to(chain, a, "resolve_source", "validate_destination", "lock_funds")
    drive_to(chain, b, "resolve_source", "validate_destination", "lock_funds")
    signer = ScriptedSigner(chain.ctx.signer, f"{a}.0")
    chain.ctx = replace(chain.ctx, signer=signer)
    assert run(chain.ctx, "request_signature", a).result == "wait"
    drive_to(chain, b, "request_signature", "broadcast")
    assert h.load(b).nonce == h.load(a).nonce + 1
    chain.mine(2)
    assert h.load(b).status == "PENDING"  # n+1 cannot be mined while n is missing
    return f, a, b, signer


def fill_and_land(chain: Chain, f: h.Funded, gap: int, b: str) -> None:
    """The next tick fills the gap with a NOOP transfer; it and b land."""
    report = chain.tick()
    assert any(f"nonce {gap} " in note for note in report.nonce_notes), report.nonce_notes
    with h.ctx().db.unit_of_work() as session:
        noop = session.scalar(select(Transaction).where(Transaction.kind == "NOOP", Transaction.from_address == f.address))
        assert noop is not None and session.get(ReleasedNonce, (noop.account_id, gap)) is None
        noop_id = noop.transaction_id
    assert (h.load(noop_id).nonce, h.load(noop_id).amount, h.load(noop_id).to_address) == (gap, 0, f.address)
    drive_to(chain, noop_id, "lock_funds", "request_signature", "broadcast")
    for _ in range(8):
        chain.mine()
        chain.tick()
        if h.load(b).status != "PENDING" and h.load(noop_id).status != "PENDING":
            break
    assert (h.load(noop_id).status, h.load(b).status) == ("CONFIRMED", "CONFIRMED")
    assert h.ledger_entries(noop_id) == [("FEE", -h.load(noop_id).fee_paid)]  # a zero amount writes no DEBIT row


def test_a_nonce_left_by_a_refused_signing_is_filled_by_a_noop_and_later_nonces_land(stack, chain):
    # Given a holds nonce n unsigned while b (n+1) waits on chain; then the signer refuses a
    f, a, b, signer = blocked_account(chain)
    gap = h.load(a).nonce
    signer.refuse = True
    run(chain.ctx, "request_signature", a)
    assert (h.load(a).status, h.load(a).failure_reason) == ("FAILED", "signature_refused")
    # Then a NOOP transfer takes nonce n, and both it and b land
    fill_and_land(chain, f, gap, b)
    assert_chain_agrees(chain, f)


def test_a_signing_that_stalls_gives_its_nonce_back_and_later_nonces_land(stack, chain):
    h.once_per_session(stack, "its logic is the database's only through the bump and gap-fill paths, which run on both")
    # Given a holds nonce n and its signer never answers, while b (n+1) waits on chain
    f, a, b, _ = blocked_account(chain)
    gap = h.load(a).nonce
    # When its signing passes the signature timeout
    assert run(replace(chain.ctx, signature_timeout_s=0.0), "request_signature", a).result == "stalled"
    # Then it gives nonce n back and waits for a new one, locks kept
    stalled = h.load(a)
    assert (stalled.stage, stalled.nonce, stalled.stuck_reason, stalled.status) == ("FUNDS_LOCKED", None, "nonce_released", "PENDING")
    assert "nonce_released" in [e.reason for e in h.events(a)]
    # And a NOOP transfer fills n, so b lands
    fill_and_land(chain, f, gap, b)
    # And a itself, asking again (a new request id, a new nonce), lands when its signer answers
    drive_to(chain, a, "request_signature", "broadcast")
    assert h.load(a).nonce == gap + 2 and h.load(a).signature_request_id == f"{a}.1"
    assert until_final(chain, a).status == "CONFIRMED"
    assert_chain_agrees(chain, f)


def sign_outside(chain: Chain, f: h.Funded, nonce: int) -> str:
    """A transaction of the wallet's key made and sent outside the pipeline (an operator's
    script, another system holding the same key): 1 wei to a fresh address at `nonce`."""
    intent = TransferIntent(f.address, h.fresh_address(), 1, chain.adapter.spec.native)
    unsigned = chain.adapter.build(intent, chain.adapter.quote_fee(intent), nonce, {})
    key = KeyRef(f.wallet_id, "evm", Curve.SECP256K1)
    request_id = f"outside.{secrets.token_hex(4)}"
    chain.ctx.signer.request_signature(request_id, key, list(unsigned.digests))
    signed = chain.adapter.attach_signature(unsigned.payload, chain.ctx.signer.fetch_signature(request_id))
    return chain.adapter.broadcast(signed)


def test_a_nonce_used_outside_the_pipeline_is_proven_then_the_transfer_is_re_signed_past_it(stack, chain):
    h.once_per_session(stack, "its logic is the database's only through the bump and gap-fill paths, which run on both")
    # Given a transfer signed at nonce n, and the same key used outside for n and n+1 meanwhile
    f = chain.wallet(10 * ETH)
    tx_id = h.record_only(f, "ETH", "1")
    drive_to(chain, tx_id, "resolve_source", "validate_destination", "lock_funds", "request_signature")
    first = h.load(tx_id)
    n = first.nonce
    foreign = sign_outside(chain, f, n)
    sign_outside(chain, f, n + 1)
    chain.mine(1)
    # When it is broadcast: "nonce too low". Not yet deep enough to say who used it: no decision
    assert run(chain.ctx, "broadcast", tx_id).result == "retry"
    assert (h.load(tx_id).status, h.load(tx_id).stage) == ("PENDING", "SIGNED")
    # Then once the block that used the nonce is at depth: its attempt is dead, the account's
    # cursor moves past the nonces used outside, and it is re-signed at n+2 and lands, once
    chain.mine(3)
    assert run(chain.ctx, "broadcast", tx_id).result == "restart"
    moved = h.load(tx_id)
    assert (moved.stage, moved.nonce, moved.replacement_count) == ("FUNDS_LOCKED", None, 1)
    event = h.events(tx_id)[-1]
    assert event.reason == "nonce_consumed" and foreign in event.detail
    drive_to(chain, tx_id, "request_signature", "broadcast")
    assert h.load(tx_id).nonce == n + 2
    final = until_final(chain, tx_id)
    assert final.status == "CONFIRMED"
    assert [(a.nonce, a.state) for a in attempts_of(tx_id)] == [(n, "DEAD"), (n + 2, "LANDED")]
    assert chain.node.balance(final.normalized_to_address) == ETH
