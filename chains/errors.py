"""Errors raised by chain adapters; no SDK exception ever leaves `chains/`.

    ChainError                      base; `transient` says whether a retry can help
    ├── InvalidAddress              the address is malformed for the chain/network (permanent)
    ├── UnknownChain                the chain (or network) is not in the registry (permanent)
    ├── UnknownToken                the token symbol is not configured on the chain (permanent)
    ├── ChainRpcError               the node could not be reached or answered garbage (transient)
    ├── ChainMismatch               the node serves another chain than the registry says (permanent:
    │                               never sign or broadcast for it; fix the configuration)
    ├── InvalidPublicKey            the wallet public key is malformed for the family's curve
    ├── InvalidSignature            the signature is malformed or not by the sender's key
    ├── MalformedTransaction        a stored payload or fee quote cannot be used (a bug or bad data)
    ├── TransactionRejected         the node refused the transaction for good (permanent)
    │                               `reason` is a pipeline failure code such as "insufficient_funds",
    │                               "insufficient_funds_for_fee" or "rejected_by_node"; a replacement
    │                               refused for paying too little is "replacement_underpriced"
    └── BumpRefused                 a fee bump cannot be built (at the chain's fee cap; the change
                                    would fall below dust): the bump fails, never the transfer
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


class ChainMismatch(ChainError):
    """The endpoint answers for a different chain id than the registry entry: a wrong node."""


class InvalidPublicKey(ChainError, ValueError):
    """The public key is not a valid key of the chain family's curve."""


class InvalidSignature(ChainError, ValueError):
    """The signature is malformed, or does not recover to the transaction's sender."""


class MalformedTransaction(ChainError, ValueError):
    """A stored payload or fee quote is not something this adapter built."""


class TransactionRejected(ChainError):
    """The node refused the transaction; retrying the same bytes will not help."""

    def __init__(self, reason: str, detail: str, *, nonce_consumed: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        # True when the refused transaction still used up its account nonce, so the pipeline must
        # not hand that nonce out again (default: a refused transaction leaves the nonce unused).
        self.nonce_consumed = nonce_consumed


class BumpRefused(ChainError):
    """A replacement paying more cannot be built now; `reason` is a short code ("at_fee_cap",
    "change_below_dust"), `detail` says it in words. The transfer keeps its current transaction."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
