"""The shipped client never puts the same signed bytes on the wire twice: the v1 string to sign
does not cover Idempotency-Key (api.auth), so signed bytes sent again under another key would be a
second transfer. A retry through the client is signed anew (fresh nonce, same Idempotency-Key and
body, checked on a real recording HTTP server); nonces are never reused, even across threads; and
on the real API a request that reached the server cannot be replayed under another key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import select

from api.auth import _NONCE
from api.signing import sign_request
from api.client import ParatroAPIError, ParatroClient, _Signer
from pipeline.models import Transaction
from tests.unit.api_support import ApiUnderTest, api, redis_url, signed_headers  # noqa: F401

SECRET = "the-api-secret"
CREATED = {"transaction_id": "tx_01JAAAAAAAAAAAAAAAAAAAAAAA", "status": "PENDING"}


class Recorder(BaseHTTPRequestHandler):
    """Records each request (method, target, headers, body); answers from `server.answers` in order."""

    server: "RecordingServer"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen.append({"method": self.command, "target": self.path, "body": body,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})
        status, answer = self.server.answers.pop(0)
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: object) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    seen: list[dict[str, object]]
    answers: list[tuple[int, object]]


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    server = RecordingServer(("127.0.0.1", 0), Recorder)
    server.seen, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_retried_transfer_is_signed_anew_with_a_fresh_nonce_and_the_same_idempotency_key(
        recorder: RecordingServer) -> None:
    recorder.answers = [(500, {"error": {"code": "internal_error", "message": "retry it", "field": None}}),
                        (201, CREATED)]
    base = f"http://127.0.0.1:{recorder.server_address[1]}/api/v1"
    with ParatroClient(base, "ak_test", SECRET) as client:
        call = ("0x" + "1f" * 20, "0x" + "2e" * 20, "ethereum", "USDT", "1.5")
        with pytest.raises(ParatroAPIError) as failed:
            client.create_transaction(*call, idempotency_key="order-42")
        assert failed.value.code == "internal_error"
        assert client.create_transaction(*call, idempotency_key="order-42") == CREATED  # the retry
    first, retry = recorder.seen
    for sent in (first, retry):
        headers = sent["headers"]
        assert isinstance(headers, dict) and isinstance(sent["body"], bytes)
        assert headers["idempotency-key"] == "order-42"
        assert _NONCE.fullmatch(headers["x-paratro-nonce"])
        assert headers["x-paratro-signature"] == sign_request(SECRET, headers["x-paratro-timestamp"],
                                                           headers["x-paratro-nonce"], "POST",
                                                           "/api/v1/transactions", sent["body"])
    assert first["body"] == retry["body"] and first["target"] == retry["target"]
    assert first["headers"]["x-paratro-nonce"] != retry["headers"]["x-paratro-nonce"]  # type: ignore[index]
    assert first["headers"]["x-paratro-signature"] != retry["headers"]["x-paratro-signature"]  # type: ignore[index]


def test_a_signer_never_issues_a_nonce_twice_even_from_many_threads() -> None:
    signer = _Signer("ak_test", SECRET)

    def sign(_: int) -> tuple[str, str]:
        request = httpx.Request("POST", "http://127.0.0.1/api/v1/transactions", content=b"{}",
                                headers={"Idempotency-Key": "k"})
        signed = next(signer.auth_flow(request))
        return signed.headers["X-Paratro-Nonce"], signed.headers["X-Paratro-Signature"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        issued = list(pool.map(sign, range(4000)))
    nonces = [nonce for nonce, _ in issued]
    assert len(set(nonces)) == len(nonces) == 4000
    assert len({sig for _, sig in issued}) == 4000
    assert all(_NONCE.fullmatch(nonce) for nonce in nonces)
    # the sequence part makes them unique by construction, not by luck
    assert sorted(int(nonce.rsplit("-", 1)[1], 16) for nonce in nonces) == list(range(1, 4001))


def test_a_signed_request_that_reached_the_api_cannot_be_replayed_under_another_idempotency_key(
        api: ApiUnderTest) -> None:
    tenant = api.tenant()
    body = json.dumps({"from_address": "0x" + "1f" * 20, "to_address": "0x" + "2e" * 20, "chain": "ethereum",
                       "token_symbol": "USDT", "amount": "1.5"}).encode()
    headers = {**signed_headers(tenant, "POST", "/api/v1/transactions", body), "Content-Type": "application/json"}
    url = api.server.base_url + "/api/v1/transactions"
    first = httpx.post(url, content=body, headers={**headers, "Idempotency-Key": "order-1"})
    assert first.status_code == 201, first.text  # recorded (it fails later, in the pipeline: not their address)
    replayed = httpx.post(url, content=body, headers={**headers, "Idempotency-Key": "order-2"})
    assert (replayed.status_code, replayed.json()["error"]["code"]) == (401, "unauthorized")
    with api.ctx.db.unit_of_work() as session:
        keys = session.scalars(select(Transaction.idempotency_key).where(Transaction.client_id == tenant.client_id))
        assert list(keys) == ["order-1"]
