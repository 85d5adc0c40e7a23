"""The moving parts of `make spike`'s scenario: the fee spikes on both devnet nodes and a timeline
of actions (paced submissions, the spike's start and end, an endpoint killed) run at set offsets.

Why a steady base fee before the EVM spike: anvil with 0.25 s blocks lets the base fee of its
empty blocks fall by 12.5% a block, from 1 gwei to a few thousand wei within half a minute. A
transaction is then priced at 2 x base + 1 gwei tip, and five times a base fee of a few thousand
wei still excludes nothing: the spike would bite no transaction. So the benchmark first holds the
base fee at a mainnet-like level (`--base-fee-gwei`, 10 by default: a transfer then offers 21 gwei)
with `GasSpike(multiplier=1)`, and the spike multiplies that (5 x 10 = 50 gwei excludes it). When
the spike ends the base fee falls back by EIP-1559's 12.5% a block and is held no more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.spike_figures import SpikeWindow

GWEI = 10**9
HOLD_TRIES = 20


def hold_base_fee(rpc_url: str, wei: int) -> Any:
    """A GasSpike(multiplier=1) holding anvil's base fee at exactly `wei` (running; stop() it)."""
    from devnet.anvil import rpc_call
    from devnet.gas_spike import GasSpike

    for _ in range(HOLD_TRIES):
        rpc_call(rpc_url, "anvil_setNextBlockBaseFeePerGas", [hex(wei)])
        _wait_next_block(rpc_url)
        hold = GasSpike(rpc_url, 1).start()
        if hold.base_fee == wei:
            return hold
        hold.stop()  # a block slipped in between: its base fee had already moved on
    raise RuntimeError(f"anvil's base fee could not be held at {wei} wei")


def _wait_next_block(rpc_url: str, timeout_s: float = 10.0) -> None:
    from devnet.anvil import rpc_call

    start = int(rpc_call(rpc_url, "eth_blockNumber"), 16)
    deadline = time.monotonic() + timeout_s
    while int(rpc_call(rpc_url, "eth_blockNumber"), 16) == start:
        if time.monotonic() > deadline:
            raise RuntimeError("anvil mined no block")
        time.sleep(0.02)


class FeeSpikes:
    """A `multiplier` x base-fee spike on the EVM node and a `sat_vb` fee-rate spike on the
    Bitcoin node, begun and ended together; `window` says which Bitcoin blocks were mined under it."""

    def __init__(self, evm_rpc_url: str | None, bitcoin: Any | None, multiplier: int, sat_vb: int) -> None:
        self.evm_rpc_url, self.bitcoin = evm_rpc_url, bitcoin
        self.multiplier, self.sat_vb = multiplier, sat_vb
        self.hold: Any = None  # the steady base fee before the spike
        self.gas: Any = None
        self.normal_wei: int | None = None  # the EVM base fee held before the spike
        self.spike_wei: int | None = None  # and in it
        self.first_after: int | None = None
        self.last: int | None = None

    def steady(self, base_fee_wei: int) -> None:
        if self.evm_rpc_url is not None:
            self.hold = hold_base_fee(self.evm_rpc_url, base_fee_wei)
            self.normal_wei = base_fee_wei

    def start(self) -> None:
        from devnet.gas_spike import GasSpike

        if self.evm_rpc_url is not None:
            self.gas = GasSpike(self.evm_rpc_url, self.multiplier)
            self.gas.start()  # from the held base fee (the hold keeps it there until now)
            self._stop_hold()
            self.spike_wei = int(self.gas.base_fee)
        if self.bitcoin is not None:
            self.bitcoin.set_min_fee_rate(self.sat_vb)
            self.first_after = self.bitcoin.height()

    def stop(self) -> None:
        """End both spikes (also on the way out: safe to call again, or before `start`)."""
        self._stop_hold()
        if self.gas is not None:
            self.gas.stop()
            self.gas = None
        if self.bitcoin is not None and self.first_after is not None and self.last is None:
            self.last = self.bitcoin.height()
            self.bitcoin.set_min_fee_rate(0)

    def _stop_hold(self) -> None:
        if self.hold is not None:
            self.hold.stop()
            self.hold = None

    def window(self) -> SpikeWindow | None:
        if self.bitcoin is None or self.first_after is None:
            return None
        return SpikeWindow(self.first_after, self.last, self.sat_vb, int(self.bitcoin.fee_rate_sat_vb))


@dataclass(order=True)
class Action:
    at_s: float
    name: str = field(compare=False)
    run: Callable[[], None] = field(compare=False)


def paced(count: int, over_s: float, start_s: float = 0.0) -> list[float]:
    """`count` offsets evenly spread over `over_s` seconds (the first at `start_s`)."""
    if count <= 0:
        return []
    step = over_s / count
    return [start_s + i * step for i in range(count)]


def run_timeline(actions: Sequence[Action], say: Callable[[str], None]) -> float:
    """Run every action at its offset from now, in order (one running late delays the next, never
    skips it); returns the seconds it took. Named actions are announced."""
    started = time.monotonic()
    for action in sorted(actions):
        pause = started + action.at_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        action.run()
        if action.name:
            say(f"t={time.monotonic() - started:5.1f} s: {action.name}")
    return time.monotonic() - started
