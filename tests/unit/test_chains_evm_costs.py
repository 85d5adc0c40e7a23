"""EvmAdapter's cost cuts against the scripted JSON-RPC node of test_chains_evm_rpc: fee fields read
once per poll interval (in one batch), still a correct reserve, seen again once it passes; and
the HTTP sessions: one per thread, reused, with the environment's proxies read once."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from chains import evm
from chains.base import TransferIntent
from chains.errors import ChainRpcError
from chains.evm_rpc import JsonRpcClient, ThreadSessions
from chains.registry import load_registry
from tests.unit.test_chains_evm_rpc import BLOCK_A, DEST, DEVNET, SENDER, FakeNode, _adapter, node  # noqa: F401

MAINNET = load_registry("mainnet")


def _eip1559(fake: FakeNode, base_fee: int, tip: int) -> None:
    fake.answers.update({
        "eth_estimateGas": "0x5208",
        "eth_getBlockByNumber": {"number": "0x10", "hash": BLOCK_A, "baseFeePerGas": hex(base_fee)},
        "eth_maxPriorityFeePerGas": hex(tip),
    })


def test_fee_fields_are_read_once_per_poll_interval_in_one_batch(node, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = node
    clock = [500.0]
    monkeypatch.setattr(evm.time, "monotonic", lambda: clock[0])
    _eip1559(fake, base_fee=7 * 10**9, tip=2 * 10**9)
    adapter = _adapter(url)
    native = DEVNET.chain("ethereum").native
    quotes = [adapter.quote_fee(TransferIntent(SENDER, DEST, amount, native)) for amount in (1, 2, 3)]

    assert fake.batches == [["eth_getBlockByNumber", "eth_getBlockByNumber", "eth_maxPriorityFeePerGas"]]  # one HTTP request, once (pending, latest, tip)
    assert fake.methods().count("eth_estimateGas") == 3  # the gas is the transfer's own, every time
    for quote in quotes:  # each quote reserves exactly what its own fields can spend
        assert quote.params == {"gas": 21000, "maxFeePerGas": 16 * 10**9, "maxPriorityFeePerGas": 2 * 10**9}
        assert quote.max_fee == 21000 * 16 * 10**9

    # one poll interval later (250 ms on the devnet) the node is asked again and a fee rise is seen
    _eip1559(fake, base_fee=9 * 10**9, tip=2 * 10**9)
    clock[0] += DEVNET.chain("ethereum").poll_interval_ms / 1000.0
    quote = adapter.quote_fee(TransferIntent(SENDER, DEST, 4, native))
    assert len(fake.batches) == 2
    assert (quote.params["maxFeePerGas"], quote.max_fee) == (20 * 10**9, 21000 * 20 * 10**9)
    # the cached fields are copies: a caller changing its quote's params cannot change the next one
    quote.params["maxFeePerGas"] = 1
    assert adapter.quote_fee(TransferIntent(SENDER, DEST, 5, native)).params["maxFeePerGas"] == 20 * 10**9


def test_a_node_without_a_tip_method_gets_the_default_tip_in_the_batch(node) -> None:
    fake, url = node
    fake.answers.update({"eth_estimateGas": "0x5208",
                         "eth_getBlockByNumber": {"number": "0x10", "hash": BLOCK_A, "baseFeePerGas": hex(10)}})
    quote = _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 1, DEVNET.chain("ethereum").native))
    assert quote.params["maxPriorityFeePerGas"] == evm.DEFAULT_PRIORITY_FEE
    assert fake.batches == [["eth_getBlockByNumber", "eth_getBlockByNumber", "eth_maxPriorityFeePerGas"]]


def test_a_failed_price_read_is_not_cached(node) -> None:
    fake, url = node
    fake.answers.update({"eth_estimateGas": "0x5208"})  # no eth_getBlockByNumber: the node errs
    adapter = _adapter(url)
    intent = TransferIntent(SENDER, DEST, 1, DEVNET.chain("ethereum").native)
    with pytest.raises(ChainRpcError):
        adapter.quote_fee(intent)
    _eip1559(fake, base_fee=10, tip=1)
    assert adapter.quote_fee(intent).params["maxFeePerGas"] == 21


def test_legacy_gas_price_is_cached_too_and_the_ttl_is_capped(node, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = node
    clock = [0.0]
    monkeypatch.setattr(evm.time, "monotonic", lambda: clock[0])
    fake.answers.update({"eth_chainId": hex(31338), "eth_estimateGas": "0x5208", "eth_gasPrice": hex(3 * 10**9)})
    adapter = _adapter(url, "bsc")
    intent = TransferIntent(SENDER, DEST, 1, DEVNET.chain("bsc").native)
    adapter.quote_fee(intent)
    adapter.quote_fee(intent)
    assert fake.methods().count("eth_gasPrice") == 1
    # a chain polled every 4 s (mainnet ethereum) reuses prices for at most the cap
    slow = evm.EvmAdapter(replace(MAINNET.chain("ethereum"), rpc_urls=(url,)))
    assert slow._price_ttl_s == evm.PRICE_TTL_CAP_S < MAINNET.chain("ethereum").poll_interval_ms / 1000.0


# -- HTTP sessions -----------------------------------------------------------------------------------

def test_one_reused_session_per_thread_that_does_not_reread_the_environment(node) -> None:
    fake, url = node
    fake.answers["eth_blockNumber"] = "0x1"
    client = JsonRpcClient(url)
    sessions = client.web3().provider._request_session_manager._explicit_session
    assert isinstance(sessions, ThreadSessions)
    client.call("eth_blockNumber", [])
    mine = sessions.session()
    client.call("eth_blockNumber", [])
    assert sessions.session() is mine and mine.trust_env is False
    theirs: list[object] = []
    worker = threading.Thread(target=lambda: (client.call("eth_blockNumber", []), theirs.append(sessions.session())))
    worker.start()
    worker.join()
    assert theirs and theirs[0] is not mine


def test_the_environment_s_proxy_is_still_used(node, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    fake, url = node
    fake.answers["eth_blockNumber"] = "0x1"
    with socket.socket() as s:  # a proxy address nothing listens on
        s.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    proxied = JsonRpcClient(url, timeout=1)
    with pytest.raises(ChainRpcError, match="cannot reach"):
        proxied.call("eth_blockNumber", [])
    monkeypatch.delenv("HTTP_PROXY")
    assert JsonRpcClient(url).call("eth_blockNumber", []) == "0x1"  # read when a client is made
