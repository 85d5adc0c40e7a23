"""EVM fee bumping: the replacement policy from the registry, and the raised fee fields.

A transaction is replaced at the same nonce; a node accepts the replacement only if every fee
field rises by its replacement rule (geth and anvil: +10% on both maxFeePerGas and
maxPriorityFeePerGas, or on gasPrice), else it answers "replacement transaction underpriced". So a
bump raises every field by at least `bump_percent` (default 20, at least 10) and to at least
today's market price, and never above the chain's `max_fee_per_gas_cap` (wei): a bump that
cannot clear the rule under the cap is refused (BumpRefused "at_fee_cap"), the transfer keeps its
transaction and waits for the base fee to come down.

Registry options (`[chains.<name>.options]`, all optional): `bump_after_blocks` (3),
`bump_percent` (20), `max_fee_per_gas_cap` (1,000 gwei).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chains.base import ReplacementPolicy
from chains.errors import BumpRefused, ChainError

DEFAULT_BUMP_AFTER_BLOCKS = 3
DEFAULT_BUMP_PERCENT = 20
NODE_REPLACEMENT_PERCENT = 10  # geth's and anvil's price bump rule for a same-nonce replacement
DEFAULT_MAX_FEE_PER_GAS_CAP = 1_000 * 10**9  # 1,000 gwei


@dataclass(frozen=True)
class BumpOptions:
    """The chain's fee-bump settings, validated once when the adapter is made."""

    after_blocks: int
    percent: int
    cap: int  # wei per gas

    @classmethod
    def from_options(cls, options: Mapping[str, Any], chain: str) -> "BumpOptions":
        after = _int_option(options, "bump_after_blocks", DEFAULT_BUMP_AFTER_BLOCKS, 1, chain)
        percent = _int_option(options, "bump_percent", DEFAULT_BUMP_PERCENT, NODE_REPLACEMENT_PERCENT, chain)
        cap = _int_option(options, "max_fee_per_gas_cap", DEFAULT_MAX_FEE_PER_GAS_CAP, 1, chain)
        return cls(after, percent, cap)

    @property
    def policy(self) -> ReplacementPolicy:
        return ReplacementPolicy(after_blocks=self.after_blocks, percent=self.percent)


def _int_option(options: Mapping[str, Any], key: str, default: int, minimum: int, chain: str) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ChainError(f"registry: chains.{chain}.options.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _raised(value: int, percent: int) -> int:
    """`value` raised by `percent`, rounded up, and by at least 1."""
    return max(-(-value * (100 + percent) // 100), value + 1)


def pays_market(current: Mapping[str, int], market: Mapping[str, int]) -> bool:
    """Every price field of `current` is at least today's: the transaction is not underpriced."""
    return all(current.get(key, 0) >= value for key, value in market.items() if key != "gas")


def bumped_fields(current: Mapping[str, int], market: Mapping[str, int], options: BumpOptions) -> dict[str, int]:
    """The replacement's fee fields: each of `current` raised by the policy, at least `market`,
    at most the cap; BumpRefused if the node's rule cannot be met under the cap."""
    price_key = "maxFeePerGas" if "maxFeePerGas" in current else "gasPrice"
    old_price = current[price_key]
    floor = -(-old_price * (100 + NODE_REPLACEMENT_PERCENT) // 100)  # what the node requires at least
    if floor > options.cap:
        raise BumpRefused("at_fee_cap", f"{price_key} {old_price} wei cannot rise by the node's "
                                        f"{NODE_REPLACEMENT_PERCENT}% under the cap {options.cap} wei")
    price = min(max(_raised(old_price, options.percent), market.get(price_key, 0)), options.cap)
    fields = {"gas": current["gas"], price_key: price}
    if price_key == "maxFeePerGas":
        tip = max(_raised(current["maxPriorityFeePerGas"], options.percent), market.get("maxPriorityFeePerGas", 0))
        fields["maxPriorityFeePerGas"] = min(tip, price)
        tip_floor = -(-current["maxPriorityFeePerGas"] * (100 + NODE_REPLACEMENT_PERCENT) // 100)
        if fields["maxPriorityFeePerGas"] < tip_floor:
            raise BumpRefused("at_fee_cap", f"the priority fee cannot rise by the node's {NODE_REPLACEMENT_PERCENT}% "
                                            f"under the cap {options.cap} wei")
    return fields
