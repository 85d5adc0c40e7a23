"""UTXO chains: lock_funds lists the address's outputs, the adapter selects inputs among those no
other transfer holds, and the pipeline reserves them in the same DB transaction as the funds.

Reservations keep two transfers from ever spending one output; they are released when a transfer
fails and removed when it is final. The chain is `bitcoin` from the devnet registry, driven by a
FakeAdapter in UTXO mode (scripted outputs, greedy selection, one digest per input).
"""

from __future__ import annotations

import pytest
from eth_keys import keys as eth_keys
from sqlalchemy import select

from chains.base import Curve, Utxo
from chains.errors import TransactionRejected
from pipeline.errors import TransientError
from pipeline.models import UtxoReservation
from pipeline.steps import OutcomeKind
from pipeline.steps.context import fee_quote_of, signing_payloads_of
from pipeline.stages import Stage
from signer.base import KeyRef, SignatureRefused
from signer.local import LocalKeySigner
from tests.unit.fakes import UTXO_FEE, FakeAdapter, FakeSigner, Party, World, included, utxo

BTC = 10**8
FEE = UTXO_FEE.max_fee
PAID = 1_400  # what the chain charges: within the reserve
OTHER_TX = "tx_01JAAAAAAAAAAAAAAAAAAAAAAZ"


def bitcoin(world: World, outputs: list[Utxo]) -> FakeAdapter:
    """Given the bitcoin chain served by a UTXO-mode fake listing `outputs`."""
    adapter = FakeAdapter(world.registry.chain("bitcoin"), utxos=outputs)
    world.adapters["bitcoin"] = adapter
    return adapter


def funded(world: World, balance: int = 3 * BTC, signer: object | None = None) -> Party:
    return world.onboard(chain="bitcoin", balances={"BTC": balance}, signer=signer)


def send(world: World, party: Party, amount: str) -> str:
    return world.transfer(party, amount, symbol="BTC", chain="bitcoin")


def reservations(world: World) -> dict[str, str]:
    """outpoint -> transaction id, as committed."""
    with world.db.unit_of_work() as s:
        return {r.outpoint: r.transaction_id for r in s.scalars(select(UtxoReservation).order_by(UtxoReservation.outpoint))}


def reserve_elsewhere(world: World, party: Party, output: Utxo, tx_id: str = OTHER_TX) -> None:
    """Another transfer (another worker) reserves `output` in its own DB transaction."""
    with world.db.unit_of_work() as s:
        s.add(UtxoReservation(chain="bitcoin", outpoint=output.outpoint, transaction_id=tx_id,
                              address=party.address, value=output.value))


def test_a_utxo_chain_locks_with_selected_inputs_reserved_and_no_nonce(world: World) -> None:
    u0, u1 = utxo(0, 6 * BTC // 10), utxo(1, 6 * BTC // 10)
    adapter = bitcoin(world, [u0, u1])
    alice = funded(world)
    tx_id = send(world, alice, "0.5")

    outcome = world.run_until(tx_id, "lock_funds")[-1]

    assert (outcome.kind, outcome.stage) == (OutcomeKind.ADVANCED, Stage.FUNDS_LOCKED)
    assert adapter.utxo_calls == [alice.address]
    assert reservations(world) == {u0.outpoint: tx_id}
    tx = world.tx(tx_id)
    assert fee_quote_of(tx).inputs == (u0,)  # the stored quote carries the inputs, for the build
    assert (tx.fee_reserved, tx.nonce) == (FEE, None)
    assert world.balances(alice, "BTC") == (3 * BTC, BTC // 2 + FEE)
    with world.db.unit_of_work() as s:
        row = s.get(UtxoReservation, ("bitcoin", u0.outpoint))
        assert (row.value, row.address) == (u0.value, alice.address)


def test_two_transfers_from_one_address_never_reserve_the_same_output(world: World) -> None:
    # Given an address with two outputs, each enough for one transfer
    u0, u1 = utxo(0, 6 * BTC // 10), utxo(1, 6 * BTC // 10)
    adapter = bitcoin(world, [u0, u1])
    alice = funded(world)
    first, second = send(world, alice, "0.5"), send(world, alice, "0.5")

    world.run_until(first, "lock_funds")
    world.run_until(second, "lock_funds")

    # Then the second was offered only what the first had not reserved, and took the other output
    assert adapter.quoted_utxos == [[u0, u1], [u1]]
    assert reservations(world) == {u0.outpoint: first, u1.outpoint: second}
    assert (fee_quote_of(world.tx(first)).inputs, fee_quote_of(world.tx(second)).inputs) == ((u0,), (u1,))
    assert world.balances(alice, "BTC") == (3 * BTC, 2 * (BTC // 2 + FEE))


def test_when_no_output_is_left_then_the_transfer_waits_for_change_and_then_fails_insufficient_funds(
    world: World,
) -> None:
    # Given both outputs reserved by two pending transfers (the ledger still has 2 BTC available)
    u0, u1 = utxo(0, 6 * BTC // 10), utxo(1, 6 * BTC // 10)
    adapter = bitcoin(world, [u0, u1])
    alice = funded(world)
    first, second, third = send(world, alice, "0.5"), send(world, alice, "0.5"), send(world, alice, "0.5")
    world.run_until(first, "lock_funds")
    world.run_until(second, "lock_funds")
    world.run_until(third, "validate_destination")
    events = len(world.events(third))

    # When the third locks: no unreserved output; the pending ones' change will come back
    with pytest.raises(TransientError, match="reserved by pending transfers"):
        world.step("lock_funds", third)

    # Then it waits where it is, having taken nothing
    assert adapter.quoted_utxos[-1] == []
    assert world.tx(third).stage == "DESTINATION_VALID" and len(world.events(third)) == events
    assert reservations(world) == {u0.outpoint: first, u1.outpoint: second}
    assert world.balances(alice, "BTC") == (3 * BTC, 2 * (BTC // 2 + FEE))

    # When the two pending transfers are final and the node lists no output at all any more
    adapter.statuses = [included(2, fee_paid=PAID)]
    for tx_id in (first, second):
        world.run_until(tx_id, "confirm")
        assert world.tx(tx_id).status == "CONFIRMED"
    assert reservations(world) == {}
    assert world.balances(alice, "BTC") == (3 * BTC - 2 * (BTC // 2 + PAID), 0)
    adapter.utxos = []

    # Then the third fails: insufficient funds, nothing reserved, nothing locked
    outcome = world.step("lock_funds", third)
    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.FAILED)
    tx = world.tx(third)
    assert (tx.status, tx.failure_reason) == ("FAILED", "insufficient_funds")
    assert reservations(world) == {}
    assert world.balances(alice, "BTC")[1] == 0


def test_outputs_that_cannot_pay_and_none_in_flight_fail_insufficient_funds_at_once(world: World) -> None:
    u0 = utxo(0, BTC // 10)
    bitcoin(world, [u0])
    alice = funded(world)  # the ledger says 3 BTC, the chain's outputs say 0.1
    tx_id = send(world, alice, "0.5")
    outcome = world.run_until(tx_id, "lock_funds")[-1]
    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.FAILED)
    assert world.tx(tx_id).failure_reason == "insufficient_funds"
    assert reservations(world) == {}
    assert world.balances(alice, "BTC") == (3 * BTC, 0)


def test_a_transfer_needing_several_inputs_gets_one_signature_per_input(world: World, local_signer: LocalKeySigner) -> None:
    u0, u1, u2 = utxo(0, 3 * BTC // 10), utxo(1, 3 * BTC // 10), utxo(2, 3 * BTC // 10)
    adapter = bitcoin(world, [u0, u1, u2])
    alice = funded(world)
    tx_id = send(world, alice, "0.5")

    outcome = world.run_until(tx_id, "request_signature")[-1]

    assert (outcome.kind, outcome.stage) == (OutcomeKind.ADVANCED, Stage.SIGNED)
    assert reservations(world) == {u0.outpoint: tx_id, u1.outpoint: tx_id}
    tx = world.tx(tx_id)
    assert adapter.built[0][2] is None and adapter.nonce_calls == []  # no account nonce on a UTXO chain
    digests = signing_payloads_of(tx)
    signatures = local_signer.fetch_signature(tx.signature_request_id)
    assert len(digests) == 2 and signatures is not None and len(signatures) == 2
    wallet_key = local_signer.public_key(KeyRef(alice.wallet_id, "bitcoin", Curve.SECP256K1)).key
    for signature, digest in zip(signatures, digests, strict=True):
        assert eth_keys.Signature(signature).recover_public_key_from_msg_hash(digest).to_bytes() == wallet_key


@pytest.mark.parametrize("where", ["request_signature", "broadcast"])
def test_a_failed_transfer_releases_its_outputs_for_the_next_one(world: World, where: str) -> None:
    # Given a transfer holding u0 that then fails (the signer refuses, or the node rejects the bytes)
    u0 = utxo(0, 6 * BTC // 10)
    adapter = bitcoin(world, [u0])
    signer = FakeSigner()
    alice = funded(world, signer=signer)
    ctx = world.ctx(signer=signer)
    failing = send(world, alice, "0.5")
    world.run_until(failing, "lock_funds", ctx)
    assert reservations(world) == {u0.outpoint: failing}
    if where == "request_signature":
        signer.refuse = SignatureRefused("policy says no")
    else:
        adapter.broadcast_errors = [TransactionRejected("rejected_by_node", "bad-txns-inputs-missingorspent")]
        adapter.unlandable = True  # every input still unspent: the chain proves it cannot land

    outcome = world.run_until(failing, where, ctx)[-1]

    # Then it is FAILED, its locks and its reservation are gone
    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.FAILED)
    assert reservations(world) == {}
    assert world.balances(alice, "BTC") == (3 * BTC, 0)

    # And the next transfer is offered, and reserves, the same output
    signer.refuse = None
    nxt = send(world, alice, "0.5")
    assert world.run_until(nxt, "lock_funds", ctx)[-1].stage is Stage.FUNDS_LOCKED
    assert adapter.quoted_utxos[-1] == [u0]
    assert reservations(world) == {u0.outpoint: nxt}


def test_reservations_stay_while_confirming_and_are_removed_when_final(world: World) -> None:
    u0, u1 = utxo(0, 6 * BTC // 10), utxo(1, 6 * BTC // 10)
    adapter = bitcoin(world, [u0, u1])
    alice = funded(world)
    tx_id, other = send(world, alice, "0.5"), send(world, alice, "0.5")
    world.run_until(other, "lock_funds")  # a second transfer's reservation must survive the first's end
    adapter.statuses = [included(1, fee_paid=PAID), included(2, fee_paid=PAID)]

    world.run_until(tx_id, "confirm")
    assert world.tx(tx_id).stage == "CONFIRMING"
    assert reservations(world) == {u0.outpoint: other, u1.outpoint: tx_id}

    outcome = world.step("confirm", tx_id)

    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.CONFIRMED)
    assert set(reservations(world).values()) == {other}  # only this transfer's outputs were removed
    assert world.tx(tx_id).fee_paid == PAID
    assert world.balances(alice, "BTC") == (3 * BTC - BTC // 2 - PAID, BTC // 2 + FEE)


def test_an_output_reserved_concurrently_between_quote_and_lock_is_a_transient_error(world: World) -> None:
    # Given another transfer that reserves u0 after our quote selected it, before our lock commits
    u0, u1 = utxo(0, 6 * BTC // 10), utxo(1, 6 * BTC // 10)
    adapter = bitcoin(world, [u0, u1])
    alice = funded(world)
    tx_id = send(world, alice, "0.5")
    world.run_until(tx_id, "validate_destination")
    events = len(world.events(tx_id))
    adapter.after_quote = lambda quote: reserve_elsewhere(world, alice, quote.inputs[0])

    # When lock_funds runs, Then the claim on u0 fails inside the DB transaction: retry
    with pytest.raises(TransientError, match="reserved by another transfer"):
        world.step("lock_funds", tx_id)

    # and nothing of the attempt was committed: no lock, no reservation, no stage change
    assert reservations(world) == {u0.outpoint: OTHER_TX}
    tx = world.tx(tx_id)
    assert (tx.stage, tx.fee_params, tx.fee_reserved) == ("DESTINATION_VALID", None, None)
    assert len(world.events(tx_id)) == events
    assert world.balances(alice, "BTC") == (3 * BTC, 0)

    # When the retry quotes again, Then it is offered only u1 and reserves it
    adapter.after_quote = None
    outcome = world.step("lock_funds", tx_id)
    assert (outcome.kind, outcome.stage) == (OutcomeKind.ADVANCED, Stage.FUNDS_LOCKED)
    assert adapter.quoted_utxos[-1] == [u1]
    assert reservations(world) == {u0.outpoint: OTHER_TX, u1.outpoint: tx_id}
    assert world.balances(alice, "BTC") == (3 * BTC, BTC // 2 + FEE)
