"""The counters `make bench` reads from the worker processes: SQL statements and node HTTP requests
(counted in a real child process, summed through prometheus_client's multiprocess files as the
worker exporter sums them), the exposition parser, and memory and CPU per process tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from bench.counters import Sample, parse_exposition, processes, tree, tree_rss_mb
from chains.transport import request_method
from tests.unit.json_http import send_json
from workers.metrics import statement_verb

ROOT = Path(__file__).resolve().parents[2]


class _JsonRpcEcho(BaseHTTPRequestHandler):
    """Answers every POST: a JSON-RPC result per call (an array for a batch), a block for TRON's HTTP API."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        if isinstance(body, list):
            answer: object = [{"jsonrpc": "2.0", "id": call["id"], "result": "0x1"} for call in body]
        elif "method" in body:
            answer = {"jsonrpc": "2.0", "id": body["id"], "result": "0x1"}
        else:
            answer = {"blockID": "00"}
        send_json(self, answer)

    def log_message(self, *_: object) -> None:
        pass


def _serve() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JsonRpcEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def nodes() -> Iterator[tuple[str, str]]:
    """Two echo nodes' host:port."""
    first, second = _serve(), _serve()
    yield first[1], second[1]
    for server, _ in (first, second):
        server.shutdown()
        server.server_close()


_CHILD = """
import sys
from celery.signals import worker_process_init
from sqlalchemy import create_engine, text

import workers.metrics  # noqa: F401 - connects the counters to worker_process_init
from chains.evm_rpc import JsonRpcClient, batch_results
from chains.solana_rpc import SolanaRpc
from chains.tron_rpc import TronHttpClient

worker_process_init.send(sender=None)  # what Celery sends in each prefork child
worker_process_init.send(sender=None)  # twice: installed once
engine = create_engine("sqlite://")
with engine.connect() as conn:
    conn.execute(text("SELECT 1"))
    conn.execute(text("select 2"))
    conn.execute(text("CREATE TABLE t (x INTEGER)"))
    conn.execute(text("INSERT INTO t VALUES (1)"))
evm, solana, tron, unknown = sys.argv[1:5]
JsonRpcClient(evm).call("eth_chainId", [])
batch_results(JsonRpcClient(evm), [("eth_getTransactionReceipt", ["0x01"]), ("eth_getTransactionReceipt", ["0x02"])])
SolanaRpc(solana).call("getHealth", [])
SolanaRpc(solana).call("getHealth", [])
TronHttpClient(tron).post("wallet/getnowblock")
SolanaRpc(unknown).call("getSlot", [])
"""


def test_worker_processes_count_statements_and_node_requests(tmp_path: Path, nodes: tuple[str, str]) -> None:
    """Labels name the chain whose configured endpoint (scheme://host:port) the request went to,
    never a path or key: chains sharing an endpoint are named together, an unknown one is "other"."""
    node, other = nodes
    port = node.split(":")[1]
    evm, tron, solana = f"http://{node}/evm-key-123", f"http://{node}/tron-key-789", f"http://localhost:{port}/sol-key-456"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PARATRO_CHAIN_REGISTRY": "devnet",
           "PARATRO_RPC_URLS": json.dumps({"ethereum": evm, "tron": tron, "solana": solana})}
    subprocess.run([sys.executable, "-c", _CHILD, evm, solana, tron, f"http://{other}"], env=env, cwd=ROOT,
                   check=True, timeout=120)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    text = generate_latest(registry).decode()
    counted = parse_exposition(text)
    assert "key-" not in text
    assert counted.rpc_requests == {"ethereum+tron eth_chainId": 1, "ethereum+tron batch": 1,
                                    "ethereum+tron wallet/getnowblock": 1, "solana getHealth": 2, "other getSlot": 1}
    assert counted.rpc_total == 6
    verbs = {s.labels["verb"]: s.value for family in text_string_to_metric_families(text) for s in family.samples
             if s.name == "paratro_db_statements_total"}
    assert verbs["select"] == 2 and verbs["insert"] == 1 and verbs["other"] == 1  # CREATE TABLE
    assert counted.db_statements == 4


def test_statement_verbs_and_request_methods_are_bounded_labels() -> None:
    assert statement_verb("  SELECT x FROM t") == "select"
    assert statement_verb("BEGIN IMMEDIATE") == "begin"
    assert statement_verb("PRAGMA journal_mode=WAL") == "other"
    assert statement_verb("") == "other"
    assert request_method(b'{"jsonrpc": "2.0", "id": 1, "method": "getSlot", "params": []}') == "getSlot"
    assert request_method('[{"jsonrpc": "2.0", "id": 1, "method": "getblockhash"}]') == "batch"
    assert request_method(b"{}", "/api-key-path/wallet/getnowblock?x=1") == "wallet/getnowblock"
    assert request_method(b'{"method": "evil label!"}', "/") == "other"
    assert request_method(None, "") == "other"


def test_exposition_parser_and_sample_difference() -> None:
    text = "\n".join([
        "# TYPE paratro_db_statements counter",
        'paratro_db_statements_total{verb="select"} 10.0',
        'paratro_db_statements_total{verb="update"} 5.0',
        "# TYPE paratro_rpc_requests counter",
        'paratro_rpc_requests_total{chain="ethereum",method="batch"} 3.0',
        "# TYPE paratro_step_duration_seconds histogram",
        'paratro_step_duration_seconds_sum{outcome="advanced",step="lock_funds"} 1.5',
        'paratro_step_duration_seconds_count{outcome="advanced",step="lock_funds"} 30.0',
        'paratro_step_duration_seconds_sum{outcome="retry",step="lock_funds"} 0.5',
        'paratro_step_duration_seconds_count{outcome="retry",step="lock_funds"} 10.0', ""])
    after = parse_exposition(text)
    assert after.db_statements == 15 and after.rpc_requests == {"ethereum batch": 3}
    assert after.step_seconds == {"lock_funds": 2.0} and after.step_runs == {"lock_funds": 40.0}
    before = Sample(5.0, {"ethereum batch": 1.0}, {"lock_funds": 1.0}, {"lock_funds": 20.0}, redis_commands=100)
    spent = Sample(after.db_statements, after.rpc_requests, after.step_seconds, after.step_runs, 160).minus(before)
    assert (spent.db_statements, spent.rpc_total, spent.redis_commands) == (10.0, 2.0, 60)
    assert spent.step_seconds == {"lock_funds": 1.0} and spent.step_runs == {"lock_funds": 20.0}


def test_process_tree_memory_and_cpu_cover_descendants_only(tmp_path: Path) -> None:
    def proc(pid: int, ppid: int, rss_kb: int | None, comm: str = "python", utime: int = 0, stime: int = 0) -> None:
        entry = tmp_path / str(pid)
        entry.mkdir()
        # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        (entry / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 {utime} {stime} 0 0\n")
        (entry / "status").write_text(f"Name:\t{comm}\n" + (f"VmRSS:\t{rss_kb} kB\n" if rss_kb is not None else ""))

    proc(100, 1, 51200, utime=10, stime=5)  # the `paratro worker` supervisor
    proc(101, 100, 102400, comm="celery) worker", utime=100)  # a name with a parenthesis and a space
    proc(102, 101, 20480)  # a prefork child (grandchild of the root), its own session or not
    proc(103, 101, None)  # no VmRSS line (a kernel-thread-like entry)
    proc(200, 1, 999999, utime=7)  # another tree: not ours
    (tmp_path / "self").mkdir()
    assert tree_rss_mb([100], proc=tmp_path) == 170.0
    assert tree_rss_mb([101], proc=tmp_path) == 120.0
    assert tree_rss_mb([100, 200], proc=tmp_path) == round((51200 + 102400 + 20480 + 999999) / 1024, 1)
    assert tree_rss_mb([], proc=tmp_path) == 0.0 and tree_rss_mb([999], proc=tmp_path) == 0.0
    table = processes(tmp_path)
    assert sum(info.cpu_ticks for info in tree([100], table)) == 115
    assert {info.pid for info in tree([101], table)} == {101, 102, 103}
