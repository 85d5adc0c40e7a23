"""TRON fee_limit from the energy estimate: the math and the node answers (`chains.tron_energy`), the
options (the cap, its old name, the margin), and the adapter's choice of estimate, against scripted
answers shaped like java-tron's. The devnet node's own estimates are in test_devnet_tron_energy.py,
the whole transfer in tests/integration/test_tron_energy_fee_limit.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from tronpy.keys import PrivateKey

from chains import tron_energy
from chains.base import FeeQuote, TransferIntent
from chains.errors import ChainError, ChainRpcError, TransactionRejected
from chains.registry import load_registry
from chains.tron import TronAdapter, TronOptions

SPEC = load_registry("devnet").chain("tron")
USDT = SPEC.token("USDT")
SENDER = PrivateKey(bytes.fromhex("11" * 32)).public_key.to_base58check_address()
DEST = PrivateKey(bytes.fromhex("22" * 32)).public_key.to_base58check_address()
PARAMETERS = {"chainParameter": [{"key": "getTransactionFee", "value": 1000}, {"key": "getEnergyFee", "value": 210}]}
UNSUPPORTED = {"result": {"code": "OTHER_ERROR", "message": "this node does not support estimate energy".encode().hex()}}


# --- the math and the answers ------------------------------------------------------------------------

@pytest.mark.parametrize(("energy", "price", "margin", "fee_limit"), [
    (130_000, 100, 120, 15_600_000), (64_285, 210, 120, 16_199_820), (1, 1, 120, 2),  # 1.2 rounds up
    (64_285, 100, 100, 6_428_500), (0, 100, 120, 1),  # a fee_limit is at least 1 sun
])
def test_the_fee_limit_is_energy_times_price_times_margin_rounded_up(energy: int, price: int, margin: int,
                                                                      fee_limit: int) -> None:
    assert tron_energy.fee_limit(energy, price, margin) == fee_limit


def test_the_energy_price_is_get_energy_fee() -> None:
    assert tron_energy.energy_price(PARAMETERS, "tron") == 210
    assert tron_energy.energy_price({"chainParameter": [{"key": "getEnergyFee"}]}, "tron") == 0  # zero is omitted
    for unusable in ({}, {"chainParameter": [{"key": "getTransactionFee", "value": 1}]}, [], {"chainParameter": [
            {"key": "getEnergyFee", "value": "100"}]}, {"chainParameter": [{"key": "getEnergyFee", "value": -1}]}):
        with pytest.raises(ChainRpcError):
            tron_energy.energy_price(unusable, "tron")


def test_an_estimateenergy_answer() -> None:
    assert tron_energy.required({"result": {"result": True}, "energy_required": 64_285}, "tron", "t") == 64_285
    assert tron_energy.required({"result": {"result": True}}, "tron", "t") == 0
    assert tron_energy.required(UNSUPPORTED, "tron", "t") is None  # hex message (visible=false)
    assert tron_energy.required({"result": {"message": "this node does not support estimate energy"}}, "tron", "t") is None
    with pytest.raises(TransactionRejected) as info:
        tron_energy.required({"result": {"code": "OTHER_ERROR", "message": "REVERT opcode executed"}}, "tron", "t")
    assert info.value.reason == "rejected_by_node" and "would revert" in info.value.detail
    with pytest.raises(ChainRpcError, match="NullPointerException"):  # the node's trouble, not the transfer's
        tron_energy.required({"result": {"code": "OTHER_ERROR", "message": "java.lang.NullPointerException"}}, "tron", "t")


def test_a_triggerconstantcontract_answer() -> None:
    penalized = {"result": {"result": True}, "energy_used": 130_285, "energy_penalty": 66_000}  # the penalty is included
    assert tron_energy.used(penalized, "tron", "t") == 130_285
    reverts = [
        {"result": {"result": True, "message": "REVERT opcode executed"}, "energy_used": 300},
        {"result": {"result": True}, "energy_used": 300, "transaction": {"ret": [{"ret": "FAILED"}]},
         "constant_result": ["08c379a0"]},  # FAILED without a message: no usable estimate (retried)
    ]
    with pytest.raises(TransactionRejected, match="would revert"):
        tron_energy.used(reverts[0], "tron", "t")
    with pytest.raises(ChainRpcError):
        tron_energy.used(reverts[1], "tron", "t")
    with pytest.raises(ChainRpcError):
        tron_energy.used({"result": {"code": "CONTRACT_VALIDATE_ERROR", "message": "No contract"}}, "tron", "t")
    with pytest.raises(ChainRpcError):
        tron_energy.used({"result": {"result": True}, "energy_used": -5}, "tron", "t")


# --- options -------------------------------------------------------------------------------------------

def _options(**options: Any) -> TronOptions:
    return TronOptions.from_spec(replace(SPEC, options=options))


def test_the_cap_and_its_old_name() -> None:
    assert _options().fee_limit_cap_sun == 100_000_000 and _options().energy_margin_percent == 120
    assert _options(fee_limit_cap_sun=7).fee_limit_cap_sun == 7
    assert _options(fee_limit_sun=9).fee_limit_cap_sun == 9  # a registry written before estimates keeps working
    with pytest.raises(ChainError, match="same cap"):
        _options(fee_limit_sun=9, fee_limit_cap_sun=9)
    assert TronOptions.from_spec(SPEC).fee_limit_cap_sun == 30_000_000  # devnet.toml
    assert TronOptions.from_spec(load_registry("mainnet").chain("tron")).fee_limit_cap_sun == 100_000_000


@pytest.mark.parametrize("options", [
    {"fee_limit_cap_sun": 0}, {"fee_limit_sun": "1"}, {"energy_margin_percent": 99}, {"energy_margin_percent": 1001},
    {"energy_margin_percent": 1.2}, {"energy_margin_percent": True},
])
def test_bad_fee_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ChainError):
        _options(**options)


# --- the adapter's estimate ------------------------------------------------------------------------

class ScriptedNode:
    """Answers per path (a value, or a list consumed in order); records the paths asked."""

    def __init__(self, **answers: Any) -> None:
        self.answers = {path.replace("__", "/"): answer for path, answer in answers.items()}
        self.paths: list[str] = []

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        self.paths.append(path)
        answer = self.answers[path]
        return answer.pop(0) if isinstance(answer, list) else answer


def _adapter(node: ScriptedNode, **options: Any) -> TronAdapter:
    adapter = TronAdapter(replace(SPEC, options={**SPEC.options, **options}))
    adapter._post = node.post  # type: ignore[method-assign]
    return adapter


BALANCE = {"result": {"result": True}, "constant_result": [f"{10**9:064x}"]}


def test_a_trc20_quote_asks_the_estimate_and_the_price() -> None:
    node = ScriptedNode(wallet__triggerconstantcontract=BALANCE, wallet__getchainparameters=PARAMETERS,
                        wallet__estimateenergy={"result": {"result": True}, "energy_required": 64_285})
    quote = _adapter(node).quote_fee(TransferIntent(SENDER, DEST, 5, USDT))
    assert node.paths == ["wallet/triggerconstantcontract", "wallet/estimateenergy", "wallet/getchainparameters"]
    assert quote.params == {"kind": "TRC20", "bandwidth_sun": 345_000, "fee_limit": 16_199_820, "energy": 64_285,
                            "energy_price_sun": 210}
    assert quote.max_fee == 345_000 + 16_199_820  # the energy and its price are records, not costs


def test_a_node_without_estimates_is_asked_the_constant_call_from_then_on() -> None:
    used = {"result": {"result": True}, "energy_used": 130_285, "constant_result": [f"{1:064x}"]}
    node = ScriptedNode(wallet__triggerconstantcontract=[BALANCE, used, BALANCE, used],
                        wallet__getchainparameters=PARAMETERS, wallet__estimateenergy=[UNSUPPORTED])
    adapter = _adapter(node, fee_limit_cap_sun=100_000_000)
    intent = TransferIntent(SENDER, DEST, 5, USDT)
    assert adapter.quote_fee(intent).params["energy"] == 130_285
    assert adapter.quote_fee(intent).params["energy"] == 130_285
    assert node.paths.count("wallet/estimateenergy") == 1


def test_an_estimate_over_the_cap_is_refused_and_a_revert_too() -> None:
    estimate = {"result": {"result": True}, "energy_required": 130_000}
    node = ScriptedNode(wallet__triggerconstantcontract=BALANCE, wallet__getchainparameters=PARAMETERS,
                        wallet__estimateenergy=estimate)
    with pytest.raises(TransactionRejected) as info:
        _adapter(node, fee_limit_cap_sun=30_000_000).quote_fee(TransferIntent(SENDER, DEST, 5, USDT))
    assert info.value.reason == "fee_above_cap"
    assert "exceeds the cap" in info.value.detail and "32760000" in info.value.detail
    node.answers["wallet/estimateenergy"] = {"result": {"code": "OTHER_ERROR", "message": "REVERT opcode executed"}}
    with pytest.raises(TransactionRejected, match="would revert"):
        _adapter(node).quote_fee(TransferIntent(SENDER, DEST, 5, USDT))


def test_the_build_uses_the_quoted_fee_limit_and_never_more_than_the_reserve() -> None:
    from chains import tron_tx

    adapter = TronAdapter(SPEC)
    intent = TransferIntent(SENDER, DEST, 5, USDT)
    context = {"ref_block_bytes": "0064", "ref_block_hash": "ab" * 8, "expiration": 1_800_000_060_000,
               "timestamp": 1_800_000_000_000}
    params = {"kind": "TRC20", "bandwidth_sun": 345_000, "fee_limit": 16_199_820, "energy": 64_285, "energy_price_sun": 210}
    unsigned = adapter.build(intent, FeeQuote(345_000 + 16_199_820, params), None, context)
    assert tron_tx.decode_payload(unsigned.payload)[1]["fee_limit"] == 16_199_820
    with pytest.raises(Exception, match="more than the reserved"):
        adapter.build(intent, FeeQuote(345_000 + 16_199_819, params), None, context)
