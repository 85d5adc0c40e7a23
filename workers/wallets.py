"""Wallets, accounts and assets as the API asks for them, and the key generation behind a wallet.

`request_wallet` answers at once: the wallet is written PROGRESSING / GENERATING with its
`wallet.progressing` event and a due time for its key generation (`key_due_at`), and only after
that commit is the `paratro.generate_wallet_keys` message published. A message that never arrives
(broker down, Redis restarted, a worker killed holding it) is published again by the beat relay
(`relay_key_generations`) once `key_due_at` passes: the wallet row is its own outbox.

`run_key_generation` is what the task does with a message: claim the run (its token moves, so a
copy of the same message does nothing), ask the signer for one key per chain family (idempotent),
then ACTIVE in one transaction with its event; a transient signer error is retried by the relay
after a backoff, and the last attempt (or an error no retry can cure) ends FAILED with a reason.
`generate_keys` is the one way keys are made: the task and `workers.services.onboard_wallet` (the
CLI's synchronous path) both call it.

Accounts and assets need no background work: `open_account` derives the address from the
wallet's public key, `add_asset` takes the token's configuration from the registry; both are
idempotent and return `(view, created)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from chains.base import Curve
from chains.errors import ChainError, UnknownToken
from pipeline import onboarding
from pipeline.errors import (
    ConfigurationError,
    NotFound,
    PipelineError,
    TransientError,
    UnknownSymbol,
    WalletNotActive,
)
from pipeline.ids import check_id
from pipeline.lookup import chain_spec
from pipeline.models import Account, Asset, Wallet, utcnow
from pipeline.steps import StepContext
from pipeline.views import account_view, asset_view, wallet_view
from signer.base import KeyRef, PublicKey, SignerError, UnknownKey
from workers.app import app, task_name
from workers.logconfig import redact

log = structlog.get_logger("paratro.wallets")

GENERATE_TASK = task_name("generate_wallet_keys")
FAILURE_REASON = "key_generation_failed"
RETRY_BASE_S = 2.0  # first retry after 2 s, then 4, 8, ... capped at ctx.max_countdown_s


# -- the keys --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeySpec:
    """One key a wallet needs: EVM chains share "evm", each other family has its own."""

    key_name: str
    curve: Curve


def key_specs(ctx: StepContext) -> list[KeySpec]:
    """One key per chain family in the registry, as its adapters name them (deduplicated by
    key_name). One adapter per family is enough, since every chain of a family signs alike; so a
    registry of seven EVM chains builds one EVM adapter here, not seven (adapters are cached per
    process by `chains.get_adapter`, and a family's SDK is imported once, with its first adapter)."""
    first_of_family: dict[str, str] = {}
    for name in ctx.registry.names():
        first_of_family.setdefault(ctx.registry.chain(name).family, name)
    specs: dict[str, KeySpec] = {}
    for family, chain in sorted(first_of_family.items()):
        try:
            adapter = ctx.adapter_for(chain)
        except ChainError as exc:
            raise ConfigurationError(f"no adapter for the {family} family ({chain}): {exc}") from None
        specs.setdefault(adapter.key_name, KeySpec(adapter.key_name, Curve(adapter.curve)))
    return list(specs.values())


def generate_keys(ctx: StepContext, wallet_id: str) -> dict[str, PublicKey]:
    """Create (or fetch: the signer's create_key is idempotent) every key the wallet needs, keyed
    by key_name. Raises the signer's errors as they are (SignerError: `transient` says whether
    asking again can help) and ConfigurationError if a family has no adapter."""
    check_id("wallet", wallet_id)
    return {spec.key_name: ctx.signer.create_key(KeyRef(wallet_id, spec.key_name, spec.curve))
            for spec in key_specs(ctx)}


def run_key_generation(ctx: StepContext, wallet_id: str, token: int | None, max_attempts: int) -> str:
    """One delivery of a key generation message; returns what happened: "active", "dropped" (not
    GENERATING any more, or the message's token moved: another run has it), "retry" (transient
    error: the relay publishes the next run after a backoff), "failed", or "deferred" (the
    database could not be reached: the relay sends the message again at the run's lease end)."""
    try:
        with ctx.db.unit_of_work() as session:
            run = onboarding.claim_key_run(session, wallet_id, token, ctx.step_lease_s)
    except PipelineError as exc:  # a malformed or unknown id is dropped; a DB outage is deferred
        if exc.transient:
            log.warning("wallet_keys.deferred", wallet=wallet_id, error=_summary(exc))
            return "deferred"
        log.warning("wallet_keys.dropped", wallet=wallet_id, reason=_summary(exc))
        return "dropped"
    if run is None:
        return "dropped"
    if run.attempt > max_attempts:  # earlier runs died without concluding (worker killed, ...)
        return _fail(ctx, run, f"key generation did not finish in {max_attempts} attempts")
    try:
        generate_keys(ctx, wallet_id)
    except Exception as exc:  # noqa: BLE001 - every error is classified; none may leave the wallet stuck
        return _after_error(ctx, run, exc, max_attempts)
    try:
        with ctx.db.unit_of_work() as session:
            changed = onboarding.activate_wallet(session, wallet_id)
    except PipelineError as exc:
        log.warning("wallet_keys.deferred", wallet=wallet_id, attempt=run.attempt, error=_summary(exc))
        return "deferred"  # keys exist; the relay runs it again at the lease's end and activates
    if changed:
        log.info("wallet_keys.active", wallet=wallet_id, attempt=run.attempt)
        return "active"
    return "dropped"


def _after_error(ctx: StepContext, run: onboarding.KeyRun, exc: Exception, max_attempts: int) -> str:
    if isinstance(exc, (SignerError, PipelineError)):
        transient = exc.transient
    else:  # not a signer or domain error (a bug, a library's surprise): retried, bounded by attempts
        transient = not isinstance(exc, ChainError)
    if not transient:
        return _fail(ctx, run, _summary(exc))
    if run.attempt >= max_attempts:
        return _fail(ctx, run, f"gave up after {run.attempt} attempts: {_summary(exc)}")
    delay = min(ctx.max_countdown_s, RETRY_BASE_S * 2 ** (run.attempt - 1))
    try:
        with ctx.db.unit_of_work() as session:
            onboarding.schedule_key_retry(session, run, delay)
    except PipelineError as db_exc:
        log.warning("wallet_keys.deferred", wallet=run.wallet_id, error=_summary(db_exc))
        return "deferred"
    log.warning("wallet_keys.retry", wallet=run.wallet_id, attempt=run.attempt, delay_s=delay, error=_summary(exc))
    return "retry"


def _fail(ctx: StepContext, run: onboarding.KeyRun, detail: str) -> str:
    try:
        with ctx.db.unit_of_work() as session:
            changed = onboarding.fail_wallet(session, run.wallet_id, FAILURE_REASON, detail, holder=run.attempt)
    except PipelineError as exc:
        log.warning("wallet_keys.deferred", wallet=run.wallet_id, error=_summary(exc))
        return "deferred"
    if not changed:
        return "dropped"
    log.error("wallet_keys.failed", wallet=run.wallet_id, attempt=run.attempt, detail=detail)
    return "failed"


def _summary(exc: BaseException) -> str:
    """The error's class and first line, redacted (no URL credentials, no configured secret)."""
    text = " ".join(str(exc).split())[:300]
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# -- publishing ------------------------------------------------------------------------------------

def publish_key_generation(wallet_id: str, token: int) -> None:
    """Send one key generation message (raises the broker's error); routed to paratro.keys."""
    app.send_task(GENERATE_TASK, args=(wallet_id, token))


def _publish_or_defer(ctx: StepContext, wallet_id: str, token: int) -> bool:
    """Publish; on failure make the wallet due now, so the relay sends it on its next round."""
    try:
        publish_key_generation(wallet_id, token)
        return True
    except Exception as exc:  # noqa: BLE001 - kombu/redis raise many types; the wallet row keeps it
        log.warning("wallet_keys.publish_deferred", wallet=wallet_id, error=_summary(exc))
    try:
        with ctx.db.unit_of_work() as session:
            onboarding.mark_key_due_now(session, wallet_id)
    except Exception as exc:  # noqa: BLE001 - still due at its grace deadline
        log.warning("wallet_keys.mark_due_failed", wallet=wallet_id, error=type(exc).__name__)
    return False


def relay_key_generations(ctx: StepContext) -> int:
    """The beat relay: publish the key generation of every GENERATING wallet whose due time has
    passed (a lost message, a retry whose backoff is over, a run that died), each with its current
    token; it is due again `ctx.stall_after_s` later if that message goes missing too."""
    with ctx.db.unit_of_work() as session:
        due = onboarding.due_key_generations(session, ctx.stall_after_s)
    published = 0
    for run in due:
        try:
            publish_key_generation(run.wallet_id, run.attempt)
            published += 1
            log.info("wallet_keys.relayed", wallet=run.wallet_id, token=run.attempt)
        except Exception as exc:  # noqa: BLE001 - due again after the grace
            log.warning("wallet_keys.publish_deferred", wallet=run.wallet_id, error=_summary(exc))
    return published


# -- the services the API calls --------------------------------------------------------------------

def request_wallet(ctx: StepContext, client_id: str, wallet_name: str) -> dict[str, Any]:
    """A new wallet, PROGRESSING / GENERATING, whose keys a worker generates in the background.

    The wallet and its `wallet.progressing` event commit together, with the client row locked so
    concurrent requests cannot exceed `max_wallets` (FAILED wallets do not count); the message is
    published after the commit, and a publish that fails is left to the relay (the wallet is
    still created). Raises InvalidInput (the name), InvalidId, NotFound (client), LimitExceeded."""
    due = utcnow() + timedelta(seconds=ctx.stall_after_s)
    with ctx.db.unit_of_work() as session:
        wallet = onboarding.create_wallet(session, client_id, wallet_name, key_due_at=due)
        view, token = wallet_view(wallet), wallet.key_attempts
    _publish_or_defer(ctx, view["wallet_id"], token)
    return view


def open_account(ctx: StepContext, client_id: str, wallet_id: str, chain: str) -> tuple[dict[str, Any], bool]:
    """The wallet's account on `chain` and whether it was created now (False: it existed).

    The wallet must be the client's (else NotFound, worded as for a missing one) and ACTIVE (else
    WalletNotActive); the chain must be in the registry (UnknownChainError). The address comes
    from the wallet's public key for the chain's family, so all EVM chains of one wallet share it;
    the network comes from the registry. A family whose key the wallet lacks (added to the registry
    after the wallet was activated) gets its key now. Signer trouble: TransientError (retry later)."""
    check_id("wallet", wallet_id)
    spec = chain_spec(ctx.registry, chain)
    with ctx.db.unit_of_work() as session:
        wallet = _client_wallet(session, client_id, wallet_id)
        if wallet.status != onboarding.ACTIVE:
            raise WalletNotActive(f"wallet {wallet_id} is {wallet.status} (key {wallet.key_status}); "
                                  "accounts can be opened once it is ACTIVE")
        existing = _account_on(session, wallet_id, spec.name)
        if existing is not None:
            return account_view(existing), False
    try:
        adapter = ctx.adapter_for(spec.name)
    except ChainError as exc:
        raise ConfigurationError(f"no adapter for {spec.name}: {_summary(exc)}") from None
    public = _public_key(ctx, KeyRef(wallet_id, adapter.key_name, adapter.curve))
    address = adapter.address_from_public_key(public.key)
    return _created_once(
        lambda session: onboarding.create_account(session, ctx.registry, wallet_id, spec.name, address),
        lambda session: _account_on(session, wallet_id, spec.name), ctx, account_view)


def add_asset(ctx: StepContext, client_id: str, account_id: str, symbol: str) -> tuple[dict[str, Any], bool]:
    """The token `symbol` on the client's account and whether it was added now (False: it was
    there). Type, contract and decimals come from the registry. Raises InvalidId, NotFound (not the
    client's account, worded as for a missing one), UnknownSymbol (not configured on that chain)."""
    check_id("account", account_id)
    with ctx.db.unit_of_work() as session:
        account = session.get(Account, account_id)
        if account is None or account.client_id != client_id:
            raise NotFound(f"account {account_id} not found")
        chain = account.chain
        try:
            configured = ctx.registry.chain(chain).token(symbol).symbol
        except (UnknownToken, TypeError):
            raise UnknownSymbol(f"token {str(symbol)[:40]!r} is not configured on {chain}") from None
        existing = _asset_of(session, account_id, configured)
        if existing is not None:
            return asset_view(existing), False
    return _created_once(
        lambda session: onboarding.add_asset(session, ctx.registry, account_id, configured),
        lambda session: _asset_of(session, account_id, configured), ctx, asset_view)


def _created_once(create: Callable[[Any], Any], find: Callable[[Any], Any], ctx: StepContext,
                  view: Callable[[Any], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """Create the row; if a concurrent request created it first (the unique constraint refused
    ours), answer with theirs, as not created."""
    try:
        with ctx.db.unit_of_work() as session:
            if (found := find(session)) is not None:
                return view(found), False
            return view(create(session)), True
    except IntegrityError:
        with ctx.db.unit_of_work() as session:
            found = find(session)
            if found is None:
                raise
            return view(found), False


def _client_wallet(session: Any, client_id: str, wallet_id: str) -> Wallet:
    wallet = session.get(Wallet, wallet_id)
    if wallet is None or wallet.client_id != client_id:
        raise NotFound(f"wallet {wallet_id} not found")
    return wallet


def _account_on(session: Any, wallet_id: str, chain: str) -> Account | None:
    return session.scalar(select(Account).where(Account.wallet_id == wallet_id, Account.chain == chain))


def _asset_of(session: Any, account_id: str, symbol: str) -> Asset | None:
    return session.scalar(select(Asset).where(Asset.account_id == account_id, Asset.symbol == symbol))


def _public_key(ctx: StepContext, ref: KeyRef) -> PublicKey:
    try:
        try:
            return ctx.signer.public_key(ref)
        except UnknownKey:
            return ctx.signer.create_key(ref)
    except SignerError as exc:
        if exc.transient:
            raise TransientError(f"signer unavailable: {_summary(exc)}") from None
        raise ConfigurationError(f"signer: {_summary(exc)}") from None
