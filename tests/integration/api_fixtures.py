"""The `api` fixture: the real app on a real uvicorn server (a thread of the test process) in front
of the `stack` fixture's database, Redis, devnets and worker, with the devnet faucet, and a client
of its own signing with the shipped ParatroClient. One server per stack param (session scope).

Use it from a test module with `from tests.integration.api_fixtures import api  # noqa: F401`,
then `api.client` (a ParatroClient for `api.client_id`) or `api.new_tenant()` for another client.
The server's rate limit and failed-check throttle are raised far above the defaults so that tests
and the fuzz are never throttled; the 429 tests build their own app with a tiny limit
(`api.serve(...)`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from api.app import create_app
from api.client import ParatroClient
from api.server import ServerHandle, serve_in_thread
from pipeline import credentials
from pipeline.settings import get_settings
from workers import runtime
from workers.stack import EmbeddedStack

TEST_RATE_LIMIT_PER_MIN = 100_000
# Every test calls from 127.0.0.1 and shares the stack's Redis, so failed-check throttling (api.auth)
# is off unless a test turns it on (`api.serve(api_auth_failures_per_key_per_min=...)`).
NO_FAILURE_THROTTLE = {"api_auth_failures_per_ip_per_min": 100_000, "api_auth_failures_per_key_per_min": 100_000}


@dataclass
class Tenant:
    client_id: str
    api_key: str
    api_secret: str
    client: ParatroClient

    def close(self) -> None:
        self.client.close()


@dataclass
class Api:
    stack: EmbeddedStack
    server: ServerHandle
    tenant: Tenant
    _tenants: list[Tenant] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/api/v1`, what a client is given."""
        return self.server.base_url + "/api/v1"

    @property
    def client(self) -> ParatroClient:
        return self.tenant.client

    @property
    def client_id(self) -> str:
        return self.tenant.client_id

    def new_tenant(self, name: str | None = None, max_wallets: int = 100, base_url: str | None = None) -> Tenant:
        """Another client (fresh credentials) with its own ParatroClient, closed with the fixture."""
        with runtime.context().db.unit_of_work() as session:
            client, secret = credentials.create_client(session, credentials.secret_box(),
                                                       name or f"api test {secrets.token_hex(3)}", max_wallets)
            ids = (client.client_id, client.api_key_id)
        tenant = Tenant(ids[0], ids[1], secret, ParatroClient(base_url or self.base_url, ids[1], secret))
        self._tenants.append(tenant)
        return tenant

    def serve(self, **setting_overrides: Any) -> ServerHandle:
        """Another server on the same stack with some API settings changed (e.g. a tiny rate limit);
        the caller stops it."""
        settings = get_settings().model_copy(update={**NO_FAILURE_THROTTLE, **setting_overrides})
        return serve_in_thread(create_app(settings=settings))

    def close(self) -> None:
        for tenant in self._tenants:
            tenant.close()


def _faucet(stack: EmbeddedStack) -> Any:
    try:
        from workers.faucet import DevnetFaucet
    except ImportError:
        return None
    return DevnetFaucet(runtime.context(), stack.nodes)


@pytest.fixture(scope="session")
def api(stack: EmbeddedStack) -> Iterator[Api]:
    settings = get_settings().model_copy(update={"api_rate_limit_per_min": TEST_RATE_LIMIT_PER_MIN,
                                                 **NO_FAILURE_THROTTLE})
    server = serve_in_thread(create_app(_faucet(stack), settings=settings))
    handle = Api(stack, server, tenant=None)  # type: ignore[arg-type]
    try:
        handle.tenant = handle.new_tenant("api fixture client")
        yield handle
    finally:
        handle.close()
        server.stop()
