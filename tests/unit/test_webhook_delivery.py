"""The dispatcher's HTTP side against a real local receiver (http.server in a thread): what a POST
carries, how answers, redirects, timeouts and refused connections are recorded, and the relay and
delivery tasks run in-process on the unit DB (publishing captured)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from pipeline import credentials, events
from pipeline.models import Client, WebhookAttempt, WebhookEvent, utcnow
from pipeline.sealing import new_secrets_key
from pipeline.settings import Settings
from pipeline.webhook_outbox import Delivery
from pipeline.webhook_signing import verify_webhook
from pipeline.webhooks import PinnedTarget, configure_webhook
from tests.unit.fakes import World
from workers import webhook_tasks
from workers.webhook_tasks import USER_AGENT, post

SECRET = "whsec_unit-secret"
BODY = b'{"event_id":"ev_01J0000000000000000000000A","type":"ping","created_at":"x","sequence":0,"data":{}}'


class Receiver:
    """A webhook receiver that answers from a script: an int status, ("redirect", url), ("sleep", s)."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, dict(self.headers.items()), body))
                answer = receiver.script.pop(0) if receiver.script else 200
                if isinstance(answer, tuple) and answer[0] == "sleep":
                    time.sleep(answer[1])
                    answer = 200
                if isinstance(answer, tuple) and answer[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", answer[1])
                else:
                    self.send_response(answer)
                body_out = b"x" * 100_000  # never read by the dispatcher
                self.send_header("Content-Length", str(len(body_out)))
                self.end_headers()
                try:
                    self.wfile.write(body_out)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0K3N-path-secret"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def delivery(url: str) -> Delivery:
    return Delivery("ev_01J0000000000000000000000A", "cli_01J0000000000000000000000A", 0, None, url, BODY, SECRET)


def test_a_post_carries_the_stored_body_signed(receiver: Receiver) -> None:
    receiver.script = [204]
    result = post(delivery(receiver.url), devnet=True, timeout_s=5)
    assert (result.status_code, result.error, result.permanent) == (204, None, False)
    assert 0 <= result.latency_ms < 5000
    [(path, headers, body)] = receiver.requests
    assert path == "/hooks/T0K3N-path-secret" and body == BODY
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == USER_AGENT
    assert headers["X-Paratro-Event-Id"] == "ev_01J0000000000000000000000A"
    assert abs(int(headers["X-Paratro-Timestamp"]) - time.time()) < 5
    verify_webhook(SECRET, headers, body)


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.script = [("redirect", receiver.url + "/elsewhere")]
    result = post(delivery(receiver.url), devnet=True, timeout_s=5)
    assert (result.status_code, result.error) == (302, "HTTP 302")
    assert len(receiver.requests) == 1


def test_a_slow_receiver_times_out(receiver: Receiver) -> None:
    receiver.script = [("sleep", 1.5)]
    result = post(delivery(receiver.url), devnet=True, timeout_s=0.3)
    assert result.status_code is None and result.error == "ReadTimeout: no answer within 0.3 s"


def test_a_refused_connection_is_an_error_line_without_the_url() -> None:
    with Receiver() as closed:
        url = closed.url
    result = post(delivery(url), devnet=True, timeout_s=2)
    assert result.status_code is None and result.error is not None and result.error.startswith("ConnectError")
    assert "T0K3N" not in result.error and "127.0.0.1" not in result.error and not result.permanent


def test_outside_devnet_a_loopback_receiver_is_refused_before_any_request(receiver: Receiver) -> None:
    result = post(delivery(receiver.url.replace("http:", "https:")), devnet=False, timeout_s=2)
    assert result.permanent and result.error == ("refused: webhook url must not point to a loopback address "
                                                 "(allowed only on a devnet registry)")
    assert receiver.requests == []


def test_a_pinned_target_is_reached_by_address_with_the_host_name_kept(receiver: Receiver,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = PinnedTarget(receiver.url, host_header="hooks.example:8443", sni_hostname="hooks.example")
    seen: list[tuple[str, bool]] = []

    def target(url: str, devnet: bool) -> PinnedTarget:
        seen.append((url, devnet))
        return pinned

    monkeypatch.setattr(webhook_tasks, "delivery_target", target)
    result = post(delivery("https://hooks.example:8443/hooks/T0K3N-path-secret"), devnet=False, timeout_s=5)
    assert result.status_code == 200 and seen == [("https://hooks.example:8443/hooks/T0K3N-path-secret", False)]
    [(path, headers, body)] = receiver.requests
    assert headers["Host"] == "hooks.example:8443" and path == "/hooks/T0K3N-path-secret"
    verify_webhook(SECRET, headers, body)


# --- the tasks, in-process ---------------------------------------------------------------------

@pytest.fixture
def wired(world: World, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The tasks on the unit world and its DB, with the relay's publishing captured."""
    settings = Settings(_env_file=None, secrets_key=new_secrets_key(), webhook_timeout_s=2,  # type: ignore[call-arg]
                        webhook_retry_schedule_s=(1.0, 1.0))
    monkeypatch.setattr(webhook_tasks.runtime, "context", world.ctx)
    monkeypatch.setattr(webhook_tasks, "get_settings", lambda: settings)
    monkeypatch.setattr(webhook_tasks, "_queued_deliveries", lambda: 0)
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(webhook_tasks.deliver_webhook, "apply_async",
                        lambda args, queue: sent.append(tuple(args)))  # type: ignore[arg-type]
    world.settings = settings  # type: ignore[attr-defined]
    return sent


def hooked_client(world: World, url: str) -> tuple[str, str]:
    box = credentials.secret_box(world.settings)  # type: ignore[attr-defined]
    with world.db.unit_of_work() as s:
        client_id = credentials.create_client(s, box, "Acme")[0].client_id
        secret = configure_webhook(s, box, client_id, url, None, devnet=world.registry.is_devnet)
    return client_id, secret


def ping(world: World, client_id: str) -> str:
    with world.db.unit_of_work() as s:
        return events.ping(s, s.get(Client, client_id)).event_id  # type: ignore[arg-type]


def test_relay_then_delivery_delivers_a_ping(world: World, wired: list[tuple[str, str]], receiver: Receiver) -> None:
    client_id, secret = hooked_client(world, receiver.url)
    event_id = ping(world, client_id)
    assert webhook_tasks.webhook_relay.run() == 1
    assert [e for e, _ in wired] == [event_id]
    assert webhook_tasks.webhook_relay.run() == 0  # claimed: not handed out twice
    assert webhook_tasks.deliver_webhook.run(*wired[0]) == "delivered"
    [(_, headers, body)] = receiver.requests
    verify_webhook(secret, headers, body)
    assert json.loads(body)["event_id"] == event_id == headers["X-Paratro-Event-Id"]
    assert webhook_tasks.deliver_webhook.run(*wired[0]) == "already DELIVERED"  # a redelivered message
    assert len(receiver.requests) == 1


def test_a_failing_receiver_is_retried_on_schedule_then_failed(world: World, wired: list[tuple[str, str]],
                                                                receiver: Receiver,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    client_id, secret = hooked_client(world, receiver.url)
    event_id = ping(world, client_id)
    receiver.script = [500, 503, 502]
    outcomes = []
    for _ in range(3):
        with world.db.unit_of_work() as s:  # make it due now instead of waiting out the schedule
            s.get(WebhookEvent, event_id).next_attempt_at = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
        assert webhook_tasks.webhook_relay.run() == 1
        outcomes.append(webhook_tasks.deliver_webhook.run(*wired[-1]))
    assert outcomes == ["retry", "retry", "failed"]
    with world.db.unit_of_work() as s:
        attempts = list(s.scalars(select(WebhookAttempt).where(WebhookAttempt.event_id == event_id)))
        assert [(a.status_code, a.outcome, a.error) for a in attempts] == [
            (500, "retry", "HTTP 500"), (503, "retry", "HTTP 503"), (502, "failed", "HTTP 502")]
    ids = {headers["X-Paratro-Event-Id"] for _, headers, _ in receiver.requests}
    assert ids == {event_id} and len({body for _, _, body in receiver.requests}) == 1  # same event every time
    logged = capsys.readouterr()
    assert "webhook.retry" in logged.out + logged.err and "webhook.failed" in logged.out + logged.err
    assert "T0K3N" not in logged.out + logged.err and secret not in logged.out + logged.err  # no URL, no secret


def test_the_relay_leaves_room_for_what_is_still_queued(world: World, wired: list[tuple[str, str]],
                                                        monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    client_id, _ = hooked_client(world, receiver.url)
    for _ in range(3):
        ping(world, client_id)
    monkeypatch.setattr(webhook_tasks, "_queued_deliveries", lambda: webhook_tasks.RELAY_BATCH - 2)
    assert webhook_tasks.webhook_relay.run() == 2
    monkeypatch.setattr(webhook_tasks, "_queued_deliveries", lambda: 0)
    assert webhook_tasks.webhook_relay.run() == 1


def test_a_broker_failure_leaves_the_claims_to_lapse(world: World, wired: list[tuple[str, str]],
                                                     monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    client_id, _ = hooked_client(world, receiver.url)
    event_id = ping(world, client_id)

    def down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(webhook_tasks.deliver_webhook, "apply_async", down)
    assert webhook_tasks.webhook_relay.run() == 0
    with world.db.unit_of_work() as s:
        row = s.get(WebhookEvent, event_id)
        assert row.status == "PENDING" and row.next_attempt_at > utcnow()  # type: ignore[union-attr,operator]


def test_a_direct_delivery_without_claim_works(world: World, wired: list[tuple[str, str]], receiver: Receiver) -> None:
    client_id, _ = hooked_client(world, receiver.url)
    event_id = ping(world, client_id)
    receiver.script = [400]
    assert webhook_tasks.deliver_webhook.run(event_id) == "failed"
    assert webhook_tasks.deliver_webhook.run(event_id) == "already FAILED"
    assert len(receiver.requests) == 1
