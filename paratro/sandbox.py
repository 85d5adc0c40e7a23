"""`paratro sandbox` / `make sandbox`: the product's Sandbox environment on this machine.

One command starts what a client's code talks to: redis-server, a devnet node per chain, SQLite,
a Celery worker with beat (steps, key generation, webhook dispatcher), and the HTTP API with the
devnet faucet, on loopback. It creates a client and prints ONE JSON line on stdout when ready
(base URL, credentials, and the PARATRO_* settings that point the CLI at this sandbox); progress
goes to stderr. It runs until SIGINT or SIGTERM, then stops everything it started.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

# What the printed `env` leaves out: only workers sign, so the CLI never needs the signer's key.
NOT_PRINTED = frozenset({"PARATRO_SIGNER_MASTER_KEY"})


@dataclass(frozen=True)
class SandboxOptions:
    chains: tuple[str, ...]
    port: int = 0  # 0: a free loopback port
    block_time: float = 0.5
    concurrency: int = 2
    workdir: Path | None = None


def run_sandbox(options: SandboxOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                stop: threading.Event | None = None) -> int:
    """Start, announce, wait for a signal (or `stop`), stop. Returns the exit code."""
    from workers.stack import EmbeddedStack, StackOptions, project_home

    stop = stop or _stop_on_signals()
    workdir = options.workdir or project_home() / "var" / f"sandbox-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.monotonic()
    _say(err, f"paratro sandbox: starting redis-server, devnets for {', '.join(options.chains)}, SQLite, a worker "
              f"with beat and the API in {workdir}")
    with EmbeddedStack(StackOptions(workdir=workdir, chains=options.chains, block_time=options.block_time,
                                    concurrency=options.concurrency)) as stack:
        server = _serve_api(stack, options.port)
        try:
            ready = _announcement(stack, server.base_url)
            out.write(json.dumps(ready) + "\n")
            out.flush()
            _say(err, f"sandbox ready in {time.monotonic() - started:.1f} s at {ready['base_url']}; "
                      "Ctrl-C (SIGINT) or SIGTERM stops it")
            stop.wait()
            _say(err, "stopping the API, the worker, the devnet nodes and redis-server")
        finally:
            server.stop()
    return 0


def _serve_api(stack: Any, port: int) -> Any:
    from api.app import create_app
    from api.server import serve_in_thread
    from workers import runtime
    from workers.faucet import DevnetFaucet

    faucet = DevnetFaucet(runtime.context(), stack.nodes)
    return serve_in_thread(create_app(faucet=faucet), host="127.0.0.1", port=port)


def _announcement(stack: Any, base_url: str) -> dict[str, Any]:
    """A new client, its credentials and the settings; the only line on stdout."""
    from pipeline import credentials
    from workers import runtime

    with runtime.context().db.unit_of_work() as session:
        client, secret = credentials.create_client(session, credentials.secret_box(), "Sandbox client")
        created = {"client_id": client.client_id, "api_key": client.api_key_id, "api_secret": secret}
    env = {name: value for name, value in stack.env.items() if name not in NOT_PRINTED}
    return {"base_url": base_url.rstrip("/") + "/api/v1", **created, "env": env}


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _say(err: TextIO, line: str) -> None:
    err.write(line + "\n")
    err.flush()
