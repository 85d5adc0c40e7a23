"""The real stack for integration tests: redis-server, anvil, a Celery prefork worker process,
and the database, once on SQLite and once on PostgreSQL (every test here runs on both)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workers.stack import EmbeddedStack, StackOptions

pytestmark = pytest.mark.integration

STACK_CHAINS = ("ethereum", "bsc", "tron", "bitcoin", "solana")
STACK_ENV = {
    # Short deadlines so the sweeper's recovery is observable within a test.
    "PARATRO_SWEEP_INTERVAL_S": "2",
    "PARATRO_STALL_AFTER_S": "8",
    "PARATRO_WEBHOOK_RETRY_SCHEDULE_S": "1,1,2,2,3",  # webhook retries within a test, not over a day
    "PARATRO_WEBHOOK_TIMEOUT_S": "5",  # a receiver that never answers is let go within a test
}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    from devnet.postgres import PostgresServer

    with PostgresServer() as server:
        yield server.url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    options = StackOptions(workdir=tmp_path_factory.mktemp(f"stack-{request.param}"), database_url=database_url,
                           chains=STACK_CHAINS, block_time=0.25, concurrency=4, extra_env=STACK_ENV)
    with EmbeddedStack(options) as running:
        yield running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
