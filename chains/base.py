"""The one seam between the pipeline and a chain family: the `ChainAdapter` protocol.

The pipeline calls these methods with plain values (addresses as strings, amounts as integer base
units, payloads as bytes) and stores what they return; it never sees an SDK object. Every method
that talks to a node raises `ChainRpcError` (transient) for transport trouble, never the SDK's own
exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from chains.registry import ChainSpec, TokenSpec


class Curve(str, enum.Enum):
    """Key curve a chain family signs with; the signer keeps one key per wallet and curve."""

    SECP256K1 = "secp256k1"
    ED25519 = "ed25519"


@dataclass(frozen=True)
class TransferIntent:
    """What to move: everything the adapter needs to quote and build, in base units."""

    from_address: str
    to_address: str
    amount: int
    token: TokenSpec  # the native token is a TokenSpec with asset_type NATIVE and no contract


@dataclass(frozen=True)
class Utxo:
    """An unspent output the source address can spend (UTXO chains)."""

    txid: str
    vout: int
    value: int  # base units (satoshi)
    script_pubkey: str = ""  # hex
    confirmations: int = 0

    @property
    def outpoint(self) -> str:
        return f"{self.txid}:{self.vout}"


@dataclass(frozen=True)
class FeeQuote:
    """Fee parameters fixed at lock time; `max_fee` (native base units) is what gets reserved.

    `params` is JSON-serialisable and is stored on the transaction, so the transaction built later
    uses exactly these parameters and can never spend more than the reserve. On UTXO chains
    `inputs` are the outputs the quote selected; the pipeline reserves them in the same DB
    transaction as the funds, so two transfers never spend the same output.
    """

    max_fee: int
    params: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[Utxo, ...] = ()


@dataclass(frozen=True)
class UnsignedTransaction:
    """A built transaction waiting for signatures.

    `payload` is the adapter's own serialisation (stored in the DB, handed back to
    `attach_signature`); `digests` are what the signer signs, one signature each, in order:
    secp256k1 families give 32-byte hashes (EVM: one; Bitcoin: one per input; TRON: the txID),
    ed25519 (Solana) gives the message bytes themselves.
    """

    payload: bytes
    digests: tuple[bytes, ...]


@dataclass(frozen=True)
class SignedTransaction:
    """Bytes ready to broadcast and the hash the chain will know them by.

    `context` is the build context the transaction was built with (what `build_context`
    returned: TRON expiration and reference block, Solana blockhash and last valid block height),
    so that status checks can prove expiry from what was signed rather than infer it.
    """

    raw: bytes
    tx_hash: str
    context: Mapping[str, Any] = field(default_factory=dict)


class TxState(str, enum.Enum):
    NOT_FOUND = "NOT_FOUND"  # the node does not know the transaction (dropped, or never sent)
    PENDING = "PENDING"  # in the mempool, not in a block
    INCLUDED = "INCLUDED"  # in a canonical block and succeeded
    REVERTED = "REVERTED"  # in a canonical block and failed (fee paid, value not moved)
    # Proven never to land: not on chain and no longer includable (TRON expiration passed,
    # Solana blockhash no longer valid). The pipeline re-signs, as a recorded replacement.
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class TxStatus:
    """What the chain says about a transaction right now."""

    state: TxState
    block_number: int | None = None
    block_hash: str | None = None
    confirmations: int = 0
    fee_paid: int | None = None  # native base units actually charged, once included
    detail: str | None = None  # why a REVERTED transaction failed, in the chain's words (e.g. OUT_OF_ENERGY)


@dataclass(frozen=True)
class Watched:
    """A broadcast transaction the confirmation tracker follows (one per pending transfer).

    `key` is the pipeline's id for it (opaque here). `signed` carries the hash and the build
    context (expiry data), never the raw bytes: the tracker reads thousands of these per tick.
    `block_number`/`block_hash` are where it was last seen included (None while not seen)."""

    key: str
    signed: SignedTransaction
    sender: str
    nonce: int | None = None
    block_number: int | None = None
    block_hash: str | None = None


@dataclass(frozen=True)
class Observation:
    """What one tracker tick learned from the node about many watched transactions.

    `statuses` holds news only, by `Watched.key`: INCLUDED/REVERTED (block, hash, confirmations;
    `fee_paid` set whenever confirmations reach the chain's depth) for a transaction seen in a
    canonical block, NOT_FOUND for one whose stored block is no longer canonical (a reorg). A
    watched transaction absent from `statuses` has no news (in the mempool, dropped, or not yet
    looked at this tick): the pipeline asks about it one by one when it has waited too long.
    `cursor` is the adapter's own JSON-able state, stored by the pipeline and handed back next
    tick (a scanned block height, a rotation offset); `rpc_calls` counts HTTP requests made."""

    head: int
    statuses: dict[str, TxStatus]
    cursor: dict[str, Any] = field(default_factory=dict)
    rpc_calls: int = 0
    # Account-nonce families: sender -> (nonce at latest, nonce at pending) for the senders asked
    # about; the pipeline resyncs its cursors with them and bumps only the nonce the chain waits for.
    nonces: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplacementPolicy:
    """When a sent transaction that is not yet included is replaced by one paying more (a fee
    bump: same nonce on EVM, same inputs on Bitcoin), as the registry configures it per chain.

    The tracker hands a transfer to the bump step once its latest transaction has waited
    `after_blocks` blocks (EVM) or `after_s` seconds (Bitcoin) since it was sent; the adapter's
    `replacement_quote` then says whether and how much to bump."""

    after_blocks: int | None = None
    after_s: float | None = None
    percent: int = 20  # every fee field (fee rate) raised by at least this much over the one it replaces


class ChainAdapter(Protocol):
    """One chain (one registry entry) reached through its family's SDK.

    Attributes say how the family works, so the pipeline needs no per-family branches:
    `curve` and `key_name` pick the signer key ("evm" is shared by every EVM chain),
    `uses_account_nonce` (EVM) asks the pipeline to allocate nonces, `uses_utxos` (Bitcoin)
    asks it to list and reserve outputs.
    """

    spec: ChainSpec
    curve: Curve
    key_name: str
    uses_account_nonce: bool
    uses_utxos: bool
    # None: the family never replaces a sent transaction by fee (TRON, Solana: a transaction that
    # cannot land any more expires, and is re-signed after the expiry proof)
    replacement: ReplacementPolicy | None

    def validate_address(self, address: str) -> str:
        """Return the normalized address, or raise InvalidAddress with the reason."""

    def check_destination(self, address: str, token: TokenSpec | None = None) -> str:
        """validate_address plus the destination policy (e.g. EVM: not the zero address, not a
        precompile, not the token's own contract); raises InvalidAddress with the reason."""

    def address_from_public_key(self, public_key: bytes) -> str:
        """Derive the account address for a wallet public key of this family's curve."""

    def list_utxos(self, address: str) -> list[Utxo]:
        """Spendable outputs of `address` (UTXO families; others return [])."""

    def quote_fee(self, intent: TransferIntent, utxos: Sequence[Utxo] = ()) -> FeeQuote:
        """Price the transfer now (UTXO families also select inputs from `utxos`, which excludes
        outputs reserved by other transfers). A transfer the chain would refuse raises
        TransactionRejected (reason "insufficient_funds", ...)."""

    def replacement_quote(self, intent: TransferIntent, current: FeeQuote) -> FeeQuote | None:
        """The quote for a replacement of the transaction built from `current`, paying more: the
        same nonce (EVM) or the same inputs (UTXO: `inputs` unchanged, the change absorbs the
        fee), every fee field raised by at least `replacement.percent` and to at least today's
        market price, within the chain's cap. None when no bump is warranted now (Bitcoin: the
        transaction already pays the node's current estimate). Raises BumpRefused when a higher
        fee cannot be built (already at the cap; the change would fall below dust)."""

    def nonce_taken_by(self, signed: SignedTransaction) -> str | None:
        """Account-nonce families: the hash of the transaction that used `signed`'s nonce of its
        sender, found in a canonical block at least the chain's depth deep; None while the nonce
        is not used that deep. The pipeline compares it with its own attempts' hashes: another
        hash proves none of them can land (the key was used outside the pipeline)."""

    def next_nonce(self, address: str) -> int:
        """The chain's next nonce for `address` counting pending transactions (EVM-like only)."""

    def build_context(self, intent: TransferIntent) -> dict[str, Any]:
        """Fresh chain data the build needs (TRON ref block, Solana recent blockhash; EVM: {}).
        Called before the DB transaction that builds, so no RPC runs under a row lock."""

    def build(self, intent: TransferIntent, fee: FeeQuote, nonce: int | None,
              context: dict[str, Any]) -> UnsignedTransaction:
        """Build the unsigned transaction offline from stored parameters."""

    def attach_signature(self, payload: bytes, signatures: Sequence[bytes]) -> SignedTransaction:
        """Combine the payload with the signer's signatures (one per digest, in order)."""

    def broadcast(self, signed: SignedTransaction) -> str:
        """Send the bytes; sending bytes the node already has is success. Returns the tx hash."""

    def get_status(self, signed: SignedTransaction) -> TxStatus:
        """Inclusion, canonical block, confirmations, fee paid; EXPIRED only on proof that the
        bytes can never land, asked in an order a lagging node cannot fool (Solana, at finalized:
        the block height is past the stored last valid block height at slot S, then the fee
        payer's history from a node at least at S reaches back before the blockhash's slot without
        our signature; TRON: the solidified head is past the expiration and every solidified block
        from the reference block to the first past it is served, linked, and without our txID, or
        the solidified block at the reference number is another block)."""

    def proves_unlandable(self, signed: SignedTransaction) -> bool:
        """Called after the node refused these bytes for good (at broadcast or a rebroadcast) and
        the transaction is not known to the chain: True only when the chain proves they can never
        be included, so the pipeline may FAIL the transfer and release its locks, nonce and inputs.
        EVM: our hash unknown and the account's nonce at the head block still at or below ours;
        Bitcoin: every input still unspent at the tip; TRON and Solana: the expiry proof of
        `get_status`. The pipeline asks only when the refusal answers the first send ever made. False means
        "not proven": the pipeline retries, then holds the transfer for ops."""

    def balance_of(self, address: str, token: TokenSpec) -> int:
        """On-chain balance in base units (for reconciliation)."""

    def track(self, watched: Sequence[Watched], cursor: Mapping[str, Any]) -> Observation:
        """One confirmation-tracker tick for many broadcast transactions of this chain, in a number
        of RPC calls that does not grow with `len(watched)` beyond batch sizes (EVM: one batch of
        account nonces, receipts only for what moved; Solana: getSignatureStatuses, 256 a call, over
        a rotating window; TRON and Bitcoin: the blocks since the cursor). News only (see
        `Observation`); never EXPIRED: expiry proofs stay with `get_status`, asked one by one."""
