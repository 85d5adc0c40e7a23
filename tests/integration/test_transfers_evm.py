"""End to end on the real stack: Redis, a prefork worker process, anvil, SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from pipeline.amounts import parse_amount
from pipeline.driving import load_tx, take
from workers.services import replay, submit_transfer
from tests.integration import helpers as h

EXPECTED_STAGES = [
    (None, "RECEIVED"),
    ("RECEIVED", "SOURCE_RESOLVED"),
    ("SOURCE_RESOLVED", "DESTINATION_VALID"),
    ("DESTINATION_VALID", "FUNDS_LOCKED"),
    ("FUNDS_LOCKED", "SIGNATURE_REQUESTED"),
    ("SIGNATURE_REQUESTED", "SIGNED"),
    ("SIGNED", "BROADCAST"),
    ("BROADCAST", "CONFIRMING"),
    ("CONFIRMING", "CONFIRMED"),
]
# A first poll that already sees the full depth goes straight from BROADCAST to CONFIRMED.
EXPECTED_STAGES_AT_DEPTH = [*EXPECTED_STAGES[:7], ("BROADCAST", "CONFIRMED")]


def test_eth_transfer_confirms_and_ledger_matches_chain(stack):
    # Given a wallet with 10 ETH on the devnet and in the ledger
    f = h.funded_wallet(stack, eth="10", usdt="0")
    to = h.fresh_address()
    # When it sends 1.5 ETH
    tx_id = h.submit(f, "ETH", "1.5", to=to)
    tx = h.wait_final([tx_id])[tx_id]
    # Then the transfer is confirmed at the registry's depth, every stage recorded once
    assert (tx.status, tx.stage, tx.failure_reason) == ("CONFIRMED", "CONFIRMED", None)
    assert tx.confirmations >= h.ctx().registry.chain("ethereum").confirmations
    assert h.stage_changes(tx_id) in (EXPECTED_STAGES, EXPECTED_STAGES_AT_DEPTH)
    # and the recipient got exactly the amount, the sender paid amount + the actual fee
    assert h.ctx().adapter_for("ethereum").balance_of(to, h.token("ETH")) == parse_amount("1.5", 18)
    assert h.ledger_entries(tx_id) == [("DEBIT", -parse_amount("1.5", 18)), ("FEE", -tx.fee_paid)]
    assert 0 < tx.fee_paid <= tx.fee_reserved
    h.assert_reconciled(f)


def test_erc20_transfer_confirms_and_fee_comes_from_eth(stack):
    f = h.funded_wallet(stack, eth="1", usdt="500")
    to = h.fresh_address()
    tx_id = h.submit(f, "USDT", "123.456789", to=to)
    tx = h.wait_final([tx_id])[tx_id]
    assert tx.status == "CONFIRMED", (tx.failure_reason, tx.failure_detail)
    assert h.ctx().adapter_for("ethereum").balance_of(to, h.token("USDT")) == 123_456_789
    assert h.asset(f.assets["USDT"]).balance == 500_000_000 - 123_456_789
    assert h.asset(f.assets["ETH"]).balance == parse_amount("1", 18) - tx.fee_paid
    h.assert_reconciled(f)


def test_malformed_and_bad_checksum_destinations_fail_invalid_destination(stack):
    f = h.funded_wallet(stack, eth="1", usdt="0")
    good = h.fresh_address()
    i = next(i for i, c in enumerate(good) if i >= 2 and c.isalpha())
    flipped = good[:i] + good[i].swapcase() + good[i + 1:]  # one letter's case: EIP-55 checksum broken
    ids = [h.submit(f, "ETH", "0.1", to=addr) for addr in ("0x12345", "not-an-address", flipped)]
    final = h.wait_final(ids)
    for tx_id in ids:
        assert (final[tx_id].status, final[tx_id].failure_reason) == ("FAILED", "invalid_destination")
        assert "FUNDS_LOCKED" not in [to for _, to in h.stage_changes(tx_id)]
    h.assert_reconciled(f)


def test_over_balance_fails_insufficient_funds_and_locks_nothing(stack):
    f = h.funded_wallet(stack, eth="1", usdt="10")
    tx_id = h.submit(f, "USDT", "10.000001")
    tx = h.wait_final([tx_id])[tx_id]
    assert (tx.status, tx.failure_reason) == ("FAILED", "insufficient_funds")
    assert h.asset(f.assets["USDT"]).locked_balance == 0
    h.assert_reconciled(f)


def test_token_transfer_without_eth_for_fees_fails_before_signing(stack):
    f = h.funded_wallet(stack, eth="0", usdt="10")
    tx_id = h.submit(f, "USDT", "1")
    tx = h.wait_final([tx_id])[tx_id]
    assert (tx.status, tx.failure_reason) == ("FAILED", "insufficient_funds_for_fee")
    assert tx.signed_payload is None and tx.tx_hash is None
    h.assert_reconciled(f)


def test_unknown_source_and_other_clients_address_fail_source_not_found(stack):
    mine = h.funded_wallet(stack, eth="1", usdt="0")
    theirs = h.funded_wallet(stack, eth="1", usdt="0")
    stranger = h.submit(mine, "ETH", "0.1")  # baseline: my own address works
    spoof_request = replace(h.request(mine, "ETH", "0.1"), from_address=theirs.address)
    spoof = submit_transfer(h.ctx(), spoof_request).transaction_id
    final = h.wait_final([stranger, spoof])
    assert final[stranger].status == "CONFIRMED"
    assert (final[spoof].status, final[spoof].failure_reason) == ("FAILED", "source_not_found")
    h.assert_reconciled(theirs)


def test_same_idempotency_key_concurrently_creates_one_transfer(stack):
    f = h.funded_wallet(stack, eth="1", usdt="0")
    req = h.request(f, "ETH", "0.25", key="pay-invoice-42")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: submit_transfer(h.ctx(), req), range(8)))
    assert len({r.transaction_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert h.count_transactions(f.client_id) == 1
    h.wait_final([results[0].transaction_id])
    h.assert_reconciled(f)


def test_every_step_delivered_three_times_has_one_effect(stack):
    # Given a transfer each of whose step messages is published twice more (same token)
    f = h.funded_wallet(stack, eth="2", usdt="0")
    to = h.fresh_address()
    tx_id = h.submit(f, "ETH", "0.5", to=to)
    assert h.duplicate_every_message(stack, tx_id) >= 2 * 6
    tx = h.wait_final([tx_id])[tx_id]
    # Then every stage changed once, value moved once, one broadcast, one debit and one fee
    assert tx.status == "CONFIRMED"
    assert h.stage_changes(tx_id) in (EXPECTED_STAGES, EXPECTED_STAGES_AT_DEPTH)
    assert tx.broadcast_count == 1
    assert [kind for kind, _ in h.ledger_entries(tx_id)] == ["DEBIT", "FEE"]
    assert h.ctx().adapter_for("ethereum").balance_of(to, h.token("ETH")) == parse_amount("0.5", 18)
    h.assert_reconciled(f)


def test_200_concurrent_transfers_on_one_asset_never_overdraw(stack):
    # Given 100 USDT and 200 concurrent requests of 1 USDT each
    f = h.funded_wallet(stack, eth="5", usdt="100")
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda i: h.submit(f, "USDT", "1", key=f"burst-{i}"), range(200)))
    final = h.wait_final(ids, timeout=240)
    outcomes = sorted((t.status, t.failure_reason or "") for t in final.values())
    # Then exactly the 100 that fit were sent, the rest refused, and nothing stays locked
    assert outcomes.count(("CONFIRMED", "")) == 100
    assert outcomes.count(("FAILED", "insufficient_funds")) == 100
    assert h.asset(f.assets["USDT"]).balance == 0
    h.assert_reconciled(f)
    # and nonces were handed out once each, without gaps
    nonces = sorted(t.nonce for t in final.values() if t.status == "CONFIRMED")
    assert nonces == list(range(nonces[0], nonces[0] + 100))


def test_lost_message_is_published_again_by_the_relay(stack):
    # Given a transfer in the DB whose first message never reached Redis
    f = h.funded_wallet(stack, eth="1", usdt="0")
    tx_id = h.record_only(f, "ETH", "0.2", grace_s=h.ctx().stall_after_s)
    # Then the relay publishes its outbox row, and it runs to the end once
    tx = h.wait_final([tx_id], timeout=60)[tx_id]
    assert tx.status == "CONFIRMED" and tx.generation == 0
    h.assert_reconciled(f)


def test_a_dead_drivers_transfer_is_taken_over_by_the_sweeper_once_its_lease_expires(stack):
    # Given a transfer whose step was picked up by a worker that then died (a 1 s lease)
    f = h.funded_wallet(stack, eth="1", usdt="0")
    tx_id = h.record_only(f, "ETH", "0.2")
    with h.ctx().db.unit_of_work() as session:
        assert take(session, tx_id, load_tx(session, tx_id).driver_seq, "resolve_source", 1) is not None
    # Then the sweeper re-drives it after the lease, and it confirms once
    tx = h.wait_final([tx_id], timeout=60)[tx_id]
    assert tx.status == "CONFIRMED" and tx.generation == 1
    assert "redriven_by_sweeper" in [e.reason for e in h.events(tx_id)]
    h.assert_reconciled(f)


def test_replay_redrives_from_the_last_durable_stage(stack):
    f = h.funded_wallet(stack, eth="1", usdt="0")
    tx_id = h.record_only(f, "ETH", "0.2")
    report = replay(h.ctx(), [tx_id], force=True)  # its message is "lost": take over
    assert report[0]["action"] == "re-driven from resolve_source"
    assert h.wait_final([tx_id])[tx_id].status == "CONFIRMED"
    # A final transfer is left alone
    assert replay(h.ctx(), [tx_id])[0]["action"] == "none"
    h.assert_reconciled(f)
