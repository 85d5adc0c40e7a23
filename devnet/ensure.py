"""`python -m devnet.ensure redis postgres anvil`: install the local services' binaries if missing.

Called by `make demo` / `make test` before anything starts, so a missing tool fails early with an
instruction instead of half-way through a run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from devnet.anvil import ensure_anvil
from devnet.postgres import ensure_postgres
from devnet.redis_server import ensure_redis_server


def main(argv: list[str]) -> int:
    wanted = argv or ["redis", "anvil"]
    actions = {
        "redis": ensure_redis_server,
        "postgres": ensure_postgres,
        "anvil": lambda: ensure_anvil(Path.cwd()),
    }
    for name in wanted:
        if name not in actions:
            print(f"devnet.ensure: unknown service {name!r} (choose from {', '.join(actions)})", file=sys.stderr)
            return 2
        try:
            where = actions[name]()
        except Exception as exc:  # noqa: BLE001 - report any install problem as one line and stop
            print(f"devnet.ensure: {name}: {exc}", file=sys.stderr)
            return 1
        print(f"devnet.ensure: {name} ok ({where})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
