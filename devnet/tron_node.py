"""A local TRON node for the demo and the integration tests: our Python chain behind TRON's HTTP API.

Why our own: java-tron needs a JVM, gigabytes and minutes to start; the pipeline needs a node
that speaks the same HTTP wallet API (`/wallet/*`, `/walletsolidity/*`), checks signatures,
TaPoS and expiration for real, keeps real TRX and TRC20 balances, charges bandwidth and energy
(so an out-of-energy TRC20 call really reverts with its fee burnt) and solidifies blocks a few
deep. `devnet.tron.chain` is the model, `devnet.tron.server` the API; this module runs them as a
separate process (`python -m devnet.tron_node --port P ...`) under ManagedProcess, like anvil.

    with TronNode.for_spec(load_registry("devnet").chain("tron")) as node:
        node.fund(address, spec.native, 100 * 10**6)       # TRX via the devnet faucet
        node.fund(address, spec.token("USDT"), 5 * 10**6)  # TRC20 minted to the address
        ...  # node.rpc_url is the endpoint for the registry's rpc_urls override

`energy_price` sets getEnergyFee (sun per energy burnt); `estimates_energy=False` makes a node that
refuses /wallet/estimateenergy as java-tron does by default (without vm.estimateEnergy).

There is no genesis allocation and no well-known key: every account starts unactivated and is
funded through the faucet (`/devnet/fund`, which activates it, and `/devnet/mint_trc20`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chains.registry import ChainSpec, TokenSpec
from devnet.ports import LOOPBACK, free_port
from devnet.processes import ManagedProcess
from devnet.service import Service

USDT = ("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", "USDT", 6)  # mainnet's USDT address, as in devnet.toml
DEFAULT_BLOCK_TIME = 0.25
ROOT = Path(__file__).resolve().parent.parent


def api_call(url: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """POST a JSON body to the node with the standard library; the JSON answer."""
    request = urllib.request.Request(f"{url}/{path.lstrip('/')}", data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    if isinstance(answer, dict) and "Error" in answer:
        raise RuntimeError(f"{path}: {answer['Error']}")
    return answer


class TronNode(Service):
    """The TRON devnet node process on a free loopback port. Use as a context manager."""

    name = "tron-node"

    def __init__(
        self,
        *,
        tokens: Sequence[tuple[str, str, int]] = (USDT,),
        block_time: float = DEFAULT_BLOCK_TIME,
        solidify_depth: int = 3,
        free_bandwidth: int = 0,
        energy_price: int = 100,
        estimates_energy: bool = True,
        port: int | None = None,
        log_path: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.tokens = list(tokens)
        self.block_time = block_time
        self.solidify_depth = solidify_depth
        self.free_bandwidth = free_bandwidth
        self.energy_price = energy_price  # getEnergyFee, sun per energy (mainnet: 100)
        self.estimates_energy = estimates_energy  # False: /wallet/estimateenergy refuses, as without vm.estimateEnergy
        self.port = port
        self.log_path = log_path
        self.timeout = timeout

    @classmethod
    def for_spec(cls, spec: ChainSpec, block_time: float | None = None, **kwargs: Any) -> "TronNode":
        """A node with the registry's TRC20 tokens at their addresses, solidifying at its depth."""
        tokens = [(t.contract or "", t.symbol, t.decimals) for t in spec.tokens.values() if t.asset_type == "TRC20"]
        return cls(tokens=tokens, block_time=block_time or DEFAULT_BLOCK_TIME, solidify_depth=spec.confirmations, **kwargs)

    @property
    def rpc_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the TRON node is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def _argv(self, port: int) -> list[str]:
        argv = [sys.executable, "-m", "devnet.tron_node", "--host", LOOPBACK, "--port", str(port),
                "--block-time", repr(float(self.block_time)), "--solidify-depth", str(self.solidify_depth),
                "--free-bandwidth", str(self.free_bandwidth), "--energy-price", str(self.energy_price)]
        if not self.estimates_energy:
            argv.append("--no-estimate-energy")
        for contract, symbol, decimals in self.tokens:
            argv += ["--trc20", f"{contract}:{symbol}:{decimals}"]
        return argv

    def start(self) -> "TronNode":
        self.port = self.port or free_port()
        url = self.rpc_url

        def ready() -> bool:
            return "blockID" in api_call(url, "wallet/getnowblock", timeout=1.0)

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self._process = ManagedProcess(self._argv(self.port), name="tron-node", ready=ready, log_path=self.log_path,
                                       timeout=self.timeout, grace=3.0, env=env, cwd=ROOT)
        self._process.start()
        return self

    # -- API helpers ---------------------------------------------------------------------------
    def api(self, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        return api_call(self.rpc_url, path, body, timeout)

    def fund(self, address: str, token: TokenSpec, amount: int) -> None:
        """Add `amount` base units of `token` (TRX or a TRC20 of this node) to `address`."""
        if token.asset_type == "NATIVE":
            self.fund_trx(address, amount)
        else:
            self.mint_trc20(address, amount, token.contract)

    def fund_trx(self, address: str, sun: int) -> int:
        """Credit TRX at once (activating the account); the new balance."""
        return int(self.api("devnet/fund", {"address": address, "amount_sun": sun})["balance"])

    def mint_trc20(self, address: str, amount: int, contract: str | None = None) -> int:
        """Mint token units to `address` at once (default: the first token); the new balance."""
        return int(self.api("devnet/mint_trc20", {"address": address, "amount": amount, "contract": contract})["balance"])

    def produce(self, blocks: int = 1) -> int:
        """Produce blocks now (besides the interval); the new head number."""
        return int(self.api("devnet/produce", {"blocks": blocks})["number"])

    def head(self) -> int:
        return int(self.api("wallet/getnowblock")["block_header"]["raw_data"].get("number", 0))

    def solid_head(self) -> int:
        return int(self.api("walletsolidity/getnowblock")["block_header"]["raw_data"].get("number", 0))

    def fork(self, start: int) -> list[str]:
        """Replace the unsolidified (empty) blocks start .. head by a sibling branch with new ids, as
        a short fork switch does; RuntimeError if `start` is solidified already. The replaced ids."""
        return list(self.api("devnet/fork", {"from": start})["replaced"])


def _token(text: str) -> Any:
    from tronpy.keys import to_hex_address

    from devnet.tron.chain import Token

    contract, symbol, decimals = text.split(":")
    return Token(contract=to_hex_address(contract).lower(), symbol=symbol, decimals=int(decimals), name=f"{symbol} (devnet)")


def main(argv: Sequence[str] | None = None) -> int:
    from devnet.tron.chain import TronChain
    from devnet.tron.fees import Fees
    from devnet.tron.server import make_server, produce_blocks

    parser = argparse.ArgumentParser(prog="python -m devnet.tron_node", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--block-time", type=float, default=DEFAULT_BLOCK_TIME, help="seconds between blocks")
    parser.add_argument("--solidify-depth", type=int, default=3, help="a block is solid with this many confirmations")
    parser.add_argument("--free-bandwidth", type=int, default=0, help="free bytes per account per day (mainnet: 600)")
    parser.add_argument("--energy-price", type=int, default=100, help="sun per energy, getEnergyFee (mainnet: 100)")
    parser.add_argument("--no-estimate-energy", action="store_true",
                        help="refuse /wallet/estimateenergy, as java-tron without vm.estimateEnergy does")
    parser.add_argument("--trc20", action="append", default=None, metavar="ADDRESS:SYMBOL:DECIMALS",
                        help=f"a TRC20 token (repeatable; default {':'.join(map(str, USDT))})")
    args = parser.parse_args(argv)

    tokens = [_token(text) for text in (args.trc20 or [":".join(map(str, USDT))])]
    fees = Fees(free_bandwidth=args.free_bandwidth, energy_price=args.energy_price)
    chain = TronChain(tokens, fees, args.solidify_depth, estimates_energy=not args.no_estimate_energy)
    info = {"block_time": args.block_time, "solidify_depth": args.solidify_depth,
            "tokens": [{"contract": t.contract, "symbol": t.symbol, "decimals": t.decimals} for t in tokens]}
    server = make_server(chain, args.host, args.port, info)
    stop = threading.Event()
    producer = threading.Thread(target=produce_blocks, args=(chain, args.block_time, stop), daemon=True)
    producer.start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"tron devnet on http://{args.host}:{args.port} (block every {args.block_time}s, "
          f"solid {args.solidify_depth} deep)", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
