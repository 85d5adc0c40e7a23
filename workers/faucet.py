"""The devnet faucet behind `POST /devnet/faucet`: fund an address on its devnet node, then credit
the ledger with what the chain shows, as a deposit.

It exists only where the devnet nodes run in this process (the sandbox, the demo, the tests): it
needs their faucet methods, which no real network has. A node's `fund` returns once the chain
holds the funding (mined, or credited by the node), and only then is exactly that amount
credited, so the ledger never shows what the chain does not; reading balances before and after
would be fooled by the address's own transfers landing meanwhile. The credit goes to the asset
only when the address is an account of the calling client holding that token; any other address
is funded on chain only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from devnet.nodes import DevnetNode
from pipeline import ledger
from pipeline.amounts import format_amount, parse_amount
from pipeline.errors import InvalidAddressError, UnknownChainError
from pipeline.lookup import token_spec
from pipeline.models import Account, Asset
from pipeline.steps import StepContext
from chains.errors import InvalidAddress

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
            self._nodes[spec.name].fund(normalized, token, base_units)  # on chain when it returns
            asset_id, balance = self._credit(client_id, spec.name, normalized, token.symbol, base_units)
        shown = None if balance is None else format_amount(balance, token.decimals)
        return Funding(spec.name, normalized, token.symbol, format_amount(base_units, token.decimals), asset_id, shown)

    def _token(self, chain: str, symbol: str) -> tuple[Any, Any]:
        spec, token = token_spec(self._ctx.registry, chain, symbol)
        if spec.name not in self._nodes:
            raise UnknownChainError(f"no devnet node runs for {spec.name} in this sandbox")
        return spec, token

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
