"""The dispatcher's HTTP side against a real local receiver (http.server in a thread): what a POST
carries, how answers, redirects, timeouts and refused connections are recorded, and the relay and
delivery tasks run in-process on the unit DB (publishing captured). Hostile receivers are raw
sockets (`Hostile`): one that drips its answer a byte at a time, one that never reads, one whose
headers never end; each POST must be over by its deadline."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from pipeline import credentials, events
from api.receiver import WebhookReceiver
from pipeline.models import Client, WebhookAttempt, WebhookEvent, utcnow
from pipeline.sealing import new_secrets_key
from pipeline.settings import Settings
from pipeline.webhook_outbox import Delivery, outcome_of
from pipeline.webhook_signing import verify_webhook
from pipeline.webhooks import PinnedTarget, configure_webhook
from tests.unit.fakes import World
from workers import webhook_tasks
from workers.app import SWEEP_QUEUE, WEBHOOKS_QUEUE, app, task_name
from workers.webhook_http import MAX_ANSWER_BYTES
from workers.webhook_tasks import USER_AGENT, delivery_s, lease_s, post

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
    assert result.status_code is None and result.error == "ReadTimeout: no complete answer within 0.3 s"


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

    def target(url: str, devnet: bool, resolve_timeout_s: float) -> PinnedTarget:
        seen.append((url, devnet))
        return pinned

    monkeypatch.setattr(webhook_tasks, "delivery_target", target)
    result = post(delivery("https://hooks.example:8443/hooks/T0K3N-path-secret"), devnet=False, timeout_s=5)
    assert result.status_code == 200 and seen == [("https://hooks.example:8443/hooks/T0K3N-path-secret", False)]
    [(path, headers, body)] = receiver.requests
    assert headers["Host"] == "hooks.example:8443" and path == "/hooks/T0K3N-path-secret"
    verify_webhook(SECRET, headers, body)


# --- hostile receivers: the POST's total deadline and the answer's size cap --------------------

class Hostile:
    """A raw-socket receiver: accepts connections and runs `behave(conn)` on each, in a thread;
    `closed_after` is how long after the connection the client hung up, as the server saw it."""

    def __init__(self, behave: Any) -> None:
        self.behave = behave
        self.closed_after: list[float] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks/T0K3N-path-secret"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        started = time.monotonic()
        with conn:
            try:
                self.behave(conn, self.stop)
            except OSError:
                pass
            self.closed_after.append(time.monotonic() - started)

    def __enter__(self) -> "Hostile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.close()


def read_request(conn: socket.socket) -> None:
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = conn.recv(65536)
        if not chunk:
            return
        got += chunk


def drip(answer: bytes, every_s: float = 0.1, for_s: float = 15.0) -> Any:
    """Read the request, then send `answer` one byte per `every_s` (repeating its last line) for up
    to `for_s`: every single read on the client's side gets a byte well within any read timeout."""
    def behave(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        ends = time.monotonic() + for_s
        stream = iter(answer)
        while time.monotonic() < ends and not stop.is_set():
            byte = next(stream, None)
            conn.sendall(bytes([byte if byte is not None else ord("a")]))  # fails soon after the client hung up
            time.sleep(every_s)
    return behave


def timed_post(url: str, timeout_s: float, body: bytes = BODY) -> tuple[float, Any]:
    started = time.monotonic()
    result = post(Delivery("ev_01J0000000000000000000000A", "cli_01J0000000000000000000000A", 0, None, url, body,
                           SECRET), devnet=True, timeout_s=timeout_s)
    return time.monotonic() - started, result


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + b"X-Slow: ",  # a header that never ends
    b"HTTP/1.1 200 OK\r\n" + b"X-Slow: a\r\n" * 500 + b"\r\n",  # headers that would end, in 100 s
    b"HTTP/1.1 200 O",  # the status line itself (its reason phrase goes on and on)
])
def test_a_receiver_that_drips_its_answer_is_abandoned_at_the_deadline(answer: bytes) -> None:
    with Hostile(drip(answer)) as hostile:
        elapsed, result = timed_post(hostile.url, timeout_s=1)
        assert 1 <= elapsed < 2, f"the POST took {elapsed:.1f} s for a 1 s deadline"
        assert result.status_code is None and result.error == "ReadTimeout: no complete answer within 1 s"
        assert not result.permanent and 1000 <= result.latency_ms < 2000
        deadline = time.monotonic() + 3
        while not hostile.closed_after and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hostile.closed_after and hostile.closed_after[0] < 2.5  # the connection was dropped, not left open


def test_a_receiver_that_never_reads_the_body_is_abandoned_at_the_deadline() -> None:
    def never_read(conn: socket.socket, stop: threading.Event) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stop.wait(15)

    with Hostile(never_read) as hostile:
        elapsed, result = timed_post(hostile.url, timeout_s=1, body=b"x" * 64_000_000)
    assert 1 <= elapsed < 2, f"the POST took {elapsed:.1f} s for a 1 s deadline"
    assert result.status_code is None and result.error == "WriteTimeout: no complete answer within 1 s"


def test_an_answer_whose_head_outgrows_the_cap_is_an_error_not_read_on() -> None:
    line = b"X-Pad: " + b"a" * 200 + b"\r\n"

    def big_head(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        # About 40 KiB of valid headers: over the cap, under h11's own 100 KiB limit.
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + line * (MAX_ANSWER_BYTES // len(line) + 40)
                     + b"Content-Length: 0\r\n\r\n")
        stop.wait(15)

    with Hostile(big_head) as hostile:
        elapsed, result = timed_post(hostile.url, timeout_s=5)
    assert elapsed < 2 and result.status_code is None
    assert result.error == (f"ReadError: the answer's status line and headers are longer than {MAX_ANSWER_BYTES} "
                            "bytes")


def test_an_answer_with_a_long_body_is_its_status_code(receiver: Receiver) -> None:
    receiver.script = [201]  # the test receiver sends 100 kB of body, more than the cap: never read
    elapsed, result = timed_post(receiver.url, timeout_s=5)
    assert (result.status_code, result.error) == (201, None) and elapsed < 2


def test_a_delivery_to_a_dripping_receiver_is_recorded_as_a_retry_with_one_error_line(
        world: World, wired: list[tuple[str, str]]) -> None:
    with Hostile(drip(b"HTTP/1.1 200 OK\r\nX-Slow: ")) as hostile:
        client_id, _ = hooked_client(world, hostile.url)
        event_id = ping(world, client_id)
        assert webhook_tasks.webhook_relay.run() == 1
        started = time.monotonic()
        assert webhook_tasks.deliver_webhook.run(*wired[0]) == "retry"
        assert time.monotonic() - started < 3  # PARATRO_WEBHOOK_TIMEOUT_S=2 in `wired`
    with world.db.unit_of_work() as s:
        [attempt] = s.scalars(select(WebhookAttempt).where(WebhookAttempt.event_id == event_id))
        assert (attempt.status_code, attempt.outcome) == (None, "retry")
        assert attempt.error == "ReadTimeout: no complete answer within 2 s" and 2000 <= attempt.latency_ms < 3000
        row = s.get(WebhookEvent, event_id)
        assert row.status == "PENDING" and row.last_error == attempt.error  # type: ignore[union-attr]


def test_a_claim_with_less_than_a_delivery_left_is_not_used(world: World, wired: list[tuple[str, str]],
                                                            receiver: Receiver,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    client_id, _ = hooked_client(world, receiver.url)
    event_id = ping(world, client_id)
    assert webhook_tasks.webhook_relay.run() == 1
    settings = world.settings  # type: ignore[attr-defined]
    late = utcnow() + timedelta(seconds=lease_s(settings) - delivery_s(settings) + 1)  # the task ran late
    monkeypatch.setattr(webhook_tasks, "utcnow", lambda: late)
    assert webhook_tasks.deliver_webhook.run(*wired[0]) == "too little of the claim left to deliver (the next claim will)"
    assert receiver.requests == []
    with world.db.unit_of_work() as s:  # still claimed; the relay takes it again when the lease ends
        assert s.get(WebhookEvent, event_id).next_attempt_at.isoformat() == wired[0][1]  # type: ignore[union-attr]


@pytest.mark.parametrize("timeout_s", [0.5, 1, 10, 60])
def test_the_lease_leaves_a_whole_delivery_after_the_queue_wait(timeout_s: float) -> None:
    settings = Settings(_env_file=None, webhook_timeout_s=timeout_s)  # type: ignore[call-arg]
    assert delivery_s(settings) > timeout_s + webhook_tasks.resolve_timeout_s(settings)  # room for the DB too
    assert lease_s(settings) - delivery_s(settings) >= delivery_s(settings) + webhook_tasks.QUEUE_ROOM_S


def test_the_relay_runs_on_the_sweeper_queue_not_behind_deliveries() -> None:
    route = app.amqp.router.route({}, task_name("webhook_relay"))
    assert route["queue"].name == SWEEP_QUEUE
    assert app.amqp.router.route({}, task_name("deliver_webhook"))["queue"].name == WEBHOOKS_QUEUE


def test_a_delivery_before_the_receiver_has_its_secret_is_refused_for_good() -> None:
    with WebhookReceiver() as shipped:
        _, result = timed_post(shipped.url, timeout_s=5)
    assert result.status_code == 401 and outcome_of(result.status_code) == "failed"  # 401 is final, not retried
    assert "retried" not in " ".join((WebhookReceiver.__doc__ or "").split()).replace("not retried", "")


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
