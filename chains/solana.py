"""`SolanaAdapter`: the ChainAdapter for the Solana family (SOL and SPL tokens).

One adapter per registry entry; it talks to that entry's RPC endpoints (a failover pool,
chains/failover.py; the first is the primary). Offline parts live in
`chains.solana_address` (addresses, destination policy) and `chains.solana_tx` (message, payload,
signature); node access and transport errors in `chains.solana_rpc`. This module holds the
decisions that need a node:

- fees: 5000 lamports per signature (`options.lamports_per_signature`) plus a priority fee
  (`chains.solana_fees`): every transaction asks for a compute-unit limit fitting its kind
  (`params.compute_unit_limit`) and pays a compute-unit price read fresh at every (re-)signing:
  `build_context` asks getRecentPrioritizationFees for the accounts the transfer writes, in the
  same HTTP request as the blockhash (a JSON-RPC batch), and keeps a percentile of the recent
  non-zero fees (`options.compute_unit_price_percentile`, 75). The quote reserves the priority
  fee at the cap (`options.max_compute_unit_price_micro_lamports`, stored as
  `params.max_compute_unit_price` so a later registry change cannot raise what was reserved),
  and the build pays min(fresh price, that cap): never more than `max_fee` (a transfer that
  empties the fee payer's account pays the cap itself, `params.min_compute_unit_price`: less
  would leave a remainder below the rent-exempt minimum). An SPL transfer to
  an owner without an associated token account also pays that account's rent, so the quote
  reserves it (`params.create_ata`, `params.ata_rent`). The sender's balances are checked at
  quote time: tokens short -> TransactionRejected("insufficient_funds"), SOL short of the fee
  and rent -> "insufficient_funds_for_fee". A quote stored before priority fees (no
  `compute_unit_limit`) still builds as it did: no ComputeBudget instructions, no priority fee;
- expiry instead of nonces: a transaction is tied to a recent blockhash (`build_context`) and can
  only land in a block whose height is at most its `last_valid_block_height`, in a slot after the
  blockhash's own slot (`blockhash_slot`: the `context.slot` of the getLatestBlockhash answer, the
  bank whose last blockhash it is); both are stored in the build context
  (`SignedTransaction.context`). It is EXPIRED only on proof (`_lookup`), always at "finalized"
  whatever the registry's commitment (a "confirmed" block can still be rolled back):
  (a) the block height of the node's finalized bank (`getEpochInfo`: `blockHeight`,
  `absoluteSlot` = S) is past the last valid block height, so every block that could hold it is
  finalized, at a slot below S; then (b) the fee payer's transaction history
  (`getSignaturesForAddress` at "finalized" with `minContextSlot` S, newest first, paged with
  `before`) reaches a signature at or before `blockhash_slot` without listing ours. (b) is asked
  of the one RPC that cannot answer without transaction history: a node started without
  `--enable-rpc-transaction-history` answers -32011, one not yet at S answers -32016, and both
  are "no proof". A node whose ledger was pruned (or a brand-new account) ends its list before
  reaching `blockhash_slot`: no proof either. (`getSignatureStatuses` with
  searchTransactionHistory is not proof of absence: a node without history silently ignores the
  flag and says null once the signature leaves its ~300-slot status cache; nor is
  `isBlockhashValid`: a lagging node says false for a blockhash it has not seen yet.)
  A lagging node cannot fool this: a node behind says a lower height in (a), and one behind S
  refuses (b). With several endpoints, the whole lookup (and `get_status`'s reads of a landed
  transaction, and a `track` tick) is asked of one node (`chains.pinning.one_endpoint`): each
  answer above carries its own guarantee, and one node answering all of them keeps it that way
  (a node dying midway raises ChainRpcError; the whole proof is asked again). Without a stored `last_valid_block_height` and `blockhash_slot` (contexts built
  before the slot was stored), or with a context whose blockhash is not the one the bytes
  carry, nothing is proven: NOT_FOUND, never EXPIRED. The pipeline re-signs an EXPIRED one;
- broadcast with preflight: "already processed" is success, "blockhash not found" is expired
  only after the same proof (transient otherwise), insufficient lamports and other simulation
  failures are refusals, everything else (node unhealthy, transport) is transient;
- finality: INCLUDED/REVERTED count confirmations only once the status reaches the registry's
  commitment (`options.commitment`, "finalized" or "confirmed"); the fee then reported is the
  sender's real balance drop (fee + rent of any account it created), so the ledger matches the
  chain to the lamport.

Registry options read (all optional): commitment ("finalized"), preflight_commitment
("confirmed"), lamports_per_signature (5000), max_compute_unit_price_micro_lamports (1,000,000:
one lamport per compute unit; 0 turns priority fees off), compute_unit_price_percentile (75),
allow_off_curve_destinations (false), genesis_hash (when set, the node must serve that
cluster: ChainMismatch otherwise).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from chains import solana_address, solana_fees, solana_tracking, solana_tx
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
from chains.errors import (
    ChainError,
    ChainMismatch,
    ChainRpcError,
    InvalidSignature,
    MalformedTransaction,
    TransactionRejected,
)
from chains.pinning import one_endpoint
from chains.registry import ChainSpec, TokenSpec
from chains.solana_rpc import REQUEST_TIMEOUT_S, NodeRpcError, SolanaRpc, to_int, value_of

LAMPORTS_PER_SIGNATURE = 5000
COMMITMENTS = ("processed", "confirmed", "finalized")
PROOF_COMMITMENT = "finalized"  # expiry is proven from blocks that can no longer be rolled back
_HISTORY_PAGE = 1000  # getSignaturesForAddress's largest page
_HISTORY_PAGES = 10  # signatures of the fee payer scanned at most (x _HISTORY_PAGE) before giving up: no proof
MAX_PRICE_OPTION = "max_compute_unit_price_micro_lamports"
PERCENTILE_OPTION = "compute_unit_price_percentile"
DEFAULT_MAX_COMPUTE_UNIT_PRICE = 1_000_000  # micro-lamports per compute unit: 1 lamport
DEFAULT_PRICE_PERCENTILE = 75
_OPTIONS = frozenset({"commitment", "preflight_commitment", "lamports_per_signature", MAX_PRICE_OPTION,
                      PERCENTILE_OPTION, solana_address.OFF_CURVE_OPTION, "genesis_hash"})
# JSON-RPC codes: -32002 preflight simulation failed, -32003 signature verification failed,
# -32602 invalid params (bytes the node cannot decode). Anything else is about the node.
_REFUSAL_CODES = (-32002, -32003, -32602)
_FEE_ERRORS = ("InsufficientFundsForFee", "AccountNotFound", "InvalidAccountForFee")
_INSUFFICIENT = 1  # custom error 1: SystemError::ResultWithNegativeLamports / TokenError::InsufficientFunds


class SolanaAdapter:
    """ChainAdapter for one Solana cluster of the registry (family "solana")."""

    curve = Curve.ED25519
    key_name = "solana"
    uses_account_nonce = False  # recent blockhashes, not nonces, order and expire transactions
    uses_utxos = False
    replacement = None  # a stuck transaction expires and is re-signed after the expiry proof, never bumped

    def __init__(self, spec: ChainSpec, *, timeout: float = REQUEST_TIMEOUT_S) -> None:
        if spec.family != "solana":
            raise ChainError(f"SolanaAdapter cannot serve {spec.name!r} of family {spec.family!r}")
        self.spec = spec
        options = _options(spec)
        self.commitment: str = options["commitment"]
        self.preflight_commitment: str = options["preflight_commitment"]
        self.lamports_per_signature: int = options["lamports_per_signature"]
        self.max_compute_unit_price: int = options["max_compute_unit_price"]
        self.price_percentile: int = options["price_percentile"]
        self.allow_off_curve: bool = options["allow_off_curve"]
        self.genesis_hash: str | None = options["genesis_hash"]
        self._rpc = SolanaRpc(spec.rpc_urls, timeout, failover=spec.failover)
        self._cluster_checked = self.genesis_hash is None
        self._rent: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"SolanaAdapter({self.spec.name!r}, {self.spec.network!r}, {self._rpc.endpoint})"

    # --- node access -----------------------------------------------------------------------

    def _call(self, method: str, params: list[Any]) -> Any:
        if not self._cluster_checked:
            self.verify_cluster()
        return self._rpc.call(method, params)

    def verify_cluster(self) -> None:
        """Raise ChainMismatch unless the node's genesis hash is the registry's `genesis_hash`."""
        served = self._rpc.call("getGenesisHash", [])
        if served != self.genesis_hash:
            raise ChainMismatch(
                f"{self.spec.name} ({self.spec.network}) has genesis hash {self.genesis_hash}, but the node at "
                f"{self._rpc.endpoint} serves {str(served)[:60]!r}; refusing to use it"
            )
        self._cluster_checked = True

    def _balance(self, address: str) -> int:
        return to_int(value_of(self._call("getBalance", [address, {"commitment": self.commitment}]), "balance"), "balance")

    def _account(self, address: str) -> dict[str, Any] | None:
        """getAccountInfo (base64) at the commitment: None when the account does not exist."""
        answer = value_of(self._call("getAccountInfo", [address, {"encoding": "base64", "commitment": self.commitment}]),
                          "account")
        if answer is not None and not isinstance(answer, dict):
            raise ChainRpcError(f"{self.spec.name}: unusable account info for {address}")
        return answer

    def _token_account(self, address: str, mint: str) -> int | None:
        """The amount held by token account `address` of `mint`, None if there is no account."""
        account = self._account(address)
        if account is None:
            return None
        try:
            data = base64.b64decode(account["data"][0], validate=True)
            held_mint, _, amount = solana_tx.parse_token_account(data)
        except (KeyError, IndexError, TypeError, ValueError, binascii.Error):
            raise ChainError(f"{self.spec.name}: {address} exists but is not an SPL token account") from None
        if account.get("owner") != solana_tx.TOKEN_PROGRAM or held_mint != mint:
            raise ChainError(f"{self.spec.name}: {address} is not a token account of mint {mint}")
        return amount

    def _rent_exempt_minimum(self, size: int) -> int:
        """Lamports an account of `size` bytes must hold; the rent schedule is fixed, so asked once."""
        if size not in self._rent:
            self._rent[size] = to_int(self._call("getMinimumBalanceForRentExemption", [size]), "rent-exempt minimum")
        return self._rent[size]

    # --- addresses (offline) ---------------------------------------------------------------

    def validate_address(self, address: str) -> str:
        return solana_address.validate_address(address, self.spec.name)

    def check_destination(self, address: str, token: TokenSpec | None = None) -> str:
        """validate_address plus the policy: no program/sysvar, no token mint, off-curve only by opt-in."""
        mint = token.contract if token is not None else None
        return solana_address.check_destination(address, self.spec.name, mint, allow_off_curve=self.allow_off_curve)

    def address_from_public_key(self, public_key: bytes) -> str:
        return solana_address.address_from_public_key(public_key)

    # --- fees ------------------------------------------------------------------------------

    def list_utxos(self, address: str) -> list[Utxo]:
        return []  # account-based

    def replacement_quote(self, intent: TransferIntent, current: FeeQuote) -> FeeQuote | None:
        return None  # never replaced by fee (see `replacement`)

    def next_nonce(self, address: str) -> int:
        raise ChainError("Solana transactions have no account nonce (uses_account_nonce is False)")

    def quote_fee(self, intent: TransferIntent, utxos: Sequence[Utxo] = ()) -> FeeQuote:
        """One signature, the priority fee at the cap for the transfer's compute-unit limit, and the
        rent of the destination's token account when the transfer creates it."""
        token, sender, to = self._checked_intent(intent)
        if token.asset_type == "NATIVE":
            quote = self._quote(spl=False, create_ata=False, rent=0)
            return _pinned(quote) if self._check_sol_transfer(sender, to, intent.amount, quote.max_fee) else quote
        mint = str(token.contract)
        held = self._token_account(solana_tx.associated_token_address(sender, mint), mint) or 0
        if held < intent.amount:
            raise TransactionRejected(
                "insufficient_funds",
                f"{sender} holds {held} {token.symbol} base units on {self.spec.name}, the transfer needs {intent.amount}",
            )
        create_ata = self._token_account(solana_tx.associated_token_address(to, mint), mint) is None
        rent = self._rent_exempt_minimum(solana_tx.TOKEN_ACCOUNT_SIZE) if create_ata else 0
        quote = self._quote(spl=True, create_ata=create_ata, rent=rent)
        return _pinned(quote) if self._check_fee_payer(sender, quote.max_fee) else quote

    def _quote(self, spl: bool, create_ata: bool, rent: int) -> FeeQuote:
        limit = solana_fees.compute_unit_limit(spl, create_ata)
        params: dict[str, Any] = {"lamports_per_signature": self.lamports_per_signature, "signatures": 1,
                                  "create_ata": create_ata, "ata_rent": rent, "compute_unit_limit": limit,
                                  "max_compute_unit_price": self.max_compute_unit_price}
        reserve = solana_fees.max_spend(self.lamports_per_signature, limit, self.max_compute_unit_price, rent)
        return FeeQuote(max_fee=reserve, params=params)

    def _check_sol_transfer(self, sender: str, to: str, amount: int, fee: int) -> bool:
        """The chain would refuse it: balance short, or an account left below the rent-exempt
        minimum. True when the transfer empties the sender's account (paying `fee` exactly)."""
        balance = self._balance(sender)
        if balance < amount + fee:
            raise TransactionRejected(
                "insufficient_funds", f"{sender} has {balance} lamports, the transfer needs {amount} + fee {fee}"
            )
        rent = self._rent_exempt_minimum(0)
        left = balance - amount - fee
        if 0 < left < rent:
            raise TransactionRejected(
                "insufficient_funds",
                f"the transfer would leave {sender} with {left} lamports, below the rent-exempt minimum {rent} "
                "(send everything, or leave at least the minimum)",
            )
        if to != sender and 0 < amount < rent and self._balance(to) == 0:
            raise TransactionRejected(
                "rejected_by_node",
                f"{to} does not exist yet and {amount} lamports is below the rent-exempt minimum {rent} it needs",
            )
        return left == 0

    def _check_fee_payer(self, sender: str, cost: int) -> bool:
        """Refused unless the sender pays `cost` and keeps 0 or the rent-exempt minimum; True for 0."""
        balance = self._balance(sender)
        rent = self._rent_exempt_minimum(0)
        if balance < cost or 0 < balance - cost < rent:
            raise TransactionRejected(
                "insufficient_funds_for_fee",
                f"{sender} has {balance} lamports: the fee and account rent need {cost}, and the account must "
                f"keep 0 or at least {rent}",
            )
        return balance == cost

    def _checked_intent(self, intent: TransferIntent) -> tuple[TokenSpec, str, str]:
        if not isinstance(intent.amount, int) or isinstance(intent.amount, bool) or intent.amount < 0:
            raise MalformedTransaction(f"amount must be a non-negative integer of base units, got {intent.amount!r}")
        token = self._registry_token(intent.token)
        return token, self.validate_address(intent.from_address), self.validate_address(intent.to_address)

    def _registry_token(self, token: TokenSpec) -> TokenSpec:
        """The token as the registry has it: mint and decimals never come from the caller."""
        known = self.spec.token(token.symbol)
        if known != token:
            raise MalformedTransaction(f"token {token.symbol} does not match the {self.spec.name} registry entry")
        if known.asset_type not in ("NATIVE", "SPL"):
            raise MalformedTransaction(f"token {token.symbol} is {known.asset_type}, not SPL")
        return known

    # --- offline build and signature -------------------------------------------------------

    def build_context(self, intent: TransferIntent) -> dict[str, Any]:
        """A recent blockhash at the registry commitment: it fixes the transaction's expiry. Stored
        with it: its last valid block height and `blockhash_slot`, the slot of the bank it is the
        last blockhash of (the answer's `context.slot`); the transaction can only land after it.
        With priority fees on, also `compute_unit_price`: the market price now for the accounts
        the transfer writes, asked in the same HTTP request (a JSON-RPC batch)."""
        latest = ("getLatestBlockhash", [{"commitment": self.commitment}])
        if not self.max_compute_unit_price:
            return _blockhash_context(self._call(*latest), self.spec.name)
        fees = ("getRecentPrioritizationFees", [_written_accounts(intent)])
        blockhash, recent = self._batch([latest, fees])
        price = solana_fees.percentile_price(_prioritization_fees(recent, self.spec.name), self.price_percentile)
        return {**_blockhash_context(blockhash, self.spec.name), "compute_unit_price": price}

    def _batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """The results of a JSON-RPC batch (one HTTP request); the first error object is raised."""
        if not self._cluster_checked:
            self.verify_cluster()
        answers = self._rpc.batch(calls)
        for answer in answers:
            if isinstance(answer, NodeRpcError):
                raise answer
        return answers

    def build(self, intent: TransferIntent, fee: FeeQuote, nonce: int | None,
              context: dict[str, Any]) -> UnsignedTransaction:
        token, sender, to = self._checked_intent(intent)
        if nonce is not None:
            raise MalformedTransaction("a Solana transaction takes no nonce")
        blockhash, height = _context(context)
        create_ata, limit, price = self._fee_params(fee, token, _context_price(context))
        instructions = solana_tx.compute_budget_instructions(limit, price) if limit is not None else []
        instructions += solana_tx.transfer_instructions(
            sender, to, intent.amount, token.contract if token.asset_type == "SPL" else None, token.decimals, create_ata
        )
        return solana_tx.build_unsigned(sender, instructions, blockhash, height)

    def _fee_params(self, fee: FeeQuote, token: TokenSpec, market_price: int) -> tuple[bool, int | None, int]:
        """(create_ata, compute-unit limit or None for a quote without one, price to pay) of a
        stored quote, checked: the price is the market's up to the quote's cap, and the build may
        never spend more than max_fee."""
        params = fee.params
        per_signature, signatures = params.get("lamports_per_signature"), params.get("signatures")
        create_ata, rent = params.get("create_ata", False), params.get("ata_rent", 0)
        limit, cap = params.get("compute_unit_limit"), params.get("max_compute_unit_price", 0)
        floor = params.get("min_compute_unit_price", 0)
        if not all(_natural(v) for v in (per_signature, signatures, rent, cap, floor)) or not _limit_ok(limit):
            raise MalformedTransaction(f"unusable Solana fee parameters {dict(params)!r}"[:200])
        if signatures != 1 or not isinstance(create_ata, bool) or (create_ata and token.asset_type != "SPL"):
            raise MalformedTransaction(f"unusable Solana fee parameters {dict(params)!r}"[:200])
        if floor > cap:
            raise MalformedTransaction(f"unusable Solana fee parameters {dict(params)!r}: price floor above its cap"[:200])
        if solana_fees.max_spend(per_signature * signatures, limit, cap, rent if create_ata else 0) > fee.max_fee:
            raise MalformedTransaction("the fee parameters could spend more than the reserved max_fee")
        price = max(floor, min(market_price, cap)) if limit is not None else 0  # never above the reserved cap
        return create_ata, limit, price

    def attach_signature(self, payload: bytes, signatures: Sequence[bytes]) -> SignedTransaction:
        if len(signatures) != 1:
            raise InvalidSignature(f"a Solana transfer takes one signature, got {len(signatures)}")
        return solana_tx.attach(payload, signatures[0])

    # --- broadcast ---------------------------------------------------------------------------

    def broadcast(self, signed: SignedTransaction) -> str:
        tx = solana_tx.decode_signed(signed.raw)
        if str(tx.signatures[0]) != signed.tx_hash:
            raise MalformedTransaction(f"signed bytes carry signature {tx.signatures[0]}, not {signed.tx_hash}")
        config = {"encoding": "base64", "skipPreflight": False, "preflightCommitment": self.preflight_commitment}
        try:
            answered = self._call("sendTransaction", [base64.b64encode(signed.raw).decode(), config])
        except NodeRpcError as exc:
            return self._classify_send_error(exc, signed)
        if answered != signed.tx_hash:
            raise ChainRpcError(f"{self.spec.name}: the node answered signature {str(answered)[:100]!r} for {signed.tx_hash}")
        return signed.tx_hash

    def _classify_send_error(self, exc: NodeRpcError, signed: SignedTransaction) -> str:
        err = exc.data.get("err") if isinstance(exc.data, dict) else None
        message = exc.node_message.lower()
        if err == "AlreadyProcessed" or "already been processed" in message:
            return signed.tx_hash  # the node has these very bytes: a repeated broadcast
        if err == "BlockhashNotFound" or "blockhash not found" in message:
            return self._blockhash_not_found(exc, signed)
        if err in _FEE_ERRORS or "insufficient funds for fee" in message:
            raise TransactionRejected("insufficient_funds_for_fee", exc.node_message) from None
        if isinstance(err, dict) and "InstructionError" in err:
            raise TransactionRejected(self._instruction_failure(err["InstructionError"], exc, signed), exc.node_message) from None
        if exc.code in _REFUSAL_CODES:
            raise TransactionRejected("rejected_by_node", exc.node_message) from None
        raise exc  # about the node (unhealthy, overloaded, internal error): an RPC error, retried

    def _instruction_failure(self, failure: Any, exc: NodeRpcError, signed: SignedTransaction) -> str:
        """Reason code of a failed instruction: which program said "insufficient"."""
        index, error = (failure if isinstance(failure, list) and len(failure) == 2 else (None, None))
        logs = exc.data.get("logs") if isinstance(exc.data, dict) else None
        lamports_short = any("insufficient lamports" in str(line) for line in logs or ())
        program = solana_tx.instruction_program(signed.raw, index) if isinstance(index, int) else None
        custom = error.get("Custom") if isinstance(error, dict) else None
        if program == solana_tx.SYSTEM_PROGRAM and (custom == _INSUFFICIENT or lamports_short):
            return "insufficient_funds"  # the SOL transfer itself: the amount is not there
        if program == solana_tx.TOKEN_PROGRAM and custom == _INSUFFICIENT:
            return "insufficient_funds"  # the token transfer: the tokens are not there
        if lamports_short:
            return "insufficient_funds_for_fee"  # lamports for the rent of the account being created
        return "rejected_by_node"

    def _blockhash_not_found(self, exc: NodeRpcError, signed: SignedTransaction) -> str:
        """Expired only with proof (see `_lookup`); a repeat when it landed; transient otherwise."""
        with one_endpoint(self._rpc):
            status, expired = self._lookup(signed)
        if status is not None:
            return signed.tx_hash  # it landed before its blockhash expired: this broadcast was a repeat
        if expired:
            raise TransactionRejected(
                "expired", f"{signed.tx_hash} is past its last valid block height and not on chain"
            ) from None
        raise exc  # not proven dead (e.g. a lagging node that has not seen the blockhash yet): retry

    # --- status ------------------------------------------------------------------------------

    def get_status(self, signed: SignedTransaction) -> TxStatus:
        solana_tx.signature_bytes(signed.tx_hash)
        with one_endpoint(self._rpc):  # the status, the proof or the landed transaction: one node's
            status, expired = self._lookup(signed)
            if status is not None:
                return self._landed(signed, status)
        # Unknown and not proven dead: it may still land; the pipeline keeps polling/rebroadcasting.
        return TxStatus(TxState.EXPIRED if expired else TxState.NOT_FOUND)

    def proves_unlandable(self, signed: SignedTransaction) -> bool:
        """True iff `get_status` would say EXPIRED: the finalized height is past its last valid block
        height and the fee payer's finalized history, back to the blockhash's slot, lacks it."""
        solana_tx.signature_bytes(signed.tx_hash)
        with one_endpoint(self._rpc):
            status, expired = self._lookup(signed)
        return status is None and expired

    def _lookup(self, signed: SignedTransaction) -> tuple[dict[str, Any] | None, bool]:
        """(signature status or None, proven expired), asked in the order no lagging node can fool.

        Unknown first (the common case: it landed, and we are done); then (a) the finalized block
        height past the stored last valid block height, noting the slot S it was seen at; then (b)
        the fee payer's finalized history, from a node at least at S, back to the blockhash's slot
        (`_history_proof`). Asked after (a), (b) also sees a transaction that landed in between.
        """
        status, _ = self._signature_status(signed.tx_hash)
        if status is not None:
            return status, False
        validity = _validity(signed)
        if validity is None:
            return None, False
        last_valid, blockhash_slot = validity
        seen_at = self._slot_past_validity(last_valid)
        if seen_at is None:
            return None, False
        return self._history_proof(signed, blockhash_slot, seen_at)

    def _slot_past_validity(self, last_valid: int) -> int | None:
        """The slot of the node's finalized bank if its block height is past `last_valid`, else
        None. Always "finalized": a confirmed block can still be rolled back."""
        info = self._call("getEpochInfo", [{"commitment": PROOF_COMMITMENT}])
        if not isinstance(info, dict):
            raise ChainRpcError(f"{self.spec.name}: unusable getEpochInfo answer {info!r}"[:200])
        height = to_int(info.get("blockHeight"), "block height")
        slot = to_int(info.get("absoluteSlot"), "absolute slot")
        return slot if height > last_valid else None

    def _history_proof(self, signed: SignedTransaction, blockhash_slot: int,
                       seen_at: int) -> tuple[dict[str, Any] | None, bool]:
        """(status, proven) from the fee payer's finalized signatures, newest first.

        Every transaction pays its fee from account 0, so if ours landed it is in that account's
        history, in a slot after `blockhash_slot` and before `seen_at`. The pages are asked with
        `minContextSlot` = `seen_at` (the answering node's finalized bank has every block that
        could hold it) and are contiguous (`before` = the last signature of the previous page).
        Proven when the list reaches a signature at or before `blockhash_slot` without ours: the
        node's history covers the whole window. Not proven (NOT_FOUND) on any node error (no
        transaction history: -32011, not yet at `seen_at`: -32016, ...), on a list that ends
        first (a pruned ledger, or an account younger than the blockhash), or after
        `_HISTORY_PAGES` pages. Ours in the list: it landed (a node whose status cache forgot it).

        Why this and not another history check: `minimumLedgerSlot` plus a probe that the node
        serves history are two answers, which behind a load balancer may come from two nodes;
        scanning every finalized block of the validity window (getBlock with "signatures") costs
        some 150 full blocks per proof. Here every answer carries its own guarantee (history on,
        root at least S, ledger reaching the blockhash), so no mix of backends adds up to a false
        proof. It relies on what agave does: a node's ledger is contiguous from its oldest slot
        (cleanup drops the oldest slots first; BigTable continues below it), and a slot's
        signatures are indexed when it is replayed, long before it is rooted.
        """
        payer = str(solana_tx.decode_signed(signed.raw).message.account_keys[0])
        config: dict[str, Any] = {"commitment": PROOF_COMMITMENT, "minContextSlot": seen_at, "limit": _HISTORY_PAGE}
        newest = None
        for _ in range(_HISTORY_PAGES):
            try:
                page = self._call("getSignaturesForAddress", [payer, config])
            except NodeRpcError:
                return None, False  # no history, not that far, cleaned up, ...: nothing proven
            entries = _signature_infos(page, self.spec.name)
            for signature, slot, entry in entries:
                if newest is not None and slot > newest:
                    raise ChainRpcError(f"{self.spec.name}: getSignaturesForAddress listed slot {slot} after {newest}")
                newest = slot
                if signature == signed.tx_hash:
                    return {"slot": slot, "err": entry.get("err"), "confirmations": None,
                            "confirmationStatus": PROOF_COMMITMENT}, False
                if slot <= blockhash_slot:
                    return None, True  # the history reaches before the window and ours is not in it
            if len(entries) < _HISTORY_PAGE:
                return None, False  # the node's history ends inside the window: no proof
            config = {**config, "before": entries[-1][0]}
        return None, False

    def _signature_status(self, signature: str) -> tuple[dict[str, Any] | None, int]:
        """(status or None, the slot the answering node was at: its `context.slot`)."""
        result = self._call("getSignatureStatuses", [[signature], {"searchTransactionHistory": True}])
        answer = value_of(result, "signature statuses")
        if not isinstance(answer, list) or len(answer) != 1 or not (answer[0] is None or isinstance(answer[0], dict)):
            raise ChainRpcError(f"{self.spec.name}: unusable signature status {answer!r}"[:200])
        context = result.get("context")
        slot = to_int(context.get("slot") if isinstance(context, dict) else None, "context slot")
        return answer[0], slot

    def _landed(self, signed: SignedTransaction, status: dict[str, Any]) -> TxStatus:
        slot = to_int(status.get("slot"), "slot")
        state = TxState.REVERTED if status.get("err") is not None else TxState.INCLUDED
        reached = status.get("confirmationStatus")
        if reached not in COMMITMENTS or COMMITMENTS.index(reached) < COMMITMENTS.index(self.commitment):
            return TxStatus(state, block_number=slot, confirmations=0)
        config = {"encoding": "json", "commitment": self.commitment, "maxSupportedTransactionVersion": 0}
        found = self._call("getTransaction", [signed.tx_hash, config])
        if not isinstance(found, dict):
            return TxStatus(state, block_number=slot, confirmations=0)  # not served at the commitment yet
        fee_paid = self._fee_paid(found, signed, state)
        head = to_int(self._call("getSlot", [{"commitment": self.commitment}]), "slot")
        return TxStatus(state, block_number=slot, block_hash=self._block_hash(slot),
                        confirmations=max(head - slot + 1, 1), fee_paid=fee_paid)

    def _fee_paid(self, found: dict[str, Any], signed: SignedTransaction, state: TxState) -> int:
        """The sender's balance drop, less the SOL it sent: the fee plus rent of accounts it created."""
        try:
            meta = found["meta"]
            payer = found["transaction"]["message"]["accountKeys"][0]
            pre, post, fee = meta["preBalances"][0], meta["postBalances"][0], meta["fee"]
        except (KeyError, IndexError, TypeError):
            raise ChainRpcError(f"{self.spec.name}: unusable getTransaction answer for {signed.tx_hash}") from None
        sender = str(solana_tx.decode_signed(signed.raw).message.account_keys[0])
        if payer != sender:
            raise ChainRpcError(f"{self.spec.name}: getTransaction names fee payer {payer}, not {sender}")
        sent = solana_tx.lamports_sent(signed.raw) if state is TxState.INCLUDED else 0
        paid = to_int(pre, "pre balance") - to_int(post, "post balance") - sent
        if paid < to_int(fee, "fee"):
            raise ChainRpcError(f"{self.spec.name}: {signed.tx_hash} cost {paid} lamports, less than its fee {fee}")
        return paid

    def _block_hash(self, slot: int) -> str | None:
        """The hash of the block at `slot`, or None if the node does not serve blocks (it is informative)."""
        config = {"commitment": self.commitment, "transactionDetails": "none", "rewards": False,
                  "maxSupportedTransactionVersion": 0}
        try:
            block = self._call("getBlock", [slot, config])
        except NodeRpcError:
            return None
        return block.get("blockhash") if isinstance(block, dict) and isinstance(block.get("blockhash"), str) else None

    def track(self, watched: Sequence[Watched], cursor: Mapping[str, Any]) -> Observation:
        """One confirmation-tracker tick (`chains.solana_tracking`): getSignatureStatuses 256 a call
        over a rotating window of 2,048, the head, then batched blocks and fees for what reached the
        commitment; inclusion, depth and fee decided as `get_status` decides them."""
        checks = 0
        if not self._cluster_checked:
            self.verify_cluster()
            checks = 1
        tracker = solana_tracking.SignatureTracker(self._rpc, self.spec.name, self.commitment, self.spec.confirmations)
        with one_endpoint(self._rpc):  # statuses, head, blocks and fees: one node's view
            observation = tracker.tick(watched, cursor)
        return Observation(head=observation.head, statuses=observation.statuses, cursor=observation.cursor,
                           rpc_calls=observation.rpc_calls + checks)

    # --- balances ----------------------------------------------------------------------------

    def balance_of(self, address: str, token: TokenSpec) -> int:
        owner = self.validate_address(address)
        if token.asset_type == "NATIVE":
            return self._balance(owner)
        if not token.contract:
            raise MalformedTransaction(f"token {token.symbol} has no mint")
        return self._token_account(solana_tx.associated_token_address(owner, token.contract), token.contract) or 0


def _options(spec: ChainSpec) -> dict[str, Any]:
    """The registry options this adapter reads, validated; an unknown key is a configuration error."""
    raw: Mapping[str, Any] = spec.options
    unknown = set(raw) - _OPTIONS
    if unknown:
        raise ChainError(f"{spec.name}: unknown Solana options {sorted(unknown)} (known: {sorted(_OPTIONS)})")
    commitment = raw.get("commitment", "finalized")
    preflight = raw.get("preflight_commitment", "confirmed")
    if commitment not in ("confirmed", "finalized"):
        raise ChainError(f"{spec.name}: options.commitment must be 'confirmed' or 'finalized' (a processed "
                         f"transaction can still be rolled back), got {commitment!r}")
    if preflight not in COMMITMENTS:
        raise ChainError(f"{spec.name}: options.preflight_commitment must be one of {COMMITMENTS}, got {preflight!r}")
    per_signature = _int_option(raw, spec.name, "lamports_per_signature", LAMPORTS_PER_SIGNATURE, 0, 2**32)
    max_price = _int_option(raw, spec.name, MAX_PRICE_OPTION, DEFAULT_MAX_COMPUTE_UNIT_PRICE, 0, 2**64 - 1)
    percentile = _int_option(raw, spec.name, PERCENTILE_OPTION, DEFAULT_PRICE_PERCENTILE, 1, 100)
    genesis = raw.get("genesis_hash")
    if genesis is not None and not isinstance(genesis, str):
        raise ChainError(f"{spec.name}: options.genesis_hash must be a base58 string")
    try:
        allow_off_curve = solana_address.off_curve_allowed(raw, spec.name)
    except ValueError as exc:
        raise ChainError(str(exc)) from None
    return {"commitment": commitment, "preflight_commitment": preflight, "lamports_per_signature": per_signature,
            "max_compute_unit_price": max_price, "price_percentile": percentile,
            "allow_off_curve": allow_off_curve, "genesis_hash": genesis}


def _int_option(raw: Mapping[str, Any], chain: str, name: str, default: int, low: int, high: int) -> int:
    """An integer option in [low, high], its default when absent; ChainError otherwise."""
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ChainError(f"{chain}: options.{name} must be an integer from {low} to {high}, got {value!r}")
    return value


BLOCKHASH_VALIDITY_BLOCKS = 150  # lastValidBlockHeight = the blockhash's block height + 150


def _validity(signed: SignedTransaction) -> tuple[int, int] | None:
    """(last valid block height, blockhash slot) of the bytes' blockhash from the stored context,
    or None if the context cannot say: missing, not integers, or the context of another build
    (its blockhash is not the one the signed bytes carry). None means no expiry can be proven."""
    context = signed.context if isinstance(signed.context, Mapping) else {}
    height, slot, blockhash = context.get("last_valid_block_height"), context.get("blockhash_slot"), context.get("blockhash")
    if slot is None and isinstance(height, int) and not isinstance(height, bool) and height >= BLOCKHASH_VALIDITY_BLOCKS:
        # Built before blockhash_slot was stored: the blockhash's block height stands in. A slot is
        # never below its block height, so the history search reaches back at least as far.
        slot = height - BLOCKHASH_VALIDITY_BLOCKS
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (height, slot)):
        return None
    if blockhash is not None and blockhash != solana_tx.blockhash_of(signed.raw):
        return None
    return height, slot


def _signature_infos(page: Any, chain: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(signature, slot, entry) of a getSignaturesForAddress answer; garbage is ChainRpcError."""
    if not isinstance(page, list) or len(page) > _HISTORY_PAGE:
        raise ChainRpcError(f"{chain}: unusable getSignaturesForAddress answer {page!r}"[:200])
    infos = []
    for entry in page:
        if not isinstance(entry, dict) or not isinstance(entry.get("signature"), str):
            raise ChainRpcError(f"{chain}: unusable getSignaturesForAddress entry {entry!r}"[:200])
        infos.append((entry["signature"], to_int(entry.get("slot"), "signature slot"), entry))
    return infos


def _pinned(quote: FeeQuote) -> FeeQuote:
    """The quote of a transfer that empties the fee payer's account: it pays the reserved price
    whatever the market's (`min_compute_unit_price`), since paying less would leave it a remainder
    below the rent-exempt minimum, which the runtime refuses."""
    return FeeQuote(quote.max_fee, {**quote.params, "min_compute_unit_price": quote.params["max_compute_unit_price"]})


def _blockhash_context(answer: Any, chain: str) -> dict[str, Any]:
    """The build context of a getLatestBlockhash answer: blockhash, last valid block height, slot."""
    latest = value_of(answer, "latest blockhash")
    if not isinstance(latest, dict) or not isinstance(latest.get("blockhash"), str):
        raise ChainRpcError(f"{chain}: unusable latest blockhash {latest!r}"[:200])
    height = to_int(latest.get("lastValidBlockHeight"), "last valid block height")
    context = answer.get("context")
    slot = to_int(context.get("slot") if isinstance(context, dict) else None, "latest blockhash context slot")
    return {"blockhash": latest["blockhash"], "last_valid_block_height": height, "blockhash_slot": slot}


def _written_accounts(intent: TransferIntent) -> list[str]:
    """The accounts the transfer write-locks (their recent fees set its price): the fee payer and
    the destination, or for SPL the two token accounts."""
    sender, to, mint = intent.from_address, intent.to_address, intent.token.contract
    if intent.token.asset_type != "SPL" or not mint:
        return list(dict.fromkeys((sender, to)))
    written = (sender, solana_tx.associated_token_address(sender, mint), solana_tx.associated_token_address(to, mint))
    return list(dict.fromkeys(written))


def _prioritization_fees(answer: Any, chain: str) -> list[int]:
    """The `prioritizationFee`s (micro-lamports per compute unit) of a getRecentPrioritizationFees answer."""
    if not isinstance(answer, list) or not all(isinstance(entry, dict) for entry in answer):
        raise ChainRpcError(f"{chain}: unusable getRecentPrioritizationFees answer {answer!r}"[:200])
    return [to_int(entry.get("prioritizationFee"), "prioritization fee") for entry in answer]


def _context_price(context: Mapping[str, Any] | None) -> int:
    """The market compute-unit price a build context carries; 0 for one made without priority fees."""
    price = context.get("compute_unit_price", 0) if isinstance(context, Mapping) else 0
    if not _natural(price):
        raise MalformedTransaction(f"unusable compute-unit price {price!r} in the Solana build context"[:200])
    return price


def _limit_ok(limit: Any) -> bool:
    """None (a quote from before priority fees) or a compute-unit limit the runtime accepts."""
    return limit is None or (_natural(limit) and 0 < limit <= solana_fees.MAX_COMPUTE_UNIT_LIMIT)


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _context(context: Mapping[str, Any] | None) -> tuple[str, int]:
    """(blockhash, last valid block height) of a stored build context."""
    if not isinstance(context, Mapping):
        raise MalformedTransaction("a Solana build needs the context from build_context (a recent blockhash)")
    blockhash, height = context.get("blockhash"), context.get("last_valid_block_height")
    if not isinstance(blockhash, str) or not isinstance(height, int) or isinstance(height, bool):
        raise MalformedTransaction(f"unusable Solana build context {dict(context)!r}"[:200])
    try:
        if len(solana_address.b58decode(blockhash)) != 32:
            raise ValueError(blockhash)
    except ValueError:
        raise MalformedTransaction(f"not a blockhash: {blockhash!r}"[:200]) from None
    return blockhash, height
