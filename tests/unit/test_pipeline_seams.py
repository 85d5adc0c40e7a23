"""The steps talk to chains and signers only through the declared seams, and the fakes honour them."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import pipeline.steps
from chains.base import ChainAdapter
from pipeline.errors import InvalidId, NotFound
from signer.base import Signer
from tests.unit.fakes import FakeAdapter, FakeSigner, World

STEPS_DIR = Path(pipeline.steps.__file__).parent


def calls_on(name: str) -> set[str]:
    """Methods the step modules call on `name` (a variable, an attribute such as ctx.signer, or the
    result of a call such as ctx.adapter_for(chain))."""
    found: set[str] = set()
    for path in STEPS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            target = node.func.value
            if isinstance(target, ast.Call):
                target = target.func
            if (isinstance(target, ast.Name) and target.id == name) or (
                isinstance(target, ast.Attribute) and target.attr == name
            ):
                found.add(node.func.attr)
    return found


def protocol_methods(protocol: type) -> set[str]:
    return {n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")}


def test_the_fake_adapter_implements_every_method_of_the_chain_adapter_protocol() -> None:
    for method in protocol_methods(ChainAdapter):
        assert callable(getattr(FakeAdapter, method, None)), method


def test_the_fake_signer_implements_every_method_of_the_signer_protocol() -> None:
    for method in protocol_methods(Signer):
        assert callable(getattr(FakeSigner, method, None)), method


def test_the_steps_only_ask_the_signer_for_protocol_methods() -> None:
    used = calls_on("signer")
    assert used == {"request_signature", "fetch_signature"}
    assert used <= protocol_methods(Signer)


def test_the_steps_only_call_adapter_methods_the_protocol_declares() -> None:
    used = calls_on("adapter") | calls_on("adapter_for")
    assert {"validate_address", "quote_fee", "build", "broadcast", "get_status"} <= used  # the scan works
    assert {"list_utxos", "build_context", "next_nonce", "attach_signature"} <= used
    assert used - protocol_methods(ChainAdapter) == set()


@pytest.mark.parametrize("utxos", [None, []], ids=["account", "utxo"])
def test_the_fake_adapter_has_every_attribute_the_chain_adapter_protocol_declares(
    world: World, utxos: list | None
) -> None:
    adapter = FakeAdapter(world.registry.chain("bitcoin" if utxos is not None else "ethereum"), utxos=utxos)
    declared = set(ChainAdapter.__annotations__)
    assert {"spec", "curve", "key_name", "uses_account_nonce", "uses_utxos"} <= declared
    for name in declared:
        assert hasattr(adapter, name), name
    assert (adapter.uses_utxos, adapter.uses_account_nonce) == (utxos is not None, utxos is None)


@pytest.mark.parametrize("step", list(pipeline.steps.STEP_FUNCTIONS))
def test_a_step_given_an_unknown_or_malformed_id_raises_typed_errors(world: World, step: str) -> None:
    with pytest.raises(NotFound):
        world.step(step, "tx_01JAAAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(InvalidId):
        world.step(step, "tx_' OR 1=1 --")
