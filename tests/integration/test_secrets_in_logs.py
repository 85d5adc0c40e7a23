"""Secrets stay secret: a real `paratro worker` at DEBUG, whose RPC URLs carry user:password, path
keys and query keys, moves real transfers on ethereum (web3 over requests/urllib3) and tron (plain
requests), and its whole log - Celery's, urllib3's, web3's, ours - holds none of them.

The devnet nodes serve one path, so the worker talks to them through a small local forwarder that
accepts any path: it strips the key-carrying prefix and the query and passes the request on."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from workers.stack import EmbeddedStack, StackOptions, activate

pytestmark = pytest.mark.integration

USER, PASSWORD = "rpcuser", "s3cretPassw0rd"
EVM_PATH_KEY, EVM_QUERY_KEY = "EVMPATHKEY0a1b2c3d4e5f", "EVMQUERYKEY9z8y7x"
TRON_PATH_KEY, TRON_QUERY_KEY = "TRONPATHKEY5g6h7i8j9k", "TRONQUERYKEY1q2w3e"
SECRETS = (PASSWORD, EVM_PATH_KEY, EVM_QUERY_KEY, TRON_PATH_KEY, TRON_QUERY_KEY, f"{USER}:")


class Forwarder(ThreadingHTTPServer):
    """Any path under a registered prefix goes to that prefix's upstream (query and prefix dropped)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ForwardHandler)
        self.upstreams: dict[str, str] = {}
        self.seen: list[str] = []

    @property
    def port(self) -> int:
        return self.server_address[1]


class _ForwardHandler(BaseHTTPRequestHandler):
    server: Forwarder

    def log_message(self, *_: object) -> None:  # the test's own output stays quiet
        pass

    def _forward(self) -> None:
        path = urlsplit(self.path).path
        self.server.seen.append(path)
        prefix = next((p for p in sorted(self.server.upstreams, key=len, reverse=True) if path.startswith(p)), None)
        if prefix is None:
            self.send_error(502, "no upstream yet")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if self.command == "POST" else None
        request = urllib.request.Request(self.server.upstreams[prefix].rstrip("/") + (path[len(prefix):] or "/"),
                                         data=body, method=self.command,
                                         headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _forward


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    server = Forwarder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def stack(tmp_path: Path, forwarder: Forwarder) -> Iterator[EmbeddedStack]:
    base = f"http://{USER}:{PASSWORD}@127.0.0.1:{forwarder.port}"
    rpc_urls = {"ethereum": f"{base}/v3/{EVM_PATH_KEY}/?apikey={EVM_QUERY_KEY}&network=devnet",
                "tron": f"{base}/tron/{TRON_PATH_KEY}?apikey={TRON_QUERY_KEY}"}
    saved = {k: v for k, v in os.environ.items() if k.startswith("PARATRO_")}
    options = StackOptions(workdir=tmp_path, chains=("ethereum", "tron"), block_time=0.25, concurrency=2,
                           extra_env={"PARATRO_LOG_LEVEL": "DEBUG", "PARATRO_RPC_URLS": json.dumps(rpc_urls)})
    try:
        with EmbeddedStack(options) as running:
            forwarder.upstreams = {f"/v3/{EVM_PATH_KEY}": running.nodes["ethereum"].rpc_url,
                                   f"/tron/{TRON_PATH_KEY}": running.nodes["tron"].rpc_url}
            yield running
    finally:
        for key in [k for k in os.environ if k.startswith("PARATRO_")]:
            del os.environ[key]
        activate(saved)


def _transfer(stack: EmbeddedStack, chain: str, symbol: str, fund: str, send: str) -> str:
    from pipeline import credentials, ledger
    from pipeline.amounts import parse_amount
    from pipeline.transfers import TransferRequest
    from workers import runtime
    from workers.services import fresh_destination, onboard_wallet, submit_transfer

    ctx = runtime.context()
    with ctx.db.unit_of_work() as session:
        client_id = credentials.create_client(session, credentials.secret_box(), f"secrets {chain}")[0].client_id
    wallet = onboard_wallet(ctx, client_id, "hot", {chain: [symbol]})
    token = ctx.registry.chain(chain).token(symbol)
    address = wallet.accounts[chain]
    stack.nodes[chain].fund(address, token, parse_amount(fund, token.decimals))
    with ctx.db.unit_of_work() as session:
        ledger.credit(session, wallet.assets[(chain, symbol)], ctx.adapter_for(chain).balance_of(address, token),
                      reference="faucet")
    request = TransferRequest(client_id=client_id, from_address=address, to_address=fresh_destination(ctx, chain),
                              chain=chain, token_symbol=symbol, amount=send, idempotency_key=f"secrets-{chain}")
    return submit_transfer(ctx, request).transaction_id


def _wait_final(transaction_ids: list[str], timeout: float = 120.0) -> dict[str, tuple[str, str | None]]:
    from pipeline.models import Transaction
    from workers import runtime

    deadline = time.monotonic() + timeout
    while True:
        with runtime.context().db.unit_of_work() as session:
            rows = {i: session.get(Transaction, i) for i in transaction_ids}
            states = {i: (t.status, t.failure_reason or t.last_error) for i, t in rows.items() if t is not None}
        if len(states) == len(transaction_ids) and all(status != "PENDING" for status, _ in states.values()):
            return states
        assert time.monotonic() < deadline, f"not final: {states}"
        time.sleep(0.25)


def test_a_debug_worker_logs_no_rpc_credentials_path_keys_or_query_keys(stack: EmbeddedStack,
                                                                        forwarder: Forwarder) -> None:
    ids = [_transfer(stack, "ethereum", "ETH", "2", "0.5"), _transfer(stack, "tron", "TRX", "500", "10")]
    states = _wait_final(ids)
    assert all(status == "CONFIRMED" for status, _ in states.values()), states
    # the worker really used the decorated URLs (through the forwarder) ...
    assert any(EVM_PATH_KEY in path for path in forwarder.seen) and any(TRON_PATH_KEY in path for path in forwarder.seen)

    log = (stack.options.workdir / "worker-w1.log").read_text(errors="replace")
    # ... and logged at DEBUG what would have leaked: urllib3's request lines, web3's endpoint
    assert "DEBUG urllib3.connectionpool" in log and f"127.0.0.1:{forwarder.port}" in log
    assert "Making request HTTP" in log and "/v3/***" in log and "apikey=***" in log
    for secret in SECRETS:
        assert secret not in log, f"{secret!r} is in the worker's log"
