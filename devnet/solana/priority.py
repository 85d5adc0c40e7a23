"""The devnet's prioritization fee cache: what getRecentPrioritizationFees answers.

Why its own module: LiteSVM charges a transaction's priority fee itself (its ComputeBudget
instructions are executed for real), but keeps no record of what recent blocks paid; a
validator does (agave's PrioritizationFeeCache), and the RPC reads that. This keeps the same
record, per slot, from the transactions that landed:

- the block's minimum compute-unit price over its transactions (a transaction without
  SetComputeUnitPrice pays 0), and per account it write-locks, the minimum price of the
  transactions that wrote it;
- getRecentPrioritizationFees(accounts) answers, for each of the last `RECENT_SLOTS` slots,
  {"slot", "prioritizationFee"} = the highest of the block's minimum and the minimums of the
  given accounts (0 for a slot without transactions), oldest first, as agave does;
- `floor` (devnet_setPrioritizationFee) stands for a busy cluster: every slot reports at least
  it, as if each block were full of transactions paying that much.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

COMPUTE_BUDGET_PROGRAM = "ComputeBudget111111111111111111111111111111"
SET_COMPUTE_UNIT_LIMIT = 2  # ComputeBudget instruction tags: the limit's data is the tag and a u32,
SET_COMPUTE_UNIT_PRICE = 3  # the price's the tag and a u64 (micro-lamports per compute unit)
# The limit of a transaction that sets none (SIMD-0170): 3,000 per builtin program instruction,
# 200,000 per other instruction, up to the most a transaction may use.
BUILTIN_UNITS, DEFAULT_UNITS, MAX_COMPUTE_UNITS = 3_000, 200_000, 1_400_000
BUILTINS = frozenset({
    "11111111111111111111111111111111", COMPUTE_BUDGET_PROGRAM, "AddressLookupTab1e1111111111111111111111111",
    "Vote111111111111111111111111111111111111111", "Stake11111111111111111111111111111111111111",
    "Config1111111111111111111111111111111111111", "BPFLoader2111111111111111111111111111111111",
    "BPFLoaderUpgradeab1e11111111111111111111111", "LoaderV411111111111111111111111111111111111",
})
RECENT_SLOTS = 150  # agave keeps the fees of the last 150 blocks
MAX_ACCOUNTS = 128  # getRecentPrioritizationFees refuses more


def _budget(message: Any) -> dict[int, int]:
    """Tag -> value of a message's ComputeBudget instructions."""
    keys = [str(key) for key in message.account_keys]
    found: dict[int, int] = {}
    for ix in message.instructions:
        data = bytes(ix.data)
        if keys[ix.program_id_index] == COMPUTE_BUDGET_PROGRAM and data:
            found[data[0]] = int.from_bytes(data[1:], "little")
    return found


def compute_unit_price(message: Any) -> int:
    """The micro-lamports per compute unit a message's SetComputeUnitPrice bids (0 without one)."""
    return _budget(message).get(SET_COMPUTE_UNIT_PRICE, 0)


def priority_fee(message: Any) -> int:
    """Lamports the runtime charges a message for priority: ceil(limit x price / 10^6), the limit
    being its SetComputeUnitLimit or the default for its other instructions."""
    budget = _budget(message)
    programs = [str(message.account_keys[ix.program_id_index]) for ix in message.instructions]
    default = sum(BUILTIN_UNITS if program in BUILTINS else DEFAULT_UNITS for program in programs)
    limit = budget.get(SET_COMPUTE_UNIT_LIMIT, min(default, MAX_COMPUTE_UNITS))
    return -(-limit * budget.get(SET_COMPUTE_UNIT_PRICE, 0) // 1_000_000)


def written_accounts(message: Any) -> list[str]:
    """The accounts a message write-locks, from its header: the writable signers, then the
    writable non-signers (static keys; the devnet serves legacy transactions)."""
    header, keys = message.header, [str(key) for key in message.account_keys]
    signers = header.num_required_signatures
    writable = list(range(signers - header.num_readonly_signed_accounts))
    writable += range(signers, len(keys) - header.num_readonly_unsigned_accounts)
    return [keys[i] for i in writable]


@dataclass
class _Slot:
    """What one block paid: its minimum price and, per written account, the minimum of its writers."""

    block_min: int | None = None
    accounts: dict[str, int] = field(default_factory=dict)

    def add(self, price: int, written: Iterable[str]) -> None:
        self.block_min = price if self.block_min is None else min(self.block_min, price)
        for account in written:
            self.accounts[account] = min(self.accounts.get(account, price), price)

    def fee(self, accounts: Iterable[str]) -> int:
        return max([self.block_min or 0, *(self.accounts.get(account, 0) for account in accounts)])


class PrioritizationFees:
    """Per-slot records of landed transactions' prices, and the devnet floor. The caller holds
    the cluster's lock."""

    def __init__(self) -> None:
        self.floor = 0
        self._slots: dict[int, _Slot] = {}

    def record(self, slot: int, message: Any) -> None:
        """A transaction landed at `slot` (succeeded or failed with its fee charged)."""
        self._slots.setdefault(slot, _Slot()).add(compute_unit_price(message), written_accounts(message))
        for old in [s for s in self._slots if s <= slot - RECENT_SLOTS]:
            del self._slots[old]

    def recent(self, head: int, accounts: list[str]) -> list[dict[str, int]]:
        """getRecentPrioritizationFees' answer at slot `head` for `accounts`."""
        empty = _Slot()
        return [{"slot": slot, "prioritizationFee": max(self.floor, self._slots.get(slot, empty).fee(accounts))}
                for slot in range(max(head - RECENT_SLOTS + 1, 0), head + 1)]
