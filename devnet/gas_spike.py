"""A base-fee spike on an anvil node: every block while it lasts starts at `multiplier` times the
base fee the spike began at (anvil_setNextBlockBaseFeePerGas before each block), as when a popular
mint fills blocks on mainnet. A transaction priced before the spike (maxFeePerGas = 2 x base + tip)
cannot be mined while it lasts, and neither can any later nonce of its account: the stuck-funds
case fee bumping exists for. When it ends, the base fee falls back by EIP-1559's 12.5% a block.

Used as a context manager, or with start()/stop() from a benchmark:

    with GasSpike(node.rpc_url, multiplier=5):
        ...  # transfers sent now wait until they are bumped above the spike
"""

from __future__ import annotations

import threading
from types import TracebackType

from devnet.anvil import rpc_call

POLL_S = 0.02


class GasSpike:
    """Holds anvil's next-block base fee at `multiplier` x the base fee when it started."""

    def __init__(self, rpc_url: str, multiplier: int = 5) -> None:
        if not isinstance(multiplier, int) or multiplier < 1:
            raise ValueError(f"multiplier must be an integer >= 1, got {multiplier!r}")
        self.rpc_url = rpc_url
        self.multiplier = multiplier
        self.base_fee = 0  # wei, while it lasts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "GasSpike":
        latest = rpc_call(self.rpc_url, "eth_getBlockByNumber", ["latest", False])
        self.base_fee = int(latest["baseFeePerGas"], 16) * self.multiplier
        self._hold()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gas-spike", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def _hold(self) -> None:
        rpc_call(self.rpc_url, "anvil_setNextBlockBaseFeePerGas", [hex(self.base_fee)])

    def _run(self) -> None:
        seen = int(rpc_call(self.rpc_url, "eth_blockNumber"), 16)
        while not self._stop.wait(POLL_S):
            try:
                head = int(rpc_call(self.rpc_url, "eth_blockNumber"), 16)
                if head != seen:
                    seen = head
                    self._hold()
            except Exception:  # noqa: BLE001 - a node restarting; the next poll sets it again
                continue

    def __enter__(self) -> "GasSpike":
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
