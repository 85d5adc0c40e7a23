"""The bump step: a sent transaction that waits too long is replaced by one paying more.

The chain's tracker hands a transfer here once its latest transaction has waited the chain's
replacement policy (EVM: `bump_after_blocks` blocks and it is the nonce the chain waits for;
Bitcoin: `rbf_after_s` seconds). The adapter prices the replacement (same nonce or inputs, every
fee field raised by at least the policy's percent, to at least today's market, within the chain's
cap); the extra fee reserve is locked in the same DB transaction that sends the transfer back to
FUNDS_LOCKED for a new signature. The attempt it replaces stays LIVE and watched: whichever lands
settles the transfer (`pipeline.attempts`).

A bump that cannot be made never fails the transfer: at the cap, or with change below dust, the
transfer keeps its transaction with a `stuck_reason` saying why, and so does one whose account
cannot cover the extra reserve ("waiting_for_funds"); the clock is re-armed and the next check
comes after another policy interval. A replacement the node refuses as underpriced is bumped
again from the refused fee (`raise_fee`, called by the broadcast step).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from chains.base import ChainAdapter, FeeQuote, TransferIntent
from chains.errors import BumpRefused
from pipeline import attempts, ledger
from pipeline.driving import Attempt, Run, load_held
from pipeline.errors import UnprovenRejection
from pipeline.lifecycle import record_note, stage_of
from pipeline.models import Transaction
from pipeline.stages import Stage
from pipeline.steps.context import (
    Outcome,
    OutcomeKind,
    StepContext,
    fall_back,
    fee_params_json,
    fee_quote_of,
    intent_of,
    replace_for_fee,
)
from pipeline.steps.handover import conclude_within


def bump_fee(ctx: StepContext, run: Run) -> Outcome:
    """BROADCAST -> FUNDS_LOCKED at a higher fee (then signed and sent as usual), or back to the
    tracker with the reason it was not bumped."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run)
        if stage_of(tx) is not Stage.BROADCAST:  # included meanwhile, or another driver moved it
            return conclude_within(ctx, session, run, tx, OutcomeKind.NOOP)
        intent, current, chain, attempt = intent_of(ctx, tx, tx.from_address), fee_quote_of(tx), tx.chain, Attempt.of(tx)
    return raise_fee(ctx, run, attempt, ctx.adapter_for(chain), intent, current)


def raise_fee(ctx: StepContext, run: Run, attempt: Attempt, adapter: ChainAdapter, intent: TransferIntent,
              current: FeeQuote) -> Outcome:
    """Replace the transaction built from `current` by one paying more, if the adapter can price
    one and the account can cover it; else keep it (see the module docstring)."""
    try:
        quote = adapter.replacement_quote(intent, current)
    except BumpRefused as exc:
        return _not_bumped(ctx, run, attempt, exc.reason, exc.detail)
    if quote is None:
        return _not_bumped(ctx, run, attempt, None, "it pays the market price already")
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        extra = quote.max_fee - (tx.fee_reserved or 0)
        if extra > 0:
            try:
                ledger.lock(session, {tx.fee_asset_id or "": extra})
            except ledger.Shortfall as short:
                _keep(session, tx, "waiting_for_funds", f"a bump needs {extra} more fee reserve: {short}")
                return conclude_within(ctx, session, run, tx, OutcomeKind.RESTART, step="confirm")
            tx.fee_reserved = (tx.fee_reserved or 0) + extra
        tx.fee_params = fee_params_json(quote)
        tx.stuck_reason = "bumping"
        replace_for_fee(session, tx, f"fee {_price(current)} -> {_price(quote)} (reserve {tx.fee_reserved})")
        return conclude_within(ctx, session, run, tx, OutcomeKind.ADVANCED)


def _not_bumped(ctx: StepContext, run: Run, attempt: Attempt, stuck_reason: str | None, detail: str) -> Outcome:
    """Kept as it is; then the confirm step asks about it one by one (a transaction the node
    dropped, as anvil drops one its next block's base fee excludes, is sent again from there)."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        _keep(session, tx, stuck_reason, detail)
        return conclude_within(ctx, session, run, tx, OutcomeKind.RESTART, step="confirm")


def _keep(session: Session, tx: Transaction, stuck_reason: str | None, detail: str) -> None:
    """No replacement now: the transfer goes on with the transaction it has (a refused
    replacement falls back to the one before it), its clock re-armed by the next tick. A first
    send refused as underpriced that cannot be bumped is an unproven refusal (retried, then held)."""
    if stage_of(tx) is Stage.SIGNED and not attempts.live_others(session, tx):
        raise UnprovenRejection(f"refused as underpriced and not bumped ({stuck_reason}: {detail})"[:500])
    if stuck_reason != tx.stuck_reason:
        record_note(session, tx, stuck_reason or "bump_not_needed", detail[:1000])
    tx.stuck_reason = stuck_reason
    tx.bump_armed_head = tx.bump_armed_at = None
    if stage_of(tx) is Stage.SIGNED:  # a refused replacement: go on with the attempt it was to replace
        others = attempts.live_others(session, tx)
        if others:
            fall_back(session, tx, others[0], f"{stuck_reason}: {detail}"[:300])
            tx.stuck_reason = stuck_reason


def _price(quote: FeeQuote) -> str:
    """The fee fields that changed, for the event row (no bytes, no addresses)."""
    shown = {key: value for key, value in quote.params.items() if key != "gas" and isinstance(value, int)}
    return ",".join(f"{key}={value}" for key, value in sorted(shown.items())) or str(quote.max_fee)
