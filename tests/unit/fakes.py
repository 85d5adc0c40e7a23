"""In-memory fakes for the pipeline's seams, and a small "world" that seeds and drives transfers.

`FakeAdapter` implements the `ChainAdapter` protocol (plus `check_destination`, which the steps
call) with simple, checkable rules: EVM-looking addresses, a fixed fee quote, a scripted sequence
of `TxStatus` answers, and a `broadcast` that records every call and can be told to raise.
Its `attach_signature` recovers the signer of every digest, so a happy path proves each signature
really came from the source wallet's key. By default it behaves like an EVM chain (one digest,
account nonces, key "evm"); `digest_count` makes it ask for several signatures, and `utxos=[...]`
turns it into a UTXO chain (no nonces, key "bitcoin", scripted outputs, greedy input selection,
one digest per selected input). `build_context` hands out a fresh "reference block" on every call,
so a re-signed (replaced) transaction differs from the one it replaces.

`FakeSigner` holds one real secp256k1 key per wallet and key name, but answers only when told to
(`ready`), or refuses.

`World` seeds clients, wallets, accounts and assets through `pipeline.onboarding` and the ledger,
and reads rows back in fresh units of work, so assertions see what was committed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_keys import keys as eth_keys
from eth_utils import keccak
from sqlalchemy import func, select

from chains.base import (
    Curve,
    FeeQuote,
    Observation,
    SignedTransaction,
    TransferIntent,
    TxState,
    TxStatus,
    UnsignedTransaction,
    Utxo,
    Watched,
)
from chains.errors import InvalidAddress, InvalidSignature, TransactionRejected
from chains.registry import ChainSpec, Registry, TokenSpec
from chains.tracking import track_each
from pipeline import credentials, ledger, nonces, onboarding
from pipeline.ids import new_id
from pipeline.sealing import SecretBox, new_secrets_key
from pipeline.db import Database
from pipeline.models import Asset, LedgerEntry, ReleasedNonce, Transaction, TransactionEvent
from pipeline.driving import Run, load_tx, take
from pipeline.stages import Stage
from pipeline.steps import STEP_FUNCTIONS, Outcome, OutcomeKind, StepContext
from pipeline.steps.runner import StepReport, run_message
from pipeline.transfers import TransferRequest, create_transfer
from signer.base import KeyRef, PublicKey, SignatureRefused, SignerError, UnknownKey

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
             fee_paid: int | None = DEFAULT_FEE_PAID, detail: str | None = None) -> TxStatus:
    return TxStatus(TxState.REVERTED, block, block_hash, confirmations, fee_paid, detail)


PENDING = TxStatus(TxState.PENDING)
NOT_FOUND = TxStatus(TxState.NOT_FOUND)
EXPIRED = TxStatus(TxState.EXPIRED)

# What a UTXO-mode adapter reserves for the fee (satoshi), unless told otherwise.
UTXO_FEE = FeeQuote(max_fee=2_000, params={"sat_per_vbyte": 10})


def utxo(n: int, value: int, txid: str | None = None) -> Utxo:
    """A scripted unspent output: `txid` defaults to a distinct fake id per `n`, output index n."""
    return Utxo(txid=txid or f"{n:064x}", vout=n, value=value, script_pubkey="0014" + "00" * 20, confirmations=6)


def digests_for(payload: bytes, count: int) -> tuple[bytes, ...]:
    """The fake's digests of a payload: keccak(payload), then keccak(payload || i) for i >= 1."""
    return tuple(keccak(payload) if i == 0 else keccak(payload + i.to_bytes(4, "big")) for i in range(count))


class FakeAdapter:
    """A ChainAdapter for one registry chain, entirely in memory."""

    curve = Curve.SECP256K1

    def __init__(self, spec: ChainSpec, *, fee: FeeQuote | None = None, chain_nonce: int = 0,
                 digest_count: int = 1, utxos: list[Utxo] | None = None, key_name: str | None = None) -> None:
        self.spec = spec
        # UTXO mode: outputs to spend, no account nonce, one signature per selected input
        self.uses_utxos = utxos is not None
        self.uses_account_nonce = not self.uses_utxos
        self.key_name = key_name or ("bitcoin" if self.uses_utxos else "evm")
        self.fee = fee or (UTXO_FEE if self.uses_utxos else DEFAULT_FEE)
        self.utxos: list[Utxo] = list(utxos or [])
        self.chain_nonce = chain_nonce
        self.digest_count = digest_count
        self.quote_error: Exception | None = None
        self.after_quote: Callable[[FeeQuote], None] | None = None  # runs between the quote and the lock
        self.broadcast_errors: list[Exception] = []  # raised one per broadcast call, in order
        self.statuses: list[TxStatus] = []  # answered in order; the last one repeats
        self.broadcasts: list[SignedTransaction] = []
        self.nonce_calls: list[str] = []
        self.utxo_calls: list[str] = []
        self.quoted_utxos: list[list[Utxo]] = []  # what each quote_fee call was offered
        self.contexts: list[dict] = []  # what each build_context call returned
        self.built: list[tuple[TransferIntent, FeeQuote, int | None]] = []
        self.built_contexts: list[dict] = []  # the context each build was given
        self.status_calls: list[str] = []
        self.track_calls: list[int] = []  # how many transactions each track() call was given
        self.unlandable = False  # what proves_unlandable answers after a refused send
        self.unlandable_calls: list[str] = []
        self.replacement: ReplacementPolicy | None = None  # set to bump: the tracker hands stuck ones over
        self.replacement_quotes: list[FeeQuote | None | Exception] = []  # answered in order; the last repeats
        self.replacement_calls: list[FeeQuote] = []  # the current quote each replacement_quote was given
        self.nonce_taken: str | None = None  # what nonce_taken_by answers
        self.nonce_taken_calls: list[str] = []

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

    # -- outputs, fees, nonces, building ----------------------------------------------------
    def list_utxos(self, address: str) -> list[Utxo]:
        self.utxo_calls.append(address)
        return list(self.utxos) if self.uses_utxos else []

    def quote_fee(self, intent: TransferIntent, utxos: Sequence[Utxo] = ()) -> FeeQuote:
        self.quoted_utxos.append(list(utxos))
        if self.quote_error is not None:
            raise self.quote_error
        quote = self.fee
        if self.uses_utxos:
            quote = FeeQuote(max_fee=self.fee.max_fee, params=self.fee.params, inputs=self._select(intent, utxos))
        if self.after_quote is not None:
            self.after_quote(quote)
        return quote

    def _select(self, intent: TransferIntent, utxos: Sequence[Utxo]) -> tuple[Utxo, ...]:
        """Greedy, in the order offered, until amount + fee reserve are covered."""
        needed, chosen, total = intent.amount + self.fee.max_fee, [], 0
        for candidate in utxos:
            if total >= needed:
                break
            chosen.append(candidate)
            total += candidate.value
        if total < needed:
            raise TransactionRejected("insufficient_funds",
                                      f"unreserved outputs hold {total} base units, the transfer needs {needed}")
        return tuple(chosen)

    def replacement_quote(self, intent: TransferIntent, current: FeeQuote) -> FeeQuote | None:
        self.replacement_calls.append(current)
        answer = self.replacement_quotes[0] if self.replacement_quotes else None
        if len(self.replacement_quotes) > 1:
            self.replacement_quotes.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer is not None and self.uses_utxos:
            answer = FeeQuote(max_fee=answer.max_fee, params=answer.params, inputs=current.inputs)
        return answer

    def nonce_taken_by(self, signed: SignedTransaction) -> str | None:
        self.nonce_taken_calls.append(signed.tx_hash)
        return self.nonce_taken

    def next_nonce(self, address: str) -> int:
        self.nonce_calls.append(address)
        return self.chain_nonce

    def build_context(self, intent: TransferIntent) -> dict:
        context = {"ref_block": f"0xref{len(self.contexts) + 1}"}  # fresh chain data on every call
        self.contexts.append(context)
        return dict(context)

    def build(self, intent: TransferIntent, fee: FeeQuote, nonce: int | None, context: dict) -> UnsignedTransaction:
        self.built.append((intent, fee, nonce))
        self.built_contexts.append(context)
        payload = json.dumps(
            {"chain": self.spec.name, "from": intent.from_address, "to": intent.to_address,
             "amount": str(intent.amount), "token": intent.token.symbol, "fee": fee.params,
             "max_fee": fee.max_fee, "nonce": nonce, "inputs": [u.outpoint for u in fee.inputs],
             "context": context},
            sort_keys=True,
        ).encode()
        count = len(fee.inputs) if self.uses_utxos else self.digest_count
        return UnsignedTransaction(payload=payload, digests=digests_for(payload, count))

    def attach_signature(self, payload: bytes, signatures: Sequence[bytes]) -> SignedTransaction:
        data = json.loads(payload)
        digests = digests_for(payload, len(data["inputs"]) if self.uses_utxos else self.digest_count)
        if len(signatures) != len(digests):
            raise InvalidSignature(f"expected {len(digests)} signatures, got {len(signatures)}")
        for index, (signature, digest) in enumerate(zip(signatures, digests, strict=True)):
            if len(signature) != 65:
                raise InvalidSignature(f"signature {index}: expected 65 bytes, got {len(signature)}")
            signer_key = eth_keys.Signature(signature).recover_public_key_from_msg_hash(digest)
            if address_of(signer_key.to_bytes()) != data["from"]:
                raise InvalidSignature(f"signature {index} is not by the sender")
        raw = payload + b"|" + b"".join(signatures)
        return SignedTransaction(raw=raw, tx_hash="0x" + keccak(raw).hex())

    # -- the node ---------------------------------------------------------------------------
    def broadcast(self, signed: SignedTransaction) -> str:
        self.broadcasts.append(signed)
        if self.broadcast_errors:
            raise self.broadcast_errors.pop(0)
        return signed.tx_hash

    def get_status(self, signed: SignedTransaction) -> TxStatus:
        self.status_calls.append(signed.tx_hash)
        if not self.statuses:
            return NOT_FOUND
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def track(self, watched: Sequence[Watched], cursor: Mapping[str, Any]) -> Observation:
        """The one-by-one fallback over `get_status`: answers follow `statuses` like get_status."""
        self.track_calls.append(len(watched))
        return track_each(self, watched, cursor)

    def proves_unlandable(self, signed: SignedTransaction) -> bool:
        self.unlandable_calls.append(signed.tx_hash)
        return self.unlandable

    def balance_of(self, address: str, token: TokenSpec) -> int:
        return 0


class FakeSigner:
    """A Signer with one real secp256k1 key per wallet and key name that answers only when
    `ready`, or refuses."""

    def __init__(self, *, ready: bool = True, refuse: SignerError | None = None) -> None:
        self.ready = ready
        self.refuse = refuse
        self._keys: dict[tuple[str, str], eth_keys.PrivateKey] = {}
        self.requests: dict[str, tuple[KeyRef, tuple[bytes, ...]]] = {}
        self.request_calls: list[str] = []

    def create_key(self, ref: KeyRef) -> PublicKey:
        if Curve(ref.curve) is not Curve.SECP256K1:
            raise UnknownKey(f"the fake signer has no {ref.curve} keys")
        slot = (ref.wallet_id, ref.key_name)
        if slot not in self._keys:
            self._keys[slot] = eth_keys.PrivateKey(keccak(f"{ref.wallet_id}|{ref.key_name}".encode()))
        return self.public_key(ref)

    def public_key(self, ref: KeyRef) -> PublicKey:
        key = self._keys.get((ref.wallet_id, ref.key_name))
        if key is None or Curve(ref.curve) is not Curve.SECP256K1:
            raise UnknownKey(f"no {ref.key_name} key for {ref.wallet_id}")
        return PublicKey(Curve(ref.curve), key.public_key.to_bytes())

    def request_signature(self, request_id: str, ref: KeyRef, payloads: Sequence[bytes]) -> None:
        self.request_calls.append(request_id)
        if self.refuse is not None:
            raise self.refuse
        asked = (ref, tuple(payloads))
        known = self.requests.get(request_id)
        if known is not None and known != asked:
            raise SignatureRefused(f"request {request_id} reused for other payloads")
        self.requests[request_id] = asked

    def fetch_signature(self, request_id: str) -> list[bytes] | None:
        if not self.ready or request_id not in self.requests:
            return None
        ref, payloads = self.requests[request_id]
        key = self._keys[(ref.wallet_id, ref.key_name)]
        return [key.sign_msg_hash(digest).to_bytes() for digest in payloads]


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
        adapter = self.adapters[chain]
        with self.db.unit_of_work() as s:
            if client_id is None:
                client, _ = credentials.create_client(s, SecretBox(new_secrets_key()), "Acme Custody")
                client_id = client.client_id
            wallet_id = onboarding.create_wallet(s, client_id, "treasury").wallet_id
        public = key_holder.create_key(KeyRef(wallet_id, adapter.key_name, adapter.curve))  # type: ignore[attr-defined]
        address = adapter.address_from_public_key(public.key)
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

    def request(self, party: Party, amount: str, *, symbol: str = "ETH", to: str = OTHER_ADDRESS,
                chain: str = "ethereum", from_address: str | None = None, key: str | None = None) -> TransferRequest:
        self._keys += 1
        return TransferRequest(client_id=party.client_id, from_address=from_address or party.address,
                               to_address=to, chain=chain, token_symbol=symbol, amount=amount,
                               idempotency_key=key or f"key-{self._keys}")

    def transfer(self, party: Party, amount: str, **fields: str | None) -> str:
        req = self.request(party, amount, **fields)  # type: ignore[arg-type]
        with self.db.unit_of_work() as s:
            tx, _ = create_transfer(s, self.registry, req)
            return tx.transaction_id

    # -- driving ----------------------------------------------------------------------------
    def take(self, name: str, tx_id: str, ctx: StepContext | None = None) -> Run | None:
        """Pick the transfer up the way a current message does: the run gets the next token
        (None: the transfer is final or held, and a message for it is dropped)."""
        ctx = ctx or self.ctx()
        with ctx.db.unit_of_work() as s:
            return take(s, tx_id, load_tx(s, tx_id).driver_seq, name, ctx.step_lease_s)

    def step(self, name: str, tx_id: str, ctx: StepContext | None = None) -> Outcome:
        """One run of step `name` by a driver that has just taken the transfer over. A message for
        a final transfer is dropped before any step code runs: reported as NOOP at its stage."""
        ctx = ctx or self.ctx()
        run = self.take(name, tx_id, ctx)
        if run is None:
            return Outcome(OutcomeKind.NOOP, Stage(self.tx(tx_id).stage))
        return STEP_FUNCTIONS[name](ctx, run)

    def deliver(self, name: str, tx_id: str, ctx: StepContext | None = None, *, seq: int | None = None,
                errors: int = 0) -> StepReport:
        """Deliver a message for step `name` through the runner, as a worker does (by default one
        carrying the transfer's current token; `seq` sends an older or forged one)."""
        ctx = ctx or self.ctx()
        current = self.tx(tx_id).driver_seq if seq is None else seq
        return run_message(ctx, name, tx_id, current, errors)

    def sent(self, party: Party, amount: str = "1") -> str:
        """A transfer signed and sent once, whose transaction the chain has in its mempool (PENDING)."""
        self.adapter().statuses = [PENDING]
        tx_id = self.transfer(party, amount)
        self.run_until(tx_id, "broadcast")
        assert self.tx(tx_id).stage == "BROADCAST"
        return tx_id

    def gap_fill(self, party: Party, nonce: int) -> str:
        """A NOOP transfer claiming a released nonce of the party's account, as the tracker's gap check does."""
        with self.db.unit_of_work() as s:
            s.add(ReleasedNonce(account_id=party.account_id, nonce=nonce))
        with self.db.unit_of_work() as s:
            noop = nonces.claim_gap(s, nonces.Gap(party.account_id, nonce), "ETH", new_id("transaction"))
            assert noop is not None
            return noop.transaction_id

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
