"""Submitting while the broker is down: the transfer is accepted, stored with its first message in
the outbox, and runs to the end within seconds of the broker's return; the same key, retried,
returns the same transfer (issue 7, finding 7)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration import helpers as h
from workers.services import submit_transfer


def test_a_transfer_submitted_while_the_broker_is_down_runs_when_it_returns(stack):
    f = h.funded_wallet(stack, eth="1", usdt="0")
    redis_server = stack.redis
    assert redis_server is not None
    port = redis_server.port
    # Stopped and started from this thread: a devnet process dies with the thread that started it
    # (PR_SET_PDEATHSIG), so no helper thread may start redis-server here.
    redis_server.stop()
    try:
        # When a client submits, then retries with the same key, and ops uses the CLI
        req = h.request(f, "ETH", "0.1", key="while-down")
        first = submit_transfer(h.ctx(), req)
        again = submit_transfer(h.ctx(), req)
        cli = subprocess.run(
            [sys.executable, "-m", "paratro.cli", "transfer", "--client-id", f.client_id, "--from", f.address,
             "--to", h.fresh_address(), "--chain", "ethereum", "--token", "ETH", "--amount", "0.1",
             "--idempotency-key", "cli-while-down"],
            capture_output=True, text=True, timeout=60, env={**os.environ, **stack.env})
    finally:
        redis_server.port = port
        redis_server.start()
    # Then both are accepted (one transfer for the repeated key), and the CLI says so in one line
    assert (first.created, first.published) == (True, False)
    assert (again.transaction_id, again.created) == (first.transaction_id, False)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" accepted, queued when the broker returns"), cli.stdout
    cli_id = lines[0].split()[0]
    # And once the broker is back, the relay publishes them and they confirm, once
    final = h.wait_final([first.transaction_id, cli_id], timeout=90)
    assert [t.status for t in final.values()] == ["CONFIRMED", "CONFIRMED"]
    assert h.count_transactions(f.client_id) == 2
    h.assert_reconciled(f)
