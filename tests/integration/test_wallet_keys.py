"""Wallet key generation through the real worker: a requested wallet becomes ACTIVE from its
`paratro.generate_wallet_keys` task, opens accounts on every family whose addresses hold real funds
on the devnets, and a wallet whose message was lost (or never published) is found by the relay."""

from __future__ import annotations

import json
import secrets
import time

import pytest
from sqlalchemy import select

from chains import validate_address
from pipeline import credentials
from pipeline.models import Client, Wallet, WebhookEvent
from tests.integration import helpers as h
from workers import wallets
from workers.stack import EmbeddedStack

ASSETS = {"ethereum": ["ETH", "USDT"], "bsc": ["BNB", "USDT"], "tron": ["TRX", "USDT"], "bitcoin": ["BTC"],
          "solana": ["SOL", "USDC"]}


def client_with_webhook() -> str:
    """A client whose webhook URL is set directly (so wallet events are written; delivering them is
    the dispatcher's business: the discard port refuses, which is fine here)."""
    with h.ctx().db.unit_of_work() as session:
        client, _ = credentials.create_client(session, credentials.secret_box(), f"wallets {secrets.token_hex(3)}")
        session.get(Client, client.client_id).webhook_url = "http://127.0.0.1:9/paratro"  # type: ignore[union-attr]
        return client.client_id


def load_wallet(wallet_id: str) -> Wallet:
    with h.ctx().db.unit_of_work() as session:
        return session.get(Wallet, wallet_id)  # type: ignore[return-value]


def wait_active(wallet_id: str, timeout: float) -> Wallet:
    deadline = time.monotonic() + timeout
    while True:
        wallet = load_wallet(wallet_id)
        if wallet.status != "PROGRESSING":
            assert (wallet.status, wallet.key_status, wallet.failure_detail) == ("ACTIVE", "ACTIVE", None)
            return wallet
        if time.monotonic() > deadline:
            raise AssertionError(f"{wallet_id} still {wallet.status}/{wallet.key_status} after {timeout} s "
                                 f"(attempts {wallet.key_attempts}, due {wallet.key_due_at})")
        time.sleep(0.1)


def wallet_event_types(wallet_id: str) -> list[tuple[str, int]]:
    with h.ctx().db.unit_of_work() as session:
        rows = session.scalars(select(WebhookEvent).where(WebhookEvent.resource_id == wallet_id)
                               .order_by(WebhookEvent.sequence)).all()
        return [(e.type, e.sequence) for e in rows]


def test_a_requested_wallet_becomes_active_through_the_worker_and_its_accounts_hold_real_funds(stack: EmbeddedStack) -> None:
    ctx = h.ctx()
    client_id = client_with_webhook()
    started = time.monotonic()
    view = wallets.request_wallet(ctx, client_id, "api wallet")
    assert (view["status"], view["key_status"]) == ("PROGRESSING", "GENERATING")
    wallet = wait_active(view["wallet_id"], timeout=20)
    assert time.monotonic() - started < 10 and wallet.key_attempts == 1  # the first message did it
    assert wallet_event_types(wallet.wallet_id) == [("wallet.progressing", 1), ("wallet.active", 2)]
    with ctx.db.unit_of_work() as session:
        active = json.loads(session.scalars(select(WebhookEvent.payload).where(
            WebhookEvent.resource_id == wallet.wallet_id, WebhookEvent.type == "wallet.active")).one())
    assert active["data"]["status"] == "ACTIVE" and active["data"]["wallet_id"] == wallet.wallet_id

    accounts = {}
    for chain, symbols in ASSETS.items():
        account, created = wallets.open_account(ctx, client_id, wallet.wallet_id, chain)
        assert created and account["network"] == ctx.registry.chain(chain).network
        assert validate_address(chain, account["address"], registry=ctx.registry) == account["address"]
        assert wallets.open_account(ctx, client_id, wallet.wallet_id, chain) == (account, False)
        for symbol in symbols:
            asset, created = wallets.add_asset(ctx, client_id, account["account_id"], symbol)
            token = h.token(symbol, chain)
            assert created and (asset["symbol"], asset["asset_type"], asset["decimals"], asset["contract_address"]) == (
                symbol, token.asset_type, token.decimals, token.contract)
            assert wallets.add_asset(ctx, client_id, account["account_id"], symbol) == (asset, False)
        accounts[chain] = account
    assert accounts["ethereum"]["address"] == accounts["bsc"]["address"]
    assert len({accounts[c]["address"] for c in ("ethereum", "tron", "bitcoin", "solana")}) == 4

    # The derived addresses are real on each devnet: what the faucet sends there (above Solana's rent
    # minimum), the node shows there
    for chain, account in accounts.items():
        native = ctx.registry.chain(chain).native
        stack.nodes[chain].fund(account["address"], native, 10_000_000)
        assert h.balance_on_chain(chain, account["address"], native.symbol) == 10_000_000


@pytest.mark.parametrize("loss", ["message lost after publishing", "broker refused the publish"])
def test_a_wallet_whose_first_message_went_missing_becomes_active_through_the_relay(
        stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch, loss: str) -> None:
    if loss == "message lost after publishing":  # waits out the relay's grace; the database is not the point
        h.once_per_session(stack, "the relay's grace is the same on either database")
    ctx = h.ctx()
    client_id = client_with_webhook()

    def lost(wallet_id: str, token: int) -> None:
        if loss == "broker refused the publish":
            raise ConnectionError("Error 111 connecting to the broker. Connection refused.")

    monkeypatch.setattr(wallets, "publish_key_generation", lost)
    started = time.monotonic()
    view = wallets.request_wallet(ctx, client_id, "lost message")
    monkeypatch.undo()
    assert view["status"] == "PROGRESSING"
    if loss == "message lost after publishing":
        # Nothing is queued: the wallet waits for its grace (PARATRO_STALL_AFTER_S=8) ...
        time.sleep(2)
        assert load_wallet(view["wallet_id"]).status == "PROGRESSING"
    # ... then the relay (beat) publishes it, and the worker generates the keys
    wallet = wait_active(view["wallet_id"], timeout=40)
    elapsed = time.monotonic() - started
    assert wallet.key_attempts == 1
    if loss == "message lost after publishing":
        assert elapsed >= ctx.stall_after_s - 1
    else:
        assert elapsed < ctx.stall_after_s  # due at once: the relay's next round, not the grace
    assert wallet_event_types(wallet.wallet_id) == [("wallet.progressing", 1), ("wallet.active", 2)]
    account, _ = wallets.open_account(ctx, client_id, wallet.wallet_id, "solana")
    assert validate_address("solana", account["address"], registry=ctx.registry) == account["address"]
