"""Which code serves which chain family: adapter classes and offline address checks, by name.

Entries are "module:attribute" strings imported on first use, so that `import chains` (and loading
a registry) stays cheap and a worker only imports the SDKs of the families it serves. Adding a
family (tron, bitcoin, solana) is one line in each table.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from chains.errors import UnknownChain

ADAPTERS: dict[str, str] = {
    "evm": "chains.evm:EvmAdapter",
    "tron": "chains.tron:TronAdapter",
    "bitcoin": "chains.bitcoin:BitcoinAdapter",
    "solana": "chains.solana:SolanaAdapter",
}

# Pure address checks: (address, chain_name) -> normalized address, or raise InvalidAddress.
ADDRESS_VALIDATORS: dict[str, str] = {
    "evm": "chains.evm_address:validate_address",
    "solana": "chains.solana_address:validate_address",
    "bitcoin": "chains.bitcoin_address:validate_address",
    "tron": "chains.tron_address:validate_address",
}

# Destination policy on top of the format check: (address, chain_name, token_contract) -> address.
DESTINATION_CHECKS: dict[str, str] = {
    "evm": "chains.evm_address:check_destination",
    "solana": "chains.solana_address:check_destination",
    "bitcoin": "chains.bitcoin_address:check_destination",
    "tron": "chains.tron_address:check_destination",
}


def _load(table: dict[str, str], family: str, what: str) -> Any:
    try:
        target = table[family]
    except KeyError:
        raise UnknownChain(f"chain family {family!r} has no {what} yet (have: {', '.join(sorted(table))})") from None
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def adapter_class(family: str) -> type:
    return _load(ADAPTERS, family, "adapter")


def address_validator(family: str) -> Callable[[object, str], str]:
    return _load(ADDRESS_VALIDATORS, family, "address validator")


def destination_check(family: str) -> Callable[[object, str, str | None], str]:
    return _load(DESTINATION_CHECKS, family, "destination check")
