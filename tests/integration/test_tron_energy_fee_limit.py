"""TRON fee_limit from the energy estimate, against the TRON devnet node process (HTTP wallet API).

A TRC20 transfer's fee_limit is the node's energy estimate x the chain's energy price
(getchainparameters' getEnergyFee) x the registry's margin, capped by `fee_limit_cap_sun`; the
signed transaction carries exactly the quoted fee_limit, lands, and burns what the receipt says
(energy x price + bandwidth), within the reserve. The node answers as java-tron does:
wallet/estimateenergy where enabled, otherwise "does not support estimate energy" and the
adapter falls back to triggerconstantcontract's energy_used. The estimates here are read back
from the node independently of the adapter."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from eth_keys import keys
from tronpy.keys import PrivateKey

from chains import tron_tx
from chains.base import FeeQuote, SignedTransaction, TransferIntent, TxState, TxStatus
from chains.errors import TransactionRejected
from chains.registry import ChainSpec, load_registry
from chains.tron import TronAdapter
from devnet.tron_node import TronNode

pytestmark = pytest.mark.integration

TRX = 1_000_000
DEVNET = load_registry("devnet").chain("tron")
MARGIN = 120  # devnet.toml's energy_margin_percent


@pytest.fixture(scope="module")
def node() -> Iterator[TronNode]:
    with TronNode.for_spec(DEVNET, block_time=0.25) as running:
        yield running


@pytest.fixture(scope="module")
def spec(node: TronNode) -> ChainSpec:
    return replace(DEVNET, rpc_urls=(node.rpc_url,))


def _account(node: TronNode, trx: int = 0, usdt: int = 0) -> tuple[PrivateKey, str]:
    key = PrivateKey.random()
    address = key.public_key.to_base58check_address()
    if trx:
        node.fund_trx(address, trx)
    if usdt:
        node.mint_trc20(address, usdt)
    return key, address


def _node_estimate(node: TronNode, sender: str, to: str, amount: int) -> tuple[int, int]:
    """(energy_used of the transfer run as a constant call, getEnergyFee): asked of the node directly."""
    answer = node.api("wallet/triggerconstantcontract", {
        "owner_address": sender, "contract_address": DEVNET.token("USDT").contract, "visible": True,
        "function_selector": "transfer(address,uint256)", "parameter": tron_tx.trc20_transfer_parameter(to, amount)})
    parameters = {p["key"]: p.get("value", 0) for p in node.api("wallet/getchainparameters")["chainParameter"]}
    return int(answer["energy_used"]), int(parameters["getEnergyFee"])


def _sign(adapter: TronAdapter, key: PrivateKey, intent: TransferIntent, fee: FeeQuote) -> SignedTransaction:
    unsigned = adapter.build(intent, fee, None, adapter.build_context(intent))
    signature = keys.PrivateKey(key.to_bytes()).sign_msg_hash(unsigned.digests[0]).to_bytes()
    return adapter.attach_signature(unsigned.payload, [signature])


def _final(adapter: TronAdapter, signed: SignedTransaction) -> TxStatus:
    deadline = time.monotonic() + 8
    done: Callable[[TxStatus], bool] = lambda s: s.confirmations >= adapter.spec.confirmations  # noqa: E731
    while not done(status := adapter.get_status(signed)):
        assert time.monotonic() < deadline, f"{signed.tx_hash} still {status}"
        time.sleep(0.05)
    return status


def _transfer(node: TronNode, adapter: TronAdapter, key: PrivateKey, sender: str, to: str,
              amount: int) -> tuple[FeeQuote, SignedTransaction, TxStatus, int]:
    """(quote, signed, final status, TRX the sender lost)."""
    intent = TransferIntent(sender, to, amount, DEVNET.token("USDT"))
    quote = adapter.quote_fee(intent)
    signed = _sign(adapter, key, intent, quote)
    before = adapter.balance_of(sender, DEVNET.native)
    adapter.broadcast(signed)
    status = _final(adapter, signed)
    return quote, signed, status, before - adapter.balance_of(sender, DEVNET.native)


@pytest.mark.parametrize("holder", [False, True], ids=["new-holder", "holder"])
def test_the_fee_limit_is_the_energy_estimate_times_price_and_margin(node: TronNode, spec: ChainSpec, holder: bool) -> None:
    adapter = TronAdapter(spec)
    key, sender = _account(node, trx=40 * TRX, usdt=10_000_000)
    _, recipient = _account(node, usdt=1 if holder else 0)
    energy, price = _node_estimate(node, sender, recipient, 2_500_000)
    assert energy == (65_000 if holder else 130_000)  # the devnet's USDT, as mainnet's: a new holder costs twice

    quote, signed, status, lost = _transfer(node, adapter, key, sender, recipient, 2_500_000)
    fee_limit = -(-energy * price * MARGIN // 100)
    assert quote.params["fee_limit"] == fee_limit
    assert (quote.params["energy"], quote.params["energy_price_sun"]) == (energy, price)
    assert json.loads(signed.raw)["raw_data"]["fee_limit"] == fee_limit  # the built transaction carries the quoted one
    assert quote.max_fee == fee_limit + quote.params["bandwidth_sun"]

    assert status.state is TxState.INCLUDED  # the estimate was enough: no OUT_OF_ENERGY
    assert status.fee_paid == lost == energy * price + quote.params["bandwidth_sun"] <= quote.max_fee
    assert adapter.balance_of(recipient, DEVNET.token("USDT")) == 2_500_000 + (1 if holder else 0)


def test_an_estimate_above_the_cap_is_refused_at_quote(node: TronNode, spec: ChainSpec) -> None:
    _, sender = _account(node, trx=40 * TRX, usdt=10_000_000)
    _, recipient = _account(node)
    intent = TransferIntent(sender, recipient, 1_000_000, DEVNET.token("USDT"))
    capped = TronAdapter(replace(spec, options={**spec.options, "fee_limit_cap_sun": 10 * TRX}))
    with pytest.raises(TransactionRejected) as info:
        capped.quote_fee(intent)  # 130,000 energy x 100 sun x 120% = 15.6 TRX
    assert info.value.reason == "fee_above_cap"
    assert "exceeds the cap" in info.value.detail and "15600000" in info.value.detail
    assert TronAdapter(spec).quote_fee(intent).params["fee_limit"] == 15_600_000  # under the registry's 30 TRX


def test_the_old_fee_limit_sun_option_is_read_as_the_cap(node: TronNode, spec: ChainSpec) -> None:
    _, sender = _account(node, trx=40 * TRX, usdt=10_000_000)
    _, recipient = _account(node)
    intent = TransferIntent(sender, recipient, 1_000_000, DEVNET.token("USDT"))
    options = {k: v for k, v in spec.options.items() if k != "fee_limit_cap_sun"}
    with pytest.raises(TransactionRejected, match="exceeds the cap"):
        TronAdapter(replace(spec, options={**options, "fee_limit_sun": 10 * TRX})).quote_fee(intent)
    quote = TronAdapter(replace(spec, options={**options, "fee_limit_sun": 20 * TRX})).quote_fee(intent)
    assert quote.params["fee_limit"] == 15_600_000  # estimated, not the old fixed 20 TRX


def test_a_node_without_estimateenergy_falls_back_to_the_constant_call(spec: ChainSpec) -> None:
    # java-tron's default (vm.estimateEnergy = false); and a chain whose energy price is not mainnet's
    with TronNode.for_spec(DEVNET, block_time=0.25, estimates_energy=False, energy_price=150) as plain:
        adapter = TronAdapter(replace(spec, rpc_urls=(plain.rpc_url,)))
        key, sender = _account(plain, trx=40 * TRX, usdt=10_000_000)
        _, recipient = _account(plain)
        refused = plain.api("wallet/estimateenergy", {
            "owner_address": sender, "contract_address": DEVNET.token("USDT").contract, "visible": True,
            "function_selector": "transfer(address,uint256)", "parameter": tron_tx.trc20_transfer_parameter(recipient, 1)})
        assert "does not support estimate energy" in refused["result"]["message"]
        energy, price = _node_estimate(plain, sender, recipient, 1_000_000)
        assert (energy, price) == (130_000, 150)

        quote, signed, status, lost = _transfer(plain, adapter, key, sender, recipient, 1_000_000)
        assert adapter._estimates_energy is False  # asked once, remembered
        assert quote.params["fee_limit"] == 130_000 * 150 * MARGIN // 100 == 23_400_000
        assert status.state is TxState.INCLUDED and status.fee_paid == lost == 130_000 * 150 + quote.params["bandwidth_sun"]


def test_the_node_estimates_what_execution_burns(node: TronNode, spec: ChainSpec) -> None:
    _, sender = _account(node, trx=10 * TRX, usdt=5)
    _, holder = _account(node, usdt=1)

    def estimate(to: str, amount: int) -> dict[str, Any]:
        return node.api("wallet/estimateenergy", {
            "owner_address": sender, "contract_address": DEVNET.token("USDT").contract, "visible": True,
            "function_selector": "transfer(address,uint256)", "parameter": tron_tx.trc20_transfer_parameter(to, amount)})

    assert estimate(holder, 5) == {"result": {"result": True}, "energy_required": 65_000}
    assert estimate(_account(node)[1], 5)["energy_required"] == 130_000
    reverted = estimate(holder, 6)  # more than it holds
    assert reverted["result"].get("result") is not True and "REVERT" in reverted["result"]["message"]
