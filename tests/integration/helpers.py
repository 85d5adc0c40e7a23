"""Scenario helpers over the real stack: fund a wallet on the devnet and in the ledger, submit,
drive single step tasks, wait for outcomes (polling the database, the source of truth)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from chains.base import TokenSpec
from pipeline import credentials, ledger
from pipeline.amounts import parse_amount
from pipeline.driving import Dispatch, load_tx, take
from pipeline.models import Asset, LedgerEntry, OutboxMessage, Transaction, TransactionEvent
from pipeline.stages import STEPS
from pipeline.steps import STEP_FUNCTIONS, Outcome, StepContext
from pipeline.transfers import TransferRequest, create_transfer
from workers import runtime
from workers.app import ALL_QUEUES, app
from workers.routing import publish
from workers.services import fresh_destination, onboard_wallet, submit_transfer
from workers.stack import EmbeddedStack

CHAIN = "ethereum"


@dataclass
class Funded:
    client_id: str
    wallet_id: str
    chain: str
    address: str
    assets: dict[str, str]  # symbol -> asset_id


def ctx() -> StepContext:
    return runtime.context()


def token(symbol: str, chain: str = CHAIN) -> TokenSpec:
    return ctx().registry.chain(chain).token(symbol)


def fresh_address(chain: str = CHAIN) -> str:
    return fresh_destination(ctx(), chain)


def funded(stack: EmbeddedStack, chain: str, amounts: dict[str, str], chunks: int = 1) -> Funded:
    """A new client and wallet on `chain`, given `amounts` by the devnet faucet (in `chunks` payments:
    several outputs on UTXO chains) and credited to the ledger exactly as the chain shows them."""
    c = ctx()
    with c.db.unit_of_work() as session:
        client_id = credentials.create_client(session, credentials.secret_box(), f"client {secrets.token_hex(3)}")[0].client_id
    wallet = onboard_wallet(c, client_id, "test wallet", {chain: list(amounts)})
    address = wallet.accounts[chain]
    for symbol, amount in amounts.items():
        total = parse_amount(amount, token(symbol, chain).decimals) if amount != "0" else 0
        for i in range(chunks if total else 0):
            part = total // chunks if i < chunks - 1 else total - (total // chunks) * (chunks - 1)
            stack.nodes[chain].fund(address, token(symbol, chain), part)
    assets = {symbol: wallet.assets[(chain, symbol)] for symbol in amounts}
    with c.db.unit_of_work() as session:
        for symbol, asset_id in assets.items():
            on_chain = c.adapter_for(chain).balance_of(address, token(symbol, chain))
            if on_chain:
                ledger.credit(session, asset_id, on_chain, reference="test-faucet")
    return Funded(client_id, wallet.wallet_id, chain, address, assets)


def funded_wallet(stack: EmbeddedStack, eth: str = "10", usdt: str = "1000") -> Funded:
    """An ethereum wallet with ETH and USDT."""
    return funded(stack, CHAIN, {"ETH": eth, "USDT": usdt})


def request(f: Funded, symbol: str, amount: str, to: str | None = None, key: str | None = None) -> TransferRequest:
    return TransferRequest(client_id=f.client_id, from_address=f.address, to_address=to or fresh_address(f.chain),
                           chain=f.chain, token_symbol=symbol, amount=amount,
                           idempotency_key=key or f"k-{secrets.token_hex(8)}")


def submit(f: Funded, symbol: str, amount: str, to: str | None = None, key: str | None = None) -> str:
    return submit_transfer(ctx(), request(f, symbol, amount, to, key)).transaction_id


def record_only(f: Funded, symbol: str, amount: str, to: str | None = None, grace_s: float = 3600.0) -> str:
    """Write the transfer and its outbox row without publishing: a message lost before the first
    step. The relay publishes it `grace_s` later (by default: not within a test)."""
    with ctx().db.unit_of_work() as session:
        tx, _ = create_transfer(session, ctx().registry, request(f, symbol, amount, to), publish_grace_s=grace_s)
        return tx.transaction_id


def drive(context: StepContext, step: str, transaction_id: str, lease_s: float = 3600.0) -> Outcome:
    """Run one step here, as the driver that has just taken the transfer (its current token)."""
    with context.db.unit_of_work() as session:
        run = take(session, transaction_id, load_tx(session, transaction_id).driver_seq, step, lease_s)
    assert run is not None, f"{transaction_id} cannot be driven"
    return STEP_FUNCTIONS[step](context, run)


def duplicate_every_message(stack: EmbeddedStack, transaction_id: str, copies: int = 2,
                            timeout: float = 120.0) -> int:
    """Deliver every message of the transfer `copies` more times: while it runs, each one seen
    waiting in the outbox (what the relay and a racing publisher do; a message picked up within
    the poll interval is missed), then, once it is final, late copies of every step with every
    token it ever had (what Redis redelivery does), so each message it was handed is among them.
    Returns the late copies sent, once they are all processed."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ctx().db.unit_of_work() as session:
            rows = session.scalars(select(OutboxMessage).where(OutboxMessage.transaction_id == transaction_id)).all()
            waiting = [Dispatch(r.transaction_id, r.step, r.seq) for r in rows if r.seq not in seen]
            tx = session.get(Transaction, transaction_id)
            status, last_seq = tx.status, tx.driver_seq  # type: ignore[union-attr]
        for dispatch in waiting:
            seen.add(dispatch.seq)
            for _ in range(copies):
                publish(dispatch)
        if status != "PENDING" and not waiting:
            late = [Dispatch(transaction_id, step, seq) for seq in range(1, last_seq + 1) for step in STEPS]
            for dispatch in late * copies:
                publish(dispatch)
            wait_idle(stack)
            return len(late) * copies
        time.sleep(0.02)
    raise AssertionError(f"{transaction_id} not final within {timeout} s")


def load(transaction_id: str) -> Transaction:
    with ctx().db.unit_of_work() as session:
        return session.get(Transaction, transaction_id)  # type: ignore[return-value]


def wait_final(transaction_ids: list[str], timeout: float = 90.0) -> dict[str, Transaction]:
    deadline = time.monotonic() + timeout
    while True:
        with ctx().db.unit_of_work() as session:
            rows = session.scalars(select(Transaction).where(Transaction.transaction_id.in_(transaction_ids))).all()
        if len(rows) == len(transaction_ids) and all(t.status != "PENDING" for t in rows):
            return {t.transaction_id: t for t in rows}
        if time.monotonic() > deadline:
            stuck = {t.transaction_id: (t.stage, t.last_error) for t in rows if t.status == "PENDING"}
            raise AssertionError(f"not final after {timeout}s: {stuck}")
        time.sleep(0.2)


def wait_stage(transaction_id: str, stages: set[str], timeout: float = 30.0) -> Transaction:
    deadline = time.monotonic() + timeout
    while True:
        tx = load(transaction_id)
        if tx.stage in stages:
            return tx
        if time.monotonic() > deadline:
            raise AssertionError(f"{transaction_id} is at {tx.stage} ({tx.last_error}), expected one of {stages}")
        time.sleep(0.1)


def wait_idle(stack: EmbeddedStack, timeout: float = 30.0) -> None:
    """No message queued, held, or running anywhere: every delivery has been processed."""
    import redis

    client = redis.Redis.from_url(stack.env["PARATRO_BROKER_URL"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = sum(client.llen(queue) for queue in ALL_QUEUES)
        inspect = app.control.inspect(timeout=0.5)
        busy = sum(len(tasks) for view in (inspect.active(), inspect.reserved(), inspect.scheduled())
                   for tasks in (view or {}).values())
        if queued == 0 and busy == 0:
            return
        time.sleep(0.2)
    raise AssertionError("worker did not become idle")


def events(transaction_id: str) -> list[TransactionEvent]:
    with ctx().db.unit_of_work() as session:
        return list(session.scalars(select(TransactionEvent).where(TransactionEvent.transaction_id == transaction_id)
                                    .order_by(TransactionEvent.id)))


def stage_changes(transaction_id: str) -> list[tuple[str | None, str]]:
    return [(e.from_stage, e.to_stage) for e in events(transaction_id) if e.from_stage != e.to_stage]


def asset(asset_id: str) -> Asset:
    with ctx().db.unit_of_work() as session:
        return session.get(Asset, asset_id)  # type: ignore[return-value]


def ledger_entries(transaction_id: str) -> list[tuple[str, int]]:
    with ctx().db.unit_of_work() as session:
        return [(e.kind, e.amount) for e in session.scalars(
            select(LedgerEntry).where(LedgerEntry.transaction_id == transaction_id).order_by(LedgerEntry.id))]


def count_transactions(client_id: str) -> int:
    with ctx().db.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Transaction).where(Transaction.client_id == client_id)) or 0


def balance_on_chain(chain: str, address: str, symbol: str) -> int:
    return ctx().adapter_for(chain).balance_of(address, token(symbol, chain))


def assert_reconciled(f: Funded) -> None:
    """DB balance == chain balance for every asset, nothing locked."""
    for symbol, asset_id in f.assets.items():
        row = asset(asset_id)
        on_chain = balance_on_chain(f.chain, f.address, symbol)
        assert (f.chain, symbol, row.balance, row.locked_balance) == (f.chain, symbol, on_chain, 0)


def once_per_session(stack: EmbeddedStack, why: str) -> None:
    """Run a test that does not depend on the database on the SQLite stack only (the whole suite
    runs twice, once per database; `why` says why this one need not)."""
    import pytest

    if stack.options.database_url is not None:
        pytest.skip(f"runs on the SQLite stack only: {why}")
