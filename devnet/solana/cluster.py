"""The devnet Solana cluster: solders' LiteSVM (the real runtime) plus what a validator adds to it.

LiteSVM executes transactions for real (signatures, the System, SPL Token and Associated Token
Account programs, fees, rent) but has no slots, no commitment levels and only one valid blockhash
at a time. This class supplies those, so the node speaks the cluster semantics the adapter relies on:

- a slot clock: `advance()` makes a new slot with a new blockhash (LiteSVM's `expire_blockhash`);
  block height equals the slot (no skipped slots);
- blockhash expiry: a blockhash made at slot s can be used until block height s + max_age (the
  `lastValidBlockHeight` that getLatestBlockhash reports). LiteSVM's own single-blockhash check
  is switched off and this one applies instead;
- commitment: a transaction landed at slot s is "processed" at once, "confirmed" `confirm_depth`
  slots later and "finalized" after `finalize_depth`; reads "at commitment c" see the slot that
  commitment has reached (state itself is the processed state: LiteSVM keeps no older banks);
- the ledger of landed transactions (signature -> slot, err, fee, pre/post balances) and, per
  address, the signatures of the transactions that name it, which is what getSignatureStatuses,
  getTransaction and getSignaturesForAddress serve. A transaction lands if it succeeded or was
  charged its fee (failed execution); one refused before execution (bad signature, unknown
  blockhash, fee payer without funds) is dropped, as a leader would drop it;
- transaction history as a validator's RPC has it or not: with `transaction_history` off (a node
  started without `--enable-rpc-transaction-history`) getSignatureStatuses silently ignores
  searchTransactionHistory, so a signature is known only while in the ~300-slot status cache,
  and getSignaturesForAddress / getTransaction / getBlock answer -32011; with `ledger_slots` set
  (`--limit-ledger-size`) only the newest slots' history is kept (`minimumLedgerSlot`), older
  transactions and blocks are gone from every history answer;
- prioritization fees: what recent blocks paid per compute unit, overall and per written
  account (`devnet.solana.priority`), for getRecentPrioritizationFees; LiteSVM itself charges
  the priority fee of a transaction's ComputeBudget instructions. `set_prioritization_floor`
  makes every recent slot report at least a given price (a busy cluster);
- faucets: SOL from a devnet authority that also owns the SPL mints created at start (at the
  registry's mainnet mint addresses), for `requestAirdrop` and `devnet_mintTo`.

Every method takes the one lock: LiteSVM is not meant for concurrent use.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from solders.account import Account
from solders.compute_budget import set_compute_unit_limit
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.system_program import TransferParams, transfer
from solders.token.state import Mint
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from devnet.solana.errors import RpcError, describe_error
from devnet.solana.priority import PrioritizationFees

TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
MINT_SIZE = 82
FAUCET_LAMPORTS = 10**18  # a billion SOL for the devnet authority
AUTHORITY_SEED = hashlib.sha256(b"paratro devnet solana authority").digest()
COMMITMENTS = ("processed", "confirmed", "finalized")


@dataclass(frozen=True)
class ClusterConfig:
    """Timing of the devnet cluster; the defaults keep tests fast."""

    slot_ms: int = 100  # the clock ticks every slot_ms; 0 = only devnet_advanceSlots moves it
    blockhash_max_age: int = 150  # slots a blockhash stays usable (Solana: 150)
    confirm_depth: int = 1  # slots until "confirmed"
    finalize_depth: int = 4  # slots until "finalized" (Solana: ~32)
    status_cache_slots: int = 300  # getSignatureStatuses without history search looks this far back
    transaction_history: bool = True  # False: a node without --enable-rpc-transaction-history
    ledger_slots: int = 0  # > 0: history of the newest slots only (a pruned ledger); 0: all of it


@dataclass
class Landed:
    """A transaction in the ledger."""

    signature: str
    slot: int
    block_time: int
    err: Any  # the RPC JSON form of the TransactionError, None if it succeeded
    fee: int
    pre_balances: list[int]
    post_balances: list[int]
    logs: list[str]
    units: int
    message: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""  # the transaction's wire bytes (getTransaction with encoding base64/base58)


class Cluster:
    """The runtime, its slots and blockhashes, and the ledger of landed transactions."""

    def __init__(self, config: ClusterConfig = ClusterConfig(), mints: Sequence[tuple[str, int]] = ()) -> None:
        if not 0 < config.confirm_depth <= config.finalize_depth:
            raise ValueError("need 0 < confirm_depth <= finalize_depth")
        self.config = config
        self.lock = threading.RLock()
        self.svm = LiteSVM().with_blockhash_check(False)
        self.slot = 0
        self._hash_slot: dict[str, int] = {}
        self._slot_hash: dict[int, str] = {}
        self._block_time: dict[int, int] = {}
        self._ledger: dict[str, Landed] = {}
        self._block_signatures: dict[int, list[str]] = {}
        self._address_signatures: dict[str, list[str]] = {}  # in landing order (slots never decrease)
        self._faucet_seq = itertools.count(1)
        self.priority = PrioritizationFees()
        self._record_slot()
        self.genesis_hash = self._slot_hash[0]
        # Start past genesis by the finality depth: every commitment then has a real slot, and a
        # transaction landing now is finalized only `finalize_depth` slots later, never at once.
        self.advance(config.finalize_depth)
        self.authority = Keypair.from_seed(AUTHORITY_SEED)
        self.svm.set_account(self.authority.pubkey(), Account(FAUCET_LAMPORTS, b"", SYSTEM_PROGRAM))
        self.mints: dict[str, int] = {}
        for address, decimals in mints:
            self.create_mint(address, decimals)

    # --- slots and blockhashes -------------------------------------------------------------

    def _record_slot(self) -> None:
        blockhash = str(self.svm.latest_blockhash())
        self._hash_slot[blockhash] = self.slot
        self._slot_hash[self.slot] = blockhash
        self._block_time[self.slot] = int(time.time())

    def advance(self, slots: int = 1) -> int:
        """Produce `slots` new slots, each with a new blockhash; returns the new slot."""
        with self.lock:
            for _ in range(slots):
                self.slot += 1
                self.svm.expire_blockhash()
                self.svm.warp_to_slot(self.slot)
                self._record_slot()
            return self.slot

    def commitment_slot(self, commitment: str) -> int:
        """The newest slot that has reached `commitment`."""
        depth = {"processed": 0, "confirmed": self.config.confirm_depth, "finalized": self.config.finalize_depth}[commitment]
        return self.slot - depth  # >= 0: the cluster starts finalize_depth slots past genesis

    def latest_blockhash(self, commitment: str) -> tuple[str, int]:
        """(blockhash, lastValidBlockHeight) of the newest block at `commitment`."""
        with self.lock:
            slot = self.commitment_slot(commitment)
            return self._slot_hash[slot], slot + self.config.blockhash_max_age

    def blockhash_valid(self, blockhash: str, commitment: str = "processed") -> bool:
        """Whether a transaction with this blockhash could still land in the bank at `commitment`."""
        with self.lock:
            made = self._hash_slot.get(blockhash)
            return made is not None and self.commitment_slot(commitment) <= made + self.config.blockhash_max_age

    def block(self, slot: int) -> tuple[str, str, int, list[str]] | None:
        """(blockhash, previous blockhash, block time, signatures) of a produced slot."""
        with self.lock:
            if slot not in self._slot_hash:
                return None
            previous = self._slot_hash[max(slot - 1, 0)]
            return self._slot_hash[slot], previous, self._block_time[slot], list(self._block_signatures.get(slot, ()))

    # --- transactions ------------------------------------------------------------------------

    def send(self, tx: VersionedTransaction, *, preflight: bool) -> str:
        """Run a transaction like a validator: preflight (signatures, age, simulation) unless
        skipped; then execute it. Returns the signature; preflight failures raise RpcError."""
        signature = str(tx.signatures[0])
        with self.lock:
            if preflight and not all(tx.verify_with_results()):
                raise RpcError(-32003, "Transaction signature verification failure")
            if signature in self._ledger:
                if preflight:
                    raise _preflight_failure("AlreadyProcessed")
                return signature
            if not self.blockhash_valid(str(tx.message.recent_blockhash)):
                if preflight:
                    raise _preflight_failure("BlockhashNotFound")
                return signature  # dropped, as a leader drops an expired transaction
            if preflight:
                simulated = self.svm.simulate_transaction(tx)
                if isinstance(simulated, FailedTransactionMetadata):
                    meta = simulated.meta()
                    raise _preflight_failure(error_json(simulated.err()), meta.logs(), meta.compute_units_consumed())
            self._execute(tx)
            return signature

    def _execute(self, tx: VersionedTransaction) -> Landed | None:
        keys = list(tx.message.account_keys)
        pre = [self.svm.get_balance(k) or 0 for k in keys]
        result = self.svm.send_transaction(tx)
        post = [self.svm.get_balance(k) or 0 for k in keys]
        failed = isinstance(result, FailedTransactionMetadata)
        if failed and pre[0] == post[0]:
            return None  # refused before execution, no fee charged: it never lands
        meta = result.meta() if failed else result
        landed = Landed(
            signature=str(tx.signatures[0]), slot=self.slot, block_time=int(time.time()),
            err=error_json(result.err()) if failed else None, fee=pre[0] - post[0] if failed else meta.fee(),
            pre_balances=pre, post_balances=post, logs=list(meta.logs()), units=meta.compute_units_consumed(),
            message=_message_json(tx), raw=bytes(tx),
        )
        self._ledger[landed.signature] = landed
        self._block_signatures.setdefault(self.slot, []).append(landed.signature)
        self.priority.record(self.slot, tx.message)
        for key in dict.fromkeys(str(k) for k in keys):
            self._address_signatures.setdefault(key, []).append(landed.signature)
        return landed

    def simulate(self, tx: VersionedTransaction) -> dict[str, Any]:
        """simulateTransaction's value: err, logs, unitsConsumed (no state change)."""
        with self.lock:
            result = self.svm.simulate_transaction(tx)
            failed = isinstance(result, FailedTransactionMetadata)
            meta = result.meta()
            return {"err": error_json(result.err()) if failed else None, "logs": list(meta.logs()),
                    "accounts": None, "unitsConsumed": meta.compute_units_consumed(), "returnData": None}

    def landed(self, signature: str) -> Landed | None:
        with self.lock:
            return self._ledger.get(signature)

    def transaction_count(self, slot: int) -> int:
        """How many transactions landed at or before `slot` (getEpochInfo's transactionCount)."""
        with self.lock:
            return sum(1 for landed in self._ledger.values() if landed.slot <= slot)

    def status(self, signature: str, search_history: bool) -> dict[str, Any] | None:
        """getSignatureStatuses' entry for one signature (None: unknown). The status cache knows
        the last `status_cache_slots` slots; history search (if the node has history, and the
        ledger still has the slot) the rest."""
        with self.lock:
            landed = self._ledger.get(signature)
            if landed is None:
                return None
            cached = self.slot - landed.slot <= self.config.status_cache_slots
            if not cached and not (search_history and self.in_history(landed.slot)):
                return None
            level = self.level_of(landed.slot)
            confirmations = None if level == "finalized" else self.slot - landed.slot
            status = {"Ok": None} if landed.err is None else {"Err": landed.err}
            return {"slot": landed.slot, "confirmations": confirmations, "err": landed.err, "status": status,
                    "confirmationStatus": level}

    # --- transaction history -------------------------------------------------------------------

    def minimum_ledger_slot(self) -> int:
        """The oldest slot whose block and transactions the node still has (`minimumLedgerSlot`)."""
        with self.lock:
            keep = self.config.ledger_slots
            return max(0, self.slot - keep + 1) if keep > 0 else 0

    def in_history(self, slot: int) -> bool:
        """Whether history answers (search, getTransaction, getBlock, ...) can see `slot`."""
        return self.config.transaction_history and slot >= self.minimum_ledger_slot()

    def require_history(self) -> None:
        """RpcError -32011 on a node without transaction history, as the real node answers."""
        if not self.config.transaction_history:
            raise RpcError(-32011, "Transaction history is not available from this node")

    def signatures_for_address(self, address: str, highest_slot: int, before: str | None = None,
                               until: str | None = None, limit: int = 1000) -> list[Landed]:
        """Transactions naming `address` in slots up to `highest_slot` that the ledger still has,
        newest first (within a slot: last executed first), strictly older than `before` and
        stopping before `until`. A `before` the node does not know gives nothing, as on agave."""
        with self.lock:
            self.require_history()
            listed = [self._ledger[sig] for sig in reversed(self._address_signatures.get(address, ()))]
            listed = [landed for landed in listed if landed.slot <= highest_slot and self.in_history(landed.slot)]
            if before is not None:
                position = next((i for i, landed in enumerate(listed) if landed.signature == before), None)
                if position is None:
                    return []
                listed = listed[position + 1:]
            if until is not None:
                end = next((i for i, landed in enumerate(listed) if landed.signature == until), len(listed))
                listed = listed[:end]
            return listed[:limit]

    def level_of(self, slot: int) -> str:
        """The commitment a block at `slot` has reached."""
        with self.lock:
            for level in reversed(COMMITMENTS):
                if slot <= self.commitment_slot(level):
                    return level
            return "processed"

    # --- prioritization fees -------------------------------------------------------------------

    def prioritization_fees(self, accounts: Sequence[str]) -> list[dict[str, int]]:
        """getRecentPrioritizationFees: per recent slot, what it took to land writing `accounts`."""
        with self.lock:
            return self.priority.recent(self.slot, list(accounts))

    def set_prioritization_floor(self, micro_lamports: int) -> None:
        """Every recent slot reports at least this price from now on (0: only what landed)."""
        with self.lock:
            self.priority.floor = micro_lamports

    # --- faucets -----------------------------------------------------------------------------

    def create_mint(self, address: str, decimals: int) -> None:
        """An initialized SPL mint at `address` (supply 0), mint authority = the devnet authority."""
        mint = Mint(mint_authority=self.authority.pubkey(), supply=0, decimals=decimals, is_initialized=True)
        with self.lock:
            rent = self.svm.minimum_balance_for_rent_exemption(MINT_SIZE)
            self.svm.set_account(Pubkey.from_string(address), Account(rent, bytes(mint), TOKEN_PROGRAM))
            self.mints[address] = decimals

    def airdrop(self, to: Pubkey, lamports: int) -> str:
        """A real System transfer from the devnet authority; RpcError if it fails."""
        return self._faucet([transfer(TransferParams(from_pubkey=self.authority.pubkey(), to_pubkey=to, lamports=lamports))])

    def mint_to(self, owner: Pubkey, mint: str, amount: int) -> str:
        """Create the owner's associated token account (authority pays its rent) and mint into it."""
        from spl.token.instructions import (
            create_idempotent_associated_token_account,
            get_associated_token_address,
            mint_to_checked,
        )
        from spl.token.models import MintToCheckedParams

        decimals = self.mints.get(mint)
        if decimals is None:
            raise RpcError(-32602, f"Invalid params: {mint} is not a devnet mint (have: {', '.join(sorted(self.mints))})")
        mint_key, authority = Pubkey.from_string(mint), self.authority.pubkey()
        ata = get_associated_token_address(owner, mint_key)
        return self._faucet([
            create_idempotent_associated_token_account(authority, owner, mint_key),
            mint_to_checked(MintToCheckedParams(program_id=TOKEN_PROGRAM, mint=mint_key, dest=ata,
                                                mint_authority=authority, amount=amount, decimals=decimals)),
        ])

    def _faucet(self, instructions: list[Any]) -> str:
        # A distinct compute limit per request keeps two identical requests in one slot from
        # having the same signature (which the runtime would refuse as already processed).
        with self.lock:
            seq = next(self._faucet_seq)
            instructions = [set_compute_unit_limit(1_400_000 - seq % 1_000_000), *instructions]
            blockhash = self.svm.latest_blockhash()
            message = Message.new_with_blockhash(instructions, self.authority.pubkey(), blockhash)
            tx = VersionedTransaction.from_legacy(Transaction([self.authority], message, blockhash))
            landed = self._execute(tx)
            if landed is None or landed.err is not None:
                why = describe_error(landed.err) if landed is not None else "refused"
                raise RpcError(-32603, f"faucet request failed: {why}", {"logs": landed.logs if landed else []})
            return landed.signature


def error_json(err: Any) -> Any:
    """The RPC JSON form of a solders TransactionError (what a real node puts in `err`)."""
    rendered = RpcSimulateTransactionResult(err=err, logs=None, accounts=None, units_consumed=None, return_data=None)
    return json.loads(rendered.to_json())["err"]


def _preflight_failure(err: Any, logs: Sequence[str] = (), units: int = 0) -> RpcError:
    """sendTransaction's -32002 error, shaped like the real node's (data = simulation result)."""
    data = {"err": err, "logs": list(logs), "accounts": None, "unitsConsumed": units, "returnData": None,
            "innerInstructions": None, "replacementBlockhash": None}
    return RpcError(-32002, f"Transaction simulation failed: {describe_error(err)}", data)


def _message_json(tx: VersionedTransaction) -> dict[str, Any]:
    """The `transaction` object of getTransaction with encoding "json"."""
    message = tx.message
    header = message.header
    keys = [str(k) for k in message.account_keys]
    instructions = [
        {"programIdIndex": ix.program_id_index, "accounts": list(ix.accounts),
         "data": _b58(bytes(ix.data)), "stackHeight": None}
        for ix in message.instructions
    ]
    return {
        "signatures": [str(s) for s in tx.signatures],
        "message": {
            "accountKeys": keys,
            "header": {"numRequiredSignatures": header.num_required_signatures,
                       "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
                       "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts},
            "recentBlockhash": str(message.recent_blockhash),
            "instructions": instructions,
        },
    }


def _b58(raw: bytes) -> str:
    from chains.solana_address import b58encode

    return b58encode(raw)
