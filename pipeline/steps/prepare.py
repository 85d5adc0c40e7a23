"""Steps 1-3: find the source asset, check the destination, lock the funds (and the fee reserve).

Nothing here signs or sends: a transfer failed in these steps never touched the chain.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chains.base import ChainAdapter, FeeQuote, Utxo
from chains.errors import InvalidAddress, TransactionRejected
from pipeline import ledger
from pipeline.driving import Attempt, Run, load_held
from pipeline.errors import TransientError
from pipeline.lifecycle import advance, record_note, stage_of
from pipeline.models import Account, Asset, Transaction, UtxoReservation, Wallet
from pipeline.stages import FailureReason, Stage
from pipeline.nonces import NOOP
from pipeline.steps.handover import conclude, conclude_within
from pipeline.steps.context import (
    Outcome,
    OutcomeKind,
    StepContext,
    fail,
    fail_at,
    failure_reason,
    fee_params_json,
    intent_of,
)


def resolve_source(ctx: StepContext, run: Run) -> Outcome:
    """RECEIVED -> SOURCE_RESOLVED: the asset at (from_address, chain, token) of this client."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run)
        if stage_of(tx) is not Stage.RECEIVED:
            return conclude_within(ctx, session, run, tx, OutcomeKind.NOOP)
        if tx.decimals is None:  # accepted before migration 0003: its amount renders from here on
            tx.decimals = ctx.registry.chain(tx.chain).token(tx.token_symbol).decimals
        adapter = ctx.adapter_for(tx.chain)
        try:
            from_address = adapter.validate_address(tx.from_address)
        except InvalidAddress as exc:
            fail(session, tx, FailureReason.SOURCE_NOT_FOUND, f"from_address is not an address: {exc.reason}")
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        account, wallet, assets = _source_of(session, tx.chain, from_address)
        # Another client's account is reported exactly like a missing one: no tenant probing.
        if account is None or account.client_id != tx.client_id:
            fail(session, tx, FailureReason.SOURCE_NOT_FOUND, f"no account {tx.from_address} on {tx.chain}")
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        asset = assets.get(tx.token_symbol)
        if asset is None:
            fail(session, tx, FailureReason.SOURCE_NOT_FOUND, f"account has no {tx.token_symbol} asset on {tx.chain}")
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        if wallet is None or wallet.status != "ACTIVE" or wallet.key_status != "ACTIVE":
            fail(session, tx, FailureReason.WALLET_NOT_ACTIVE, f"wallet {account.wallet_id} cannot sign yet")
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        native = assets.get(ctx.registry.chain(tx.chain).native.symbol)
        tx.wallet_id, tx.account_id, tx.asset_id = wallet.wallet_id, account.account_id, asset.asset_id
        tx.fee_asset_id = native.asset_id if native else None
        tx.from_address = from_address
        advance(session, tx, Stage.SOURCE_RESOLVED)
        return conclude_within(ctx, session, run, tx, OutcomeKind.ADVANCED)


def _source_of(session: Session, chain: str, address: str) -> tuple[Account | None, Wallet | None, dict[str, Asset]]:
    """The account at (chain, address), its wallet and its assets by symbol, in one query."""
    rows = session.execute(
        select(Account, Wallet, Asset)
        .outerjoin(Wallet, Wallet.wallet_id == Account.wallet_id)
        .outerjoin(Asset, Asset.account_id == Account.account_id)
        .where(Account.chain == chain, Account.address == address)
    ).all()
    if not rows:
        return None, None, {}
    account, wallet = rows[0][0], rows[0][1]
    return account, wallet, {asset.symbol: asset for _, _, asset in rows if asset is not None}


def validate_destination(ctx: StepContext, run: Run) -> Outcome:
    """SOURCE_RESOLVED -> DESTINATION_VALID: the adapter's format check for that chain and network."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run)
        if stage_of(tx) is not Stage.SOURCE_RESOLVED:
            return conclude_within(ctx, session, run, tx, OutcomeKind.NOOP)
        adapter = ctx.adapter_for(tx.chain)
        token = ctx.registry.chain(tx.chain).token(tx.token_symbol)
        try:
            tx.normalized_to_address = adapter.check_destination(tx.to_address, token)
        except InvalidAddress as exc:
            fail(session, tx, FailureReason.INVALID_DESTINATION, exc.reason)
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        if tx.normalized_to_address == tx.from_address:
            # The chain would charge only the fee while the ledger debits the amount: refuse it.
            fail(session, tx, FailureReason.INVALID_DESTINATION, "the destination is the source address")
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        advance(session, tx, Stage.DESTINATION_VALID)
        return conclude_within(ctx, session, run, tx, OutcomeKind.ADVANCED)


def lock_funds(ctx: StepContext, run: Run) -> Outcome:
    """DESTINATION_VALID -> FUNDS_LOCKED: price the fee, then lock amount + fee reserve atomically.

    The fee is quoted before the DB transaction (no RPC while holding row locks) and fixed on the
    transfer, so the transaction signed later can never spend more than what was reserved. On
    UTXO chains the quote also selects inputs among outputs no other transfer has reserved, and
    they are reserved in the same DB transaction as the funds.
    """
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run)
        if stage_of(tx) is not Stage.DESTINATION_VALID:
            return conclude_within(ctx, session, run, tx, OutcomeKind.NOOP)
        asset = session.get(Asset, tx.asset_id, with_for_update=True, populate_existing=True) if tx.asset_id else None
        if asset is None or asset.available < tx.amount:
            # Decided under the transfer's and the asset's row locks (transfer first, as ledger.lock).
            fail(session, tx, FailureReason.INSUFFICIENT_FUNDS,
                 f"available {asset.available if asset else 0} < amount {tx.amount} base units")
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        intent = intent_of(ctx, tx, tx.from_address)
        chain, attempt, kind = tx.chain, Attempt.of(tx), tx.kind

    adapter = ctx.adapter_for(chain)
    try:
        quote = adapter.quote_fee(intent, _spendable_utxos(ctx, adapter, chain, intent.from_address))
    except TransactionRejected as exc:
        if kind == NOOP and exc.reason in _SHORT:
            return _noop_waits(ctx, run, attempt, exc.detail)
        if exc.reason == FailureReason.INSUFFICIENT_FUNDS.value and _outputs_in_flight(ctx, chain, intent.from_address):
            # The ledger has the funds but other pending transfers hold the outputs; their change
            # comes back to this address. Wait for it rather than fail a transfer that can be paid.
            raise TransientError("outputs are reserved by pending transfers; waiting for their change") from None
        return fail_at(ctx, run, attempt, failure_reason(exc.reason), exc.detail)

    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        if tx.fee_asset_id is None:
            fail(session, tx, FailureReason.INSUFFICIENT_FUNDS_FOR_FEE,
                 f"account has no native asset to pay a fee of up to {quote.max_fee} base units")
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        holds = {tx.asset_id: tx.amount}
        holds[tx.fee_asset_id] = holds.get(tx.fee_asset_id, 0) + quote.max_fee
        try:
            ledger.lock(session, holds)
        except ledger.Shortfall as short:
            if tx.kind == NOOP:
                return _noop_waiting(ctx, session, run, tx, str(short))
            reason = FailureReason.INSUFFICIENT_FUNDS
            if short.asset_id == tx.fee_asset_id and (tx.fee_asset_id != tx.asset_id or short.available >= tx.amount):
                reason = FailureReason.INSUFFICIENT_FUNDS_FOR_FEE
            fail(session, tx, reason, str(short))
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        _reserve_inputs(session, tx, quote)
        tx.fee_params = fee_params_json(quote)
        tx.fee_reserved = quote.max_fee
        advance(session, tx, Stage.FUNDS_LOCKED)
        return conclude_within(ctx, session, run, tx, OutcomeKind.ADVANCED)


NOOP_FUNDS_POLL_S = 30.0  # a gap fill short of its fee asks again this often
_SHORT = (FailureReason.INSUFFICIENT_FUNDS.value, FailureReason.INSUFFICIENT_FUNDS_FOR_FEE.value)


def _noop_waits(ctx: StepContext, run: Run, attempt: Attempt, detail: str) -> Outcome:
    with ctx.db.unit_of_work() as session:
        return _noop_waiting(ctx, session, run, load_held(session, run, attempt), detail)


def _noop_waiting(ctx: StepContext, session: Session, run: Run, tx: Transaction, detail: str) -> Outcome:
    """A gap fill the account cannot pay the fee of waits (later nonces wait behind it anyway):
    failing it would give the nonce back and the next tick would make the same NOOP again."""
    if tx.stuck_reason != "waiting_for_funds":
        record_note(session, tx, "waiting_for_funds", f"the gap fill's fee: {detail}"[:1000])
    tx.stuck_reason = "waiting_for_funds"
    outcome = Outcome(OutcomeKind.WAIT, stage_of(tx), NOOP_FUNDS_POLL_S)
    return replace(outcome, report=conclude(ctx, session, run, tx, outcome))


def _spendable_utxos(ctx: StepContext, adapter: ChainAdapter, chain: str, address: str) -> list[Utxo]:
    """The address's outputs that no other pending transfer has reserved (UTXO chains only)."""
    if not adapter.uses_utxos:
        return []
    listed = adapter.list_utxos(address)
    with ctx.db.unit_of_work() as session:
        reserved = set(session.scalars(select(UtxoReservation.outpoint).where(UtxoReservation.chain == chain)))
    return [utxo for utxo in listed if utxo.outpoint not in reserved]


def _outputs_in_flight(ctx: StepContext, chain: str, address: str) -> bool:
    with ctx.db.unit_of_work() as session:
        return session.scalar(select(UtxoReservation.outpoint).where(
            UtxoReservation.chain == chain, UtxoReservation.address == address).limit(1)) is not None


def _reserve_inputs(session: Session, tx: Transaction, quote: FeeQuote) -> None:
    try:
        with session.begin_nested():
            for utxo in quote.inputs:
                session.add(UtxoReservation(chain=tx.chain, outpoint=utxo.outpoint, transaction_id=tx.transaction_id,
                                            address=tx.from_address, value=utxo.value))
    except IntegrityError:
        raise TransientError("an input was reserved by another transfer meanwhile; quote again") from None
