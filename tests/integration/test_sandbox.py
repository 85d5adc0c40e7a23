"""`paratro sandbox` as a new user runs it: one JSON line when ready, then the README's walkthrough
(examples/sandbox_quickstart.py) through the HTTP API with the shipped client, `paratro status`
pointed at it with the printed settings, and SIGTERM stops everything it started."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_WITHIN_S = 180.0


def _ready_line(process: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + READY_WITHIN_S
    assert process.stdout is not None
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 1.0)
        if readable:
            line = process.stdout.readline()
            if line:
                return json.loads(line)
        if process.poll() is not None:
            break
    pytest.fail(f"paratro sandbox printed no ready line (exit code {process.poll()})")


def _listening(url: str) -> bool:
    parsed = urlparse(url)
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((parsed.hostname or "127.0.0.1", parsed.port or 80)) == 0


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Any:
    log_path = tmp_path_factory.mktemp("sandbox") / "sandbox.err"
    log = log_path.open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARATRO_")}
    process = subprocess.Popen([sys.executable, "-m", "paratro.cli", "sandbox", "--chains",
                                "ethereum,tron,bitcoin,solana", "--block-time", "0.25"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready = _ready_line(process)
        yield process, ready, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def test_the_ready_line_has_what_a_client_and_the_cli_need(sandbox: Any) -> None:
    _, ready, _ = sandbox
    assert set(ready) == {"base_url", "client_id", "api_key", "api_secret", "env"}
    assert ready["base_url"].startswith("http://127.0.0.1:") and ready["base_url"].endswith("/api/v1")
    assert ready["client_id"].startswith("cli_") and ready["api_key"].startswith("ak_") and ready["api_secret"]
    assert ready["env"]["PARATRO_CHAIN_REGISTRY"] == "devnet"
    assert {"PARATRO_DATABASE_URL", "PARATRO_BROKER_URL", "PARATRO_RPC_URLS"} <= set(ready["env"])
    assert "PARATRO_SIGNER_MASTER_KEY" not in ready["env"]  # only workers sign


def test_the_quickstart_moves_money_on_four_chains_with_signed_webhooks(sandbox: Any) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import sandbox_quickstart
    finally:
        sys.path.remove(str(ROOT / "examples"))
    _, ready, _ = sandbox
    outcome = sandbox_quickstart.run(ready)
    assert {chain: tx["status"] for chain, tx in outcome["transactions"].items()} == {
        "ethereum": "CONFIRMED", "tron": "CONFIRMED", "bitcoin": "CONFIRMED", "solana": "CONFIRMED"}
    for transaction_id, types in outcome["webhooks"].items():
        assert types[0] == "transaction.pending" and types[-1] == "transaction.confirmed", (transaction_id, types)
    assert outcome["signature_bad"] == 0 and outcome["signature_ok"] >= 2 * len(outcome["webhooks"])

    status = subprocess.run([sys.executable, "-m", "paratro.cli", "status", "--json"], cwd=ROOT, text=True,
                            capture_output=True, env={**os.environ, **ready["env"]}, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "CONFIRMED" in status.stdout and "ethereum" in status.stdout


def test_sigterm_stops_everything_it_started_and_no_log_holds_a_secret(sandbox: Any) -> None:
    process, ready, log_path = sandbox
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=90) == 0
    stderr = log_path.read_text()
    workdir = Path(stderr.splitlines()[0].rsplit(" in ", 1)[1].strip())  # the first line names it
    logs = [stderr] + [path.read_text(errors="replace") for path in workdir.glob("*.log")]
    assert len(logs) > 1, f"no worker log in {workdir}"
    for text in logs:
        assert ready["api_secret"] not in text and ready["env"]["PARATRO_SECRETS_KEY"] not in text
    assert not _listening(ready["base_url"])
    assert not _listening(ready["env"]["PARATRO_BROKER_URL"])
    for url in json.loads(ready["env"]["PARATRO_RPC_URLS"]).values():
        assert not _listening(url)
