"""`/ready` is public, so its cost must not grow with its traffic: over the real app and server
(real Redis, the unit SQLite file) with fake chain adapters injected through the app's `context`,
a slow node cannot stretch an answer past the bound, N concurrent calls make one probe per chain
(not N), results are cached for the TTL, and the database and Redis probes never wait behind
chain probes. The probe cache's own rules (last result while a probe runs, `pending` first,
`timeout`, abandoning a hung probe) are tested directly with a hand-driven clock."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from api.app import create_app
from api.readiness import READY_TIMEOUT_S, Readiness
from api.server import ServerHandle, serve_in_thread
from chains.registry import Registry
from pipeline.db import Database
from pipeline.sealing import new_secrets_key
from pipeline.settings import Settings
from pipeline.steps import StepContext
from signer.local import LocalKeySigner
from tests.unit.api_support import redis_url  # noqa: F401

PROBED = ("bitcoin", "ethereum", "solana")
SECRET_URL = "http://user:hunter2@127.0.0.1:9/rpc"


@dataclass
class FakeNode:
    """A chain adapter whose probe (`verify_chain`, as on UTXO chains) blocks until released, fails
    on demand, and counts its calls per chain."""

    chain: str
    nodes: "FakeNodes"
    uses_utxos: bool = True

    def verify_chain(self) -> None:
        with self.nodes.lock:
            self.nodes.calls[self.chain] += 1
        if not self.nodes.release.wait(30):
            raise TimeoutError("never released")
        if self.nodes.failing:
            raise ConnectionError(f"cannot reach {SECRET_URL}")


@dataclass
class FakeNodes:
    release: threading.Event = field(default_factory=threading.Event)
    calls: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    failing: bool = False

    def adapter_for(self, chain: str) -> FakeNode:
        return FakeNode(chain, self)


@dataclass
class Served:
    server: ServerHandle
    readiness: Readiness
    nodes: FakeNodes

    def ready(self, path: str = "/api/v1/ready") -> tuple[httpx.Response, float]:
        started = time.monotonic()
        answer = httpx.get(self.server.base_url + path, timeout=30)
        return answer, time.monotonic() - started


@pytest.fixture
def served(db: Database, registry: Registry, local_signer: LocalKeySigner, redis_url: str,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    # pydantic-settings merges a dict given here with PARATRO_RPC_URLS from the environment (an
    # integration stack earlier in this process exports one): only PROBED chains have endpoints.
    monkeypatch.delenv("PARATRO_RPC_URLS", raising=False)
    nodes = FakeNodes()
    settings = Settings(database_url=db.url, broker_url=redis_url, chain_registry="devnet",
                        secrets_key=new_secrets_key(), rpc_urls={chain: SECRET_URL for chain in PROBED})
    ctx = StepContext(db=db, registry=registry, adapter_for=nodes.adapter_for, signer=local_signer)  # type: ignore[arg-type]
    app = create_app(settings=settings, context=lambda: ctx)
    server = serve_in_thread(app)
    try:
        yield Served(server, app.state.readiness, nodes)
    finally:
        nodes.release.set()
        server.stop()


def test_concurrent_calls_on_a_slow_node_make_one_probe_each_and_answer_within_the_bound(served: Served) -> None:
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: served.ready(), range(12)))
    bound = READY_TIMEOUT_S + 1.5  # the bound plus HTTP and scheduling slack
    assert max(elapsed for _, elapsed in answers) < bound, [elapsed for _, elapsed in answers]
    assert served.nodes.calls == Counter({chain: 1 for chain in PROBED})  # one probe per chain, not 12
    for answer, _ in answers:
        report = answer.json()
        assert answer.status_code == 503, report
        # the database and Redis were never stuck behind the 3 running chain probes (`pending`: another
        # request's first probe of them was running)
        assert {report["database"]["status"], report["redis"]["status"]} <= {"ok", "pending"}, report
        for chain in PROBED:
            assert report["chains"][chain]["status"] in ("pending", "down"), report
            if report["chains"][chain]["status"] == "down":
                assert report["chains"][chain]["error"] == "timeout"
        assert {c["status"] for name, c in report["chains"].items() if name not in PROBED} == {"skipped"}
    # a request that started probes waited for them: the database and Redis answered, the slow
    # chain nodes did not within the bound and are `timeout`
    assert any(a.json()["chains"]["ethereum"]["status"] == "down" for a, _ in answers)
    assert any(a.json()["database"]["status"] == "ok" for a, _ in answers)
    assert any(a.json()["redis"]["status"] == "ok" for a, _ in answers)

    # the nodes answer: the result is there at once and kept; nobody asks the nodes again for a while
    served.nodes.release.set()
    deadline = time.monotonic() + 10
    while served.readiness.report("chain:ethereum")["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.02)
    for path in ("/api/v1/ready", "/ready", "/api/v1/ready"):
        answer, elapsed = served.ready(path)
        assert answer.status_code == 200, answer.json()
        assert {answer.json()["chains"][chain]["status"] for chain in PROBED} == {"ok"}
        assert elapsed < 1.0
    assert served.nodes.calls == Counter({chain: 1 for chain in PROBED})
    assert SECRET_URL not in answer.text and "hunter2" not in answer.text


def test_a_result_is_reused_for_its_ttl_then_probed_again_and_a_failure_shows_only_its_kind(served: Served) -> None:
    served.nodes.release.set()
    served.readiness.chain_ttl_s = 0.5
    first, _ = served.ready()
    assert first.status_code == 200, first.json()
    for _ in range(5):
        assert served.ready()[0].status_code == 200
    assert served.nodes.calls["ethereum"] == 1
    time.sleep(0.6)
    served.nodes.failing = True
    failed, _ = served.ready()
    assert served.nodes.calls["ethereum"] == 2
    assert failed.status_code == 503
    assert failed.json()["chains"]["ethereum"] == {"status": "down", "latency_ms": None, "error": "ConnectionError"}
    assert "hunter2" not in failed.text and "127.0.0.1:9" not in failed.text
    assert failed.json()["database"]["status"] == "ok"


# -- the probe cache's rules, with a hand-driven clock ---------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gate:
    """A probe that blocks until opened, then passes or raises."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self) -> None:
        self.calls += 1
        self.opened.wait(10)
        if self.error is not None:
            raise self.error


def settle(readiness: Readiness, name: str) -> None:
    deadline = time.monotonic() + 5
    while readiness.report(name)["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.01)


def test_while_a_probe_runs_others_get_the_last_result_pending_first_and_timeout_once_it_overruns() -> None:
    clock = Clock()
    readiness = Readiness(timeout_s=3, chain_ttl_s=10, clock=clock)
    probe = Gate()
    started = readiness.begin("chain:x", probe, 10)
    assert started is not None
    assert readiness.begin("chain:x", probe, 10) is None  # one at a time
    assert readiness.report("chain:x") == {"status": "pending"}  # the very first: nothing to tell yet
    assert readiness.report("chain:x", started)["status"] == "down"  # its starter gave up waiting: timeout
    probe.opened.set()
    assert started.result(5)["status"] == "ok"
    assert readiness.report("chain:x")["status"] == "ok"

    clock.now += 5
    assert readiness.begin("chain:x", probe, 10) is None  # fresh: cached
    clock.now += 6
    probe.opened.clear()
    probe.error = ConnectionError("node gone")
    again = readiness.begin("chain:x", probe, 10)
    assert again is not None and probe.calls == 2
    assert readiness.report("chain:x")["status"] == "ok"  # the last result while the new probe runs
    clock.now += 3
    assert readiness.report("chain:x") == {"status": "down", "error": "timeout", "latency_ms": 3000}
    assert readiness.begin("chain:x", probe, 10) is None  # still one at a time
    probe.opened.set()
    assert again.result(5) == {"status": "down", "error": "ConnectionError"}
    assert readiness.report("chain:x") == {"status": "down", "error": "ConnectionError"}
    assert readiness.probes_started("chain:x") == 2


def test_a_hung_probe_is_abandoned_and_its_late_answer_ignored() -> None:
    clock = Clock()
    readiness = Readiness(timeout_s=3, abandon_after_s=60, clock=clock)
    hung, healthy = Gate(), Gate()
    healthy.opened.set()
    first = readiness.begin("database", hung, 1)
    assert first is not None
    clock.now += 59
    assert readiness.begin("database", healthy, 1) is None
    clock.now += 2
    second = readiness.begin("database", healthy, 1)
    assert second is not None and second.result(5)["status"] == "ok"
    hung.error = RuntimeError("late")
    hung.opened.set()
    assert first.result(5)["status"] == "down"
    assert readiness.report("database")["status"] == "ok"  # the abandoned probe's answer is not kept
