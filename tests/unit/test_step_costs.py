"""What the cost cuts of issue 9 promise, checked on a migrated SQLite file: fewer DB transactions
per signature (the request built in the transaction that read the transfer when nothing comes
from the chain; the signer's check-sign-store in one; its fetch from memory), a key unsealed once
per signer, a listening client read once per TTL and a silent one every time, and the SQLite
settings every pipeline connection gets. Fencing, nonce order and sign-once still hold."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from eth_keys import keys as eth_keys
from sqlalchemy import Engine, event, select

from chains.base import Curve
from pipeline import events
from pipeline.db import Database
from pipeline.errors import Superseded
from pipeline.models import Client, NonceCursor, ReleasedNonce
from pipeline.sealing import SecretBox, new_secrets_key
from pipeline.stages import Stage
from pipeline.steps import STEP_FUNCTIONS, OutcomeKind
from pipeline.steps.context import signing_payloads_of
from pipeline.webhooks import configure_webhook
from signer.base import KeyRef, SignatureRefused
from signer.local import LocalKeySigner, SignatureRequest
from tests.unit.fakes import FakeAdapter, FakeSigner, World

ETH = 10**18
DIGEST = b"\x11" * 32
OTHER_DIGEST = b"\x22" * 32


class OfflineAdapter(FakeAdapter):
    """The fake EVM-like adapter, declaring (like EvmAdapter) that its build context needs no RPC."""

    build_context_offline = True


@pytest.fixture
def offline_world(db: Database, registry, local_signer: LocalKeySigner) -> World:  # type: ignore[no-untyped-def]
    adapters = {name: OfflineAdapter(registry.chain(name)) for name in registry.names()}
    return World(db, registry, local_signer, adapters)


@contextmanager
def commits(engine: Engine) -> Iterator[list[int]]:
    """Counts the DB transactions committed inside (one list item per commit)."""
    seen: list[int] = []

    def on_commit(_conn: object) -> None:
        seen.append(1)

    event.listen(engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(engine, "commit", on_commit)


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def signed_by_wallet(world: World, tx_id: str, signer: LocalKeySigner, wallet_id: str) -> bool:
    tx = world.tx(tx_id)
    (digest,) = signing_payloads_of(tx)
    (signature,) = signer.fetch_signature(tx.signature_request_id) or [b""]
    recovered = eth_keys.Signature(signature).recover_public_key_from_msg_hash(digest).to_bytes()
    return recovered == signer.public_key(KeyRef(wallet_id, "evm", Curve.SECP256K1)).key


# -- request_signature -----------------------------------------------------------------------------

def test_with_the_nonce_cursor_known_the_request_is_built_in_the_reading_transaction(
        offline_world: World, local_signer: LocalKeySigner, db: Database) -> None:
    world = offline_world
    world.adapter().chain_nonce = 7
    alice = world.onboard(balances={"ETH": ETH})
    first, second = world.transfer(alice, "0.1"), world.transfer(alice, "0.1")
    world.run_until(first, "lock_funds")
    world.run_until(second, "lock_funds")
    run_first, run_second = world.take("request_signature", first), world.take("request_signature", second)
    assert run_first is not None and run_second is not None

    # the account's first transfer: its pending nonce comes from the chain, outside any transaction
    with commits(db.engine) as first_commits:
        assert STEP_FUNCTIONS["request_signature"](world.ctx(), run_first).kind is OutcomeKind.ADVANCED
    # then the cursor exists: read + nonce + build + SIGNATURE_REQUESTED, sign-and-store, SIGNED
    with commits(db.engine) as second_commits:
        assert STEP_FUNCTIONS["request_signature"](world.ctx(), run_second).kind is OutcomeKind.ADVANCED

    assert (len(first_commits), len(second_commits)) == (4, 3)
    assert world.adapter().nonce_calls == [alice.address]  # the chain was asked once, for the first
    assert (world.tx(first).nonce, world.tx(second).nonce) == (7, 8)
    for tx_id in (first, second):
        assert world.stage_changes(tx_id)[-2:] == [("FUNDS_LOCKED", "SIGNATURE_REQUESTED"),
                                                    ("SIGNATURE_REQUESTED", "SIGNED")]
        assert signed_by_wallet(world, tx_id, local_signer, alice.wallet_id)
    with db.unit_of_work() as s:
        assert s.get(NonceCursor, alice.account_id).next_nonce == 9  # type: ignore[union-attr]
        stored = s.get(SignatureRequest, f"{second}.0")
        assert stored is not None  # the signer was asked for what the transfer committed
    assert world.tx(second).signed_payload.startswith(world.tx(second).unsigned_payload)


def test_the_built_in_place_request_takes_the_lowest_released_nonce_first(offline_world: World) -> None:
    world = offline_world
    signer = FakeSigner(refuse=SignatureRefused("policy says no"))
    alice = world.onboard(balances={"ETH": ETH}, signer=signer)
    ctx = world.ctx(signer=signer)
    world.adapter().chain_nonce = 4
    refused = world.transfer(alice, "0.1")
    world.run_until(refused, "request_signature", ctx)
    assert (world.tx(refused).status, world.tx(refused).nonce) == ("FAILED", 4)

    signer.refuse = None
    nxt, after = world.transfer(alice, "0.1"), world.transfer(alice, "0.1")
    assert world.run_until(nxt, "request_signature", ctx)[-1].kind is OutcomeKind.ADVANCED
    assert world.run_until(after, "request_signature", ctx)[-1].kind is OutcomeKind.ADVANCED
    assert (world.tx(nxt).nonce, world.tx(after).nonce) == (4, 5)
    with world.db.unit_of_work() as s:
        assert list(s.scalars(select(ReleasedNonce.nonce))) == []


def test_a_superseded_run_builds_nothing_and_allocates_no_nonce(offline_world: World, db: Database) -> None:
    world = offline_world
    alice = world.onboard(balances={"ETH": ETH})
    warm = world.transfer(alice, "0.1")
    world.run_until(warm, "request_signature")  # the cursor exists now: the in-place path applies
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds")
    stale = world.take("request_signature", tx_id)
    assert stale is not None and world.take("request_signature", tx_id) is not None  # a newer driver
    with pytest.raises(Superseded):
        STEP_FUNCTIONS["request_signature"](world.ctx(), stale)
    tx = world.tx(tx_id)
    assert (tx.stage, tx.nonce, tx.unsigned_payload, tx.signature_request_id) == ("FUNDS_LOCKED", None, None, None)
    with db.unit_of_work() as s:
        assert s.get(NonceCursor, alice.account_id).next_nonce == 1  # type: ignore[union-attr]


def test_a_redelivered_signature_request_collects_the_same_signature(
        offline_world: World, local_signer: LocalKeySigner, master_key: str) -> None:
    world = offline_world
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "request_signature")
    tx = world.tx(tx_id)
    # another worker's signer asked again with the same id: a no-op, the stored signature
    other = LocalKeySigner(world.db.engine, master_key)
    other.request_signature(tx.signature_request_id, KeyRef(alice.wallet_id, "evm", Curve.SECP256K1),
                            signing_payloads_of(tx))
    (signature,) = other.fetch_signature(tx.signature_request_id) or [b""]
    assert signature and tx.signed_payload.endswith(signature)


# -- the local signer --------------------------------------------------------------------------------

W1 = "wal_01J00000000000000000000001"
W2 = "wal_01J00000000000000000000002"
EVM1 = KeyRef(W1, "evm", Curve.SECP256K1)
EVM2 = KeyRef(W2, "evm", Curve.SECP256K1)
SOL1 = KeyRef(W1, "solana", Curve.ED25519)


def test_a_key_is_unsealed_once_per_signer_and_key(local_signer: LocalKeySigner, monkeypatch: pytest.MonkeyPatch) -> None:
    local_signer.create_key(EVM1)
    local_signer.create_key(EVM2)
    local_signer.create_key(SOL1)
    unsealed: list[str] = []
    original = local_signer._unseal
    monkeypatch.setattr(local_signer, "_unseal", lambda row: unsealed.append(row.key_name) or original(row))

    for i in range(3):
        local_signer.request_signature(f"evm-{i}", EVM1, [bytes([i]) * 32])
        local_signer.request_signature(f"sol-{i}", SOL1, [f"message {i}".encode()])
    local_signer.request_signature("evm2", EVM2, [DIGEST])

    assert sorted(unsealed) == ["evm", "evm", "solana"]  # W1 evm, W1 solana, W2 evm: once each
    for request_id, ref in (("evm-2", EVM1), ("evm2", EVM2)):
        (signature,) = local_signer.fetch_signature(request_id) or [b""]
        digest = bytes([2]) * 32 if request_id == "evm-2" else DIGEST
        recovered = eth_keys.Signature(signature).recover_public_key_from_msg_hash(digest).to_bytes()
        assert recovered == local_signer.public_key(ref).key


def test_opened_keys_never_show_in_a_repr(local_signer: LocalKeySigner, db: Database, master_key: str) -> None:
    from tests.unit.test_signer_local import key_row, unseal

    local_signer.create_key(EVM1)
    local_signer.request_signature("r1", EVM1, [DIGEST])
    sealed, _ = key_row(db.engine, W1)
    private = unseal(master_key, sealed, W1, "evm", "secp256k1")
    opened = local_signer._open.get(W1, "evm")
    shown = f"{local_signer!r} {local_signer._open!r} {vars(local_signer)!r} {opened!r} {opened}"
    assert len(local_signer._open) == 1 and opened is not None
    for secret in (private.hex(), private.hex().upper(), repr(private), master_key):
        assert secret not in shown


def test_the_fetch_after_a_request_needs_no_transaction_and_matches_the_store(
        local_signer: LocalKeySigner, db: Database, master_key: str) -> None:
    local_signer.create_key(EVM1)
    with commits(db.engine) as asked:
        local_signer.request_signature("r1", EVM1, [DIGEST])
    with commits(db.engine) as fetched:
        remembered = local_signer.fetch_signature("r1")
    assert (len(asked), len(fetched)) == (1, 0)
    assert remembered == LocalKeySigner(db.engine, master_key).fetch_signature("r1")  # what the DB holds
    with commits(db.engine) as again:
        local_signer.request_signature("r1", EVM1, [DIGEST])  # a redelivery: nothing to do
    assert len(again) == 0


def test_a_remembered_request_id_reused_for_other_payloads_or_another_key_is_refused(
        local_signer: LocalKeySigner) -> None:
    local_signer.create_key(EVM1)
    local_signer.create_key(EVM2)
    local_signer.request_signature("r1", EVM1, [DIGEST])
    with pytest.raises(SignatureRefused, match="different payloads"):
        local_signer.request_signature("r1", EVM1, [OTHER_DIGEST])
    with pytest.raises(SignatureRefused, match="different payloads"):
        local_signer.request_signature("r1", EVM2, [DIGEST])
    assert len(local_signer.fetch_signature("r1") or []) == 1


# -- webhook subscriptions ---------------------------------------------------------------------------

@pytest.fixture
def box() -> SecretBox:
    return SecretBox(new_secrets_key())


def _client_reads(seen: list[str]) -> int:
    return sum(1 for statement in seen if "FROM clients" in statement)


def test_a_silent_client_is_read_at_every_stage_change_so_a_new_webhook_is_never_missed(
        world: World, db: Database, box: SecretBox) -> None:
    events.forget_subscriptions()
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    world.step("resolve_source", tx_id)  # read: no webhook yet (not remembered)
    with db.unit_of_work() as s:
        configure_webhook(s, box, alice.client_id, "http://127.0.0.1:9/h", ["transaction.stage"], devnet=True)
    with statements(db.engine) as seen:
        world.step("validate_destination", tx_id)
    assert _client_reads(seen) == 1
    with db.unit_of_work() as s:
        types = [row.type for row in s.scalars(select(events.WebhookEvent)
                                               .where(events.WebhookEvent.resource_id == tx_id))]
    assert types == ["transaction.stage"]  # the change right after PUT /webhook has its event


def test_a_listening_client_is_read_once_per_ttl(world: World, db: Database, box: SecretBox,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    events.forget_subscriptions()
    clock = [1000.0]
    monkeypatch.setattr(events.time, "monotonic", lambda: clock[0])
    alice = world.onboard(balances={"ETH": ETH})
    with db.unit_of_work() as s:
        configure_webhook(s, box, alice.client_id, "http://127.0.0.1:9/h", ["transaction.stage"], devnet=True)
    tx_id = world.transfer(alice, "0.1")
    with statements(db.engine) as seen:
        world.step("resolve_source", tx_id)
        world.step("validate_destination", tx_id)
    assert _client_reads(seen) == 1

    # the client opts out; within the TTL a worker may still write stage events, past it no more
    with db.unit_of_work() as s:
        configure_webhook(s, box, alice.client_id, "http://127.0.0.1:9/h", [], devnet=True)
    clock[0] += events.SUBSCRIPTION_TTL_S + 0.01
    with statements(db.engine) as seen:
        world.step("lock_funds", tx_id)
    assert _client_reads(seen) == 1
    with db.unit_of_work() as s:
        last = s.scalars(select(events.WebhookEvent).where(events.WebhookEvent.resource_id == tx_id)
                         .order_by(events.WebhookEvent.sequence.desc())).first()
        assert last is not None and "FUNDS_LOCKED" not in last.payload  # no stage event after the opt-out
        assert s.get(Client, alice.client_id).webhook_events == "[]"  # type: ignore[union-attr]


# -- SQLite settings ---------------------------------------------------------------------------------

def test_every_sqlite_connection_gets_the_pipeline_settings(db: Database) -> None:
    with db.engine.connect() as conn:
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                  for name in ("journal_mode", "synchronous", "busy_timeout", "cache_size", "mmap_size", "temp_store",
                               "foreign_keys")}
    assert pragma == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 30000, "cache_size": -65536,
                      "mmap_size": 268435456, "temp_store": 2, "foreign_keys": 1}


def test_a_stage_change_still_commits_with_its_event_in_one_transaction(offline_world: World, db: Database) -> None:
    world = offline_world
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    run = world.take("resolve_source", tx_id)
    assert run is not None
    with commits(db.engine) as seen:
        outcome = STEP_FUNCTIONS["resolve_source"](world.ctx(), run)
    assert (outcome.stage, len(seen)) == (Stage.SOURCE_RESOLVED, 1)
    assert world.stage_changes(tx_id)[-1] == ("RECEIVED", "SOURCE_RESOLVED")


def test_a_reading_unit_takes_no_write_lock_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from sqlalchemy import text

    from pipeline.db import Database

    database = Database(f"sqlite:///{tmp_path / 'r.db'}")
    with database.unit_of_work() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    writer = sqlite3.connect(tmp_path / "r.db", timeout=0.1, isolation_level=None)
    with database.reading() as session:
        session.execute(text("SELECT * FROM t")).all()
        writer.execute("BEGIN IMMEDIATE")  # a step's write goes ahead while the long read runs
        writer.execute("INSERT INTO t VALUES (1)")
        writer.execute("COMMIT")
    with database.unit_of_work() as session:
        session.execute(text("SELECT * FROM t")).all()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            writer.execute("BEGIN IMMEDIATE")  # a unit of work holds the write lock from its start
    database.dispose()
