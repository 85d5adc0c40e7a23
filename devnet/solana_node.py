"""A local Solana node for the demo and the integration tests: JSON-RPC over solders' LiteSVM.

Why our own front: there is no light Solana validator to install here, but solders ships LiteSVM,
the real runtime (signature checks, the System, SPL Token and Associated Token Account programs,
fees and rent all execute for real). `devnet.solana` adds what a validator adds around it: slots,
expiring blockhashes, commitment levels and a ledger to query, behind Solana's own JSON-RPC
method names and shapes, so the Solana adapter is tested against the protocol it uses in production.

    python -m devnet.solana_node --port 8899 [--registry devnet] [--slot-ms 100] ...

At start the node creates the SPL mints of the registry's Solana chain (at their mainnet
addresses, as the devnet registry lists them) with a devnet mint authority. `SolanaNode` runs that
process as a Service on a free port; its helpers fund accounts (`airdrop`, `mint_to`), move the
clock (`advance_slots`) and set the going compute-unit price (`set_prioritization_fee`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from devnet.ports import LOOPBACK, free_port
from devnet.processes import ManagedProcess
from devnet.service import Service

if TYPE_CHECKING:
    from chains.registry import ChainSpec, TokenSpec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_ids = itertools.count(1)


class SolanaRpcError(RuntimeError):
    """A JSON-RPC call to the devnet node returned an error object."""

    def __init__(self, method: str, error: Any) -> None:
        self.method = method
        self.error = error
        message = error.get("message") if isinstance(error, dict) else error
        super().__init__(f"{method}: {message}")


def rpc_call(url: str, method: str, params: list[Any] | None = None, timeout: float = 10.0) -> Any:
    """One JSON-RPC 2.0 call with the standard library; SolanaRpcError on an error object."""
    body = json.dumps({"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if reply.get("error") is not None:
        raise SolanaRpcError(method, reply["error"])
    return reply.get("result")


class SolanaNode(Service):
    """The devnet Solana node process on a free loopback port. Use as a context manager.

    `slot_ms=0` stops the clock: slots then move only by `advance_slots` (deterministic tests).
    `mints` overrides the registry's mints as (address, decimals) pairs. `transaction_history=False`
    makes a node started without --enable-rpc-transaction-history (no getSignaturesForAddress,
    getTransaction, getBlock; searchTransactionHistory silently ignored), `ledger_slots=N` one
    whose ledger keeps only the newest N slots (--limit-ledger-size).
    """

    name = "solana-devnet"

    def __init__(
        self,
        *,
        port: int | None = None,
        slot_ms: int = 100,
        blockhash_max_age: int = 150,
        confirm_depth: int = 1,
        finalize_depth: int = 4,
        registry: str = "devnet",
        chain: str = "solana",
        mints: Sequence[tuple[str, int]] | None = None,
        transaction_history: bool = True,
        ledger_slots: int = 0,
        log_path: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.port = port
        self.slot_ms = slot_ms
        self.blockhash_max_age = blockhash_max_age
        self.confirm_depth = confirm_depth
        self.finalize_depth = finalize_depth
        self.registry = registry
        self.chain = chain
        self.mints = list(mints) if mints is not None else None
        self.transaction_history = transaction_history
        self.ledger_slots = ledger_slots
        self.log_path = log_path
        self.timeout = timeout

    @property
    def rpc_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the solana devnet node is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def _argv(self, port: int) -> list[str]:
        argv = [sys.executable, "-m", "devnet.solana_node", "--port", str(port), "--slot-ms", str(self.slot_ms),
                "--blockhash-max-age", str(self.blockhash_max_age), "--confirm-depth", str(self.confirm_depth),
                "--finalize-depth", str(self.finalize_depth), "--registry", self.registry, "--chain", self.chain,
                "--ledger-slots", str(self.ledger_slots)]
        if not self.transaction_history:
            argv.append("--no-transaction-history")
        if self.mints is not None:  # exactly these mints, not the registry's
            argv.append("--no-registry-mints")
            for address, decimals in self.mints:
                argv += ["--mint", f"{address}:{decimals}"]
        return argv

    def start(self) -> "SolanaNode":
        self.port = self.port or free_port()
        url = self.rpc_url
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        self._process = ManagedProcess(
            self._argv(self.port), name="solana-devnet", ready=lambda: rpc_call(url, "getHealth", timeout=1.0) == "ok",
            log_path=self.log_path, timeout=self.timeout, grace=3.0, env=env, cwd=PROJECT_ROOT,
        )
        self._process.start()
        return self

    @classmethod
    def for_spec(cls, spec: "ChainSpec", **kwargs: Any) -> "SolanaNode":
        """A node whose mints are exactly `spec`'s SPL tokens (any registry, not only devnet's)."""
        mints = [(t.contract, t.decimals) for t in spec.tokens.values() if t.asset_type == "SPL" and t.contract]
        return cls(chain=spec.name, mints=mints, **kwargs)

    # -- JSON-RPC helpers --------------------------------------------------------------------
    def fund(self, address: str, token: "TokenSpec", amount: int) -> None:
        """Add `amount` base units of `token` to `address`: SOL from the faucet, SPL minted into
        the owner's associated token account (created if needed, its rent paid by the faucet)."""
        if token.asset_type == "NATIVE":
            self.airdrop(address, amount)
        else:
            self.mint_to(address, token.contract or "", amount)

    def rpc(self, method: str, params: list[Any] | None = None, timeout: float = 10.0) -> Any:
        return rpc_call(self.rpc_url, method, params, timeout)

    def airdrop(self, address: str, lamports: int) -> str:
        """Give `address` SOL from the devnet faucet (a real transfer; lands at once)."""
        return str(self.rpc("requestAirdrop", [address, lamports]))

    def mint_to(self, owner: str, mint: str, amount: int) -> str:
        """Mint SPL base units to `owner`'s associated token account (created, rent paid by the faucet)."""
        return str(self.rpc("devnet_mintTo", [{"owner": owner, "mint": mint, "amount": amount}]))

    def advance_slots(self, slots: int = 1) -> int:
        """Produce `slots` slots now (finality and blockhash expiry without waiting)."""
        return int(self.rpc("devnet_advanceSlots", [slots]))

    def set_prioritization_fee(self, micro_lamports: int) -> int:
        """Make every recent slot report at least this compute-unit price to getRecentPrioritizationFees
        (a busy cluster); 0 goes back to what landed transactions paid."""
        return int(self.rpc("devnet_setPrioritizationFee", [micro_lamports]))

    def recent_prioritization_fees(self, accounts: Sequence[str] = ()) -> list[dict[str, int]]:
        """getRecentPrioritizationFees for `accounts`: [{"slot", "prioritizationFee"}], oldest first."""
        return list(self.rpc("getRecentPrioritizationFees", [list(accounts)]))

    def signatures_for_address(self, address: str, **config: Any) -> list[dict[str, Any]]:
        """getSignaturesForAddress (newest first); SolanaRpcError on a node without history."""
        return list(self.rpc("getSignaturesForAddress", [address, config]))

    def slot(self, commitment: str = "processed") -> int:
        return int(self.rpc("getSlot", [{"commitment": commitment}]))

    def balance(self, address: str) -> int:
        return int(self.rpc("getBalance", [address, {"commitment": "processed"}])["value"])

    def info(self) -> dict[str, Any]:
        return dict(self.rpc("devnet_info"))


# --- the node process -------------------------------------------------------------------------

def _registry_mints(registry: str, chain: str) -> list[tuple[str, int]]:
    from chains.registry import load_registry

    spec = load_registry(registry).chain(chain)
    return [(t.contract, t.decimals) for t in spec.tokens.values() if t.asset_type == "SPL" and t.contract]


def _parse_mint(text: str) -> tuple[str, int]:
    address, _, decimals = text.rpartition(":")
    if not address or not decimals.isdigit():
        raise argparse.ArgumentTypeError(f"--mint takes ADDRESS:DECIMALS, got {text!r}")
    return address, int(decimals)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devnet.solana_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--slot-ms", type=int, default=100, help="slot interval; 0 = manual clock")
    parser.add_argument("--blockhash-max-age", type=int, default=150)
    parser.add_argument("--confirm-depth", type=int, default=1)
    parser.add_argument("--finalize-depth", type=int, default=4)
    parser.add_argument("--registry", default="devnet", help="registry whose SPL tokens become mints")
    parser.add_argument("--chain", default="solana")
    parser.add_argument("--mint", type=_parse_mint, action="append", default=[], help="extra mint ADDRESS:DECIMALS")
    parser.add_argument("--no-registry-mints", action="store_true")
    parser.add_argument("--no-transaction-history", action="store_true",
                        help="as a validator without --enable-rpc-transaction-history")
    parser.add_argument("--ledger-slots", type=int, default=0,
                        help="keep the history of the newest N slots only (a pruned ledger); 0 = all")
    args = parser.parse_args(argv)

    from devnet.solana.cluster import Cluster, ClusterConfig
    from devnet.solana.server import SlotClock, make_server

    mints = ([] if args.no_registry_mints else _registry_mints(args.registry, args.chain)) + args.mint
    config = ClusterConfig(slot_ms=args.slot_ms, blockhash_max_age=args.blockhash_max_age,
                           confirm_depth=args.confirm_depth, finalize_depth=args.finalize_depth,
                           transaction_history=not args.no_transaction_history, ledger_slots=max(args.ledger_slots, 0))
    cluster = Cluster(config, mints)
    server = make_server(cluster, args.host, args.port)
    clock = SlotClock(cluster, args.slot_ms) if args.slot_ms > 0 else None
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    if clock is not None:
        clock.start()
    print(f"solana devnet on http://{args.host}:{args.port} (slot {args.slot_ms} ms, mints {dict(mints)}, "
          f"authority {cluster.authority.pubkey()}) started {time.strftime('%H:%M:%S')}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        if clock is not None:
            clock.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
