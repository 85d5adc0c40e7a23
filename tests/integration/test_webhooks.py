"""Webhooks end to end on the real stack: a transfer's events reach a local receiver through beat,
the webhooks queue and a real worker process, each signed; a failing receiver gets the event
again with the same id and body; a 400 is final; `paratro webhooks resend` delivers again."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pipeline import credentials, events
from pipeline.models import Client, WebhookAttempt, WebhookEvent
from pipeline.webhook_signing import verify_webhook
from pipeline.webhooks import configure_webhook
from tests.integration import helpers as h

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """One local receiver; each test uses its own path, with its own scripted answers."""

    url: str
    script: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    got: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                answer = state.script[self.path].pop(0) if state.script[self.path] else 200
                state.got[self.path].append(Received(dict(self.headers.items()), body, answer))
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def hook(client_id: str, url: str, opt_in: list[str] | None = None) -> str:
    with h.ctx().db.unit_of_work() as s:
        return configure_webhook(s, credentials.secret_box(), client_id, url, opt_in, devnet=h.ctx().registry.is_devnet)


def rows(**where: str) -> list[WebhookEvent]:
    with h.ctx().db.unit_of_work() as s:
        query = select(WebhookEvent).order_by(WebhookEvent.sequence, WebhookEvent.event_id)
        for column, value in where.items():
            query = query.where(getattr(WebhookEvent, column) == value)
        return list(s.scalars(query))


def attempts(event_id: str) -> list[tuple[int | None, str]]:
    with h.ctx().db.unit_of_work() as s:
        return [(a.status_code, a.outcome) for a in s.scalars(
            select(WebhookAttempt).where(WebhookAttempt.event_id == event_id).order_by(WebhookAttempt.id))]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def paratro(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paratro.cli", *args], env=dict(os.environ), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def all_verified(received: list[Received], secret: str) -> None:
    for request in received:
        verify_webhook(secret, request.headers, request.body)  # raises if any is not authentic
        assert request.headers["X-Paratro-Event-Id"] == request.event["event_id"]
        assert request.headers["Content-Type"] == "application/json"


def test_a_transfer_s_events_arrive_signed_in_sequence_and_a_failure_is_retried(stack, receiver: Receiver) -> None:
    f = h.funded_wallet(stack, eth="2", usdt="0")
    path = f"/transfer/{f.client_id}"
    secret = hook(f.client_id, receiver.url + path, ["transaction.stage"])
    receiver.script[path] = [500]  # the first delivery fails: retried on the (short) schedule
    tx_id = h.submit(f, "ETH", "0.25")
    assert h.wait_final([tx_id])[tx_id].status == "CONFIRMED"
    wait_for(lambda: rows(resource_id=tx_id) and all(r.status == "DELIVERED" for r in rows(resource_id=tx_id)),
             "every event of the transfer delivered")
    stored = rows(resource_id=tx_id)
    received = receiver.got[path]
    all_verified(received, secret)

    # Each event arrived with its stored body; the one answered 500 came again, same id and body.
    by_id: dict[str, list[Received]] = defaultdict(list)
    for request in received:
        by_id[request.event["event_id"]].append(request)
    assert set(by_id) == {r.event_id for r in stored}
    for row in stored:
        assert {request.body for request in by_id[row.event_id]} == {row.payload.encode()}
    first = received[0]
    assert first.answered == 500 and [r.answered for r in by_id[first.event["event_id"]]] == [500, 200]
    assert attempts(first.event["event_id"]) == [(500, "retry"), (200, "delivered")]
    assert all(attempts(r.event_id) == [(200, "delivered")] for r in stored if r.event_id != first.event["event_id"])

    # Sequences count up per transfer; status events and (opted-in) stage events follow the stages.
    ordered = sorted((request.event for request in received), key=lambda e: e["sequence"])
    unique = list({e["event_id"]: e for e in ordered}.values())
    assert [e["sequence"] for e in unique] == list(range(1, len(unique) + 1))
    statuses = [(e["type"], e["data"]["status"]) for e in unique if e["type"] != "transaction.stage"]
    assert statuses == [("transaction.pending", "PENDING"), ("transaction.confirmed", "CONFIRMED")]
    stages = [e["data"]["sub_status"] for e in unique if e["type"] == "transaction.stage"]
    assert [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]] == [to for _, to in h.stage_changes(tx_id)]
    assert all(e["data"]["transaction_id"] == tx_id and e["data"]["amount"] == "0.25" for e in unique)
    assert unique[-1]["type"] == "transaction.confirmed" and unique[-1]["data"]["tx_hash"]

    # A resend by transaction delivers every event again: same ids, same bodies, fresh signatures.
    before = len(received)
    result = paratro("webhooks", "resend", "--transaction", tx_id)
    assert result.returncode == 0 and result.stdout.strip() == f"{len(stored)} webhook events queued for delivery again", result.stderr
    wait_for(lambda: len(receiver.got[path]) >= before + len(stored), "the resent events")
    wait_for(lambda: all(r.status == "DELIVERED" for r in rows(resource_id=tx_id)), "resent events delivered")
    again = receiver.got[path][before:]
    all_verified(again, secret)
    assert sorted(r.body for r in again) == sorted(r.payload.encode() for r in stored)


def test_a_400_fails_at_once_and_a_resend_delivers_it(stack, receiver: Receiver) -> None:
    with h.ctx().db.unit_of_work() as s:
        client_id = credentials.create_client(s, credentials.secret_box(), "webhook 400")[0].client_id
    path = f"/refuse/{client_id}"
    secret = hook(client_id, receiver.url + path)
    receiver.script[path] = [400]
    with h.ctx().db.unit_of_work() as s:
        event_id = events.ping(s, s.get(Client, client_id)).event_id  # type: ignore[arg-type]
    wait_for(lambda: rows(event_id=event_id)[0].status == "FAILED", "the 400 to fail the event")
    time.sleep(3)  # longer than the retry schedule's first delays: nothing more is sent
    assert [r.answered for r in receiver.got[path]] == [400]
    assert attempts(event_id) == [(400, "failed")]
    listed = json.loads(paratro("webhooks", "list", "--failed", "--client", client_id, "--json").stdout)
    assert [(e["event_id"], e["status"], e["attempts"], e["last_status_code"]) for e in listed] == [
        (event_id, "FAILED", 1, 400)]

    result = paratro("webhooks", "resend", "--event", event_id)
    assert result.returncode == 0 and result.stdout.strip() == "1 webhook event queued for delivery again", result.stderr
    wait_for(lambda: rows(event_id=event_id)[0].status == "DELIVERED", "the resent event delivered")
    got = receiver.got[path]
    assert [r.answered for r in got] == [400, 200] and got[0].body == got[1].body
    assert {r.headers["X-Paratro-Event-Id"] for r in got} == {event_id}
    all_verified(got, secret)
    assert attempts(event_id) == [(400, "failed"), (200, "delivered")]


class Dripper:
    """A receiver that reads the request, then answers a byte every 0.2 s without ever finishing
    its headers, until the client hangs up; records how long each connection was held."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/drip"
        self.held_s: list[float] = []
        self.connections = 0
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        started = time.monotonic()
        with conn:
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536) or b"\r\n\r\n"
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not self.stop.wait(0.2):
                    conn.sendall(b"a")  # once the dispatcher has hung up, this fails within two bytes
            except OSError:
                pass
        self.held_s.append(time.monotonic() - started)

    def close(self) -> None:
        self.sock.close()  # later attempts are refused at once
        self.stop.set()


def test_a_dripping_receiver_is_let_go_at_the_deadline_and_others_are_served(stack, receiver: Receiver) -> None:
    h.once_per_session(stack, "an HTTP deadline does not depend on the database")
    with h.ctx().db.unit_of_work() as s:
        box = credentials.secret_box()
        slow_id = credentials.create_client(s, box, "webhook dripper")[0].client_id
        fine_id = credentials.create_client(s, box, "webhook fine")[0].client_id
    dripper = Dripper()
    try:
        hook(slow_id, dripper.url)
        path = f"/fine/{fine_id}"
        hook(fine_id, receiver.url + path)
        with h.ctx().db.unit_of_work() as s:
            slow_event = events.ping(s, s.get(Client, slow_id)).event_id  # type: ignore[arg-type]
        wait_for(lambda: dripper.connections >= 1, "the delivery to the dripping receiver to start", timeout=30)
        with h.ctx().db.unit_of_work() as s:
            fine_event = events.ping(s, s.get(Client, fine_id)).event_id  # type: ignore[arg-type]
        wait_for(lambda: rows(event_id=fine_event)[0].status == "DELIVERED", "the other client's event", timeout=15)
        assert attempts(slow_event) == []  # still being dripped at, and no hold on anyone else
        wait_for(lambda: bool(attempts(slow_event)), "the dripped delivery to be given up", timeout=30)
        assert attempts(slow_event)[0] == (None, "retry")
        assert rows(event_id=slow_event)[0].last_error == "ReadTimeout: no complete answer within 5 s"
        wait_for(lambda: bool(dripper.held_s), "the dispatcher to hang up", timeout=5)
        assert 4.5 <= dripper.held_s[0] < 7, dripper.held_s  # PARATRO_WEBHOOK_TIMEOUT_S=5 (STACK_ENV), total
    finally:
        dripper.close()
    wait_for(lambda: rows(event_id=slow_event)[0].status == "FAILED", "the retries, refused, to use up the schedule")
