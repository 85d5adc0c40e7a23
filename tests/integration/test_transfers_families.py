"""Every chain family through the whole pipeline: the real worker, Redis, the database (SQLite and
PostgreSQL) and each family's devnet node (anvil for bsc; our TRON, Bitcoin and Solana nodes)."""

from __future__ import annotations

import json
from decimal import Decimal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from pipeline.amounts import parse_amount
from tests.integration import helpers as h


@dataclass(frozen=True)
class Case:
    chain: str
    native: str
    token: str | None
    funding: dict[str, str]
    native_amount: str
    token_amount: str
    bad_address: str  # malformed, or valid for another network
    chunks: int = 1


CASES = {
    "bsc": Case("bsc", "BNB", "USDT", {"BNB": "2", "USDT": "100"}, "0.25", "12.5", "0x" + "ab" * 19),
    "tron": Case("tron", "TRX", "USDT", {"TRX": "200", "USDT": "100"}, "3.5", "12.5", "41" + "ab" * 20),
    "bitcoin": Case("bitcoin", "BTC", None, {"BTC": "0.5"}, "0.0125", "", "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
                    chunks=4),
    "solana": Case("solana", "SOL", "USDC", {"SOL": "2", "USDC": "100"}, "0.125", "12.5", "0OIl-not-base58"),
}
TOKEN_CASES = [name for name, case in CASES.items() if case.token]


def _funded(stack, case: Case, **override: str) -> h.Funded:
    return h.funded(stack, case.chain, {**case.funding, **override}, chunks=case.chunks)


@pytest.mark.parametrize("chain", list(CASES))
def test_native_transfer_confirms_and_reconciles(stack, chain):
    case = CASES[chain]
    f = _funded(stack, case)
    to = h.fresh_address(chain)
    tx_id = h.submit(f, case.native, case.native_amount, to=to)
    tx = h.wait_final([tx_id])[tx_id]
    assert (tx.status, tx.failure_reason) == ("CONFIRMED", None), tx.failure_detail
    decimals = h.token(case.native, chain).decimals
    assert h.balance_on_chain(chain, to, case.native) == parse_amount(case.native_amount, decimals)
    assert h.ledger_entries(tx_id)[0] == ("DEBIT", -parse_amount(case.native_amount, decimals))
    h.assert_reconciled(f)


@pytest.mark.parametrize("chain", TOKEN_CASES)
def test_token_transfer_confirms_and_fee_comes_from_the_native_coin(stack, chain):
    case = CASES[chain]
    f = _funded(stack, case)
    to = h.fresh_address(chain)
    tx_id = h.submit(f, case.token, case.token_amount, to=to)
    tx = h.wait_final([tx_id])[tx_id]
    assert tx.status == "CONFIRMED", (tx.failure_reason, tx.failure_detail)
    decimals = h.token(case.token, chain).decimals
    assert h.balance_on_chain(chain, to, case.token) == parse_amount(case.token_amount, decimals)
    assert [kind for kind, _ in h.ledger_entries(tx_id)] == ["DEBIT", "FEE"]
    h.assert_reconciled(f)


@pytest.mark.parametrize("chain", list(CASES))
def test_invalid_destination_fails_before_locking(stack, chain):
    case = CASES[chain]
    f = _funded(stack, case)
    tx_id = h.submit(f, case.native, case.native_amount, to=case.bad_address)
    tx = h.wait_final([tx_id])[tx_id]
    assert (tx.status, tx.failure_reason) == ("FAILED", "invalid_destination")
    assert "FUNDS_LOCKED" not in [to for _, to in h.stage_changes(tx_id)]
    h.assert_reconciled(f)


@pytest.mark.parametrize("chain", list(CASES))
def test_over_balance_fails_insufficient_funds(stack, chain):
    case = CASES[chain]
    f = _funded(stack, case)
    symbol = case.token or case.native
    too_much = str(int(Decimal(case.funding[symbol])) + 1)  # a whole number above the funding
    tx_id = h.submit(f, symbol, too_much)
    tx = h.wait_final([tx_id])[tx_id]
    assert (tx.status, tx.failure_reason) == ("FAILED", "insufficient_funds")
    h.assert_reconciled(f)


@pytest.mark.parametrize("chain", TOKEN_CASES)
def test_token_transfer_without_native_coin_for_fees_fails_before_signing(stack, chain):
    case = CASES[chain]
    f = _funded(stack, case, **{case.native: "0"})
    tx_id = h.submit(f, case.token, case.token_amount)
    tx = h.wait_final([tx_id])[tx_id]
    assert (tx.status, tx.failure_reason) == ("FAILED", "insufficient_funds_for_fee")
    assert tx.signed_payload is None and tx.tx_hash is None
    h.assert_reconciled(f)


@pytest.mark.parametrize("chain", list(CASES))
def test_every_step_delivered_three_times_has_one_effect(stack, chain):
    case = CASES[chain]
    f = _funded(stack, case)
    to = h.fresh_address(chain)
    tx_id = h.submit(f, case.native, case.native_amount, to=to)
    h.duplicate_every_message(stack, tx_id)
    tx = h.wait_final([tx_id])[tx_id]
    changes = [to_stage for _, to_stage in h.stage_changes(tx_id)]
    assert tx.status == "CONFIRMED"
    assert len(changes) == len(set(changes)), changes  # no stage entered twice
    assert tx.broadcast_count == 1
    assert [kind for kind, _ in h.ledger_entries(tx_id)] == ["DEBIT", "FEE"]
    decimals = h.token(case.native, chain).decimals
    assert h.balance_on_chain(chain, to, case.native) == parse_amount(case.native_amount, decimals)
    h.assert_reconciled(f)


def test_bitcoin_concurrent_transfers_from_one_address_never_share_an_output(stack):
    case = CASES["bitcoin"]
    f = _funded(stack, case)
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda i: h.submit(f, "BTC", "0.01", key=f"btc-burst-{i}"), range(4)))
    final = h.wait_final(ids, timeout=120)
    assert [t.status for t in final.values()] == ["CONFIRMED"] * 4, [(t.failure_reason, t.last_error) for t in final.values()]
    inputs = [(utxo["txid"], utxo["vout"]) for t in final.values() for utxo in json.loads(t.fee_params)["inputs"]]
    assert len(inputs) == len(set(inputs))
    h.assert_reconciled(f)
