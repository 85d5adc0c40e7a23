"""What a chaos run sends: N transfers over every chain from a few shared source wallets.

The sources are shared on purpose (every wallet's account on a chain is the source of many
concurrent transfers: lock contention, nonce and UTXO races). Happy transfers cycle through the
demo's sends (workers/demo_plan.py); about 10% are expected failures: an amount larger than the
wallet holds (insufficient_funds) or an address the chain refuses (invalid_destination). Every
transfer pays a fresh destination, so what reached it on chain says how often its value moved.
Some requests are submitted again under the same idempotency key (the same transfer must come
back) and a few reuse a key for a different request (refused, nothing created).
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from paratro.demo_plan import PLANS, broken_checksum

CHAINS = ("ethereum", "bsc", "tron", "bitcoin", "solana")

# Destinations each chain refuses (reason invalid_destination); demo_plan has some of them as data.
INVALID_DESTINATIONS: dict[str, Callable[[str], str]] = {
    "ethereum": lambda fresh: "0x12345",
    "bsc": broken_checksum,
    "tron": lambda fresh: "41" + "ab" * 20,  # hex form: the API wants base58
    "bitcoin": lambda fresh: "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",  # testnet, not regtest
    "solana": lambda fresh: "11111111111111111111111111111111",  # the System program
}

# Native units a source keeps per transfer for fees (and fee reserves locked at the same time).
FEE_HEADROOM = {"ethereum": "0.01", "bsc": "0.01", "tron": "40", "bitcoin": "0.0001", "solana": "0.005"}
BASE_FUNDING = {"ethereum": "1", "bsc": "1", "tron": "200", "bitcoin": "0.01", "solana": "1"}
BTC_CHUNK = "0.006"  # one output per bitcoin transfer, so they need not wait for each other's change


@dataclass
class Planned:
    index: int
    wallet: int
    chain: str
    symbol: str
    amount: str  # decimal string, as a client sends it
    base_units: int
    to_address: str
    key: str
    expect: str  # "CONFIRMED" or the failure reason
    transaction_id: str | None = None
    error: str | None = None
    submitted_at: float | None = None


@dataclass
class Repeat:
    """A second submission under an existing key: the same request, or a different one (refused)."""

    of: int  # Planned.index
    conflicting: bool
    outcome: str | None = None  # "same", "new", "refused", or an error


@dataclass
class Workload:
    client_id: str
    wallets: list[Any]  # workers.services.OnboardedWallet
    planned: list[Planned]
    repeats: list[Repeat]
    funded: dict[tuple[int, str, str], int] = field(default_factory=dict)  # (wallet, chain, symbol) -> base units


def _decimals(ctx: Any, chain: str, symbol: str) -> int:
    return ctx.registry.chain(chain).token(symbol).decimals


def plan(ctx: Any, transfers: int, wallets: int, rng: random.Random, fresh: Callable[[str], str]) -> tuple[list[Planned], list[Repeat]]:
    from pipeline.amounts import parse_amount

    failures = max(len(CHAINS), round(transfers * 0.1))
    if transfers < failures + len(CHAINS):
        raise ValueError(f"--transfers must be at least {failures + len(CHAINS)}")
    items: list[Planned] = []
    for i in range(transfers - failures):
        chain = CHAINS[i % len(CHAINS)]
        symbol, amount = PLANS[chain].sends[(i // len(CHAINS)) % len(PLANS[chain].sends)]
        items.append(Planned(0, i % wallets, chain, symbol, amount, parse_amount(amount, _decimals(ctx, chain, symbol)),
                             fresh(chain), "", "CONFIRMED"))
    for j in range(failures):
        chain = CHAINS[j % len(CHAINS)]
        symbol, amount = PLANS[chain].sends[j % len(PLANS[chain].sends)]
        destination = fresh(chain)
        if j % 2 == 0:  # far more than any source holds
            items.append(Planned(0, j % wallets, chain, symbol, "", 0, destination, "", "insufficient_funds"))
        else:
            items.append(Planned(0, j % wallets, chain, symbol, amount, parse_amount(amount, _decimals(ctx, chain, symbol)),
                                 INVALID_DESTINATIONS[chain](destination), "", "invalid_destination"))
    rng.shuffle(items)
    run_tag = f"{rng.getrandbits(32):08x}"
    for index, item in enumerate(items):
        item.index = index
        item.key = f"chaos-{run_tag}-{index:05d}"
    happy = [item.index for item in items if item.expect == "CONFIRMED"]
    repeats = [Repeat(of, conflicting=False) for of in rng.sample(happy, max(2, transfers // 30))]
    repeats += [Repeat(of, conflicting=True) for of in rng.sample(happy, max(1, transfers // 100))]
    return items, repeats


def fund(ctx: Any, nodes: dict[str, Any], adapters: Callable[[str], Any], workload: Workload) -> None:
    """Give each source what its transfers need (and headroom) with the devnet faucets, then credit
    the ledger with exactly what each chain shows: a deposit."""
    from pipeline import ledger
    from pipeline.amounts import parse_amount

    need: dict[tuple[int, str, str], int] = defaultdict(int)
    count: dict[tuple[int, str], int] = defaultdict(int)
    for item in workload.planned:
        if item.expect == "CONFIRMED":
            need[(item.wallet, item.chain, item.symbol)] += item.base_units
        count[(item.wallet, item.chain)] += 1
    for w, wallet in enumerate(workload.wallets):
        for chain in wallet.accounts:
            spec = ctx.registry.chain(chain)
            address = wallet.accounts[chain]
            n = count[(w, chain)]
            for symbol in PLANS[chain].funding:
                token = spec.token(symbol)
                amount = need[(w, chain, symbol)] * 3 // 2
                if token.asset_type == "NATIVE":
                    amount += parse_amount(BASE_FUNDING[chain], token.decimals)
                    amount += parse_amount(FEE_HEADROOM[chain], token.decimals) * n
                else:
                    amount += parse_amount("100", token.decimals)
                if chain == "bitcoin":
                    chunk = parse_amount(BTC_CHUNK, token.decimals)
                    for _ in range(max(n + 3, -(-amount // chunk))):
                        nodes[chain].fund(address, token, chunk)
                else:
                    nodes[chain].fund(address, token, amount)
            with ctx.db.unit_of_work() as session:
                for symbol in PLANS[chain].funding:
                    on_chain = adapters(chain).balance_of(address, spec.token(symbol))
                    ledger.credit(session, wallet.assets[(chain, symbol)], on_chain, reference="chaos-faucet")
                    workload.funded[(w, chain, symbol)] = on_chain
    # "Far more than any source holds": ten times the whole of what this wallet was given.
    for item in workload.planned:
        if item.expect == "insufficient_funds":
            decimals = _decimals(ctx, item.chain, item.symbol)
            item.base_units = workload.funded[(item.wallet, item.chain, item.symbol)] * 10
            item.amount = format(Decimal(item.base_units).scaleb(-decimals), "f")


def request_of(workload: Workload, item: Planned, amount: str | None = None) -> Any:
    from pipeline.transfers import TransferRequest

    wallet = workload.wallets[item.wallet]
    return TransferRequest(client_id=workload.client_id, from_address=wallet.accounts[item.chain],
                           to_address=item.to_address, chain=item.chain, token_symbol=item.symbol,
                           amount=amount or item.amount, idempotency_key=item.key)


def _submitted(result: Any) -> tuple[str, bool]:
    """submit_transfer's answer: (id, created) or an object with .transaction_id / .created."""
    if isinstance(result, tuple):
        return str(result[0]), bool(result[1])
    return str(result.transaction_id), bool(result.created)


class Submitter(threading.Thread):
    """Submits the planned transfers as one burst, retrying each (same key) through broker and
    database outages until it has its id; a repeat follows a few places after its original."""

    GIVE_UP_S = 120.0

    def __init__(self, ctx: Any, workload: Workload, stop: threading.Event) -> None:
        super().__init__(name="submitter", daemon=True)
        self.ctx = ctx
        self.workload = workload
        self.stop_event = stop
        self.done = 0
        self.retries = 0
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            queue: list[tuple[str, Any]] = [("plan", item) for item in self.workload.planned]
            for repeat in sorted(self.workload.repeats, key=lambda r: -r.of):
                queue.insert(repeat.of + 4, ("repeat", repeat))  # a few places after its original
            for kind, what in queue:
                if self.stop_event.is_set():
                    return
                if kind == "plan":
                    self._submit(what)
                    self.done += 1
                else:
                    self._repeat(what)
        finally:
            self.finished.set()

    def _submit(self, item: Planned) -> None:
        from pipeline.errors import InvalidInput, NotFound
        from workers.services import submit_transfer

        deadline = time.monotonic() + self.GIVE_UP_S
        while not self.stop_event.is_set():
            try:
                item.transaction_id, _ = _submitted(submit_transfer(self.ctx, request_of(self.workload, item)))
                item.submitted_at = time.monotonic()
                return
            except (InvalidInput, NotFound) as exc:
                item.error = f"refused at submission: {type(exc).__name__}: {exc}"
                return
            except Exception as exc:  # noqa: BLE001 - broker or database down: the same key again
                self.retries += 1
                if time.monotonic() > deadline:
                    item.error = f"could not submit for {self.GIVE_UP_S:.0f} s: {type(exc).__name__}: {exc}"[:300]
                    return
                time.sleep(0.5)

    def _repeat(self, repeat: Repeat) -> None:
        from pipeline.errors import IdempotencyConflict
        from workers.services import submit_transfer

        item = self.workload.planned[repeat.of]
        if item.transaction_id is None:
            repeat.outcome = "original not submitted"
            return
        amount = None
        if repeat.conflicting:
            amount = format(Decimal(item.amount) * 2, "f")
        for _ in range(100):
            if self.stop_event.is_set():
                return
            try:
                transaction_id, created = _submitted(submit_transfer(self.ctx, request_of(self.workload, item, amount)))
                repeat.outcome = "same" if transaction_id == item.transaction_id and not created else \
                    f"new transfer {transaction_id} (created={created})"
                return
            except IdempotencyConflict:
                repeat.outcome = "refused"
                return
            except Exception:  # noqa: BLE001 - outage: again
                self.retries += 1
                time.sleep(0.5)
        repeat.outcome = "could not submit"
