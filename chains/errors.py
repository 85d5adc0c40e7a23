"""Errors raised by chain adapters; no SDK exception ever leaves `chains/`.

    ChainError                      base; `transient` says whether a retry can help
    ├── InvalidAddress              the address is malformed for the chain/network (permanent)
    ├── UnknownChain                the chain (or network) is not in the registry (permanent)
    ├── UnknownToken                the token symbol is not configured on the chain (permanent)
    ├── ChainRpcError               the node could not be reached or answered garbage (transient)
    └── TransactionRejected         the node refused the transaction for good (permanent)
                                    `reason` is a pipeline failure code such as
                                    "insufficient_funds_for_fee" or "rejected_by_node"
"""

from __future__ import annotations


class ChainError(Exception):
    """Base of every adapter error."""

    transient: bool = False


class InvalidAddress(ChainError, ValueError):
    """The address is not valid for the chain; `reason` says why in words."""

    def __init__(self, chain: str, address: str, reason: str) -> None:
        shown = address if len(address) <= 120 else address[:117] + "..."
        super().__init__(f"invalid {chain} address {shown!r}: {reason}")
        self.chain = chain
        self.address = address
        self.reason = reason


class UnknownChain(ChainError, LookupError):
    """The chain is not in the registry."""


class UnknownToken(ChainError, LookupError):
    """The token symbol is not configured for the chain."""


class ChainRpcError(ChainError):
    """The node was unreachable, timed out or answered something unusable."""

    transient = True


class TransactionRejected(ChainError):
    """The node refused the transaction; retrying the same bytes will not help."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
