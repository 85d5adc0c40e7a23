"""Foundry's anvil as a local EVM node for the demo and the integration tests.

Why anvil: it is a real node (real signature checks, nonces, gas, receipts, reorgs via
``anvil_reorg``) that speaks Ethereum JSON-RPC, so the EVM adapter is tested against the same
protocol it uses in production. It ships as a prebuilt binary inside the npm registry package
``@foundry-rs/anvil`` (the binary is in the per-platform optional dependency, e.g.
``@foundry-rs/anvil-linux-amd64``), so ``npm`` is the only tool needed to get it.

The JSON-RPC helpers here use only the standard library, so starting a node does not import web3.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devnet.ports import LOOPBACK, free_port
from devnet.processes import ManagedProcess
from devnet.service import Service

ANVIL_NPM_PACKAGE = "@foundry-rs/anvil"
ANVIL_VERSION = "1.7.1"
ANVIL_BIN_ENV = "PARATRO_ANVIL_BIN"

#: anvil's built-in default mnemonic: public test keys, never use them for anything real.
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
#: Account 0 of DEFAULT_MNEMONIC (a publicly known test key).
DEFAULT_ACCOUNT = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
DEFAULT_PRIVATE_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

_PLATFORM_PACKAGES = {
    "x86_64": "anvil-linux-amd64",
    "amd64": "anvil-linux-amd64",
    "aarch64": "anvil-linux-arm64",
    "arm64": "anvil-linux-arm64",
}


class AnvilError(RuntimeError):
    """anvil could not be installed or started."""


class RpcError(RuntimeError):
    """A JSON-RPC call returned an error object."""

    def __init__(self, method: str, error: Any) -> None:
        self.method = method
        self.error = error
        message = error.get("message") if isinstance(error, dict) else error
        super().__init__(f"{method}: {message}")


def _platform_package() -> str:
    machine = os.uname().machine if hasattr(os, "uname") else platform.machine()
    if not sys.platform.startswith("linux") or machine not in _PLATFORM_PACKAGES:
        raise AnvilError(
            f"no bundled anvil for {sys.platform}/{machine}; install Foundry and set {ANVIL_BIN_ENV}"
        )
    return _PLATFORM_PACKAGES[machine]


def anvil_bin_path(root: Path) -> Path:
    """Where ``ensure_anvil`` puts the binary under the project root."""
    return (
        Path(root).resolve() / ".devnet" / "npm" / "node_modules" / "@foundry-rs" / _platform_package()
        / "bin" / "anvil"
    )


def ensure_anvil(root: Path) -> Path:
    """Return the anvil binary, installing it from the npm registry into ``root/.devnet/npm``.

    ``$PARATRO_ANVIL_BIN`` overrides everything. Safe to call from concurrent processes (the
    install is serialised by a file lock).
    """
    override = os.environ.get(ANVIL_BIN_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AnvilError(f"{ANVIL_BIN_ENV}={override} is not an executable file")
        return path

    binary = anvil_bin_path(root)
    if binary.is_file():
        _ensure_executable(binary)
        return binary

    npm = shutil.which("npm")
    if npm is None:
        raise AnvilError(
            "anvil is not installed and npm is not on PATH: install Node.js 20 + npm "
            f"(it fetches {ANVIL_NPM_PACKAGE}@{ANVIL_VERSION}), or set {ANVIL_BIN_ENV} to an "
            "anvil binary"
        )
    prefix = Path(root).resolve() / ".devnet" / "npm"
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.is_file():  # another process may have installed it meanwhile
            cmd = [
                npm, "install", "--no-audit", "--no-fund", "--ignore-scripts",
                "--prefix", str(prefix), f"{ANVIL_NPM_PACKAGE}@{ANVIL_VERSION}",
            ]
            print(f"devnet: installing anvil: {' '.join(cmd[1:])}", file=sys.stderr)
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
                raise AnvilError(f"npm install of {ANVIL_NPM_PACKAGE}@{ANVIL_VERSION} failed:\n{tail}")
            if not binary.is_file():
                raise AnvilError(
                    f"npm installed {ANVIL_NPM_PACKAGE} but {binary} is missing (was the "
                    f"optional platform package skipped, e.g. by --omit=optional?)"
                )
    _ensure_executable(binary)
    return binary


def _ensure_executable(path: Path) -> None:
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


_ids = itertools.count(1)


def rpc_call(url: str, method: str, params: list[Any] | None = None, timeout: float = 10.0) -> Any:
    """One JSON-RPC 2.0 call over HTTP with the standard library. Raises RpcError on an error."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params or []}
    ).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if reply.get("error") is not None:
        raise RpcError(method, reply["error"])
    return reply.get("result")


class AnvilNode(Service):
    """An anvil process on a free loopback port. Use as a context manager.

    ``block_time=None`` means instant automine (a block per transaction); a number means a
    block every that many seconds.
    """

    name = "anvil"

    def __init__(
        self,
        root: Path | None = None,
        *,
        chain_id: int = 31337,
        block_time: float | None = None,
        mnemonic: str = DEFAULT_MNEMONIC,
        accounts: int = 10,
        silent: bool = True,
        log_path: Path | None = None,
        port: int | None = None,
        binary: Path | None = None,
        extra_args: list[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
        self.chain_id = chain_id
        self.block_time = block_time
        self.mnemonic = mnemonic
        self.accounts = accounts
        self.silent = silent
        self.log_path = log_path
        self.port = port
        self.binary = binary
        self.extra_args = list(extra_args or [])
        self.timeout = timeout

    @property
    def rpc_url(self) -> str:
        if self.port is None:
            raise RuntimeError("anvil is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def _argv(self, binary: Path, port: int) -> list[str]:
        argv = [
            str(binary),
            "--host", LOOPBACK,
            "--port", str(port),
            "--chain-id", str(self.chain_id),
            "--mnemonic", self.mnemonic,
            "--accounts", str(self.accounts),
        ]
        if self.block_time is not None:
            argv += ["--block-time", _fmt_seconds(self.block_time)]
        if self.silent:
            argv.append("--silent")
        return argv + self.extra_args

    def start(self) -> "AnvilNode":
        binary = self.binary or ensure_anvil(self.root)
        self.port = self.port or free_port()
        url = self.rpc_url

        def ready() -> bool:
            return int(rpc_call(url, "eth_chainId", timeout=1.0), 16) == self.chain_id

        self._process = ManagedProcess(
            self._argv(binary, self.port),
            name="anvil",
            ready=ready,
            log_path=self.log_path,
            timeout=self.timeout,
            grace=3.0,
        )
        self._process.start()
        return self

    # -- JSON-RPC helpers --------------------------------------------------------------------
    def rpc(self, method: str, params: list[Any] | None = None, timeout: float = 10.0) -> Any:
        return rpc_call(self.rpc_url, method, params, timeout)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def send_value(self, to: str, wei: int, timeout: float = 60.0) -> str:
        """Pay `wei` to `to` in a real transaction from the last dev account (unlocked; not the
        token deployer, account 0), mined before this returns; the hash. Unlike set_balance it
        adds to whatever the address holds when the block is built, so a transfer of the
        address's own mined meanwhile is not undone."""
        payer = self.rpc("eth_accounts")[-1]
        if self.balance(payer) < wei + 10**18:  # a dev account is never a pipeline account
            self.set_balance(payer, wei + 10**22)
        tx_hash = self.rpc("eth_sendTransaction", [{"from": payer, "to": to, "value": hex(wei)}])
        deadline = time.monotonic() + timeout
        while self.rpc("eth_getTransactionReceipt", [tx_hash]) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"funding transaction {tx_hash} not mined within {timeout:.0f} s")
            time.sleep(0.05)
        return str(tx_hash)

    def balance(self, address: str) -> int:
        return int(self.rpc("eth_getBalance", [address, "latest"]), 16)


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
