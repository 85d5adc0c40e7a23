"""In-memory fakes for the pipeline's seams, and a small "world" that seeds and drives transfers.

`FakeAdapter` implements the `ChainAdapter` protocol (plus `check_destination`, which the steps
call) with simple, checkable rules: EVM-looking addresses, a fixed fee quote, a scripted sequence
of `TxStatus` answers, and a `broadcast` that records every call and can be told to raise.
Its `attach_signature` recovers the signer of the digest, so a happy path proves the signature
really came from the source wallet's key.

`FakeSigner` holds one real secp256k1 key, but answers only when told to (`ready`), or refuses.

`World` seeds clients, wallets, accounts and assets through `pipeline.onboarding` and the ledger,
and reads rows back in fresh units of work, so assertions see what was committed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_keys import keys as eth_keys
from eth_utils import keccak
from sqlalchemy import func, select

from chains.base import (
    Curve,
    FeeQuote,
    SignedTransaction,
    TransferIntent,
    TxState,
    TxStatus,
    UnsignedTransaction,
)
from chains.errors import InvalidAddress, InvalidSignature
from chains.registry import ChainSpec, Registry, TokenSpec
from pipeline import ledger, onboarding
from pipeline.db import Database
from pipeline.models import Asset, LedgerEntry, Transaction, TransactionEvent
from pipeline.steps import STEP_FUNCTIONS, Outcome, StepContext
from pipeline.transfers import TransferRequest, create_transfer
from signer.base import PublicKey, SignatureRefused, SignerError, UnknownKey

_HEX_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")

# 21000 gas at 1 gwei reserved; what the "chain" then charges is usually less.
DEFAULT_FEE = FeeQuote(max_fee=21_000 * 10**9, params={"gas": 21_000, "gasPrice": 10**9})
DEFAULT_FEE_PAID = 15_000 * 10**9


def address_of(public_key: bytes) -> str:
    """The EVM rule: last 20 bytes of keccak(X||Y), lower-case hex."""
    return "0x" + keccak(public_key)[-20:].hex()


def included(confirmations: int, *, block: int = 100, block_hash: str = "0xb100",
             fee_paid: int | None = DEFAULT_FEE_PAID) -> TxStatus:
    return TxStatus(TxState.INCLUDED, block, block_hash, confirmations, fee_paid)


def reverted(confirmations: int, *, block: int = 100, block_hash: str = "0xb100",
             fee_paid: int | None = DEFAULT_FEE_PAID) -> TxStatus:
    return TxStatus(TxState.REVERTED, block, block_hash, confirmations, fee_paid)


PENDING = TxStatus(TxState.PENDING)
NOT_FOUND = TxStatus(TxState.NOT_FOUND)


class FakeAdapter:
    """A ChainAdapter for one registry chain, entirely in memory."""

    curve = Curve.SECP256K1
    uses_account_nonce = True

    def __init__(self, spec: ChainSpec, *, fee: FeeQuote = DEFAULT_FEE, chain_nonce: int = 0) -> None:
        self.spec = spec
        self.fee = fee
        self.chain_nonce = chain_nonce
        self.quote_error: Exception | None = None
        self.broadcast_errors: list[Exception] = []  # raised one per broadcast call, in order
        self.statuses: list[TxStatus] = []  # answered in order; the last one repeats
        self.broadcasts: list[SignedTransaction] = []
        self.nonce_calls: list[str] = []
        self.built: list[tuple[TransferIntent, FeeQuote, int | None]] = []
        self.status_calls: list[str] = []

    # -- addresses --------------------------------------------------------------------------
    def validate_address(self, address: str) -> str:
        if not isinstance(address, str) or not _HEX_ADDRESS.match(address):
            raise InvalidAddress(self.spec.name, str(address), "not 0x followed by 40 hex digits")
        return address.lower()

    def check_destination(self, address: str, token: TokenSpec | None = None) -> str:
        normalized = self.validate_address(address)
        if int(normalized, 16) == 0:
            raise InvalidAddress(self.spec.name, normalized, "the zero address cannot receive funds")
        if token is not None and token.contract and normalized == token.contract.lower():
            raise InvalidAddress(self.spec.name, normalized, "the destination is the token's own contract")
        return normalized

    def address_from_public_key(self, public_key: bytes) -> str:
        return address_of(public_key)

    # -- fees, nonces, building -------------------------------------------------------------
    def quote_fee(self, intent: TransferIntent) -> FeeQuote:
        if self.quote_error is not None:
            raise self.quote_error
        return self.fee

    def next_nonce(self, address: str) -> int:
        self.nonce_calls.append(address)
        return self.chain_nonce

    def build(self, intent: TransferIntent, fee: FeeQuote, nonce: int | None) -> UnsignedTransaction:
        self.built.append((intent, fee, nonce))
        payload = json.dumps(
            {"chain": self.spec.name, "from": intent.from_address, "to": intent.to_address,
             "amount": str(intent.amount), "token": intent.token.symbol, "fee": fee.params,
             "max_fee": fee.max_fee, "nonce": nonce},
            sort_keys=True,
        ).encode()
        return UnsignedTransaction(payload=payload, digest=keccak(payload))

    def attach_signature(self, payload: bytes, signature: bytes) -> SignedTransaction:
        if len(signature) != 65:
            raise InvalidSignature(f"expected 65 bytes, got {len(signature)}")
        signer_key = eth_keys.Signature(signature).recover_public_key_from_msg_hash(keccak(payload))
        if address_of(signer_key.to_bytes()) != json.loads(payload)["from"]:
            raise InvalidSignature("signature is not by the sender")
        raw = payload + b"|" + signature
        return SignedTransaction(raw=raw, tx_hash="0x" + keccak(raw).hex())

    # -- the node ---------------------------------------------------------------------------
    def broadcast(self, signed: SignedTransaction) -> str:
        self.broadcasts.append(signed)
        if self.broadcast_errors:
            raise self.broadcast_errors.pop(0)
        return signed.tx_hash

    def get_status(self, tx_hash: str) -> TxStatus:
        self.status_calls.append(tx_hash)
        if not self.statuses:
            return NOT_FOUND
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def balance_of(self, address: str, token: TokenSpec) -> int:
        return 0


class FakeSigner:
    """A Signer with one real key per wallet that answers only when `ready`, or refuses."""

    def __init__(self, *, ready: bool = True, refuse: SignerError | None = None) -> None:
        self.ready = ready
        self.refuse = refuse
        self._keys: dict[str, eth_keys.PrivateKey] = {}
        self.requests: dict[str, tuple[str, bytes]] = {}
        self.request_calls: list[str] = []

    def create_key(self, wallet_id: str, curve: Curve) -> PublicKey:
        if wallet_id not in self._keys:
            self._keys[wallet_id] = eth_keys.PrivateKey(keccak(wallet_id.encode()))
        return self.public_key(wallet_id, curve)

    def public_key(self, wallet_id: str, curve: Curve) -> PublicKey:
        if wallet_id not in self._keys:
            raise UnknownKey(f"no key for {wallet_id}")
        return PublicKey(Curve(curve), self._keys[wallet_id].public_key.to_bytes())

    def request_signature(self, request_id: str, wallet_id: str, curve: Curve, digest: bytes) -> None:
        self.request_calls.append(request_id)
        if self.refuse is not None:
            raise self.refuse
        known = self.requests.get(request_id)
        if known is not None and known != (wallet_id, digest):
            raise SignatureRefused(f"request {request_id} reused for another payload")
        self.requests[request_id] = (wallet_id, digest)

    def fetch_signature(self, request_id: str) -> bytes | None:
        if not self.ready or request_id not in self.requests:
            return None
        wallet_id, digest = self.requests[request_id]
        return self._keys[wallet_id].sign_msg_hash(digest).to_bytes()


@dataclass
class Party:
    """A seeded client with one wallet, one account on a chain and its assets."""

    client_id: str
    wallet_id: str
    account_id: str
    address: str
    assets: dict[str, str] = field(default_factory=dict)  # symbol -> asset id


OTHER_ADDRESS = "0x" + "ab" * 20


class World:
    """Seeds the hierarchy and drives steps against one DB, one registry, fake adapters."""

    def __init__(self, db: Database, registry: Registry, signer: object,
                 adapters: dict[str, FakeAdapter] | None = None) -> None:
        self.db = db
        self.registry = registry
        self.signer = signer
        self.adapters = adapters or {name: FakeAdapter(registry.chain(name)) for name in registry.names()}
        self._keys = 0

    def adapter(self, chain: str = "ethereum") -> FakeAdapter:
        return self.adapters[chain]

    def ctx(self, **overrides: object) -> StepContext:
        fields: dict[str, object] = {"db": self.db, "registry": self.registry,
                                     "adapter_for": self.adapters.__getitem__, "signer": self.signer}
        fields.update(overrides)
        return StepContext(**fields)  # type: ignore[arg-type]

    # -- seeding ----------------------------------------------------------------------------
    def onboard(self, *, chain: str = "ethereum", balances: dict[str, int] | None = None, active: bool = True,
                client_id: str | None = None, signer: object | None = None) -> Party:
        """A client (new unless given), an ACTIVE wallet whose key is in `signer`, an account and assets."""
        key_holder = signer or self.signer
        with self.db.unit_of_work() as s:
            if client_id is None:
                client, _ = onboarding.create_client(s, "Acme Custody")
                client_id = client.client_id
            wallet_id = onboarding.create_wallet(s, client_id, "treasury").wallet_id
        public = key_holder.create_key(wallet_id, Curve.SECP256K1)  # type: ignore[attr-defined]
        address = address_of(public.key)
        with self.db.unit_of_work() as s:
            account = onboarding.create_account(s, self.registry, wallet_id, chain, address)
            party = Party(client_id, wallet_id, account.account_id, address)
            for symbol, amount in (balances or {}).items():
                asset = onboarding.add_asset(s, self.registry, account.account_id, symbol)
                party.assets[symbol] = asset.asset_id
                if amount:
                    ledger.credit(s, asset.asset_id, amount, reference="seed")
            if active:
                onboarding.activate_wallet(s, wallet_id)
        return party

    def transfer(self, party: Party, amount: str, *, symbol: str = "ETH", to: str = OTHER_ADDRESS,
                 chain: str = "ethereum", from_address: str | None = None, key: str | None = None) -> str:
        self._keys += 1
        req = TransferRequest(client_id=party.client_id, from_address=from_address or party.address,
                              to_address=to, chain=chain, token_symbol=symbol, amount=amount,
                              idempotency_key=key or f"key-{self._keys}")
        with self.db.unit_of_work() as s:
            tx, _ = create_transfer(s, self.registry, req)
            return tx.transaction_id

    # -- driving ----------------------------------------------------------------------------
    def step(self, name: str, tx_id: str, ctx: StepContext | None = None) -> Outcome:
        return STEP_FUNCTIONS[name](ctx or self.ctx(), tx_id)

    def run_until(self, tx_id: str, last_step: str, ctx: StepContext | None = None) -> list[Outcome]:
        """Run the steps in order up to and including `last_step` (each once)."""
        outcomes = []
        for name in STEP_FUNCTIONS:
            outcomes.append(self.step(name, tx_id, ctx))
            if name == last_step:
                break
        return outcomes

    # -- reading ----------------------------------------------------------------------------
    def tx(self, tx_id: str) -> Transaction:
        with self.db.unit_of_work() as s:
            return s.get(Transaction, tx_id)  # type: ignore[return-value]

    def asset(self, asset_id: str) -> Asset:
        with self.db.unit_of_work() as s:
            return s.get(Asset, asset_id)  # type: ignore[return-value]

    def balances(self, party: Party, symbol: str) -> tuple[int, int]:
        asset = self.asset(party.assets[symbol])
        return asset.balance, asset.locked_balance

    def events(self, tx_id: str) -> list[TransactionEvent]:
        with self.db.unit_of_work() as s:
            return list(s.scalars(select(TransactionEvent).where(TransactionEvent.transaction_id == tx_id)
                                  .order_by(TransactionEvent.id)))

    def stage_changes(self, tx_id: str) -> list[tuple[str | None, str]]:
        return [(e.from_stage, e.to_stage) for e in self.events(tx_id) if e.from_stage != e.to_stage]

    def ledger_entries(self, tx_id: str) -> list[tuple[str, str, int]]:
        with self.db.unit_of_work() as s:
            rows = s.scalars(select(LedgerEntry).where(LedgerEntry.transaction_id == tx_id).order_by(LedgerEntry.id))
            return [(r.asset_id, r.kind, r.amount) for r in rows]

    def count(self, model: type) -> int:
        with self.db.unit_of_work() as s:
            return s.scalar(select(func.count()).select_from(model)) or 0

    def edit(self, tx_id: str, change: Callable[[Transaction], None]) -> None:
        """Test setup only: move a transfer's clocks (e.g. pretend a broadcast was long ago)."""
        with self.db.unit_of_work() as s:
            change(s.get(Transaction, tx_id))  # type: ignore[arg-type]
