"""One node per proof: every read of a multi-read proof is answered by the same endpoint.

Why: a proof such as "expired and not on chain" or "inputs still unspent at the tip" reads several
things in an order a lagging node cannot fool (chains/base.py `ChainAdapter.get_status`,
`proves_unlandable`). The argument holds for the answers of one node. With an endpoint pool
(chains/failover.py) each read may fail over, so the reads of one proof could be answered by two
nodes at different heights, and the ordering argument no longer holds. Inside `one_endpoint(...)`
the reads of this thread on each pool go to the endpoint that answered the first of them, with no
failover: a transport failure midway raises ChainRpcError, and the caller (the pipeline) asks the
whole proof again, which may then start on another endpoint. Failing over between whole proofs is
fine; mixing answers inside one is not.

A client that is not an endpoint pool (a single-node client, a test's in-process node) already
has one endpoint: nothing to pin. Pinning sends no request, so one endpoint costs exactly the
requests it cost before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from chains.failover import PooledClient


@contextlib.contextmanager
def one_endpoint(*clients: object) -> Iterator[None]:
    """Pin each endpoint pool among `clients` for this thread (`PooledClient.pinned`); a client
    given twice, or already pinned by an outer proof, keeps the outer pin."""
    with contextlib.ExitStack() as stack:
        for client in clients:
            if isinstance(client, PooledClient):
                stack.enter_context(client.pinned())
        yield
