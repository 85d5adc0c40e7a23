"""The devnet faucet behind `POST /devnet/faucet`: fund an address on its devnet node, then credit
the ledger with what the chain shows, as a deposit.

It exists only where the devnet nodes run in this process (the sandbox, the demo, the tests): it
needs their faucet methods, which no real network has. The credit goes to the asset only when the
address is an account of the calling client holding that token; any other address is funded on
chain only. Calls are serialized per chain so two fundings of one address cannot be read as one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from devnet.nodes import DevnetNode
from pipeline import ledger
from pipeline.amounts import format_amount, parse_amount
from pipeline.errors import InvalidAddressError, TransientError, UnknownChainError, UnknownSymbol
from pipeline.models import Account, Asset
from pipeline.steps import StepContext
from chains.errors import InvalidAddress, UnknownChain, UnknownToken

SHOWS_WITHIN_S = 15.0  # how long the chain may take to show a funding (a block on the slowest devnet)


class FaucetUnavailable(TransientError):
    """The devnet did not show the funding in time; nothing was credited."""


@dataclass(frozen=True)
class Funding:
    chain: str
    address: str
    token_symbol: str
    amount: str
    asset_id: str | None  # the credited asset, None for an address that is not the client's
    balance: str | None  # the asset's ledger balance after the credit

    def view(self) -> dict[str, Any]:
        return {"chain": self.chain, "address": self.address, "token_symbol": self.token_symbol,
                "amount": self.amount, "credited": self.asset_id is not None, "asset_id": self.asset_id,
                "balance": self.balance}


class DevnetFaucet:
    def __init__(self, ctx: StepContext, nodes: Mapping[str, DevnetNode]) -> None:
        self._ctx = ctx
        self._nodes = dict(nodes)
        self._locks = {chain: threading.Lock() for chain in nodes}

    def fund(self, client_id: str, chain: str, address: str, token_symbol: str, amount: str) -> Funding:
        """Fund `address`; raises UnknownChainError, UnknownSymbol, InvalidAmount, InvalidInput."""
        spec, token = self._token(chain, token_symbol)
        base_units = parse_amount(amount, token.decimals)
        adapter = self._ctx.adapter_for(spec.name)
        try:
            normalized = adapter.validate_address(address)
        except InvalidAddress as exc:
            raise InvalidAddressError(f"address: {exc}") from None
        with self._locks[spec.name]:
            before = adapter.balance_of(normalized, token)
            self._nodes[spec.name].fund(normalized, token, base_units)
            self._wait_until_shown(adapter, normalized, token, before + base_units)
            asset_id, balance = self._credit(client_id, spec.name, normalized, token.symbol, base_units)
        shown = None if balance is None else format_amount(balance, token.decimals)
        return Funding(spec.name, normalized, token.symbol, format_amount(base_units, token.decimals), asset_id, shown)

    def _token(self, chain: str, symbol: str) -> tuple[Any, Any]:
        try:
            spec = self._ctx.registry.chain(chain)
            token = spec.token(symbol)
        except UnknownChain as exc:
            raise UnknownChainError(str(exc)) from None
        except UnknownToken as exc:
            raise UnknownSymbol(str(exc)) from None
        if spec.name not in self._nodes:
            raise UnknownChainError(f"no devnet node runs for {spec.name} in this sandbox")
        return spec, token

    @staticmethod
    def _wait_until_shown(adapter: Any, address: str, token: Any, expected: int) -> None:
        deadline = time.monotonic() + SHOWS_WITHIN_S
        while adapter.balance_of(address, token) < expected:
            if time.monotonic() > deadline:
                raise FaucetUnavailable(f"the {token.symbol} funding did not show on chain within {SHOWS_WITHIN_S:.0f} s")
            time.sleep(0.2)

    def _credit(self, client_id: str, chain: str, address: str, symbol: str, amount: int) -> tuple[str | None, int | None]:
        with self._ctx.db.unit_of_work() as session:
            asset = session.scalar(
                select(Asset).join(Account, Account.account_id == Asset.account_id)
                .where(Account.client_id == client_id, Account.chain == chain, Account.address == address,
                       Asset.symbol == symbol))
            if asset is None:
                return None, None
            ledger.credit(session, asset.asset_id, amount, reference="devnet-faucet")
            session.flush()
            return asset.asset_id, asset.balance
