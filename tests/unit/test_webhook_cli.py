"""`paratro webhooks list` and `paratro webhooks resend`, run as an operator would (a subprocess
of the real entry point) against a migrated SQLite DB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import credentials, events
from pipeline.db import Database
from pipeline.models import Client, WebhookEvent
from pipeline.sealing import SecretBox, new_secrets_key
from pipeline.webhooks import configure_webhook

ROOT = Path(__file__).resolve().parents[2]


def paratro(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARATRO_")}
    env.update(PARATRO_DATABASE_URL=db_url, PARATRO_CHAIN_REGISTRY="devnet", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "paratro.cli", "webhooks", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def seeded(db: Database) -> dict[str, str]:
    """Two ping events of one client: one FAILED after a 400, one DELIVERED."""
    box = SecretBox(new_secrets_key())
    with db.unit_of_work() as s:
        client = credentials.create_client(s, box, "Acme")[0]
        configure_webhook(s, box, client.client_id, "http://127.0.0.1:9/h", None, devnet=True)
    ids = {}
    for name, status, code in (("failed", "FAILED", 400), ("delivered", "DELIVERED", 200)):
        with db.unit_of_work() as s:
            event = events.ping(s, s.get(Client, client.client_id))  # type: ignore[arg-type]
            event.status, event.attempts, event.last_status_code, event.next_attempt_at = status, 1, code, None
            ids[name] = event.event_id
    ids["client"] = client.client_id
    return ids


def status_of(db: Database, event_id: str) -> tuple[str, int]:
    with db.unit_of_work() as s:
        row = s.get(WebhookEvent, event_id)
        return row.status, row.attempts  # type: ignore[union-attr]


def test_list_json_and_failed_filter(db_url: str, seeded: dict[str, str]) -> None:
    everything = paratro("list", "--json", db_url=db_url)
    assert everything.returncode == 0, everything.stderr
    rows = json.loads(everything.stdout)
    assert [r["event_id"] for r in rows] == [seeded["delivered"], seeded["failed"]]
    failed = json.loads(paratro("list", "--failed", "--client", seeded["client"], "--json", db_url=db_url).stdout)
    assert [(r["event_id"], r["type"], r["status"], r["attempts"], r["last_status_code"]) for r in failed] == [
        (seeded["failed"], "ping", "FAILED", 1, 400)]


def test_list_table_shows_the_columns(db_url: str, seeded: dict[str, str]) -> None:
    result = paratro("list", "--failed", db_url=db_url)
    assert result.returncode == 0, result.stderr
    for word in ("event", "type", "resource", "status", "attempts", "last code", "next attempt",
                 seeded["failed"], "FAILED", "400"):
        assert word in result.stdout
    assert seeded["delivered"] not in result.stdout


def test_resend_by_event_puts_it_back(db: Database, db_url: str, seeded: dict[str, str]) -> None:
    result = paratro("resend", "--event", seeded["failed"], db_url=db_url)
    assert (result.returncode, result.stdout.strip()) == (0, "1 webhook event queued for delivery again"), result.stderr
    assert status_of(db, seeded["failed"]) == ("PENDING", 0)
    assert status_of(db, seeded["delivered"]) == ("DELIVERED", 1)


def test_resend_by_time_range_and_client(db: Database, db_url: str, seeded: dict[str, str]) -> None:
    result = paratro("resend", "--since", "2000-01-01T00:00:00Z", "--client", seeded["client"], db_url=db_url)
    assert result.stdout.strip() == "2 webhook events queued for delivery again", result.stderr
    assert status_of(db, seeded["delivered"]) == ("PENDING", 0)


@pytest.mark.parametrize("args,message", [
    ((), "say which events"),
    (("--client", "cli_01J00000000000000000000000"), "say which events"),
    (("--event", "nope"), "not a valid event id"),
    (("--transaction", "ev_01J00000000000000000000000"), "not a valid transaction id"),
    (("--since", "last tuesday"), "--since must be an ISO-8601 time"),
    (("--event", "ev_01J00000000000000000000000"), "no webhook event ev_01J00000000000000000000000"),
])
def test_resend_refuses_in_one_line_and_changes_nothing(db: Database, db_url: str, seeded: dict[str, str],
                                                        args: tuple[str, ...], message: str) -> None:
    result = paratro("resend", *args, db_url=db_url)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert status_of(db, seeded["failed"]) == ("FAILED", 1)


def test_list_refuses_a_bad_limit(db_url: str, seeded: dict[str, str]) -> None:
    result = paratro("list", "--limit", "0", db_url=db_url)
    assert result.returncode == 2 and "limit must be between 1 and 1000" in result.stderr
