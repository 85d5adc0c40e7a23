"""Signed requests against the real stack (its database on SQLite and PostgreSQL, its Redis): each
way to fail authentication is one 401, the per-client rate limit answers 429 with Retry-After, and
so do failed signature checks beyond their limit, before the key is looked up.
(Every case in detail, with a unit database: tests/unit/test_api_auth.py.)"""

from __future__ import annotations

import secrets
import time

import httpx

from api.signing import sign_request
from pipeline.settings import get_settings
from tests.integration.api_fixtures import Api, Tenant, api  # noqa: F401

TARGET = "/api/v1/wallets?limit=2"


def headers_for(tenant: Tenant, *, secret: str | None = None, timestamp: int | None = None, nonce: str | None = None,
                key: str | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(16)
    return {"X-Paratro-Key": key or tenant.api_key, "X-Paratro-Timestamp": stamp, "X-Paratro-Nonce": nonce,
            "X-Paratro-Signature": sign_request(secret or tenant.api_secret, stamp, nonce, "GET", TARGET, b"")}


def test_each_authentication_failure_is_the_same_401(api: Api) -> None:
    tenant = api.new_tenant("auth cases")
    good = headers_for(tenant)
    url = api.server.base_url + TARGET
    assert httpx.get(url, headers=good).status_code == 200
    window = get_settings().api_signature_window_s
    cases = {
        "missing signature": {k: v for k, v in headers_for(tenant).items() if k != "X-Paratro-Signature"},
        "missing key": {k: v for k, v in headers_for(tenant).items() if k != "X-Paratro-Key"},
        "bad signature": headers_for(tenant, secret="not the secret"),
        "stale timestamp": headers_for(tenant, timestamp=int(time.time()) - window - 10),
        "replayed nonce": good,
        "unknown key": headers_for(tenant, key="ak_" + secrets.token_hex(12)),
        "malformed nonce": headers_for(tenant, nonce="short"),
    }
    for name, headers in cases.items():
        answer = httpx.get(url, headers=headers)
        assert (answer.status_code, answer.json()["error"]["code"], answer.json()["error"]["field"]) == (
            401, "unauthorized", None), name
    assert len({httpx.get(url, headers=h).text for h in cases.values()}) == 1  # nothing says which check failed


def test_beyond_the_rate_limit_the_client_gets_429_with_retry_after(api: Api) -> None:
    server = api.serve(api_rate_limit_per_min=2)
    try:
        tenant = api.new_tenant("rate limited", base_url=server.base_url + "/api/v1")
        bystander = api.new_tenant("bystander", base_url=server.base_url + "/api/v1")
        statuses = [tenant.client.request("GET", "chains") for _ in range(3)]
        refused = next((a for a in statuses if a.status_code == 429), None)
        if refused is None:  # the minute turned over between the calls: the next three fill a fresh one
            refused = [tenant.client.request("GET", "chains") for _ in range(3)][-1]
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert bystander.client.request("GET", "chains").status_code == 200  # per client
    finally:
        server.stop()


def test_failed_signatures_beyond_the_limit_get_429_before_the_lookup(api: Api) -> None:
    server = api.serve(api_auth_failures_per_key_per_min=3)
    try:
        url = server.base_url + TARGET
        tenant = api.new_tenant("attacked", base_url=server.base_url + "/api/v1")
        bystander = api.new_tenant("bystander", base_url=server.base_url + "/api/v1")
        for _ in range(3):  # another round only if the minute turned over in the middle of one
            minute = int(time.time() // 60)
            guesses = [httpx.get(url, headers=headers_for(tenant, secret="guess")).status_code for _ in range(3)]
            refused = httpx.get(url, headers=headers_for(tenant))  # even a good signature: it is not checked
            again = tenant.client.request("GET", "chains").status_code
            if int(time.time() // 60) == minute:
                break
        assert set(guesses) <= {401, 429}  # 401s, or already limited in a round that followed a turned-over one
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert again == 429
        assert httpx.get(url, headers=headers_for(bystander)).status_code == 200  # other keys are served
    finally:
        server.stop()
