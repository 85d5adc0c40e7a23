"""Wallets generated in the background: the request, the key generation run, its retries and
failure, and accounts and assets opened on an ACTIVE wallet.

The domain rules run on the migrated SQLite file with the real local signer and the real chain
adapters of the devnet registry (no node is contacted: deriving an address needs none); Celery
publishing is captured instead of sent.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from chains import get_adapter, validate_address
from pipeline import credentials, onboarding
from pipeline.errors import InvalidId, InvalidInput, LimitExceeded, NotFound, UnknownChainError, UnknownSymbol, WalletNotActive
from pipeline.models import Client, Wallet, WebhookEvent, utcnow
from pipeline.sealing import SecretBox, new_secrets_key
from pipeline.settings import get_settings
from pipeline.steps import StepContext
from signer.base import KeyRef, PublicKey, SignatureRefused, SignerUnavailable
from signer.local import SignerKey
from tests.unit.fakes import World
from workers import key_tasks, wallets

BOX = SecretBox(new_secrets_key())
FAMILY_KEYS = {"evm": "secp256k1", "tron": "secp256k1", "bitcoin": "secp256k1", "solana": "ed25519"}


@pytest.fixture
def ctx(world: World) -> StepContext:
    """The world's DB and local signer with the devnet registry's real adapters."""
    return world.ctx(adapter_for=lambda chain: get_adapter(world.registry.chain(chain)), stall_after_s=30.0,
                     max_countdown_s=60.0)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(wallets, "publish_key_generation", lambda wallet_id, token: sent.append((wallet_id, token)))
    return sent


def new_client(world: World, max_wallets: int = 10, webhook: bool = True) -> str:
    with world.db.unit_of_work() as s:
        client, _ = credentials.create_client(s, BOX, "Acme", max_wallets=max_wallets)
        if webhook:
            client.webhook_url = "https://hooks.example.com/paratro"
        return client.client_id


def wallet(world: World, wallet_id: str) -> Wallet:
    with world.db.unit_of_work() as s:
        return s.get(Wallet, wallet_id)  # type: ignore[return-value]


def wallet_events(world: World, wallet_id: str) -> list[tuple[str, int, dict[str, Any]]]:
    with world.db.unit_of_work() as s:
        rows = s.scalars(select(WebhookEvent).where(WebhookEvent.resource_id == wallet_id)
                         .order_by(WebhookEvent.sequence)).all()
        return [(e.type, e.sequence, json.loads(e.payload)) for e in rows]


def signer_keys(world: World, wallet_id: str) -> dict[str, str]:
    with world.db.unit_of_work() as s:
        return {k.key_name: k.curve for k in s.scalars(select(SignerKey).where(SignerKey.wallet_id == wallet_id))}


def active_wallet(ctx: StepContext, client_id: str, published: list[tuple[str, int]]) -> str:
    wallet_id = wallets.request_wallet(ctx, client_id, "treasury")["wallet_id"]
    assert wallets.run_key_generation(ctx, wallet_id, 0, 5) == "active"
    return wallet_id


class FlakySigner:
    """Delegates to a real signer, raising `error` from create_key while `failures` lasts."""

    def __init__(self, inner: Any, error: Exception, failures: int = 10**9) -> None:
        self.inner, self.error, self.failures, self.calls = inner, error, failures, 0

    def create_key(self, ref: KeyRef) -> PublicKey:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return self.inner.create_key(ref)

    def public_key(self, ref: KeyRef) -> PublicKey:
        return self.inner.public_key(ref)


# -- requesting a wallet ---------------------------------------------------------------------------

def test_a_requested_wallet_is_written_with_its_event_before_its_key_generation_is_published(
        world: World, ctx: StepContext, published: list[tuple[str, int]]) -> None:
    client_id = new_client(world)
    view = wallets.request_wallet(ctx, client_id, "  Treasury  ")
    stored = wallet(world, view["wallet_id"])
    assert (view["wallet_name"], view["status"], view["key_status"]) == ("Treasury", "PROGRESSING", "GENERATING")
    assert view["wallet_id"].startswith("w_") and view["failure_reason"] is None
    assert (stored.status, stored.key_status, stored.key_attempts) == ("PROGRESSING", "GENERATING", 0)
    assert utcnow() + timedelta(seconds=25) < stored.key_due_at <= utcnow() + timedelta(seconds=30)
    assert published == [(view["wallet_id"], 0)]
    [(kind, sequence, body)] = wallet_events(world, view["wallet_id"])
    assert (kind, sequence, body["type"], body["data"]) == ("wallet.progressing", 1, "wallet.progressing", view)


@pytest.mark.parametrize("name", ["", "   ", None, "x" * 201, "new\nline"])
def test_a_bad_wallet_name_writes_nothing_and_publishes_nothing(world: World, ctx: StepContext,
                                                                published: list[tuple[str, int]], name: Any) -> None:
    client_id = new_client(world)
    with pytest.raises(InvalidInput):
        wallets.request_wallet(ctx, client_id, name)
    assert (world.count(Wallet), world.count(WebhookEvent), published) == (0, 0, [])


def test_an_unknown_or_malformed_client_is_refused(world: World, ctx: StepContext, published: list) -> None:
    with pytest.raises(NotFound):
        wallets.request_wallet(ctx, "cli_01JAAAAAAAAAAAAAAAAAAAAAAA", "w")
    with pytest.raises(InvalidId):
        wallets.request_wallet(ctx, "cli_nope", "w")
    assert published == []


def test_max_wallets_counts_progressing_and_active_wallets_but_not_failed_ones(
        world: World, ctx: StepContext, published: list[tuple[str, int]]) -> None:
    client_id = new_client(world, max_wallets=2)
    first = active_wallet(ctx, client_id, published)
    second = wallets.request_wallet(ctx, client_id, "second")["wallet_id"]  # PROGRESSING
    with pytest.raises(LimitExceeded):
        wallets.request_wallet(ctx, client_id, "third")
    with world.db.unit_of_work() as s:
        assert onboarding.fail_wallet(s, second, "key_generation_failed", "test")
    third = wallets.request_wallet(ctx, client_id, "third")["wallet_id"]
    with pytest.raises(LimitExceeded):
        wallets.request_wallet(ctx, client_id, "fourth")
    assert [wallet(world, w).status for w in (first, second, third)] == ["ACTIVE", "FAILED", "PROGRESSING"]


def test_a_failed_publish_still_creates_the_wallet_and_leaves_it_due_for_the_relay(
        world: World, ctx: StepContext, monkeypatch: pytest.MonkeyPatch) -> None:
    client_id = new_client(world)

    def broker_down(wallet_id: str, token: int) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(wallets, "publish_key_generation", broker_down)
    wallet_id = wallets.request_wallet(ctx, client_id, "w")["wallet_id"]
    assert wallet(world, wallet_id).key_due_at <= utcnow()

    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(wallets, "publish_key_generation", lambda w, t: sent.append((w, t)))
    assert wallets.relay_key_generations(ctx) == 1 and sent == [(wallet_id, 0)]
    assert wallet(world, wallet_id).key_due_at > utcnow() + timedelta(seconds=25)  # due again after the grace
    assert wallets.relay_key_generations(ctx) == 0 and sent == [(wallet_id, 0)]
    assert wallets.run_key_generation(ctx, wallet_id, 0, 5) == "active"
    with world.db.unit_of_work() as s:
        s.get(Wallet, wallet_id).key_due_at = utcnow() - timedelta(seconds=1)
    assert wallets.relay_key_generations(ctx) == 0  # ACTIVE wallets are never relayed


# -- the key generation run ------------------------------------------------------------------------

def test_key_generation_makes_one_key_per_family_and_activates_the_wallet_once(
        world: World, ctx: StepContext, published: list[tuple[str, int]]) -> None:
    client_id = new_client(world)
    wallet_id = wallets.request_wallet(ctx, client_id, "w")["wallet_id"]
    assert wallets.run_key_generation(ctx, wallet_id, 0, 5) == "active"
    assert signer_keys(world, wallet_id) == FAMILY_KEYS  # seven EVM chains, one "evm" key
    stored = wallet(world, wallet_id)
    assert (stored.status, stored.key_status, stored.key_attempts, stored.key_due_at) == ("ACTIVE", "ACTIVE", 1, None)
    # A duplicate of the same message, and a late one with the new token, do nothing
    assert wallets.run_key_generation(ctx, wallet_id, 0, 5) == "dropped"
    assert wallets.run_key_generation(ctx, wallet_id, 1, 5) == "dropped"
    events = wallet_events(world, wallet_id)
    assert [(kind, seq) for kind, seq, _ in events] == [("wallet.progressing", 1), ("wallet.active", 2)]
    assert events[1][2]["data"]["status"] == "ACTIVE" and events[1][2]["data"]["key_status"] == "ACTIVE"


def test_activation_and_failure_are_compare_and_set_on_generating(world: World, ctx: StepContext,
                                                                  published: list) -> None:
    client_id = new_client(world)
    a = wallets.request_wallet(ctx, client_id, "a")["wallet_id"]
    b = wallets.request_wallet(ctx, client_id, "b")["wallet_id"]
    with world.db.unit_of_work() as s:
        assert onboarding.activate_wallet(s, a) is True
        assert onboarding.activate_wallet(s, a) is False
        assert onboarding.fail_wallet(s, a, "key_generation_failed", "late") is False
        assert onboarding.fail_wallet(s, b, "key_generation_failed", "signer refused") is True
        assert onboarding.activate_wallet(s, b) is False
        assert onboarding.fail_wallet(s, b, "other", "again") is False
    assert (wallet(world, a).status, wallet(world, a).failure_reason) == ("ACTIVE", None)
    failed = wallet(world, b)
    assert (failed.status, failed.key_status, failed.failure_reason, failed.failure_detail) == (
        "FAILED", "FAILED", "key_generation_failed", "signer refused")
    assert [k for k, _, _ in wallet_events(world, a)] == ["wallet.progressing", "wallet.active"]
    assert [k for k, _, _ in wallet_events(world, b)] == ["wallet.progressing", "wallet.failed"]
    assert wallet_events(world, b)[1][2]["data"]["failure_reason"] == "key_generation_failed"


def test_a_signer_that_stays_unavailable_is_retried_with_backoff_then_the_wallet_fails(
        world: World, ctx: StepContext, published: list, monkeypatch: pytest.MonkeyPatch) -> None:
    signer = FlakySigner(world.signer, SignerUnavailable("signer store busy"))
    flaky = world.ctx(adapter_for=ctx.adapter_for, signer=signer, stall_after_s=30.0, max_countdown_s=60.0)
    monkeypatch.setattr(key_tasks.runtime, "context", lambda: flaky)
    client_id = new_client(world, max_wallets=1)
    wallet_id = wallets.request_wallet(flaky, client_id, "w")["wallet_id"]
    attempts = get_settings().wallet_key_attempts
    outcomes, delays = [], []
    for token in range(attempts):
        outcomes.append(key_tasks.generate_wallet_keys(wallet_id, token))  # the task, as the relay sends it
        stored = wallet(world, wallet_id)
        if stored.key_due_at is not None:
            delays.append(round((stored.key_due_at - utcnow()).total_seconds()))
    assert outcomes == ["retry"] * (attempts - 1) + ["failed"]
    assert delays == [2 * 2 ** i for i in range(attempts - 1)]  # 2, 4, 8, 16 s: the relay sends the next run
    stored = wallet(world, wallet_id)
    assert (stored.status, stored.key_status, stored.failure_reason, stored.key_attempts) == (
        "FAILED", "FAILED", "key_generation_failed", attempts)
    assert f"after {attempts} attempts" in stored.failure_detail and "SignerUnavailable" in stored.failure_detail
    assert [k for k, _, _ in wallet_events(world, wallet_id)] == ["wallet.progressing", "wallet.failed"]
    assert key_tasks.generate_wallet_keys(wallet_id, attempts) == "dropped"  # a late copy changes nothing
    assert wallets.request_wallet(ctx, client_id, "again")["status"] == "PROGRESSING"  # FAILED does not count


def test_a_transient_error_is_retried_and_the_next_run_succeeds(world: World, ctx: StepContext,
                                                                 published: list) -> None:
    signer = FlakySigner(world.signer, SignerUnavailable("busy"), failures=1)
    flaky = world.ctx(adapter_for=ctx.adapter_for, signer=signer, stall_after_s=30.0)
    wallet_id = wallets.request_wallet(flaky, new_client(world), "w")["wallet_id"]
    assert wallets.run_key_generation(flaky, wallet_id, 0, 5) == "retry"
    with world.db.unit_of_work() as s:
        s.get(Wallet, wallet_id).key_due_at = utcnow() - timedelta(seconds=1)  # the backoff is over
    published.clear()
    assert wallets.relay_key_generations(flaky) == 1 and published == [(wallet_id, 1)]
    assert wallets.run_key_generation(flaky, wallet_id, 1, 5) == "active"
    assert signer_keys(world, wallet_id) == FAMILY_KEYS


@pytest.mark.parametrize("error", [SignatureRefused("policy: no new keys"), ValueError("a library's surprise")],
                         ids=["permanent signer error", "unexpected error"])
def test_a_permanent_error_fails_the_wallet_at_once_and_an_unexpected_one_is_retried(
        world: World, ctx: StepContext, published: list, error: Exception) -> None:
    flaky = world.ctx(adapter_for=ctx.adapter_for, signer=FlakySigner(world.signer, error), stall_after_s=30.0)
    wallet_id = wallets.request_wallet(flaky, new_client(world), "w")["wallet_id"]
    outcome = wallets.run_key_generation(flaky, wallet_id, 0, 5)
    stored = wallet(world, wallet_id)
    if isinstance(error, SignatureRefused):
        assert (outcome, stored.status, stored.failure_detail) == ("failed", "FAILED", "SignatureRefused: policy: no new keys")
    else:
        assert (outcome, stored.status, stored.key_status) == ("retry", "PROGRESSING", "GENERATING")


def test_runs_that_died_count_as_attempts_and_a_superseded_run_cannot_fail_or_reschedule(
        world: World, ctx: StepContext, published: list) -> None:
    wallet_id = wallets.request_wallet(ctx, new_client(world), "w")["wallet_id"]
    with world.db.unit_of_work() as s:
        first = onboarding.claim_key_run(s, wallet_id, 0, lease_s=300)
        assert first is not None and first.attempt == 1
        assert onboarding.claim_key_run(s, wallet_id, 0, lease_s=300) is None  # a copy of the same message
        second = onboarding.claim_key_run(s, wallet_id, 1, lease_s=300)  # the relay's, after the first died
        assert second is not None and second.attempt == 2
        assert onboarding.schedule_key_retry(s, first, 5) is False
        assert onboarding.fail_wallet(s, wallet_id, "key_generation_failed", "stale run", holder=first.attempt) is False
    assert wallet(world, wallet_id).status == "PROGRESSING"
    # Every run so far died without concluding; the run after the last allowed one fails the wallet
    assert wallets.run_key_generation(ctx, wallet_id, 2, max_attempts=2) == "failed"
    assert "did not finish in 2 attempts" in wallet(world, wallet_id).failure_detail


def test_two_runs_of_one_wallet_end_with_one_activation(world: World, ctx: StepContext, published: list) -> None:
    wallet_id = wallets.request_wallet(ctx, new_client(world), "w")["wallet_id"]
    with world.db.unit_of_work() as s:
        slow = onboarding.claim_key_run(s, wallet_id, 0, lease_s=0)  # its lease ran out
    relayed = wallets.relay_key_generations(ctx)
    assert relayed == 1 and published[-1] == (wallet_id, 1)
    assert wallets.run_key_generation(ctx, wallet_id, 1, 5) == "active"  # the newer run
    assert slow is not None
    wallets.generate_keys(ctx, wallet_id)  # the slow run finishes its keys (same keys: idempotent) ...
    with world.db.unit_of_work() as s:
        assert onboarding.activate_wallet(s, wallet_id) is False  # ... and its activation is a no-op
    assert [k for k, _, _ in wallet_events(world, wallet_id)] == ["wallet.progressing", "wallet.active"]


def test_a_malformed_or_unknown_wallet_message_is_dropped(world: World, ctx: StepContext) -> None:
    assert wallets.run_key_generation(ctx, "w_nope", 0, 5) == "dropped"
    assert wallets.run_key_generation(ctx, "w_01JAAAAAAAAAAAAAAAAAAAAAAA", 0, 5) == "dropped"


def test_the_relay_task_publishes_due_wallets_only(world: World, ctx: StepContext, published: list,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_tasks.runtime, "context", lambda: ctx)
    client_id = new_client(world)
    due = wallets.request_wallet(ctx, client_id, "due")["wallet_id"]
    wallets.request_wallet(ctx, client_id, "not due")
    with world.db.unit_of_work() as s:
        s.get(Wallet, due).key_due_at = utcnow() - timedelta(seconds=1)
    published.clear()
    assert key_tasks.wallet_keys_relay() == 1 and published == [(due, 0)]


# -- accounts and assets ---------------------------------------------------------------------------

def test_accounts_need_an_active_wallet_of_the_client(world: World, ctx: StepContext, published: list) -> None:
    client_id, other = new_client(world), new_client(world)
    waiting = wallets.request_wallet(ctx, client_id, "w")["wallet_id"]
    with pytest.raises(WalletNotActive):
        wallets.open_account(ctx, client_id, waiting, "ethereum")
    assert wallets.run_key_generation(ctx, waiting, 0, 5) == "active"
    with pytest.raises(NotFound) as foreign:
        wallets.open_account(ctx, other, waiting, "ethereum")
    with pytest.raises(NotFound) as missing:
        wallets.open_account(ctx, other, "w_01JAAAAAAAAAAAAAAAAAAAAAAA", "ethereum")
    assert str(foreign.value) == f"wallet {waiting} not found"
    assert str(missing.value) == "wallet w_01JAAAAAAAAAAAAAAAAAAAAAAA not found"
    with pytest.raises(UnknownChainError):
        wallets.open_account(ctx, client_id, waiting, "dogechain")
    with pytest.raises(InvalidId):
        wallets.open_account(ctx, client_id, "acc_01JAAAAAAAAAAAAAAAAAAAAAAA", "ethereum")
    failed = wallets.request_wallet(ctx, client_id, "f")["wallet_id"]
    with world.db.unit_of_work() as s:
        onboarding.fail_wallet(s, failed, "key_generation_failed", "test")
    with pytest.raises(WalletNotActive) as info:
        wallets.open_account(ctx, client_id, failed, "ethereum")
    assert "FAILED" in str(info.value)


def test_evm_chains_share_an_address_and_each_family_derives_its_own(world: World, ctx: StepContext,
                                                                     published: list) -> None:
    client_id = new_client(world)
    wallet_id = active_wallet(ctx, client_id, published)
    views = {}
    for chain in ("ethereum", "bsc", "polygon", "tron", "bitcoin", "solana"):
        view, created = wallets.open_account(ctx, client_id, wallet_id, chain)
        assert created and view["chain"] == chain and view["wallet_id"] == wallet_id and view["status"] == "ACTIVE"
        assert view["network"] == world.registry.chain(chain).network
        assert validate_address(chain, view["address"], registry=world.registry) == view["address"]
        views[chain] = view
    assert views["ethereum"]["address"] == views["bsc"]["address"] == views["polygon"]["address"]
    assert views["ethereum"]["account_id"] != views["bsc"]["account_id"]
    assert len({views[c]["address"] for c in ("ethereum", "tron", "bitcoin", "solana")}) == 4
    assert views["bitcoin"]["network"] == "regtest" and views["bitcoin"]["address"].startswith("bcrt1")
    again, created = wallets.open_account(ctx, client_id, wallet_id, "bsc")
    assert (again, created) == (views["bsc"], False)
    evm = world.signer.public_key(KeyRef(wallet_id, "evm", "secp256k1"))
    assert get_adapter(world.registry.chain("ethereum")).address_from_public_key(evm.key) == views["ethereum"]["address"]


def test_assets_are_configured_from_the_registry_idempotent_and_tenant_checked(world: World, ctx: StepContext,
                                                                               published: list) -> None:
    client_id, other = new_client(world), new_client(world)
    wallet_id = active_wallet(ctx, client_id, published)
    account_id = wallets.open_account(ctx, client_id, wallet_id, "ethereum")[0]["account_id"]
    usdt, created = wallets.add_asset(ctx, client_id, account_id, "USDT")
    token = world.registry.chain("ethereum").token("USDT")
    assert created and usdt["asset_id"].startswith("ast_") and usdt["account_id"] == account_id
    assert (usdt["symbol"], usdt["asset_type"], usdt["contract_address"], usdt["decimals"]) == (
        "USDT", token.asset_type, token.contract, token.decimals)
    assert (usdt["balance"], usdt["locked_balance"]) == ("0", "0")
    assert wallets.add_asset(ctx, client_id, account_id, "USDT") == (usdt, False)
    eth, created = wallets.add_asset(ctx, client_id, account_id, "ETH")
    assert created and (eth["asset_type"], eth["contract_address"], eth["decimals"]) == ("NATIVE", None, 18)
    with pytest.raises(UnknownSymbol):
        wallets.add_asset(ctx, client_id, account_id, "BNB")  # BNB is bsc's, not ethereum's
    with pytest.raises(UnknownSymbol):
        wallets.add_asset(ctx, client_id, account_id, ["USDT"])  # type: ignore[arg-type]
    with pytest.raises(NotFound) as foreign:
        wallets.add_asset(ctx, other, account_id, "USDT")
    assert str(foreign.value) == f"account {account_id} not found"
    with pytest.raises(NotFound):
        wallets.add_asset(ctx, client_id, "acc_01JAAAAAAAAAAAAAAAAAAAAAAA", "USDT")
    with pytest.raises(InvalidId):
        wallets.add_asset(ctx, client_id, wallet_id, "USDT")
    tron = wallets.open_account(ctx, client_id, wallet_id, "tron")[0]["account_id"]
    trc20, _ = wallets.add_asset(ctx, client_id, tron, "USDT")
    assert trc20["asset_type"] == "TRC20" and trc20["chain"] == "tron"


def test_onboard_wallet_generates_keys_as_the_task_does_and_writes_both_events(world: World, ctx: StepContext) -> None:
    from workers.services import onboard_wallet

    client_id = new_client(world)
    made = onboard_wallet(ctx, client_id, "hot", {"ethereum": ["ETH"], "solana": ["SOL"]})
    assert signer_keys(world, made.wallet_id) == FAMILY_KEYS
    assert (wallet(world, made.wallet_id).status, wallet(world, made.wallet_id).key_status) == ("ACTIVE", "ACTIVE")
    assert [k for k, _, _ in wallet_events(world, made.wallet_id)] == ["wallet.progressing", "wallet.active"]
    view, created = wallets.open_account(ctx, client_id, made.wallet_id, "bsc")
    assert created and view["address"] == made.accounts["ethereum"]
    assert wallets.open_account(ctx, client_id, made.wallet_id, "solana")[0]["address"] == made.accounts["solana"]


def test_no_webhook_url_no_wallet_events(world: World, ctx: StepContext, published: list) -> None:
    client_id = new_client(world, webhook=False)
    wallet_id = active_wallet(ctx, client_id, published)
    assert wallet_events(world, wallet_id) == [] and wallet(world, wallet_id).status == "ACTIVE"
    with world.db.unit_of_work() as s:
        assert s.get(Client, client_id).webhook_url is None
