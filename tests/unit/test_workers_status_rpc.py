"""`paratro status` shows the RPC endpoints of the chains the deployment uses (workers/rpc_status.py):
probed now against real nodes (the Solana and Bitcoin devnets in-process over HTTP), an
unreachable or silent node is a row marked unhealthy with the reason, in bounded time, and no URL
is ever shown with its credentials, path or query."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from devnet.ports import free_port
from pipeline.settings import Settings
from workers.rpc_status import gather_rpc, rpc_table
from workers.status import render, run_status

USER, PASSWORD, API_KEY, PATH_KEY = "rpcuser", "pa55wordSecret", "apiKEY0123456789", "PATHkey0a1b2c3d4e5f"


def settings(**rpc_urls: Any) -> Settings:
    return Settings(_env_file=None, chain_registry="devnet", rpc_urls=rpc_urls)  # type: ignore[call-arg]


def secret_url(port: int) -> str:
    return f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/{PATH_KEY}/?apikey={API_KEY}"


def shown(rows: list[dict[str, Any]]) -> str:
    console = Console(record=True, width=250)
    console.print(rpc_table(rows))
    return console.export_text() + json.dumps(rows)


def assert_no_secret(text: str) -> None:
    for secret in (USER, PASSWORD, API_KEY, PATH_KEY, "apikey", "@"):
        assert secret not in text


@pytest.fixture
def solana_node() -> Iterator[int]:
    """A Solana devnet node (LiteSVM) on a loopback port; it ignores the URL's path and query."""
    from devnet.solana.cluster import Cluster, ClusterConfig
    from devnet.solana.server import make_server

    server = make_server(Cluster(ClusterConfig(slot_ms=0)), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung node)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def test_a_node_that_answers_is_healthy_and_a_dead_one_unhealthy_without_any_credential(solana_node: int) -> None:
    dead = free_port()
    rows = gather_rpc(settings(solana=secret_url(solana_node), bitcoin=secret_url(dead)), timeout_s=2)
    by_chain = {row["chain"]: row for row in rows}
    assert set(by_chain) == {"solana", "bitcoin"}  # only the chains the deployment configured
    solana, bitcoin = by_chain["solana"], by_chain["bitcoin"]
    assert solana["endpoint"] == f"http://127.0.0.1:{solana_node}"
    assert solana["healthy"] is True and solana["status"] == "ok" and isinstance(solana["head"], int)
    assert bitcoin["endpoint"] == f"http://127.0.0.1:{dead}"
    assert bitcoin["healthy"] is False and bitcoin["status"] == "unreachable" and bitcoin["head"] is None
    assert bitcoin["reason"] == f"no answer to the head probe: getblockcount: cannot reach http://127.0.0.1:{dead} " \
        "(ConnectionError)" and bitcoin["failures"] >= 1
    assert_no_secret(shown(rows))


def test_a_silent_node_is_unhealthy_within_the_request_timeout(silent_port: int) -> None:
    started = time.monotonic()
    rows = gather_rpc(settings(bitcoin=f"http://127.0.0.1:{silent_port}"), timeout_s=0.5, deadline_s=10)
    assert time.monotonic() - started < 5
    assert [(row["healthy"], row["status"]) for row in rows] == [(False, "unreachable")]


def test_a_chain_still_unanswered_at_the_deadline_is_shown_and_never_waited_for(silent_port: int) -> None:
    started = time.monotonic()
    rows = gather_rpc(settings(bitcoin=secret_url(silent_port)), timeout_s=30, deadline_s=0.5)
    assert time.monotonic() - started < 3
    assert rows == [{"chain": "bitcoin", "client": "rpc", "endpoint": f"http://127.0.0.1:{silent_port}",
                     "healthy": False, "status": "unreachable", "reason": "no answer within 0.5 s", "head": None,
                     "failures": 0}]
    assert_no_secret(shown(rows))


def test_an_adapter_that_cannot_be_made_and_an_unknown_chain_are_rows_not_errors() -> None:
    from dataclasses import replace

    from chains.registry import load_registry
    from workers.rpc_status import probe_chain

    rows = gather_rpc(settings(nochain="http://127.0.0.1:1"))
    assert [(row["chain"], row["healthy"], row["status"]) for row in rows] == [("-", False, "error")]
    assert "unknown chain 'nochain'" in rows[0]["reason"]
    spec = replace(load_registry("devnet").chain("tron"), rpc_urls=(secret_url(1),), options={"bogus": 1})
    rows = probe_chain(spec, timeout_s=1)
    assert [(row["endpoint"], row["healthy"], row["status"]) for row in rows] == [("http://127.0.0.1:1", False, "error")]
    assert "unknown TRON option" in rows[0]["reason"]
    assert_no_secret(shown(rows))


def test_status_json_has_the_rpc_rows_and_the_table_shows_them(db_url: str, solana_node: int,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    configured = Settings(_env_file=None, chain_registry="devnet", database_url=db_url,  # type: ignore[call-arg]
                          broker_url=f"redis://127.0.0.1:{free_port()}/0",
                          rpc_urls={"solana": [secret_url(solana_node), secret_url(free_port())]})
    run_status(configured, as_json=True)
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert [(row["endpoint"].rsplit(":", 1)[1] == str(solana_node), row["healthy"]) for row in data["rpc"]] == [
        (True, True), (False, False)]
    assert data["broker"]["ok"] is False and data["transfers"] == {}
    assert_no_secret(out.out + out.err)
    from workers.status import gather

    console = Console(record=True, width=250)
    console.print(render(gather(configured)))
    text = console.export_text()
    assert "rpc endpoints" in text and f"http://127.0.0.1:{solana_node}" in text and "unreachable" in text
    assert_no_secret(text)
