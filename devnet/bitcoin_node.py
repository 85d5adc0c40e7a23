"""A local Bitcoin regtest node speaking bitcoind's JSON-RPC, for the demo and the integration tests.

Why our own node and not bitcoind: no bitcoind binary ships in a package registry we use, and the
adapter only needs the RPC subset listed in `devnet.bitcoin.rpc`. The node is still real where
it matters (see `devnet.bitcoin.chainstate`): it parses the wire bytes, keeps a UTXO set, a
mempool and linked blocks, verifies every P2WPKH signature (BIP143 + ECDSA) before accepting a
transaction, refuses missing inputs, dust and fees below 1 sat/vB, judges a double spend of a
mempool transaction by bitcoind's BIP125 replacement rules, and can reorganise (`invalidateblock`). It runs as its own process (`python -m devnet.bitcoin_node
--port P`), so the pipeline reaches it over HTTP exactly as it would reach bitcoind.

Blocks are mined every `block_interval` seconds (paying the faucet), and on demand with
`generatetoaddress`; `block_interval=None` mines a block per accepted transaction instead (as anvil
does without --block-time), `0` only on demand (tests that count confirmations exactly). The faucet is a publicly known devnet key funded by 101 blocks mined at start;
`sendtoaddress` pays from it (into the mempool, like bitcoind), and `BitcoinNode.fund` also mines
a block so the funds are confirmed (scantxoutset sees confirmed outputs only).

    with BitcoinNode() as node:
        node.fund_sats("bcrt1q...", 1_000_000)   # confirmed
        node.mine(2)
        node.rpc_url                            # http://127.0.0.1:<port>
        node.set_min_fee_rate(20)               # a fee-rate spike: blocks take >= 20 sat/vB only
        node.withhold(txid); node.release(txid) # the miner skips a transaction, then takes it again
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devnet.ports import LOOPBACK, free_port
from devnet.processes import ManagedProcess
from devnet.service import Service

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BLOCK_INTERVAL = 0.5
_DECIMAL = re.compile(r'"\\u0000D(-?[0-9.]+)"')


# --- the server (runs in the node process) -------------------------------------------------------


def _encode(value: Any) -> str:
    """JSON with Decimal amounts written as exact numbers, the way bitcoind writes them."""
    def mark(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return "\u0000D" + format(obj, "f")
        raise TypeError(f"cannot encode {type(obj).__name__}")

    return _DECIMAL.sub(lambda m: m.group(1), json.dumps(value, default=mark))


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: without this, 40 ms per call

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: a request log per poll would flood the log file

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if not self._authorised():
            self._send(401, b"", {"WWW-Authenticate": 'Basic realm="jsonrpc"'})
            return
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))), parse_float=Decimal)
        except ValueError:
            self._send(500, _encode({"result": None, "error": {"code": -32700, "message": "Parse error"}, "id": None}).encode())
            return
        if isinstance(request, list):
            replies = [self._answer(item)[1] for item in request]
            self._send(200, _encode(replies).encode())
            return
        status, reply = self._answer(request)
        self._send(status, _encode(reply).encode())

    def _answer(self, request: Any) -> tuple[int, dict[str, Any]]:
        from devnet.bitcoin.chainstate import RpcFailure

        ident = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                raise RpcFailure(-32600, "Invalid Request object")
            params = request.get("params") or []
            if not isinstance(params, list):
                raise RpcFailure(-32600, "Params must be an array")
            return 200, {"result": self.server.methods.call(request["method"], params), "error": None, "id": ident}
        except RpcFailure as exc:
            status = 404 if exc.code == -32601 else 500  # bitcoind's JSON-RPC 1.0 statuses
            return status, {"result": None, "error": {"code": exc.code, "message": exc.message}, "id": ident}
        except Exception as exc:  # noqa: BLE001 - a bug in the devnet must answer, not hang the client
            return 500, {"result": None, "error": {"code": -1, "message": f"devnet internal error: {exc!r}"}, "id": ident}

    def _authorised(self) -> bool:
        expected = self.server.credentials
        if expected is None:
            return True
        given = self.headers.get("Authorization", "")
        return given == "Basic " + base64.b64encode(expected.encode()).decode()

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    methods: Any
    credentials: str | None


def make_server(methods: Any, port: int = 0, credentials: str | None = None) -> _Server:
    """The HTTP JSON-RPC server over `methods` (a `devnet.bitcoin.rpc.Methods`) on the loopback
    port (0: a free one), not yet serving: `serve` runs it in the node process, and unit tests run
    it in a thread over a ChainState they drive themselves."""
    server = _Server((LOOPBACK, port), _Handler)
    server.methods = methods
    server.credentials = credentials
    return server


def serve(port: int, block_interval: float | None, fee_rate: int, credentials: str | None,
          automine: bool = False) -> None:
    """Run the node in this process until it is killed."""
    from chains.bitcoin_address import hash160, p2wpkh_script, compress_public_key
    from devnet.bitcoin.chainstate import COINBASE_MATURITY, ChainState, faucet_key
    from devnet.bitcoin.rpc import Methods
    from eth_keys import keys

    key = faucet_key()
    faucet_script = p2wpkh_script(hash160(compress_public_key(keys.PrivateKey(key).public_key.to_bytes())))
    state = ChainState(fee_rate_sat_vb=fee_rate)
    state.mine(COINBASE_MATURITY + 1, faucet_script)
    server = make_server(Methods(state, key, faucet_script, automine=automine), port, credentials)
    if block_interval:
        stop = threading.Event()

        def miner() -> None:
            while not stop.wait(block_interval):
                state.mine(1, faucet_script)

        threading.Thread(target=miner, name="miner", daemon=True).start()
    print(f"bitcoin devnet node on {LOOPBACK}:{port}, height {state.height}", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devnet.bitcoin_node", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--block-interval", type=float, default=DEFAULT_BLOCK_INTERVAL,
                        help="seconds between mined blocks; 0 mines only on generatetoaddress")
    parser.add_argument("--automine", action="store_true", help="mine a block for every accepted transaction")
    parser.add_argument("--fee-rate", type=int, default=2, help="estimatesmartfee answer in sat/vB; 0 = no estimate")
    parser.add_argument("--rpc-user")
    parser.add_argument("--rpc-password")
    args = parser.parse_args(argv)
    credentials = f"{args.rpc_user}:{args.rpc_password or ''}" if args.rpc_user else None
    serve(args.port, args.block_interval or None, args.fee_rate, credentials, args.automine)
    return 0


# --- the launcher (runs in the caller's process) ----------------------------------------------------


class BitcoinNodeError(RuntimeError):
    """A devnet RPC call failed."""

    def __init__(self, method: str, error: Any) -> None:
        self.code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        super().__init__(f"{method}: {message}")


class BitcoinNode(Service):
    """The node process on a free loopback port; `with` starts it and always stops it.

    `block_interval`: seconds between blocks; None = a block per transaction; 0 = only on demand.
    """

    name = "bitcoin-node"

    def __init__(self, *, block_interval: float | None = DEFAULT_BLOCK_INTERVAL, fee_rate_sat_vb: int = 2,
                 port: int | None = None, rpc_user: str | None = None, rpc_password: str | None = None,
                 log_path: Path | None = None, timeout: float = 30.0) -> None:
        super().__init__()
        self.block_interval = block_interval
        self.fee_rate_sat_vb = fee_rate_sat_vb
        self.port = port
        self.rpc_user, self.rpc_password = rpc_user, rpc_password
        self.log_path = log_path
        self.timeout = timeout
        self._session: Any = None

    @property
    def rpc_url(self) -> str:
        """The endpoint, with the credentials in it when the node requires them (as bitcoind URLs do)."""
        if self.port is None:
            raise RuntimeError("bitcoin-node is not started")
        auth = f"{self.rpc_user}:{self.rpc_password or ''}@" if self.rpc_user else ""
        return f"http://{auth}{LOOPBACK}:{self.port}"

    def start(self) -> "BitcoinNode":
        self.port = self.port or free_port()
        argv = [sys.executable, "-m", "devnet.bitcoin_node", "--port", str(self.port),
                "--block-interval", str(self.block_interval or 0), "--fee-rate", str(self.fee_rate_sat_vb)]
        if self.block_interval is None:
            argv.append("--automine")
        if self.rpc_user:
            argv += ["--rpc-user", self.rpc_user, "--rpc-password", self.rpc_password or ""]
        import os

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        self._process = ManagedProcess(argv, name="bitcoin-node", ready=lambda: self.rpc("getblockcount", timeout=1.0) > 0,
                                       log_path=self.log_path, timeout=self.timeout, grace=3.0, env=env, cwd=PROJECT_ROOT)
        self._process.start()
        return self

    def stop(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        super().stop()

    # -- JSON-RPC helpers --------------------------------------------------------------------
    def rpc(self, method: str, *params: Any, timeout: float = 10.0) -> Any:
        import requests

        if self._session is None:
            self._session = requests.Session()
            if self.rpc_user:
                self._session.auth = (self.rpc_user, self.rpc_password or "")
        url = f"http://{LOOPBACK}:{self.port}"
        body = _encode({"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)})
        reply = json.loads(self._session.post(url, data=body, timeout=timeout).content, parse_float=Decimal)
        if reply.get("error") is not None:
            raise BitcoinNodeError(method, reply["error"])
        return reply["result"]

    @property
    def faucet_address(self) -> str:
        from chains.bitcoin_address import address_from_public_key
        from devnet.bitcoin.chainstate import faucet_key
        from eth_keys import keys

        return address_from_public_key(keys.PrivateKey(faucet_key()).public_key.to_bytes(), "regtest")

    def mine(self, blocks: int = 1, address: str | None = None) -> list[str]:
        return list(self.rpc("generatetoaddress", blocks, address or self.faucet_address))

    def fund_sats(self, address: str, sats: int, *, confirm: bool = True) -> str:
        """Pay `sats` from the faucet to `address`; with `confirm`, mine it into a block. Returns the txid."""
        txid = str(self.rpc("sendtoaddress", address, Decimal(sats) / 100_000_000))
        if confirm and self.block_interval is not None:  # automine has already put it in a block
            self.mine(1)
        return txid

    def fund(self, address: str, token: Any, amount: int) -> None:
        """devnet.nodes.DevnetNode: `amount` satoshi of BTC (the only token), confirmed."""
        if getattr(token, "asset_type", "NATIVE") != "NATIVE":
            raise ValueError("bitcoin has no tokens")
        self.fund_sats(address, amount)

    def height(self) -> int:
        return int(self.rpc("getblockcount"))

    def set_min_fee_rate(self, sat_vb: int) -> None:
        """A fee-rate spike: until set back to 0, blocks take only mempool transactions paying at
        least `sat_vb` sat/vB (the others wait in the mempool) and estimatesmartfee answers it."""
        self.rpc("devnet_setminfeerate", sat_vb)

    def withhold(self, txid: str) -> None:
        """The miner skips `txid` (it stays in the mempool) until `release`."""
        self.rpc("devnet_withhold", txid, True)

    def release(self, txid: str) -> None:
        self.rpc("devnet_withhold", txid, False)

    def reorg(self, depth: int) -> list[str]:
        """Replace the last `depth` blocks by `depth + 1` new ones (their transactions go back to
        the mempool and into the new blocks). Returns the new blocks' hashes."""
        tip = self.height()
        self.rpc("invalidateblock", self.rpc("getblockhash", tip - depth + 1))
        return self.mine(depth + 1)


if __name__ == "__main__":
    sys.exit(main())
