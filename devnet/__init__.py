"""Local services for the demo and the integration tests: real nodes on free loopback ports.

Each service is a context manager that starts a real process in its own process group, waits
until it answers (polling, not sleeping), and on exit stops it (SIGTERM, then SIGKILL) and
removes its temporary files:

    from devnet import AnvilNode, RedisServer, PostgresServer

    with RedisServer() as redis, PostgresServer() as pg, AnvilNode(chain_id=31337) as anvil:
        ...  # redis.url, pg.url (SQLAlchemy), anvil.rpc_url

Names are imported lazily so that ``import devnet`` stays cheap (devnet.token imports web3).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "free_port": "devnet.ports",
    "ManagedProcess": "devnet.processes",
    "ProcessStartError": "devnet.processes",
    "AnvilNode": "devnet.anvil",
    "AnvilError": "devnet.anvil",
    "ensure_anvil": "devnet.anvil",
    "RedisServer": "devnet.redis_server",
    "ensure_redis_server": "devnet.redis_server",
    "PostgresServer": "devnet.postgres",
    "ensure_postgres": "devnet.postgres",
    "TronNode": "devnet.tron_node",
    "BitcoinNode": "devnet.bitcoin_node",
    "SolanaNode": "devnet.solana_node",
    "start_node": "devnet.nodes",
    "deploy_token": "devnet.token",
    "mint": "devnet.token",
    "token_balance": "devnet.token",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'devnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
