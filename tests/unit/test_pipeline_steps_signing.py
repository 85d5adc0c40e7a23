"""Step 4 (request_signature) and step 5 (broadcast): sign once, store before sending, and give
back locks and the unspent nonce when the signer or the node says no."""

from __future__ import annotations

from datetime import timedelta

import json

import pytest

from pipeline.models import utcnow
from eth_keys import keys as eth_keys
from sqlalchemy import select

from chains.base import Curve
from pipeline.steps.runner import RETRY_BUDGETS
from chains.errors import ChainRpcError, InvalidSignature, TransactionRejected
from pipeline.db import Database
from pipeline.errors import TransientError
from pipeline.models import ReleasedNonce
from pipeline.steps import OutcomeKind
from pipeline.steps.context import signing_payloads_of
from pipeline.stages import Stage
from signer.base import KeyRef, SignatureRefused, SignerUnavailable, UnknownKey
from signer.local import LocalKeySigner, new_master_key
from tests.unit.fakes import DEFAULT_FEE, FakeAdapter, FakeSigner, World, digests_for, included

ETH = 10**18
RESERVE = DEFAULT_FEE.max_fee


def released_nonces(world: World) -> list[int]:
    with world.db.unit_of_work() as s:
        return list(s.scalars(select(ReleasedNonce.nonce).order_by(ReleasedNonce.nonce)))


# -- request_signature -----------------------------------------------------------------------------

def test_given_locked_funds_when_signed_then_the_payload_digest_and_signed_bytes_are_stored(
    world: World, local_signer: LocalKeySigner
) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds")

    outcome = world.step("request_signature", tx_id)

    assert (outcome.kind, outcome.stage) == (OutcomeKind.ADVANCED, Stage.SIGNED)
    tx = world.tx(tx_id)
    assert tx.signature_request_id == f"{tx_id}.0"
    digests = signing_payloads_of(tx)
    assert len(digests) == 1 and len(digests[0]) == 32 and tx.unsigned_payload
    assert json.loads(tx.build_context) == world.adapter().built_contexts[0]  # the chain data the build used
    assert tx.signed_payload.startswith(tx.unsigned_payload) and tx.tx_hash.startswith("0x")
    # the signature inside the stored bytes recovers to Alice's wallet key
    signatures = local_signer.fetch_signature(tx.signature_request_id)
    assert signatures is not None and len(signatures) == 1 and tx.signed_payload.endswith(signatures[0])
    recovered = eth_keys.Signature(signatures[0]).recover_public_key_from_msg_hash(digests[0])
    assert recovered.to_bytes() == local_signer.public_key(KeyRef(alice.wallet_id, "evm", Curve.SECP256K1)).key
    assert world.stage_changes(tx_id)[-2:] == [("FUNDS_LOCKED", "SIGNATURE_REQUESTED"), ("SIGNATURE_REQUESTED", "SIGNED")]
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)  # still locked until settled


def test_given_a_signer_not_ready_yet_then_wait_and_later_advanced_without_reallocating(world: World) -> None:
    # Given an MPC-like signer that has not finished its round yet
    signer = FakeSigner(ready=False)
    alice = world.onboard(balances={"ETH": ETH}, signer=signer)
    ctx = world.ctx(signer=signer, signature_poll_s=0.75)
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds", ctx)

    # When the step runs, twice, before the signature exists
    first = world.step("request_signature", tx_id, ctx)
    second = world.step("request_signature", tx_id, ctx)

    # Then it waits (poll again), with the nonce and payload fixed by the first run
    assert (first.kind, first.stage, first.countdown) == (OutcomeKind.WAIT, Stage.SIGNATURE_REQUESTED, 0.75)
    assert (second.kind, second.stage) == (OutcomeKind.WAIT, Stage.SIGNATURE_REQUESTED)
    tx = world.tx(tx_id)
    assert tx.stage == "SIGNATURE_REQUESTED" and tx.signed_payload is None
    assert signer.request_calls == [f"{tx_id}.0", f"{tx_id}.0"]  # the same request id both times
    assert len(world.adapter().built) == 1 and len(world.adapter().nonce_calls) == 1

    # When the signature becomes ready, Then the next run stores it and advances
    signer.ready = True
    third = world.step("request_signature", tx_id, ctx)
    assert (third.kind, third.stage) == (OutcomeKind.ADVANCED, Stage.SIGNED)
    assert world.tx(tx_id).nonce == tx.nonce == 0
    assert [c for c in world.stage_changes(tx_id) if c[1] == "SIGNATURE_REQUESTED"] == [("FUNDS_LOCKED", "SIGNATURE_REQUESTED")]


def test_given_a_signer_silent_past_its_deadline_then_stalled_replayable_with_the_reason(world: World) -> None:
    signer = FakeSigner(ready=False)
    alice = world.onboard(balances={"ETH": ETH}, signer=signer)
    ctx = world.ctx(signer=signer, signature_timeout_s=60)
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds", ctx)
    assert world.step("request_signature", tx_id, ctx).kind is OutcomeKind.WAIT
    before = world.tx(tx_id).heartbeat_at

    # Waiting keeps the heartbeat fresh, so the sweeper does not stack duplicate chains on it
    assert world.step("request_signature", tx_id, ctx).kind is OutcomeKind.WAIT
    assert world.tx(tx_id).heartbeat_at >= before and world.tx(tx_id).last_error is None

    # Past the deadline: STALLED, still SIGNATURE_REQUESTED and PENDING, with the reason for ops
    world.edit(tx_id, lambda tx: setattr(tx, "stage_changed_at", utcnow() - timedelta(seconds=120)))
    outcome = world.step("request_signature", tx_id, ctx)
    tx = world.tx(tx_id)
    assert (outcome.kind, tx.stage, tx.status) == (OutcomeKind.STALLED, "SIGNATURE_REQUESTED", "PENDING")
    assert "signer has not answered within 60 s" in tx.last_error
    # and once the signer answers, a replay finishes the job with the same request
    signer.ready = True
    assert world.step("request_signature", tx_id, ctx).stage is Stage.SIGNED


@pytest.mark.parametrize("refusal", [SignatureRefused("policy says no"), UnknownKey("no key")], ids=["refused", "unknown key"])
def test_given_the_signer_refuses_then_failed_locks_released_and_the_nonce_reused_next(
    world: World, refusal: Exception
) -> None:
    signer = FakeSigner(refuse=refusal)  # type: ignore[arg-type]
    alice = world.onboard(balances={"ETH": ETH}, signer=signer)
    ctx = world.ctx(signer=signer)
    world.adapter().chain_nonce = 4
    refused = world.transfer(alice, "0.1")
    world.run_until(refused, "lock_funds", ctx)

    outcome = world.step("request_signature", refused, ctx)

    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.FAILED)
    tx = world.tx(refused)
    assert (tx.status, tx.failure_reason, tx.nonce) == ("FAILED", "signature_refused", 4)
    assert world.events(refused)[-1].from_stage == "SIGNATURE_REQUESTED"
    assert world.balances(alice, "ETH") == (ETH, 0)  # nothing left locked
    assert released_nonces(world) == [4]

    # the next transfer of the account gets the released nonce (no gap on chain), then 5
    signer.refuse = None
    nxt, after = world.transfer(alice, "0.1"), world.transfer(alice, "0.1")
    assert world.run_until(nxt, "request_signature", ctx)[-1].kind is OutcomeKind.ADVANCED
    world.run_until(after, "request_signature", ctx)
    assert (world.tx(nxt).nonce, world.tx(after).nonce) == (4, 5)
    assert released_nonces(world) == []


def test_given_the_signer_is_unavailable_then_a_transient_error_and_the_transfer_waits_where_it_is(world: World) -> None:
    signer = FakeSigner(refuse=SignerUnavailable("busy"))
    alice = world.onboard(balances={"ETH": ETH}, signer=signer)
    ctx = world.ctx(signer=signer)
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds", ctx)

    with pytest.raises(TransientError):
        world.step("request_signature", tx_id, ctx)

    assert world.tx(tx_id).stage == "SIGNATURE_REQUESTED"
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)
    assert released_nonces(world) == []
    signer.refuse = None
    assert world.step("request_signature", tx_id, ctx).kind is OutcomeKind.ADVANCED
    assert world.tx(tx_id).nonce == 0


def test_given_a_local_signer_whose_master_key_changed_then_the_transfer_is_held_with_its_locks(
        world: World, db: Database) -> None:
    # Given a worker started with a well-formed but wrong master key
    alice = world.onboard(balances={"ETH": ETH})
    wrong = LocalKeySigner(db.engine, new_master_key())
    ctx = world.ctx(signer=wrong)
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds", ctx)
    # When its message for the signature step is delivered
    report = world.deliver("request_signature", tx_id, ctx)
    # Then the fault is the deployment's: held with the reason, nothing failed, nothing released
    tx = world.tx(tx_id)
    assert report.result == "held" and report.dispatch is None
    assert (tx.status, tx.stage, tx.failure_reason) == ("PENDING", "SIGNATURE_REQUESTED", None)
    assert tx.held_at is not None and "MasterKeyMismatch" in tx.last_error
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)


# -- broadcast -------------------------------------------------------------------------------------

def test_given_the_node_rejects_the_bytes_then_failed_locks_released_nonce_released(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    adapter = world.adapter()
    adapter.broadcast_errors = [TransactionRejected("insufficient_funds", "balance too low on chain")]
    adapter.unlandable = True  # the chain proves it: our hash unknown, the account nonce still ours
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "request_signature")

    outcome = world.step("broadcast", tx_id)

    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.FAILED)
    tx = world.tx(tx_id)
    assert (tx.status, tx.failure_reason) == ("FAILED", "insufficient_funds")
    assert tx.failure_detail.startswith("balance too low on chain") and "proven" in tx.failure_detail
    assert (tx.broadcast_count, tx.broadcast_at) == (0, None)
    assert world.balances(alice, "ETH") == (ETH, 0)
    assert world.ledger_entries(tx_id) == []
    assert released_nonces(world) == [tx.nonce]
    assert len(adapter.broadcasts) == 1


def test_given_a_refusal_after_an_earlier_send_whose_reply_was_lost_then_never_failed(world: World) -> None:
    # Given a first send that the node accepted but whose reply was lost (an RPC error), and a
    # retry that another backend refuses with a message nobody listed
    alice = world.onboard(balances={"ETH": ETH})
    adapter = world.adapter()
    adapter.broadcast_errors = [ChainRpcError("read timed out"),
                                TransactionRejected("rejected_by_node", "could not replace existing tx")]
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "request_signature")
    assert world.deliver("broadcast", tx_id).result == "retry"
    # When the retry is refused and the chain cannot prove the first one will never land
    report = world.deliver("broadcast", tx_id)
    # Then nothing is failed or released: retried, and held for ops when the retries run out
    assert report.result == "retry" and "without proof" in (report.error or "")
    tx = world.tx(tx_id)
    assert (tx.stage, tx.send_attempts) == ("SIGNED", 2)
    adapter.broadcast_errors = [TransactionRejected("rejected_by_node", "could not replace existing tx")]
    exhausted = world.deliver("broadcast", tx_id, errors=RETRY_BUDGETS["broadcast"].max_retries)
    assert exhausted.result == "held"
    assert (world.tx(tx_id).status, world.tx(tx_id).stage) == ("PENDING", "SIGNED")
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)
    assert released_nonces(world) == []


def test_given_a_rejection_that_consumed_the_nonce_then_the_nonce_is_not_reused(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    rejection = TransactionRejected("rejected_by_node", "nonce too low", nonce_consumed=True)
    world.adapter().broadcast_errors = [rejection]
    world.adapter().unlandable = True
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "broadcast")
    assert world.tx(tx_id).failure_reason == "rejected_by_node"
    assert released_nonces(world) == []
    assert world.balances(alice, "ETH") == (ETH, 0)


def test_given_the_node_is_unreachable_then_the_rpc_error_propagates_and_the_retry_sends_the_same_bytes(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    adapter = world.adapter()
    adapter.broadcast_errors = [ChainRpcError("connection reset")]
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "request_signature")
    events = len(world.events(tx_id))

    with pytest.raises(ChainRpcError) as info:
        world.step("broadcast", tx_id)

    # an RPC error is not a transaction failure: nothing changed
    assert info.value.transient is True
    tx = world.tx(tx_id)
    assert (tx.stage, tx.status, tx.broadcast_count, tx.failure_reason) == ("SIGNED", "PENDING", 0, None)
    assert len(world.events(tx_id)) == events
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)

    retry = world.step("broadcast", tx_id)
    assert (retry.kind, retry.stage) == (OutcomeKind.ADVANCED, Stage.BROADCAST)
    assert [b.raw for b in adapter.broadcasts] == [tx.signed_payload, tx.signed_payload]
    tx = world.tx(tx_id)
    assert tx.broadcast_count == 1 and tx.broadcast_at == tx.last_broadcast_at is not None
    assert world.events(tx_id)[-1].detail == tx.tx_hash
    assert len(adapter.built) == 1  # never re-signed


# -- several payloads ------------------------------------------------------------------------------

def test_given_an_adapter_with_three_digests_then_three_signatures_in_order_each_by_the_wallet_key(
    world: World, local_signer: LocalKeySigner
) -> None:
    # Given a chain whose transactions need three signatures (as a Bitcoin tx with three inputs)
    adapter = FakeAdapter(world.registry.chain("ethereum"), digest_count=3)
    world.adapters["ethereum"] = adapter
    alice = world.onboard(balances={"ETH": ETH})
    adapter.statuses = [included(3)]
    tx_id = world.transfer(alice, "0.1")

    outcome = world.run_until(tx_id, "request_signature")[-1]

    # Then the three digests were stored and asked for in one request...
    assert (outcome.kind, outcome.stage) == (OutcomeKind.ADVANCED, Stage.SIGNED)
    tx = world.tx(tx_id)
    digests = signing_payloads_of(tx)
    assert digests == list(digests_for(tx.unsigned_payload, 3)) and len(set(digests)) == 3
    signatures = local_signer.fetch_signature(tx.signature_request_id)
    assert signatures is not None and len(signatures) == 3
    # ...and the i-th signature is over the i-th digest, by Alice's key
    wallet_key = local_signer.public_key(KeyRef(alice.wallet_id, "evm", Curve.SECP256K1)).key
    for signature, digest in zip(signatures, digests, strict=True):
        assert eth_keys.Signature(signature).recover_public_key_from_msg_hash(digest).to_bytes() == wallet_key
    assert eth_keys.Signature(signatures[0]).recover_public_key_from_msg_hash(digests[1]).to_bytes() != wallet_key
    # and they were attached in that order
    assert tx.signed_payload == tx.unsigned_payload + b"|" + b"".join(signatures)
    assert world.run_until(tx_id, "confirm")[-1].stage is Stage.CONFIRMED


def test_signatures_handed_back_out_of_order_are_refused_by_the_adapter(world: World) -> None:
    class ShufflingSigner(FakeSigner):
        def fetch_signature(self, request_id: str) -> list[bytes] | None:
            signatures = super().fetch_signature(request_id)
            return None if signatures is None else list(reversed(signatures))

    adapter = FakeAdapter(world.registry.chain("ethereum"), digest_count=2)
    world.adapters["ethereum"] = adapter
    signer = ShufflingSigner()
    alice = world.onboard(balances={"ETH": ETH}, signer=signer)
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds", world.ctx(signer=signer))

    with pytest.raises(InvalidSignature, match="signature 0"):
        world.step("request_signature", tx_id, world.ctx(signer=signer))
    assert world.tx(tx_id).stage == "SIGNATURE_REQUESTED" and world.tx(tx_id).signed_payload is None
