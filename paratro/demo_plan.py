"""What the demo sends on each chain: funding, the happy transfers it cycles through, and the
failures it expects (at least one per family), as data.

A failure names the reason the pipeline must end it with, so the demo can check every outcome.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

Destination = Callable[[str], str]  # a fresh valid address -> the address to send to


def fresh(address: str) -> str:
    return address


def broken_checksum(address: str) -> str:
    """The same EVM address with one letter's case flipped: EIP-55 must refuse it."""
    i = next(i for i, c in enumerate(address) if i >= 2 and c.isalpha())
    return address[:i] + address[i].swapcase() + address[i + 1:]


def constant(value: str) -> Destination:
    return lambda _: value


@dataclass(frozen=True)
class Failure:
    name: str
    symbol: str
    amount: str
    to: Destination
    reason: str


@dataclass(frozen=True)
class ChainPlan:
    chain: str
    funding: dict[str, str]  # symbol -> token units given by the devnet faucet
    sends: tuple[tuple[str, str], ...]  # (symbol, amount) cycled through for the happy transfers
    failures: tuple[Failure, ...]
    funding_chunks: int = 1  # UTXO chains: several outputs, so transfers can run concurrently


PLANS: dict[str, ChainPlan] = {
    "ethereum": ChainPlan(
        "ethereum", {"ETH": "10", "USDT": "10000"}, (("ETH", "0.01"), ("USDT", "1.5"), ("ETH", "0.03"), ("USDT", "4.5")),
        (Failure("bad-address", "ETH", "0.01", constant("0x12345"), "invalid_destination"),
         Failure("too-much", "USDT", "25000", fresh, "insufficient_funds"))),
    "bsc": ChainPlan(
        "bsc", {"BNB": "5", "USDT": "1000"}, (("BNB", "0.02"), ("USDT", "3.25")),
        (Failure("bad-checksum", "BNB", "0.01", broken_checksum, "invalid_destination"),)),
    "tron": ChainPlan(
        "tron", {"TRX": "20000", "USDT": "5000"}, (("TRX", "2"), ("USDT", "7.5")),
        (Failure("hex-form-address", "TRX", "1", constant("41" + secrets.token_hex(20)), "invalid_destination"),)),
    "bitcoin": ChainPlan(
        "bitcoin", {"BTC": "2"}, (("BTC", "0.0015"), ("BTC", "0.002")),
        (Failure("testnet-address", "BTC", "0.001", constant("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"),
                 "invalid_destination"),
         Failure("too-much", "BTC", "3", fresh, "insufficient_funds")),
        funding_chunks=8),
    "solana": ChainPlan(
        "solana", {"SOL": "10", "USDC": "1000"}, (("SOL", "0.05"), ("USDC", "2.5")),
        (Failure("too-much", "USDC", "5000", fresh, "insufficient_funds"),)),
}


def distribute(chains: tuple[str, ...], transfers: int) -> dict[str, int]:
    """How many happy transfers each chain gets: the total minus the failures, round-robin."""
    happy = transfers - sum(len(PLANS[c].failures) for c in chains)
    if happy < len(chains):
        raise ValueError(f"--transfers must be at least {transfers - happy + len(chains)} for chains {', '.join(chains)}")
    return {chain: happy // len(chains) + (1 if i < happy % len(chains) else 0) for i, chain in enumerate(chains)}
