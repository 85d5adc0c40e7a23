"""TRON's fee_limit for a TRC20 transfer: the energy it will use x the energy price x a margin.

Why its own module: reading the node's three answers (an energy estimate, its fallback, the chain
parameters) and the integer arithmetic are what decide how much TRX a transfer may burn, apart
from the adapter's node plumbing. The rules:

- energy: `wallet/estimateenergy` (`energy_required`) where the node serves it; java-tron serves
  it only with `vm.estimateEnergy = true` and otherwise answers "this node does not support
  estimate energy" (`required` then says None, and the adapter asks `wallet/triggerconstantcontract`
  from then on, whose `energy_used` is the energy of the same call run on the head state, dynamic
  energy penalty included). A call that reverts there would revert on chain and burn its fee:
  TransactionRejected("rejected_by_node") at quote time. Other failures are the node's
  (transient ChainRpcError);
- price: `wallet/getchainparameters` `getEnergyFee`, sun per energy (a governance parameter);
- fee_limit = ceil(energy x price x margin% / 100), in sun. The account's own staked energy is
  not subtracted: the reserve may exceed what is burnt, and the ledger settles with the
  receipt's fee.
"""

from __future__ import annotations

from typing import Any

from chains.errors import ChainRpcError, TransactionRejected
from chains.tron_rpc import node_message, to_int
from chains.transport import unusable_value

UNSUPPORTED = "does not support estimate energy"


def fee_limit(energy: int, price: int, margin_percent: int) -> int:
    """The most sun the transfer may burn for energy: ceil(energy x price x margin / 100), at least 1."""
    return max(-(-energy * price * margin_percent // 100), 1)


def energy_price(answer: Any, chain: str) -> int:
    """`getEnergyFee` (sun per energy) of a getchainparameters answer."""
    listed = answer.get("chainParameter") if isinstance(answer, dict) else None
    found = [p for p in listed or () if isinstance(p, dict) and p.get("key") == "getEnergyFee"]
    if not found:
        raise ChainRpcError(f"{chain}: wallet/getchainparameters answered no getEnergyFee")
    return _count(found[0].get("value", 0), "getEnergyFee")  # protobuf JSON omits a zero value


def required(answer: dict[str, Any], chain: str, what: str) -> int | None:
    """`energy_required` of an estimateenergy answer; None when the node does not serve it."""
    result = answer.get("result") if isinstance(answer.get("result"), dict) else {}
    if result.get("result") is True:
        return _count(answer.get("energy_required", 0), "energy_required")
    message = node_message(result)
    if UNSUPPORTED in message:
        return None
    raise _failure(chain, what, "wallet/estimateenergy", str(result.get("code", "")), message)


def used(answer: dict[str, Any], chain: str, what: str) -> int:
    """`energy_used` of a triggerconstantcontract answer for a call that does not revert."""
    result = answer.get("result") if isinstance(answer.get("result"), dict) else {}
    transaction = answer.get("transaction") if isinstance(answer.get("transaction"), dict) else {}
    ret = transaction.get("ret") if isinstance(transaction.get("ret"), list) else []
    failed = any(isinstance(r, dict) and r.get("ret") == "FAILED" for r in ret)
    message = node_message(result)
    if result.get("result") is not True or failed or message:
        raise _failure(chain, what, "wallet/triggerconstantcontract", str(result.get("code", "")), message or "FAILED")
    return _count(answer.get("energy_used", 0), "energy_used")


def _count(value: Any, what: str) -> int:
    """A non-negative JSON integer from the node; anything else is ChainRpcError."""
    number = to_int(value, what)
    if number < 0:
        raise unusable_value(what, value)
    return number


def _failure(chain: str, what: str, path: str, code: str, message: str) -> Exception:
    """A revert is the transfer's (it would fail on chain); anything else is the node's."""
    if "revert" in message.lower():
        return TransactionRejected("rejected_by_node", f"{what} would revert on {chain}: {message}"[:500])
    return ChainRpcError(f"{chain}: {path} for {what} failed: {code} {message}"[:500])
