"""Errors of the domain. Each says whether retrying can help (`transient`).

    PipelineError
    ├── InvalidInput                 bad caller input; nothing was written        (permanent)
    │   ├── InvalidAmount            not a positive decimal string within the token's decimals
    │   ├── InvalidId                malformed id
    │   ├── UnknownChainError        chain not in the registry
    │   ├── UnknownSymbol            token symbol not on that chain
    │   ├── InvalidAddressError      an address not valid for its chain
    │   └── IdempotencyConflict      same key reused with different transfer fields
    ├── NotFound                     an id that does not exist (or belongs to another client)
    ├── InvalidTransition            a stage change the state machine does not allow
    ├── LimitExceeded                a client limit (max_wallets) would be exceeded
    ├── WalletNotActive              the wallet has no usable key (still GENERATING, or FAILED)
    ├── ConfigurationError           the deployment is misconfigured: settings, registry, schema, keys
    │   └── SchemaNotMigrated        the database lacks the pipeline's tables: run `paratro migrate`
    ├── Superseded                   another driver took the transfer over: write nothing, pass nothing on
    ├── ReplacementLimit             expiry after expiry: hold the transfer for ops instead of re-signing again
    └── TransientError               try again later: DB locked, RPC down, signer busy (transient)
        ├── DatabaseUnavailable      the database cannot be reached or is busy
        └── UnprovenRejection        a send was refused without proof it cannot land: retry, then hold
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of domain errors."""

    transient: bool = False


class InvalidInput(PipelineError, ValueError):
    """The caller's input is wrong; nothing was written."""


class InvalidAmount(InvalidInput):
    """The amount is not a positive decimal string representable in the token's base units."""


class InvalidId(InvalidInput):
    """An id is malformed."""


class UnknownChainError(InvalidInput):
    """The chain is not in the registry."""


class UnknownSymbol(InvalidInput):
    """The token symbol is not configured on the chain."""


class InvalidAddressError(InvalidInput):
    """An address is not valid for its chain (the chain adapter says why)."""


class IdempotencyConflict(InvalidInput):
    """The idempotency key was already used for a transfer with different fields."""


class NotFound(PipelineError, LookupError):
    """No such resource for this client."""


class InvalidTransition(PipelineError):
    """The state machine does not allow this stage change."""


class LimitExceeded(PipelineError):
    """A client limit would be exceeded."""


class Superseded(PipelineError):
    """The run no longer holds the transfer's fencing token (or what it read has changed)."""


class ReplacementLimit(PipelineError):
    """The transfer was re-signed after expiry too many times (every signing refused or unsent):
    held for ops, with its locks, instead of signing forever."""


class TransientError(PipelineError):
    """A retry later can succeed."""

    transient = True


class ConfigurationError(PipelineError):
    """The deployment's configuration is wrong (settings, registry, schema, keys); no retry helps."""


class SchemaNotMigrated(ConfigurationError):
    """The database has no (or an older) pipeline schema."""


class DatabaseUnavailable(TransientError):
    """The database could not be reached, or was too busy to answer."""


class UnprovenRejection(TransientError):
    """The node refused a send, but the chain does not prove the transaction cannot land: retry,
    and when the retries run out hold the transfer for ops rather than fail it."""


class WalletNotActive(PipelineError):
    """The wallet cannot be used yet (key generation still running) or any more (it FAILED)."""
