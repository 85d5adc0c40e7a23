"""`paratro show` lists every signed attempt of a transfer, and `paratro stuck` lists the pending
transfers being bumped, gap-filled, waiting, or sent long ago and not in a block.

The transfers are driven by the real steps over the in-memory fakes (a real fee bump: bump_fee,
request_signature, broadcast; a real gap fill: `nonces.claim_gap`), then read back through the
same functions the CLI calls; the last tests run the real entry point in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from chains.base import FeeQuote
from pipeline.models import Transaction, utcnow
from workers.display import print_stuck, print_transfer
from workers.services import describe_transfer
from workers.stuck import find_stuck, list_stuck, stuck_filter
from tests.unit.fakes import Party, World

ROOT = Path(__file__).resolve().parents[2]
ETH = 10**18
GWEI = 10**9
BUMPED = FeeQuote(max_fee=21_000 * 2 * GWEI, params={"gas": 21_000, "gasPrice": 2 * GWEI})


def bumped(world: World, party: Party) -> str:
    """Sent, then replaced at twice the gas price and sent again: two attempts, same nonce."""
    tx_id = world.sent(party)
    world.adapter().replacement_quotes = [BUMPED]
    world.step("bump_fee", tx_id)
    world.step("request_signature", tx_id)
    world.step("broadcast", tx_id)
    return tx_id


def sent_ago(world: World, tx_id: str, seconds: int) -> None:
    def move(tx: Transaction) -> None:
        tx.last_broadcast_at = utcnow() - timedelta(seconds=seconds)
    world.edit(tx_id, move)


# -- paratro show ------------------------------------------------------------------------------

def test_show_lists_the_original_and_the_bump_with_their_fees_and_states(world: World) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = bumped(world, alice)
    tx = world.tx(tx_id)

    data = describe_transfer(world.ctx(), tx_id)

    assert (data["kind"], data["stuck_reason"], data["replacement_count"]) == ("TRANSFER", None, 1)
    rows = data["attempts"]
    assert [(a["number"], a["kind"], a["state"], a["nonce"]) for a in rows] == [(0, "ORIGINAL", "LIVE", 0),
                                                                               (1, "BUMP", "LIVE", 0)]
    assert [a["fee"] for a in rows] == [{"gasPrice": GWEI}, {"gasPrice": 2 * GWEI}]  # no "gas", as stored
    assert [(a["max_fee"], a["max_fee_base_units"]) for a in rows] == [("0.000021", str(21_000 * GWEI)),
                                                                       ("0.000042", str(42_000 * GWEI))]
    assert rows[1]["tx_hash"] == tx.tx_hash != rows[0]["tx_hash"]
    assert all(a["signed_at"].endswith("Z") and a["sent_at"].endswith("Z") for a in rows)
    assert set(rows[0]) == {"number", "kind", "tx_hash", "nonce", "fee", "max_fee", "max_fee_base_units", "state",
                            "signed_at", "sent_at"}  # never the signed bytes
    assert "fee_bump" in [e["reason"] for e in data["events"]]
    json.dumps(data)  # what `show --json` prints


def test_show_renders_the_attempts_table_with_whole_hashes(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = bumped(world, alice)
    data = describe_transfer(world.ctx(), tx_id)

    print_transfer(data)

    out = capsys.readouterr().out
    assert "attempts" in out and "replacement_count" in out and "TRANSFER" in out
    assert max(len(line) for line in out.splitlines()) <= 132
    for attempt in data["attempts"]:
        assert attempt["tx_hash"] in out  # never cut, even at 132 columns
    assert "#0 ORIGINAL LIVE nonce 0" in out and "#1 BUMP LIVE nonce 0" in out
    assert "gasPrice=1000000000" in out and "gasPrice=2000000000" in out
    assert "max fee 0.000021" in out and "max fee 0.000042" in out


def test_show_of_an_unsent_transfer_has_no_attempts(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = world.transfer(alice, "1")
    data = describe_transfer(world.ctx(), tx_id)
    assert data["attempts"] == [] and data["replacement_count"] == 0
    print_transfer(data)
    assert "attempts" not in capsys.readouterr().out


# -- paratro stuck -----------------------------------------------------------------------------

def test_stuck_lists_bumping_waiting_for_funds_gap_fills_and_old_sends_and_nothing_else(world: World) -> None:
    alice = world.onboard(balances={"ETH": 5 * ETH})
    # mid-bump: the replacement is priced and funded, not signed yet
    bumping = world.sent(alice)
    world.adapter().replacement_quotes = [BUMPED]
    world.step("bump_fee", bumping)
    # a bump the account cannot fund: it keeps its transaction, waiting for funds
    poor = world.onboard(balances={"ETH": ETH + 21_000 * GWEI})
    starving = world.sent(poor)
    world.adapter().replacement_quotes = [FeeQuote(max_fee=ETH, params={"gas": 21_000, "gasPrice": ETH // 21_000})]
    world.step("bump_fee", starving)
    # a nonce gap behind later nonces: a NOOP transfer fills it
    noop = world.gap_fill(alice, 7)
    # sent ten minutes ago, not in a block
    old = world.sent(alice)
    sent_ago(world, old, 600)
    # not stuck: sent just now, a fresh transfer, a confirmed one with a stale stuck_reason
    fresh = world.sent(alice)
    new = world.transfer(alice, "1")
    done = world.sent(alice)
    world.edit(done, lambda tx: setattr(tx, "status", "CONFIRMED") or setattr(tx, "stuck_reason", "at_fee_cap"))

    with world.db.reading() as s:
        report = find_stuck(s, utcnow(), older_than_s=60)

    listed = {t.transaction_id: t for t in report.transfers}
    assert set(listed) == {bumping, starving, noop, old}, (fresh, new, done)
    assert (listed[bumping].stage, listed[bumping].stuck_reason, listed[bumping].reason) == ("FUNDS_LOCKED", "bumping",
                                                                                          "bumping")
    assert listed[bumping].last_event == "fee_bump" and listed[bumping].last_fee == {"gasPrice": 2 * GWEI}
    assert listed[bumping].attempts == 1  # the replacement is not signed yet
    assert (listed[starving].stage, listed[starving].stuck_reason) == ("BROADCAST", "waiting_for_funds")
    assert listed[starving].last_event == "waiting_for_funds" and listed[starving].last_fee == {"gasPrice": GWEI}
    assert (listed[noop].kind, listed[noop].stuck_reason, listed[noop].nonce) == ("NOOP", "gap_fill", 7)
    assert listed[noop].last_event == "nonce_gap" and listed[noop].attempts == 0 and listed[noop].last_fee is None
    assert (listed[old].reason, listed[old].stuck_reason, listed[old].attempts) == ("not_included", None, 1)
    assert report.transfers[0].transaction_id == old  # the longest wait first
    assert 600 <= report.transfers[0].to_dict(report.taken_at)["waiting_s"] < 660
    assert report.summary() == "4 transfers stuck: 1 bumping, 1 gap_fill, 1 not_included, 1 waiting_for_funds"


def test_older_than_chain_and_limit(world: World) -> None:
    alice = world.onboard(balances={"ETH": 5 * ETH})
    old, older = world.sent(alice), world.sent(alice)
    sent_ago(world, old, 120)
    sent_ago(world, older, 900)
    with world.db.reading() as s:
        assert [t.transaction_id for t in find_stuck(s, utcnow(), older_than_s=300).transfers] == [older]
        assert [t.transaction_id for t in find_stuck(s, utcnow(), older_than_s=60).transfers] == [older, old]
        assert find_stuck(s, utcnow(), older_than_s=60, chain="bitcoin").summary() == "nothing stuck on bitcoin"
        limited = find_stuck(s, utcnow(), older_than_s=60, chain="ethereum", limit=1)
    assert [t.transaction_id for t in limited.transfers] == [older]
    assert limited.summary() == "2 transfers stuck: 2 not_included (the 1 waiting longest shown)"


def test_a_noop_without_a_stuck_reason_is_still_listed(world: World) -> None:
    alice = world.onboard(balances={"ETH": 5 * ETH})
    noop = world.gap_fill(alice, 3)
    world.edit(noop, lambda tx: setattr(tx, "stuck_reason", None))
    with world.db.reading() as s:
        report = find_stuck(s, utcnow())
    assert [(t.transaction_id, t.reason) for t in report.transfers] == [(noop, "gap_fill")]


def test_stuck_renders_a_table_and_the_summary(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    alice = world.onboard(balances={"ETH": 5 * ETH})
    noop = world.gap_fill(alice, 4)
    old = world.sent(alice)
    sent_ago(world, old, 3 * 3600)

    report = list_stuck(world.ctx())
    print_stuck(report)
    json.dumps(report.to_dict())

    out = capsys.readouterr().out
    for word in ("transaction_id", "stuck_reason", "attempts", "last fee", "waiting", "last event", noop, old,
                 "NOOP nonce 4", "gap_fill", "nonce_gap", "gasPrice", "1000000000", "3h00m", "BROADCAST"):
        assert word in out, word
    assert max(len(line) for line in out.splitlines()) <= 132
    assert out.rstrip().splitlines()[-1] == "2 transfers stuck: 1 gap_fill, 1 not_included"


def test_an_empty_report_says_nothing_stuck(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    report = list_stuck(world.ctx())
    print_stuck(report)
    assert capsys.readouterr().out == "nothing stuck\n"
    assert report.to_dict()["transfers"] == [] and report.to_dict()["total"] == 0


def test_the_stuck_query_reads_only_pending_rows_through_the_status_index(world: World) -> None:
    """No full scan of the (mostly final) transfers table: the filter leads with status = PENDING,
    the first column of ix_tx_status_heartbeat."""
    query = select(Transaction.transaction_id).where(*stuck_filter(utcnow(), 60, None))
    compiled = query.compile(world.db.engine, compile_kwargs={"literal_binds": True})
    with world.db.reading() as s:
        plan = " ".join(str(row) for row in s.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "ix_tx_status_heartbeat (status=?)" in plan, plan


# -- the entry point ---------------------------------------------------------------------------

def paratro(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARATRO_")}
    env.update(PARATRO_DATABASE_URL=db_url, PARATRO_CHAIN_REGISTRY="devnet")
    return subprocess.run([sys.executable, "-m", "paratro.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_cli_stuck_on_an_empty_database_says_nothing_stuck(db_url: str) -> None:
    result = paratro("stuck", db_url=db_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "nothing stuck\n", "")
    as_json = paratro("stuck", "--json", "--chain", "ethereum", "--older-than", "5", db_url=db_url)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) | {"taken_at": None} == {
        "taken_at": None, "older_than_s": 5, "chain": "ethereum", "total": 0, "by_reason": {},
        "summary": "nothing stuck on ethereum", "transfers": []}


def test_cli_stuck_and_show_json_of_a_bumped_transfer(world: World, db_url: str) -> None:
    alice = world.onboard(balances={"ETH": 2 * ETH})
    tx_id = bumped(world, alice)
    sent_ago(world, tx_id, 300)

    listed = paratro("stuck", "--json", db_url=db_url)
    shown = paratro("show", tx_id, "--json", db_url=db_url)

    assert listed.returncode == 0 and shown.returncode == 0, listed.stderr + shown.stderr
    report = json.loads(listed.stdout)
    assert report["summary"] == "1 transfer stuck: 1 not_included"
    assert [(t["transaction_id"], t["attempts"], t["last_fee"]) for t in report["transfers"]] == [
        (tx_id, 2, {"gasPrice": 2 * GWEI})]
    assert [(a["kind"], a["fee"]) for a in json.loads(shown.stdout)["attempts"]] == [
        ("ORIGINAL", {"gasPrice": GWEI}), ("BUMP", {"gasPrice": 2 * GWEI})]


@pytest.mark.parametrize(("args", "says"), [
    (("stuck", "--chain", "dogechain"), "error: UnknownChainError: unknown chain 'dogechain' (known: "),
    (("stuck", "--older-than", "-1"), "error: --older-than -1 must be 0 or more seconds"),
    (("show", "tx_nope"), "error: InvalidId: 'tx_nope' is not a valid transaction id"),
    (("show", "tx_01JAAAAAAAAAAAAAAAAAAAAAAA"), "error: NotFound: transaction tx_01JAAAAAAAAAAAAAAAAAAAAAAA not found"),
], ids=["unknown chain", "negative age", "malformed id", "unknown id"])
def test_bad_input_is_one_line_and_exit_2(db_url: str, args: tuple[str, ...], says: str) -> None:
    result = paratro(*args, db_url=db_url)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(says), result.stderr
    assert result.stdout == ""
