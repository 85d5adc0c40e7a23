"""Fixtures for the API's unit tests: the real app on a real uvicorn server (in a thread), a real
redis-server, and the unit tests' migrated SQLite file; no worker, no devnet nodes.

The app gets its settings and StepContext passed in (create_app(settings=..., context=...)), so
nothing here touches the process environment. Test modules import the fixtures they use.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from api.app import create_app
from api.signing import sign_request
from api.client import ParatroClient
from api.server import ServerHandle, serve_in_thread
from chains import get_adapter
from chains.registry import Registry
from pipeline import credentials
from pipeline.db import Database
from pipeline.sealing import SecretBox, new_secrets_key
from pipeline.settings import Settings
from pipeline.steps import StepContext
from signer.local import LocalKeySigner


@dataclass
class Tenant:
    client_id: str
    api_key: str
    api_secret: str


@dataclass
class ApiUnderTest:
    server: ServerHandle
    settings: Settings
    ctx: StepContext
    box: SecretBox

    @property
    def url(self) -> str:
        return self.server.base_url + "/api/v1"

    def tenant(self, max_wallets: int = 100) -> Tenant:
        with self.ctx.db.unit_of_work() as session:
            client, secret = credentials.create_client(session, self.box, f"tenant {secrets.token_hex(3)}", max_wallets)
            return Tenant(client.client_id, client.api_key_id, secret)

    def client(self, tenant: Tenant) -> ParatroClient:
        return ParatroClient(self.url, tenant.api_key, tenant.api_secret)


def signed_headers(tenant: Tenant, method: str, target: str, body: bytes = b"", *, timestamp: int | None = None,
                   nonce: str | None = None, secret: str | None = None) -> dict[str, str]:
    """The four X-Paratro-* headers for one request, computed by the server's own function."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(12)
    return {"X-Paratro-Key": tenant.api_key, "X-Paratro-Timestamp": stamp, "X-Paratro-Nonce": nonce,
            "X-Paratro-Signature": sign_request(secret or tenant.api_secret, stamp, nonce, method, target, body)}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from devnet.redis_server import RedisServer

    with RedisServer() as server:
        yield server.url


def serve(db: Database, registry: Registry, signer: LocalKeySigner, broker_url: str, **overrides: object) -> ApiUnderTest:
    key = new_secrets_key()
    # Tests share one Redis per module and all call from 127.0.0.1: failure throttling is off
    # unless a test turns it on (test_api_auth.py tests it).
    throttle: dict[str, object] = {"api_auth_failures_per_ip_per_min": 100_000,
                                   "api_auth_failures_per_key_per_min": 100_000}
    settings = Settings(database_url=db.url, broker_url=broker_url, chain_registry="devnet", secrets_key=key,
                        rpc_urls={}, **{**throttle, **overrides})  # type: ignore[arg-type]
    ctx = StepContext(db=db, registry=registry, adapter_for=lambda chain: get_adapter(registry.chain(chain)),
                      signer=signer)
    handle = serve_in_thread(create_app(settings=settings, context=lambda: ctx))
    return ApiUnderTest(handle, settings, ctx, SecretBox(key))


@pytest.fixture
def api(db: Database, registry: Registry, local_signer: LocalKeySigner, redis_url: str) -> Iterator[ApiUnderTest]:
    under_test = serve(db, registry, local_signer, redis_url, api_rate_limit_per_min=10_000)
    try:
        yield under_test
    finally:
        under_test.server.stop()
