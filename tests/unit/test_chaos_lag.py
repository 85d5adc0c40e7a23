"""The chaos harness's lagging Solana view (tests/chaos/lag.py) answers JSON-RPC batches too, call
by call: the adapter's build context (getLatestBlockhash + getRecentPrioritizationFees in one
batch) can again carry an already expired blockhash, as from a node seconds behind. A batch with a
write in it is never lagged, and the counters count one lag fault per request and one lagged
answer per call. Against the Solana devnet (LiteSVM) in-process over HTTP, through the harness's
real FaultProxy."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from solders.keypair import Keypair

from chains.base import TransferIntent
from chains.registry import load_registry
from chains.solana import SolanaAdapter
from chains.solana_rpc import NodeRpcError, SolanaRpc
from devnet.solana.cluster import Cluster, ClusterConfig
from devnet.solana.server import make_server
from tests.chaos.lag import SolanaLag
from tests.chaos.proxy import FaultProxy, FaultRates

LAG_S = 1.0
MAX_AGE = 10
SPEC = load_registry("devnet").chain("solana")
LATEST = ("getLatestBlockhash", [{"commitment": "finalized"}])


@dataclass
class Lagging:
    cluster: Cluster
    node_url: str  # the node itself, not through the proxy
    proxy: FaultProxy
    lagger: SolanaLag


@pytest.fixture
def lagging() -> Iterator[Lagging]:
    cluster = Cluster(ClusterConfig(slot_ms=0, blockhash_max_age=MAX_AGE, finalize_depth=2))
    server = make_server(cluster, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    lagger = SolanaLag(LAG_S)
    rates = FaultRates(delay=0.0, drop=0.0, timeout=0.0, lag=1.0)  # every eligible read lagged once enabled
    node_url = f"http://127.0.0.1:{server.server_address[1]}"
    with FaultProxy("solana", node_url, rates, lagger=lagger) as proxy:
        yield Lagging(cluster, node_url, proxy, lagger)
    server.shutdown()
    server.server_close()


def seen_then_moved_on(lagging: Lagging, ask: Any) -> Any:
    """`ask()` answered live, then L seconds later the chain moves past that blockhash's validity and
    the faults are on: the lagging view's newest answer at least L old is from before the move."""
    first = ask()
    time.sleep(LAG_S + 0.1)
    lagging.cluster.advance(MAX_AGE + 5)
    lagging.proxy.enabled.set()
    return first


def test_a_build_context_batch_is_answered_by_the_lagging_view_with_an_expired_blockhash(lagging: Lagging) -> None:
    adapter = SolanaAdapter(replace(SPEC, rpc_urls=(lagging.proxy.url,)))
    intent = TransferIntent(str(Keypair().pubkey()), str(Keypair().pubkey()), 1, SPEC.native)
    live = seen_then_moved_on(lagging, lambda: adapter.build_context(intent))
    requests = lagging.proxy.requests
    built = adapter.build_context(intent)  # one batch, both calls answered from the lagging view
    assert built == live
    height = SolanaRpc(lagging.node_url).call("getBlockHeight", [{"commitment": "processed"}])
    assert built["last_valid_block_height"] < height  # already expired when built
    assert lagging.proxy.counts["lag"] == 1 and lagging.lagger.kinds == Counter({"old": 2})
    assert lagging.proxy.requests == requests + 1  # one request: one lag fault


def test_a_batch_with_a_write_in_it_is_never_lagged(lagging: Lagging) -> None:
    client = SolanaRpc(lagging.proxy.url)
    old = seen_then_moved_on(lagging, lambda: client.batch([LATEST]))[0]
    body = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": LATEST[0], "params": LATEST[1]},
                       {"jsonrpc": "2.0", "id": 2, "method": "sendTransaction", "params": ["AA=="]}]).encode()
    assert not lagging.lagger.eligible("/", body)
    latest, sent = client.batch([LATEST, ("sendTransaction", ["AA=="])])
    assert latest != old and isinstance(sent, NodeRpcError)  # the live node's answers
    assert lagging.proxy.counts["lag"] == 0 and not lagging.lagger.kinds
    assert client.batch([LATEST]) == [old]  # the same read alone in a batch is lagged
    assert lagging.proxy.counts["lag"] == 1 and lagging.lagger.kinds == Counter({"old": 1})
    assert client.call(*LATEST) == old  # and as a single request, as before
    assert lagging.proxy.counts["lag"] == 2 and lagging.lagger.kinds == Counter({"old": 2})


def test_calls_the_lagging_view_has_nothing_for_are_answered_live_in_order(lagging: Lagging) -> None:
    client = SolanaRpc(lagging.proxy.url)
    old = seen_then_moved_on(lagging, lambda: client.batch([LATEST]))[0]
    funded = Keypair().pubkey()
    lagging.cluster.airdrop(funded, 7 * 10**9)
    answers = client.batch([("getBalance", [str(funded)]), LATEST])
    assert answers[0]["value"] == 7 * 10**9 and answers[1] == old  # a balance never asked before: the live one
    assert lagging.proxy.counts["lag"] == 1 and lagging.lagger.kinds == Counter({"old": 1})
    unseen = client.batch([("getBalance", [str(Keypair().pubkey())])])
    assert unseen[0]["value"] == 0 and lagging.proxy.counts["lag"] == 1  # nothing lagged: forwarded, not counted
