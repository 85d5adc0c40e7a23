"""Signed requests through the real app on a real server with a real Redis: every way a request
can fail authentication is the same 401, a nonce is spent only by a valid request, the rate limit
answers 429 with Retry-After, and Redis down fails closed with 503."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time

import httpx
import pytest

from api.client import ParatroAPIError, ParatroClient, sign_request
from api.auth import Caller, Guard
from api.errors import ApiError
from pipeline import credentials
from pipeline.db import Database
from chains.registry import Registry
from signer.local import LocalKeySigner
from tests.unit.api_support import ApiUnderTest, Tenant, api, redis_url, serve, signed_headers  # noqa: F401

UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "the request is not signed with valid Paratro credentials",
                          "field": None}}


def get(api: ApiUnderTest, target: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(api.server.base_url + target, headers=headers)


def test_a_signed_request_is_served_and_the_client_signs_like_the_server(api: ApiUnderTest) -> None:
    tenant = api.tenant()
    with api.client(tenant) as client:
        chains = client.chains()
    assert "ethereum" in {chain["chain"] for chain in chains}
    # one function signs for the client and verifies for the server: check it against the spec's string
    spec_string = "1700000000\nnonce-123\nPOST\n/api/v1/x?a=1\n" + hashlib.sha256(b"{}").hexdigest()
    assert sign_request("s3cret", "1700000000", "nonce-123", "post", "/api/v1/x?a=1", b"{}") == \
        hmac.new(b"s3cret", spec_string.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("missing", ["X-Paratro-Key", "X-Paratro-Timestamp", "X-Paratro-Nonce", "X-Paratro-Signature"])
def test_a_missing_header_is_unauthorized(api: ApiUnderTest, missing: str) -> None:
    tenant = api.tenant()
    headers = signed_headers(tenant, "GET", "/api/v1/chains")
    del headers[missing]
    answer = get(api, "/api/v1/chains", headers)
    assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)


@pytest.mark.parametrize("nonce", ["short7x", "x" * 65, "has space1", "bad/chars!", "ünïcode-nonce"])
def test_a_malformed_nonce_is_unauthorized(api: ApiUnderTest, nonce: str) -> None:
    tenant = api.tenant()
    headers = signed_headers(tenant, "GET", "/api/v1/chains", nonce="placeholder-nonce")
    headers["X-Paratro-Nonce"] = nonce
    stamp = headers["X-Paratro-Timestamp"]
    headers["X-Paratro-Signature"] = sign_request(tenant.api_secret, stamp, nonce, "GET", "/api/v1/chains", b"")
    answer = httpx.get(api.server.base_url + "/api/v1/chains",
                       headers={k: v.encode() if k == "X-Paratro-Nonce" else v for k, v in headers.items()})
    assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)


def test_a_wrong_signature_unknown_key_or_uppercase_hex_is_unauthorized(api: ApiUnderTest) -> None:
    tenant = api.tenant()
    wrong_secret = signed_headers(tenant, "GET", "/api/v1/chains", secret="not-the-secret")
    unknown_key = {**signed_headers(tenant, "GET", "/api/v1/chains"), "X-Paratro-Key": "ak_" + "0" * 24}
    upper = signed_headers(tenant, "GET", "/api/v1/chains")
    upper["X-Paratro-Signature"] = upper["X-Paratro-Signature"].upper()
    other_method = signed_headers(tenant, "POST", "/api/v1/chains")
    for headers in (wrong_secret, unknown_key, upper, other_method):
        answer = get(api, "/api/v1/chains", headers)
        assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)


def test_the_timestamp_must_be_within_the_window(api: ApiUnderTest) -> None:
    tenant = api.tenant()
    window = api.settings.api_signature_window_s
    now = int(time.time())
    for stamp, status in ((now - window - 5, 401), (now + window + 5, 401), (now - window + 5, 200), (now + 20, 200)):
        answer = get(api, "/api/v1/chains", signed_headers(tenant, "GET", "/api/v1/chains", timestamp=stamp))
        assert answer.status_code == status, stamp - now


def test_a_replayed_request_is_refused_but_a_forged_one_does_not_burn_the_nonce(api: ApiUnderTest) -> None:
    tenant = api.tenant()
    forged = signed_headers(tenant, "GET", "/api/v1/chains", nonce="the-nonce-1", secret="guessing")
    assert get(api, "/api/v1/chains", forged).status_code == 401
    genuine = signed_headers(tenant, "GET", "/api/v1/chains", nonce="the-nonce-1")
    assert get(api, "/api/v1/chains", genuine).status_code == 200
    replay = get(api, "/api/v1/chains", genuine)
    assert (replay.status_code, replay.json()) == (401, UNAUTHORIZED)
    # the same nonce under another key is that key's own
    other = api.tenant()
    assert get(api, "/api/v1/chains", signed_headers(other, "GET", "/api/v1/chains", nonce="the-nonce-1")).status_code == 200


def test_the_signature_covers_the_raw_query_and_the_body(api: ApiUnderTest) -> None:
    tenant = api.tenant()
    target = "/api/v1/transactions?status=PENDING&limit=5"
    assert get(api, target, signed_headers(tenant, "GET", target)).status_code == 200
    reordered = signed_headers(tenant, "GET", target)
    assert get(api, "/api/v1/transactions?limit=5&status=PENDING", reordered).status_code == 401
    # the client percent-encodes a query value; what it signs is what the server reads
    with api.client(tenant) as client:
        with pytest.raises(ParatroAPIError) as refused:
            client.list_transactions(chain="no such chain/é")
    assert (refused.value.status, refused.value.code, refused.value.field) == (422, "unknown_chain", "chain")
    body = json.dumps({"wallet_name": "signed"}).encode()
    headers = {**signed_headers(tenant, "POST", "/api/v1/wallets", body), "Content-Type": "application/json"}
    tampered = httpx.post(api.server.base_url + "/api/v1/wallets", content=body.replace(b"signed", b"forged"),
                          headers=headers)
    assert (tampered.status_code, tampered.json()) == (401, UNAUTHORIZED)


def test_refusals_answer_nothing_about_the_request_before_authentication(api: ApiUnderTest) -> None:
    """No auth: bad JSON, unknown routes and wrong methods all look the same."""
    for method, target, body in (("POST", "/api/v1/transactions", b"{not json"), ("GET", "/api/v1/no/such/route", b""),
                                 ("DELETE", "/api/v1/chains", b"")):
        answer = httpx.request(method, api.server.base_url + target, content=body)
        assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED)


def test_a_rotated_secret_stops_working_at_once(api: ApiUnderTest) -> None:
    tenant = api.tenant()
    with api.ctx.db.unit_of_work() as session:
        _, new_secret = credentials.rotate_secret(session, api.box, tenant.client_id)
    assert get(api, "/api/v1/chains", signed_headers(tenant, "GET", "/api/v1/chains")).status_code == 401
    rotated = Tenant(tenant.client_id, tenant.api_key, new_secret)
    assert get(api, "/api/v1/chains", signed_headers(rotated, "GET", "/api/v1/chains")).status_code == 200


def test_health_ready_and_openapi_need_no_signature(api: ApiUnderTest) -> None:
    for target in ("/api/v1/health", "/health", "/openapi.json"):
        assert httpx.get(api.server.base_url + target).status_code == 200, target
    spec = httpx.get(api.server.base_url + "/openapi.json").json()
    assert {"ParatroKey", "ParatroTimestamp", "ParatroNonce", "ParatroSignature"} <= set(spec["components"]["securitySchemes"])


def test_a_body_over_the_limit_is_refused_before_anything_else(api: ApiUnderTest) -> None:
    tenant = api.tenant()
    body = b'{"wallet_name": "' + b"x" * 70_000 + b'"}'
    headers = {**signed_headers(tenant, "POST", "/api/v1/wallets", body), "Content-Type": "application/json"}
    answer = httpx.post(api.server.base_url + "/api/v1/wallets", content=body, headers=headers)
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "payload_too_large")


def test_beyond_the_rate_limit_429_with_retry_after_per_client(db: Database, registry: Registry,
                                                               local_signer: LocalKeySigner, redis_url: str) -> None:
    limited = serve(db, registry, local_signer, redis_url, api_rate_limit_per_min=3)
    try:
        tenant, other = limited.tenant(), limited.tenant()
        with limited.client(tenant) as client, limited.client(other) as bystander:
            answers = [client.request("GET", "chains") for _ in range(4)]
            assert [a.status_code for a in answers[:3]] in ([200] * 3, [200, 200, 429])  # a minute may turn over
            refused = next((a for a in answers if a.status_code == 429), None)
            if refused is None:  # the window turned over mid-way: the next three fill the new one
                refused = [client.request("GET", "chains") for _ in range(3)][-1]
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            assert bystander.request("GET", "chains").status_code == 200
    finally:
        limited.server.stop()


def test_redis_down_fails_closed_with_503(db: Database, registry: Registry, local_signer: LocalKeySigner) -> None:
    from devnet.ports import free_port

    nowhere = serve(db, registry, local_signer, f"redis://127.0.0.1:{free_port()}/0")
    try:
        tenant = nowhere.tenant()
        with nowhere.client(tenant) as client, pytest.raises(ParatroAPIError) as refused:
            client.chains()
        assert (refused.value.status, refused.value.code) == (503, "unavailable")
        assert refused.value.retry_after is not None
        assert httpx.get(nowhere.server.base_url + "/health").status_code == 200
    finally:
        nowhere.server.stop()


def test_the_refusal_reason_is_logged_without_secrets(api: ApiUnderTest, capfd: pytest.CaptureFixture[str]) -> None:
    tenant = api.tenant()
    headers = signed_headers(tenant, "GET", "/api/v1/chains", secret="wrong")
    assert get(api, "/api/v1/chains", headers).status_code == 401
    time.sleep(0.1)
    logged = "".join(capfd.readouterr())
    assert "signature mismatch" in logged and tenant.api_key in logged
    assert tenant.api_secret not in logged and headers["X-Paratro-Signature"] not in logged


def test_the_client_refuses_float_amounts_and_hides_its_secret(api: ApiUnderTest) -> None:
    tenant = api.tenant()
    client = ParatroClient(api.url, tenant.api_key, tenant.api_secret)
    with pytest.raises(TypeError):
        client.create_transaction("a", "b", "ethereum", "ETH", 0.1, idempotency_key="k")  # type: ignore[arg-type]
    assert tenant.api_secret not in repr(client) and tenant.api_secret not in repr(client._http.auth)
    client.close()


def test_a_client_without_a_sealed_secret_cannot_sign_until_it_rotates(api: ApiUnderTest) -> None:
    from pipeline.models import Client

    tenant = api.tenant()
    with api.ctx.db.unit_of_work() as session:
        legacy = session.get(Client, tenant.client_id)
        legacy.api_secret_sealed, legacy.api_secret_hash = None, "pbkdf2:legacy"  # type: ignore[union-attr]
    assert get(api, "/api/v1/chains", signed_headers(tenant, "GET", "/api/v1/chains")).status_code == 401
    with api.ctx.db.unit_of_work() as session:
        _, secret = credentials.rotate_secret(session, api.box, tenant.client_id)
    rotated = Tenant(tenant.client_id, tenant.api_key, secret)
    assert get(api, "/api/v1/chains", signed_headers(rotated, "GET", "/api/v1/chains")).status_code == 200


# -- failed checks are throttled before the key lookup -------------------------------------------

class Lookups:
    """A KeyLookup over fixed callers that counts its calls (each one is a DB read and a decrypt)."""

    def __init__(self, callers: dict[str, str]) -> None:
        self.callers, self.calls = callers, 0

    def __call__(self, api_key: str) -> Caller | None:
        self.calls += 1
        secret = self.callers.get(api_key)
        return None if secret is None else Caller("cl_" + api_key, secret)


def scope_of(api_key: str, secret: str, address: str | None, stamp: int, nonce: str | None = None) -> dict[str, object]:
    nonce = nonce or secrets.token_urlsafe(12)
    headers = {"x-paratro-key": api_key, "x-paratro-timestamp": str(stamp), "x-paratro-nonce": nonce,
               "x-paratro-signature": sign_request(secret, str(stamp), nonce, "GET", "/api/v1/chains", b"")}
    scope: dict[str, object] = {"type": "http", "method": "GET", "path": "/api/v1/chains",
                                "raw_path": b"/api/v1/chains", "query_string": b"",
                                "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    if address is not None:
        scope["client"] = (address, 40000)
    return scope


def test_failed_checks_are_throttled_per_address_and_per_key_before_the_lookup(redis_url: str) -> None:
    victim, other = "ak_" + secrets.token_hex(8), "ak_" + secrets.token_hex(8)
    lookups = Lookups({victim: "victim-secret", other: "other-secret"})
    now = 1_800_000_000 + secrets.randbelow(10_000) * 60 + 17.5  # a fixed clock: 42.5 s left in its minute
    guard = Guard(redis_url, 300, 10_000, lookups, clock=lambda: now, failures_per_ip=3, failures_per_key=5)
    net = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    a, b, c, d, e, f = (f"{net}.{host}" for host in range(1, 7))
    stamp = int(now)

    async def outcome(scope: dict[str, object]) -> object:
        try:
            return await guard.authenticate(scope, b"")
        except ApiError as refused:
            return (refused.status, refused.code, refused.headers.get("Retry-After"))

    async def scenario() -> None:
        throttled = (429, "rate_limited", "43")
        # one address: three wrong signatures cost three lookups, then it is refused before the lookup
        for _ in range(3):
            assert (await outcome(scope_of(victim, "guess", a, stamp)))[:2] == (401, "unauthorized")
        assert lookups.calls == 3
        assert await outcome(scope_of(victim, "victim-secret", a, stamp)) == throttled
        assert await outcome(scope_of(other, "other-secret", a, stamp)) == throttled  # any key, from there
        assert lookups.calls == 3
        # ... but that one address did not lock the victim out elsewhere
        assert await outcome(scope_of(victim, "victim-secret", b, stamp)) == "cl_" + victim
        # failures from several addresses add up per key: at 5 the key is refused from everywhere
        for address in (b, c):
            assert (await outcome(scope_of(victim, "guess", address, stamp)))[0] == 401
        calls = lookups.calls
        assert await outcome(scope_of(victim, "victim-secret", d, stamp)) == throttled
        assert await outcome(scope_of(victim, "victim-secret", None, stamp)) == throttled  # no address: the key's
        assert await outcome(scope_of(other, "other-secret", d, stamp)) == "cl_" + other  # other keys are fine
        assert lookups.calls == calls + 1
        # unknown key ids count per address too (enumeration)
        for _ in range(3):
            assert (await outcome(scope_of("ak_" + secrets.token_hex(8), "x", e, stamp)))[0] == 401
        assert (await outcome(scope_of("ak_" + secrets.token_hex(8), "x", e, stamp))) == throttled
        # cheap refusals (stale timestamp, malformed header) are neither looked up nor counted
        calls = lookups.calls
        for _ in range(5):
            assert (await outcome(scope_of(victim, "victim-secret", f, stamp - 3600)))[0] == 401
            assert (await outcome(scope_of(victim, "victim-secret", f, stamp, nonce="bad")))[0] == 401
        assert lookups.calls == calls
        assert await outcome(scope_of(other, "other-secret", f, stamp)) == "cl_" + other
        # a replayed nonce is a failure after the lookup: counted
        replay = scope_of(other, "other-secret", f, stamp)
        assert await outcome(replay) == "cl_" + other
        assert (await outcome(replay))[0] == 401
        await guard.aclose()

    asyncio.run(scenario())
    # the next minute starts clean
    now += 60
    guard2 = Guard(redis_url, 300, 10_000, lookups, clock=lambda: now, failures_per_ip=3, failures_per_key=5)

    async def next_minute() -> object:
        try:
            return await guard2.authenticate(scope_of(victim, "victim-secret", a, int(now)), b"")
        finally:
            await guard2.aclose()

    assert asyncio.run(next_minute()) == "cl_" + victim


def test_through_the_server_failed_signatures_turn_into_429_for_that_key(db: Database, registry: Registry,
                                                                          local_signer: LocalKeySigner,
                                                                          redis_url: str) -> None:
    throttled = serve(db, registry, local_signer, redis_url, api_auth_failures_per_key_per_min=3)
    try:
        tenant, bystander = throttled.tenant(), throttled.tenant()
        with throttled.client(tenant) as client, throttled.client(bystander) as other:
            for _ in range(2):  # a second round only if the minute turned over in the middle of the first
                for _ in range(3):
                    forged = signed_headers(tenant, "GET", "/api/v1/chains", secret="guessing")
                    assert get(throttled, "/api/v1/chains", forged).status_code == 401
                refused = client.request("GET", "chains")
                if refused.status_code == 429:
                    break
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            with pytest.raises(ParatroAPIError) as caught:
                client.chains()
            assert (caught.value.status, caught.value.code) == (429, "rate_limited")
            assert caught.value.retry_after is not None and caught.value.retry_after >= 1
            assert other.request("GET", "chains").status_code == 200
    finally:
        throttled.server.stop()
