"""The RPC endpoint pool (chains/failover.py) through the real family clients, against tiny local
HTTP nodes (`Node`) and the devnet fault proxy (devnet/rpc_proxy.py): nothing of the pool is mocked.

Each node answers JSON-RPC (and TRON's HTTP paths) from a table, keeps a head, and counts what it
was asked, so the tests can say which endpoint served what, and that one endpoint costs no extra
request.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from structlog.testing import capture_logs

from chains.bitcoin_rpc import BitcoinRpcClient
from chains.errors import ChainRpcError, UnknownChain
from chains.evm_rpc import JsonRpcClient, NodeRpcError, batch_results
from chains.failover import FailoverSettings
from chains.registry import load_registry, parse_registry
from chains.solana_rpc import SolanaRpc
from chains.tron_rpc import TronHttpClient, with_port
from devnet.ports import free_port
from devnet.rpc_proxy import RpcProxy
from tests.unit.json_http import send_json

SECRET = "s3cretPassw0rd"
PATH_KEY = "PATHKEY0a1b2c3d4e5f6a7b8"
QUIET = FailoverSettings(probe_interval_s=3600)  # no background probe unless a test asks for one
HEAD_METHODS = {"eth_blockNumber": hex, "getblockcount": int, "getSlot": int}


def error(code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "data": data}}


class Node:
    """A node on a free loopback port: `answers[method or path]` is a result, an `error(...)`, or a
    callable of the params; head methods answer `head`; `chain_id` answers eth_chainId."""

    def __init__(self, name: str, answers: dict[str, Any] | None = None, head: int = 100, chain_id: str = "0x1") -> None:
        self.name, self.head, self.chain_id = name, head, chain_id
        self.answers = {"eth_getBalance": name, **(answers or {})}
        self.calls: Counter[str] = Counter()
        self.dead = False
        node = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if node.dead:  # killed: kept-alive connections are reset too
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if self.path.strip("/").startswith("wallet"):
                    answer: Any = node.tron(self.path.strip("/"))
                else:
                    answer = [node.one(c) for c in body] if isinstance(body, list) else node.one(body)
                send_json(self, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def one(self, call: dict[str, Any]) -> dict[str, Any]:
        method = call["method"]
        self.calls[method] += 1
        if method in HEAD_METHODS:
            result: Any = HEAD_METHODS[method](self.head)
        elif method == "eth_chainId":
            result = self.chain_id
        else:
            result = self.answers.get(method, None)
            result = result(call.get("params")) if callable(result) else result
        if isinstance(result, dict) and "error" in result:
            return {"jsonrpc": "2.0", "id": call.get("id"), **result}
        return {"jsonrpc": "2.0", "id": call.get("id"), "result": result}

    def tron(self, path: str) -> Any:
        self.calls[path] += 1
        if path.endswith("getnowblock"):
            return {"blockID": "00" * 32, "block_header": {"raw_data": {"number": self.head}}}
        return self.answers.get(path, {})

    def kill(self) -> None:
        """Refuse new connections and reset the open ones."""
        self.dead = True
        self.server.shutdown()
        self.server.server_close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def asked(self) -> int:
        return sum(self.calls.values())


@pytest.fixture
def nodes() -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(*args: Any, **kwargs: Any) -> Node:
        made.append(Node(*args, **kwargs))
        return made[-1]

    yield make
    for node in made:
        node.close()


def dead_url(secret: bool = False) -> str:
    """An endpoint nothing listens on (connection refused), with credentials in it when asked."""
    port = free_port()
    return f"http://rpc:{SECRET}@127.0.0.1:{port}/v3/{PATH_KEY}" if secret else f"http://127.0.0.1:{port}"


def settled(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# -- one endpoint: exactly as before ----------------------------------------------------------------

def test_one_endpoint_sends_no_request_beyond_the_calls(nodes) -> None:
    node = nodes("a")
    client = JsonRpcClient(node.url, failover=FailoverSettings(probe_interval_s=0.01))
    for _ in range(5):
        assert client.call("eth_getBalance", ["0x0", "latest"]) == "a"
        time.sleep(0.02)
    client.call("eth_chainId", [])
    client.call("eth_sendRawTransaction", ["0x00"])
    time.sleep(0.1)
    assert node.calls == Counter({"eth_getBalance": 5, "eth_chainId": 1, "eth_sendRawTransaction": 1})
    assert client.url == node.url and client.endpoint == node.url


def test_one_dead_endpoint_raises_as_before_without_its_credentials() -> None:
    url = dead_url(secret=True)
    with pytest.raises(ChainRpcError, match="cannot reach http://127.0.0.1") as caught:
        JsonRpcClient(url, timeout=1).call("eth_getBalance", ["0x0", "latest"])
    assert SECRET not in str(caught.value) and PATH_KEY not in str(caught.value) and caught.value.__cause__ is None


# -- reads ------------------------------------------------------------------------------------------

def test_a_dead_primary_costs_one_failed_try_then_the_next_endpoint_serves(nodes) -> None:
    second = nodes("b")
    url = dead_url()
    tried: Counter[str] = Counter()
    client = JsonRpcClient([url, second.url], timeout=1, failover=QUIET)
    # the calls' requests only: a health probe of the dead endpoint (a background thread, whenever
    # it runs) is not a call paying for it
    observe = lambda endpoint, method: tried.update([endpoint] if method == "eth_getBalance" else [])  # noqa: E731
    from chains.transport import REQUEST_OBSERVERS

    REQUEST_OBSERVERS.append(observe)
    try:
        answers = [client.call("eth_getBalance", ["0x0", "latest"])]
        first_try = tried[url]  # one call (web3 retries a refused connection itself)
        answers += [client.call("eth_getBalance", ["0x0", "latest"]) for _ in range(4)]
    finally:
        REQUEST_OBSERVERS.remove(observe)
    assert answers == ["b"] * 5 and second.calls["eth_getBalance"] == 5
    assert first_try > 0 and tried[url] == first_try  # then never again
    assert client.endpoint == second.url and client.health()[0]["status"] == "failing"


def test_without_failover_the_dead_primary_fails_the_call(nodes) -> None:
    """What the pool is for: the same call on the first endpoint alone raises."""
    nodes("b")
    with pytest.raises(ChainRpcError, match="cannot reach"):
        JsonRpcClient(dead_url(), timeout=1).call("eth_getBalance", ["0x0", "latest"])


def test_an_error_object_is_the_node_s_answer_and_is_not_failed_over(nodes) -> None:
    first = nodes("a", {"eth_call": error(3, "execution reverted")})
    second = nodes("b", {"eth_call": "0x01"})
    client = JsonRpcClient([first.url, second.url], failover=QUIET)
    with pytest.raises(NodeRpcError, match="execution reverted"):
        client.call("eth_call", [{}, "latest"])
    assert second.calls["eth_call"] == 0 and client.health()[0]["failures"] == 0


def test_a_lagging_node_s_answer_is_asked_again_elsewhere(nodes) -> None:
    first = nodes("a", {"eth_getBalance": error(-32000, "header not found")})
    second = nodes("b")
    client = JsonRpcClient([first.url, second.url], failover=QUIET)
    assert client.call("eth_getBalance", ["0x0", "0x65"]) == "b"
    only = JsonRpcClient(first.url)
    with pytest.raises(NodeRpcError, match="header not found"):
        only.call("eth_getBalance", ["0x0", "0x65"])


def test_a_batch_is_one_call_for_failover(nodes) -> None:
    second = nodes("b", {"eth_getTransactionReceipt": error(-32000, "unknown")})
    client = JsonRpcClient([dead_url(), second.url], timeout=1, failover=QUIET)
    results = batch_results(client, [("eth_getBalance", ["0x0", "latest"]), ("eth_getTransactionReceipt", ["0x1"])])
    assert results[0] == "b" and isinstance(results[1], NodeRpcError)
    assert second.calls - Counter({"eth_blockNumber": 1}) == Counter({"eth_getBalance": 1, "eth_getTransactionReceipt": 1})


def test_when_every_endpoint_is_dead_all_are_tried_and_the_last_error_is_raised_without_credentials() -> None:
    urls = [dead_url(secret=True), dead_url(secret=True)]
    client = JsonRpcClient(urls, timeout=1, failover=QUIET)
    with capture_logs() as logs:
        for _ in range(4):
            with pytest.raises(ChainRpcError, match="cannot reach") as caught:
                client.call("eth_getBalance", ["0x0", "latest"])
            assert str(urls[1].split("@")[1].split("/")[0]) in str(caught.value)  # the last one tried
            assert SECRET not in str(caught.value) and PATH_KEY not in str(caught.value)
    assert [row["status"] for row in client.health()] == ["down", "down"]  # 3 failures each: open breakers
    assert {log["event"] for log in logs} == {"rpc.endpoint.down"}
    shown = json.dumps(logs) + json.dumps(client.health()) + repr(client.endpoints)
    assert SECRET not in shown and PATH_KEY not in shown and "rpc:" not in shown


def test_the_breaker_opens_after_three_failures_half_opens_after_the_cooldown_and_closes_on_success(nodes) -> None:
    node = nodes("a")
    second = nodes("b")
    with RpcProxy(node.url) as proxy, capture_logs() as logs:
        shown = proxy.url
        client = JsonRpcClient([proxy.url, second.url], timeout=1, failover=FailoverSettings(cooldown_s=0.3, probe_interval_s=3600))
        proxy.set_mode("dead")
        for expected in ("failing", "failing", "down"):
            client.refresh()
            assert client.health()[0]["status"] == expected
        assert client.call("eth_getBalance", ["0x0", "latest"]) == "b"
        seen = proxy.calls["eth_getBalance"]
        client.call("eth_getBalance", ["0x0", "latest"])
        assert proxy.calls["eth_getBalance"] == seen  # an open breaker keeps it out
        time.sleep(0.35)
        assert client.health()[0]["status"] == "half-open"
        client.refresh()  # the trial fails: open for another cooldown
        assert client.health()[0]["status"] == "down"
        proxy.set_mode("pass")
        time.sleep(0.35)
        client.refresh()  # the trial succeeds
        assert client.health()[0]["status"] == "ok" and client.call("eth_getBalance", ["0x0", "latest"]) == "a"
    assert [log["event"] for log in logs] == ["rpc.endpoint.down", "rpc.endpoint.up"]
    assert logs[0]["endpoint"] == shown and logs[0]["chain"] == "evm"


def test_probes_run_in_the_background_only_when_the_data_is_old(nodes) -> None:
    first, second = nodes("a"), nodes("b")
    client = JsonRpcClient([first.url, second.url], failover=FailoverSettings(probe_interval_s=1.0))
    started = time.monotonic()
    client.call("eth_getBalance", ["0x0", "latest"])
    settled(lambda: first.calls["eth_blockNumber"] == 1 and second.calls["eth_blockNumber"] == 1)
    for _ in range(5):
        client.call("eth_getBalance", ["0x0", "latest"])
    if time.monotonic() - started < 0.9:  # (a slow machine may have reached the next interval)
        assert first.calls["eth_blockNumber"] == 1  # at most one probe per interval
    time.sleep(max(0.0, started + 1.05 - time.monotonic()))
    client.call("eth_getBalance", ["0x0", "latest"])
    settled(lambda: first.calls["eth_blockNumber"] == 2)


# -- lag and stall --------------------------------------------------------------------------------

def test_a_lagging_endpoint_is_left_out_of_reads_until_it_catches_up(nodes) -> None:
    first, second = nodes("a", head=90), nodes("b", head=100)
    client = JsonRpcClient([first.url, second.url], failover=FailoverSettings(probe_interval_s=3600, max_lag=5))
    with capture_logs() as logs:
        rows = client.refresh()
        assert [r["status"] for r in rows] == ["lagging", "ok"] and rows[0]["head"] == 90
        assert client.call("eth_getBalance", ["0x0", "latest"]) == "b" and first.calls["eth_getBalance"] == 0
        first.head = 97  # within max_lag again
        client.refresh()
    assert client.call("eth_getBalance", ["0x0", "latest"]) == "a"
    assert [log["event"] for log in logs] == ["rpc.endpoint.lagging", "rpc.endpoint.up"]


def test_a_frozen_head_is_stalled_once_another_endpoint_moved_past_it_for_stall_s(nodes) -> None:
    first, second = nodes("a", head=100), nodes("b", head=100)
    with RpcProxy(first.url) as proxy:
        client = JsonRpcClient([proxy.url, second.url],
                               failover=FailoverSettings(probe_interval_s=3600, max_lag=1000, stall_s=0.3))
        proxy.set_mode("frozen")
        client.refresh()
        first.head = second.head = 101  # the chain moves on; the proxy still says 100
        client.refresh()
        assert client.health()[0]["status"] == "ok"  # behind, but not for stall_s yet
        time.sleep(0.35)
        assert [r["status"] for r in client.refresh()] == ["stalled", "ok"]
        assert client.call("eth_getBalance", ["0x0", "latest"]) == "b"
        proxy.set_mode("pass")
        client.refresh()
        assert client.health()[0]["status"] == "ok"


def test_a_quiet_chain_is_not_a_stall(nodes) -> None:
    first, second = nodes("a", head=100), nodes("b", head=100)
    client = JsonRpcClient([first.url, second.url], failover=FailoverSettings(probe_interval_s=3600, stall_s=0.1))
    client.refresh()
    time.sleep(0.15)
    assert [r["status"] for r in client.refresh()] == ["ok", "ok"]  # nobody moved: no stall


def test_health_data_never_refuses_a_call(nodes) -> None:
    """Both endpoints judged unhealthy (one lagging, one down): the calls are still made."""
    first = nodes("a", head=90)
    with RpcProxy(nodes("b", head=100).url) as proxy:
        client = JsonRpcClient([first.url, proxy.url], failover=FailoverSettings(probe_interval_s=3600, max_lag=5))
        client.refresh()
        proxy.set_mode("dead")
        for _ in range(3):
            client.refresh()
        assert [r["status"] for r in client.health()] == ["ok", "down"]  # a down endpoint's head is not the best
        proxy.set_mode("pass")
        first.answers["eth_getBalance"] = error(-32000, "header not found")
        assert client.call("eth_getBalance", ["0x0", "latest"]) == "b"  # asked although its breaker is open


# -- broadcasts -----------------------------------------------------------------------------------

def test_a_send_reaches_every_healthy_endpoint_and_an_acceptance_wins(nodes) -> None:
    first = nodes("a", {"eth_sendRawTransaction": error(-32000, "insufficient funds for gas * price + value")})
    second = nodes("b", {"eth_sendRawTransaction": "0xabc"})
    client = JsonRpcClient([first.url, second.url], failover=QUIET)
    assert client.call("eth_sendRawTransaction", ["0x00"]) == "0xabc"
    settled(lambda: first.calls["eth_sendRawTransaction"] == 1)
    assert second.calls["eth_sendRawTransaction"] == 1


def test_an_already_known_answer_is_preferred_to_a_refusal(nodes) -> None:
    first = nodes("a", {"eth_sendRawTransaction": error(-32000, "insufficient funds for gas * price + value")})
    second = nodes("b", {"eth_sendRawTransaction": error(-32000, "already known")})
    client = JsonRpcClient([first.url, second.url], failover=QUIET)
    with pytest.raises(NodeRpcError, match="already known"):
        client.call("eth_sendRawTransaction", ["0x00"])


def test_refusals_raise_the_first_in_configured_order_and_no_answer_is_a_transport_error(nodes) -> None:
    first = nodes("a", {"eth_sendRawTransaction": error(-32000, "intrinsic gas too low")})
    second = nodes("b", {"eth_sendRawTransaction": error(-32000, "insufficient funds for gas")})
    client = JsonRpcClient([first.url, second.url], failover=QUIET)
    with pytest.raises(NodeRpcError, match="intrinsic gas too low"):
        client.call("eth_sendRawTransaction", ["0x00"])
    # One endpoint refused, the other never answered (it may have accepted: a lost reply): not a
    # refusal the pipeline may judge the transfer by, but transport trouble to ask again about
    lone = JsonRpcClient([dead_url(), second.url], timeout=1, failover=QUIET)
    with pytest.raises(ChainRpcError, match="not a refusal yet") as uncertain:
        lone.call("eth_sendRawTransaction", ["0x00"])
    assert not isinstance(uncertain.value, NodeRpcError)
    nobody = JsonRpcClient([dead_url(secret=True), dead_url(secret=True)], timeout=1, failover=QUIET)
    with pytest.raises(ChainRpcError, match="cannot reach") as caught:
        nobody.call("eth_sendRawTransaction", ["0x00"])
    assert not isinstance(caught.value, NodeRpcError) and SECRET not in str(caught.value)


def test_a_send_skips_a_lagging_endpoint_and_falls_back_to_it_when_no_healthy_one_answers(nodes) -> None:
    first = nodes("a", {"eth_sendRawTransaction": "0xabc"}, head=90)
    with RpcProxy(nodes("b", {"eth_sendRawTransaction": "0xabc"}, head=100).url) as proxy:
        client = JsonRpcClient([first.url, proxy.url], timeout=1, failover=FailoverSettings(probe_interval_s=3600))
        client.refresh()
        assert client.call("eth_sendRawTransaction", ["0x00"]) == "0xabc"
        assert first.calls["eth_sendRawTransaction"] == 0 and proxy.calls["eth_sendRawTransaction"] == 1
        proxy.set_mode("dead")
        assert client.call("eth_sendRawTransaction", ["0x00"]) == "0xabc"  # the healthy one said nothing
        assert first.calls["eth_sendRawTransaction"] == 1


# -- chain identity -------------------------------------------------------------------------------

def test_an_endpoint_of_another_chain_is_never_used(nodes) -> None:
    first, other = nodes("a", chain_id="0x1"), nodes("b", chain_id="0x38")
    client = JsonRpcClient([first.url, other.url], timeout=1, failover=QUIET)
    with capture_logs() as logs:
        assert client.call("eth_chainId", []) == "0x1"  # what the adapter verifies: the reference
        first.kill()
        with pytest.raises(ChainRpcError, match="cannot reach"):
            client.call("eth_getBalance", ["0x0", "latest"])
    assert other.calls["eth_getBalance"] == 0 and other.calls["eth_chainId"] == 1
    assert client.health()[1]["status"] == "wrong_chain"
    assert [log["event"] for log in logs] == ["rpc.endpoint.wrong_chain"]


# -- pinned reads ---------------------------------------------------------------------------------

def test_pinned_reads_stay_on_the_endpoint_that_answered_first(nodes) -> None:
    first, second = nodes("a"), nodes("b")
    client = JsonRpcClient([first.url, second.url], timeout=1, failover=QUIET)
    with client.pinned():
        assert client.call("eth_getBalance", ["0x0", "latest"]) == "a"
        first.kill()
        with pytest.raises(ChainRpcError, match="cannot reach"):
            client.call("eth_getBalance", ["0x0", "latest"])
    assert client.call("eth_getBalance", ["0x0", "latest"]) == "b"  # outside: failover again


# -- the other families ---------------------------------------------------------------------------

def test_bitcoin_sends_to_every_endpoint_and_reads_fail_over(nodes) -> None:
    known = error(-27, "Transaction already in block chain")
    first = nodes("a", {"sendrawtransaction": error(-26, "bad-txns-inputs-missingorspent"), "getrawmempool": []})
    second = nodes("b", {"sendrawtransaction": known, "getrawmempool": ["t"]})
    client = BitcoinRpcClient([f"http://u:{SECRET}@127.0.0.1:{free_port()}", first.url, second.url], timeout=1,
                              failover=QUIET)
    assert client.call("getrawmempool", []) == []
    with pytest.raises(NodeRpcError, match="already in block chain"):
        client.call("sendrawtransaction", ["00"])
    assert first.calls["sendrawtransaction"] == second.calls["sendrawtransaction"] == 1
    assert client.batch([("getrawmempool", [])]) == [[]]


def test_solana_sends_to_every_endpoint_and_retries_a_node_behind_elsewhere(nodes) -> None:
    behind = error(-32016, "Minimum context slot has not been reached")
    first = nodes("a", {"sendTransaction": "sig", "getSignaturesForAddress": behind})
    second = nodes("b", {"sendTransaction": "sig", "getSignaturesForAddress": []})
    client = SolanaRpc([first.url, second.url], failover=QUIET)
    assert client.call("sendTransaction", ["AA=="]) == "sig"
    settled(lambda: first.calls["sendTransaction"] == second.calls["sendTransaction"] == 1)
    assert client.call("getSignaturesForAddress", ["x", {"minContextSlot": 5}]) == []


def test_tron_broadcasts_to_every_endpoint_and_a_duplicate_beats_a_refusal(nodes) -> None:
    refused = {"result": False, "code": "CONTRACT_VALIDATE_ERROR", "message": "62616c616e6365"}
    first = nodes("a", {"wallet/broadcasttransaction": refused})
    second = nodes("b", {"wallet/broadcasttransaction": {"result": False, "code": "DUP_TRANSACTION_ERROR"}})
    client = TronHttpClient([first.url, second.url], failover=QUIET)
    assert client.post("wallet/broadcasttransaction", {"txID": "ab"})["code"] == "DUP_TRANSACTION_ERROR"
    assert first.calls["wallet/broadcasttransaction"] == 1
    second.answers["wallet/broadcasttransaction"] = {"result": True, "txid": "ab"}
    assert client.post("wallet/broadcasttransaction", {"txID": "ab"}) == {"result": True, "txid": "ab"}
    assert TronHttpClient(first.url).post("wallet/broadcasttransaction", {"txID": "ab"}) == refused  # alone: as before


def test_tron_solidity_pool_probes_its_own_head_on_every_url(nodes) -> None:
    first, second = nodes("a", head=50), nodes("b", head=60)
    urls = with_port([first.url, second.url], 1)
    assert urls == [first.url.rsplit(":", 1)[0] + ":1", second.url.rsplit(":", 1)[0] + ":1"]
    client = TronHttpClient([first.url, second.url], failover=FailoverSettings(probe_interval_s=3600),
                            head_path="walletsolidity/getnowblock")
    assert [r["status"] for r in client.refresh()] == ["lagging", "ok"]
    assert first.calls["walletsolidity/getnowblock"] == 1 and first.calls["wallet/getnowblock"] == 0


# -- configuration --------------------------------------------------------------------------------

def _registry(options: dict[str, Any]) -> Any:
    return parse_registry({"chains": {"eth": {
        "family": "evm", "network": "devnet", "native_symbol": "ETH", "native_decimals": 18, "confirmations": 1,
        "chain_id": 1, "rpc_urls": ["http://a", "http://b"], "options": options}}}, "t")


def test_registry_failover_options_are_validated_and_kept_apart_from_the_adapter_options() -> None:
    spec = _registry({"rpc_max_lag": 3, "rpc_stall_s": 12.5, "rpc_cooldown_s": 2, "eip1559_extra": 1}).chain("eth")
    assert (spec.failover.max_lag, spec.failover.stall_s, spec.failover.cooldown_s) == (3, 12.5, 2.0)
    assert dict(spec.options) == {"eip1559_extra": 1} and spec.failover.chain == "eth"
    for family, lag in (("ethereum", 5), ("bitcoin", 2), ("solana", 50), ("tron", 5)):
        assert load_registry("devnet").chain(family).failover.max_lag == lag
    for bad in ({"rpc_max_lag": 0}, {"rpc_max_lag": 2.5}, {"rpc_stall_s": "30"}, {"rpc_cooldown_s": True}):
        with pytest.raises(ValueError, match=r"^registry t: chain 'eth': options\.rpc_") as caught:
            _registry(bad)
        assert "\n" not in str(caught.value)


def test_with_rpc_urls_takes_one_url_or_a_list_and_names_the_chain_never_the_url() -> None:
    registry = load_registry("devnet")
    assert registry.with_rpc_urls({"bsc": "http://a"}).chain("bsc").rpc_urls == ("http://a",)
    assert registry.with_rpc_urls({"bsc": ["http://a", "http://b"]}).chain("bsc").rpc_urls == ("http://a", "http://b")
    for bad in ([], [f"http://u:{SECRET}@x", 5], 7):
        with pytest.raises(ValueError, match="chain 'bsc': rpc_urls must be") as caught:
            registry.with_rpc_urls({"bsc": bad})
        assert SECRET not in str(caught.value)
    with pytest.raises(UnknownChain):
        JsonRpcClient([])


def test_settings_take_a_list_per_chain_and_the_redactor_learns_every_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.settings import Settings
    from workers.logconfig import settings_secrets

    urls = {"ethereum": [f"http://u:{SECRET}@a/v3/{PATH_KEY}", "http://b"], "bsc": "http://c"}
    monkeypatch.setenv("PARATRO_RPC_URLS", json.dumps(urls))
    assert Settings(_env_file=None).rpc_urls == urls  # type: ignore[call-arg]
    from pipeline import settings as settings_module

    settings_module.get_settings.cache_clear()
    try:
        assert {SECRET, PATH_KEY} <= settings_secrets()
    finally:
        settings_module.get_settings.cache_clear()
    for bad in ({"ethereum": []}, {"ethereum": ["http://a", f"ftp://u:{SECRET}@b"]}):
        monkeypatch.setenv("PARATRO_RPC_URLS", json.dumps(bad))
        with pytest.raises(Exception, match="'ethereum'") as caught:
            Settings(_env_file=None)  # type: ignore[call-arg]
        assert SECRET not in str(caught.value).split("input_value")[0]


# -- processes ------------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_fresh_health_and_an_unheld_lock(nodes) -> None:
    second = nodes("b")
    client = JsonRpcClient([dead_url(), second.url], timeout=1, failover=QUIET)
    client.call("eth_getBalance", ["0x0", "latest"])
    assert client.health()[0]["failures"] >= 1
    client.pool._lock.acquire()  # held at fork time, as by another thread
    try:
        pid = os.fork()
        if pid == 0:  # the child: fresh state, a usable lock
            ok = client.health()[0]["failures"] == 0 and client.call("eth_getBalance", ["0x0", "latest"]) == "b"
            os._exit(0 if ok else 1)
    finally:
        client.pool._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_endpoint_health_names_each_pool_of_an_adapter(nodes) -> None:
    from dataclasses import replace

    from chains import endpoint_health
    from chains.evm import EvmAdapter
    from chains.tron import TronAdapter

    first, second = nodes("a", head=100), nodes("b", head=90)
    spec = replace(load_registry("devnet").chain("ethereum"), rpc_urls=(first.url, second.url))
    health = endpoint_health(EvmAdapter(spec), refresh=True)
    assert list(health) == ["rpc"] and [(r["endpoint"], r["status"]) for r in health["rpc"]] == [
        (first.url, "ok"), (second.url, "lagging")]
    tron = TronAdapter(replace(load_registry("devnet").chain("tron"), rpc_urls=(first.url,)))
    assert endpoint_health(tron, refresh=True) == {"api": [{"endpoint": first.url, "healthy": True, "status": "ok",
                                                            "reason": "answers", "head": 100, "failures": 0}]}
