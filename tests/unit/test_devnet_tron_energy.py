"""The TRON devnet's energy answers in-process: a constant call of `transfer` and
/wallet/estimateenergy report the energy that executing it burns (a new holder costs twice a
holder, a revert stops early), a node without vm.estimateEnergy refuses as java-tron does, and
getchainparameters carries the energy price the node charges."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tronpy.keys import PrivateKey, to_hex_address

from chains import tron_tx
from devnet.tron.chain import Token, TronChain
from devnet.tron.fees import Fees
from devnet.tron.server import ROUTES

USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
TRX = 1_000_000


def _chain(**kwargs: Any) -> TronChain:
    return TronChain([Token(to_hex_address(USDT), "USDT", 6)], Fees(energy_price=kwargs.pop("price", 100)), **kwargs)


def _address() -> str:
    return PrivateKey.random().public_key.to_base58check_address()


def _route(chain: TronChain, path: str, body: dict[str, Any]) -> Any:
    return json.loads(json.dumps(ROUTES[path](chain, json.loads(json.dumps(body)))))


def _transfer_body(owner: str, to: str, amount: int, visible: bool = True) -> dict[str, Any]:
    return {"owner_address": owner, "contract_address": USDT, "function_selector": "transfer(address,uint256)",
            "parameter": tron_tx.trc20_transfer_parameter(to, amount), "visible": visible}


@pytest.fixture
def funded() -> tuple[TronChain, str, str]:
    chain = _chain()
    owner, holder = _address(), _address()
    chain.fund(owner, 100 * TRX)
    chain.mint(USDT, owner, 10)
    chain.mint(USDT, holder, 1)
    return chain, owner, holder


def test_a_constant_transfer_reports_the_energy_execution_burns(funded: tuple[TronChain, str, str]) -> None:
    chain, owner, holder = funded
    assert _route(chain, "/wallet/triggerconstantcontract", _transfer_body(owner, holder, 10))["energy_used"] == 65_000
    new = _route(chain, "/wallet/triggerconstantcontract", _transfer_body(owner, _address(), 10))
    assert new["energy_used"] == 130_000 and new["result"] == {"result": True}
    reverted = _route(chain, "/wallet/triggerconstantcontract", _transfer_body(owner, holder, 11))
    assert reverted["result"]["message"] == "REVERT opcode executed" and reverted["energy_used"] == 5_000
    assert reverted["transaction"]["ret"] == [{"ret": "FAILED"}]


def test_estimateenergy_answers_energy_required(funded: tuple[TronChain, str, str]) -> None:
    chain, owner, holder = funded
    assert _route(chain, "/wallet/estimateenergy", _transfer_body(owner, holder, 10)) == {
        "result": {"result": True}, "energy_required": 65_000}
    reverted = _route(chain, "/wallet/estimateenergy", _transfer_body(owner, holder, 11, visible=False))
    assert "result" not in reverted["result"] and "energy_required" not in reverted
    assert b"REVERT opcode executed" in bytes.fromhex(reverted["result"]["message"])  # hex unless visible


def test_a_node_without_estimates_refuses_them() -> None:
    chain = _chain(estimates_energy=False)
    answer = _route(chain, "/wallet/estimateenergy", _transfer_body(_address(), _address(), 1, visible=False))
    assert answer["result"]["code"] == "OTHER_ERROR" and "energy_required" not in answer
    assert bytes.fromhex(answer["result"]["message"]).decode() == "this node does not support estimate energy"


def test_the_chain_parameters_carry_the_energy_price_it_charges() -> None:
    chain = _chain(price=210)
    parameters = {p["key"]: p["value"] for p in _route(chain, "/wallet/getchainparameters", {})["chainParameter"]}
    assert parameters["getEnergyFee"] == 210
