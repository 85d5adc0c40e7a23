"""`EvmAdapter`: the ChainAdapter for every EVM chain in the registry (ethereum, bsc, polygon, ...).

One adapter per registry entry; it talks to that entry's first RPC endpoint. Offline parts
(addresses, building, signing digests, attaching signatures) live in `chains.evm_address` and
`chains.evm_tx`; node access and error mapping in `chains.evm_rpc`. This module holds the
decisions that need a node:

- the node must serve the registry's chain id, checked on first use: a wrong node would have us
  sign for, or read balances from, another chain (ChainMismatch, permanent);
- fees: gas from eth_estimateGas (a token transfer that would revert because the sender lacks the
  tokens is TransactionRejected("insufficient_funds")), with a 20% margin except the exact 21000
  of a plain transfer; EIP-1559 chains pay maxFeePerGas = 2 * baseFee + tip, legacy chains the
  node's gasPrice. `FeeQuote.max_fee = gas * maxFeePerGas (or gasPrice)`;
- broadcast is idempotent: the node already having *this* hash is success;
- status is reorg-aware: a receipt only counts if its block is still the canonical one at its
  height. An EVM transaction has no expiry: status is never EXPIRED;
- `proves_unlandable` (asked after a refusal for good): the sender's nonce at the head block is
  still at or below our transaction's nonce (it is not mined: no transaction with our nonce is)
  and the node does not know our hash (not pending). The head is read first and the nonce is read
  *at that block number*, so any node answering has that block (one behind answers "header not
  found": transient, no proof); the hash is asked last, so a transaction mined meanwhile is seen.
  A nonce past ours is never proof: it may be our own transaction on a node that cannot find it
  by hash (pruned transaction index, lagging backend).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from chains import evm_address, evm_fees, evm_tracking, evm_tx
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
from chains.evm_rpc import REQUEST_TIMEOUT_S, JsonRpcClient, NodeRpcError, batch_results, to_int
from chains.registry import ChainSpec, TokenSpec

PLAIN_TRANSFER_GAS = 21_000
GAS_MARGIN_NUM, GAS_MARGIN_DEN = 6, 5  # x1.2 over the estimate
DEFAULT_PRIORITY_FEE = 10**9  # 1 gwei, when the node has no eth_maxPriorityFeePerGas
PRICE_TTL_CAP_S = 3.0  # fee fields are reused for at most this long (and at most one poll interval)
_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")

# Node messages (lower-cased substrings) meaning it already has a transaction with these bytes.
_ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown", "already exists")
_NONCE_TOO_LOW = ("nonce too low", "nonce is too low", "oldnonce")
# Node messages meaning the transaction pays too little for the node now: bump it, never fail it.
_UNDERPRICED = ("underpriced", "fee too low", "less than block base fee", "fee cap less than", "max fee per gas less than")
# Node errors that are about the node, not the transaction: retry later (ChainRpcError).
_TRANSIENT = ("nonce too high", "gapped-nonce", "txpool is full", "rate limit", "too many requests",
              "header not found", "timeout", "timed out", "busy", "try again", "internal error", "syncing")
_TRANSIENT_CODES = (-32005, -32601, -32603)  # limit exceeded, method not found, internal error
# eth_estimateGas errors meaning the transfer itself would fail (code 3 is "execution reverted").
_EXECUTION_FAILED = ("revert", "invalid opcode", "out of gas", "gas required exceeds")


class EvmAdapter:
    """ChainAdapter for one EVM chain of the registry (family "evm")."""

    curve = Curve.SECP256K1
    key_name = "evm"  # every EVM chain signs with the wallet's one EVM key: one address everywhere
    uses_account_nonce = True
    uses_utxos = False
    # build_context makes no RPC: the signing step may build under the transfer's row lock, in the
    # unit of work that read it (one DB transaction fewer per signature)
    build_context_offline = True

    def __init__(self, spec: ChainSpec, *, timeout: float = REQUEST_TIMEOUT_S) -> None:
        if spec.family != "evm":
            raise ChainError(f"EvmAdapter cannot serve {spec.name!r} of family {spec.family!r}")
        if not isinstance(spec.chain_id, int) or spec.chain_id <= 0:
            raise ChainError(f"EVM chain {spec.name!r} needs a positive integer chain_id in the registry")
        self.spec = spec
        self._rpc = JsonRpcClient(spec.rpc_urls, timeout, failover=spec.failover)
        self._chain_checked = False
        self._bump = evm_fees.BumpOptions.from_options(spec.options, spec.name)
        self.replacement = self._bump.policy
        self._prices: tuple[float, dict[str, int]] | None = None  # (monotonic expiry, fee fields)
        self._price_ttl_s = min(spec.poll_interval_ms / 1000.0, PRICE_TTL_CAP_S)

    def __repr__(self) -> str:
        return f"EvmAdapter({self.spec.name!r}, {self.spec.network!r}, {self._rpc.endpoint})"

    # --- node access -----------------------------------------------------------------------

    def _call(self, method: str, params: list[Any]) -> Any:
        if not self._chain_checked:
            self.verify_chain()
        return self._rpc.call(method, params)

    def verify_chain(self) -> None:
        """Raise ChainMismatch unless the node's eth_chainId is the registry's chain id."""
        served = to_int(self._rpc.call("eth_chainId", []), "chain id")
        if served != self.spec.chain_id:
            raise ChainMismatch(
                f"{self.spec.name} ({self.spec.network}) has chain id {self.spec.chain_id}, but the node at "
                f"{self._rpc.endpoint} serves chain id {served}; refusing to use it"
            )
        self._chain_checked = True

    # --- addresses (offline) ---------------------------------------------------------------

    def validate_address(self, address: str) -> str:
        return evm_address.validate_address(address, self.spec.name)

    def check_destination(self, address: str, token: TokenSpec | None = None) -> str:
        """validate_address plus the destination policy (no zero/precompile/token-contract)."""
        contract = token.contract if token is not None else None
        return evm_address.check_destination(address, self.spec.name, contract)

    def address_from_public_key(self, public_key: bytes) -> str:
        return evm_address.address_from_public_key(public_key)

    # --- fees and nonces -------------------------------------------------------------------

    def list_utxos(self, address: str) -> list[Utxo]:
        return []  # account-based: balances, not outputs

    def quote_fee(self, intent: TransferIntent, utxos: Sequence[Utxo] = ()) -> FeeQuote:
        if not isinstance(intent.amount, int) or isinstance(intent.amount, bool) or intent.amount < 0:
            raise MalformedTransaction(f"amount must be a non-negative integer of base units, got {intent.amount!r}")
        token = self._registry_token(intent.token)
        sender = self.validate_address(intent.from_address)
        to = self.validate_address(intent.to_address)
        if token.asset_type == "NATIVE":
            call = {"from": sender, "to": to, "value": hex(intent.amount)}
        else:
            call = {"from": sender, "to": token.contract, "data": "0x" + evm_tx.erc20_transfer_data(to, intent.amount).hex()}
        gas = self._estimate_gas(call, intent, sender, token)
        fields = {"gas": gas, **self._price_fields()}
        return FeeQuote(max_fee=evm_tx.max_fee_of(fields), params=fields)

    def _estimate_gas(self, call: dict[str, Any], intent: TransferIntent, sender: str, token: TokenSpec) -> int:
        try:
            estimate = to_int(self._call("eth_estimateGas", [call]), "gas estimate")
        except NodeRpcError as exc:
            message = exc.node_message.lower()
            if "insufficient funds" in message or "insufficient balance" in message:
                raise TransactionRejected("insufficient_funds", f"the sender cannot cover the transfer: {exc.node_message}") from None
            if not (exc.code == 3 or any(k in message for k in _EXECUTION_FAILED)):
                raise  # about the node, not the transfer: an RPC error is not a transaction failure
            if token.asset_type != "NATIVE":
                held = self.balance_of(sender, token)
                if held < intent.amount:
                    raise TransactionRejected(
                        "insufficient_funds",
                        f"{sender} holds {held} {token.symbol} base units on {self.spec.name}, the transfer needs {intent.amount}",
                    ) from None
            raise TransactionRejected("rejected_by_node", f"the transfer would fail: {exc.node_message}") from None
        if token.asset_type == "NATIVE" and estimate == PLAIN_TRANSFER_GAS:
            return PLAIN_TRANSFER_GAS  # a plain transfer to an account costs exactly this
        return -(-estimate * GAS_MARGIN_NUM // GAS_MARGIN_DEN)

    def _price_fields(self) -> dict[str, int]:
        """The fee fields, read from the node at most once per `_price_ttl_s` (the chain's poll
        interval, capped at PRICE_TTL_CAP_S: about a block), so a burst of quotes costs one read.

        A cached answer is still a correct reserve: the quote stores these very fields and its
        max_fee is computed from them, and the build refuses fields that could spend more. What
        the bound limits is staleness: a price older than about a block may be too low to land
        soon (EIP-1559's 2 x base fee covers several blocks of base-fee rises)."""
        cached = self._prices
        now = time.monotonic()
        if cached is not None and now < cached[0]:
            return dict(cached[1])
        fields = self._fresh_price_fields()
        self._prices = (now + self._price_ttl_s, fields)
        return dict(fields)

    def _fresh_price_fields(self) -> dict[str, int]:
        if not self.spec.eip1559:
            return {"gasPrice": to_int(self._call("eth_gasPrice", []), "gas price")}
        if not self._chain_checked:
            self.verify_chain()
        # the pending block (its base fee is the one the next block charges, the one a send is
        # judged by), the head as a fallback, and the tip, in one HTTP request
        pending, block, tip_answer = batch_results(self._rpc, [("eth_getBlockByNumber", ["pending", False]),
                                                               ("eth_getBlockByNumber", ["latest", False]),
                                                               ("eth_maxPriorityFeePerGas", [])])
        if isinstance(pending, dict) and pending.get("baseFeePerGas") is not None:
            block = pending
        if isinstance(block, NodeRpcError):
            raise block
        if not isinstance(block, dict):
            raise ChainRpcError(f"{self.spec.name}: the node returned no latest block")
        if block.get("baseFeePerGas") is None:
            raise ChainError(
                f"{self.spec.name}: the registry says eip1559 but the node's blocks have no baseFeePerGas"
            )
        base_fee = to_int(block["baseFeePerGas"], "base fee")
        # the method is optional; nodes without it get the default
        tip = DEFAULT_PRIORITY_FEE if isinstance(tip_answer, NodeRpcError) else to_int(tip_answer, "priority fee")
        return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}

    def replacement_quote(self, intent: TransferIntent, current: FeeQuote) -> FeeQuote | None:
        """The same transaction at raised fee fields (chains.evm_fees); today's price read fresh."""
        fields = evm_tx.fee_fields(current.params, self.spec.eip1559)
        market = self._fresh_price_fields()
        if evm_fees.pays_market(fields, market):
            return None  # waiting for another reason than its price: a bump would only overpay
        raised = evm_fees.bumped_fields(fields, market, self._bump)
        return FeeQuote(max_fee=evm_tx.max_fee_of(raised), params=raised)

    def nonce_taken_by(self, signed: SignedTransaction) -> str | None:
        """The hash of the transaction that used our nonce, at depth (chains.evm_tracking.nonce_user)."""
        sender, nonce = _sender_and_nonce(signed)
        if not self._chain_checked:
            self.verify_chain()
        with self._rpc.pinned():  # the search and the block it ends on, from one node
            return evm_tracking.nonce_user(self._rpc, sender, nonce, self.spec.confirmations)

    def next_nonce(self, address: str) -> int:
        return to_int(self._call("eth_getTransactionCount", [self.validate_address(address), "pending"]), "nonce")

    # --- offline build and signature -------------------------------------------------------

    def build_context(self, intent: TransferIntent) -> dict[str, Any]:
        return {}  # an EVM transaction needs nothing fresh from the node: nonce and fees are fixed

    def build(self, intent: TransferIntent, fee: FeeQuote, nonce: int | None,
              context: dict[str, Any] | None = None) -> UnsignedTransaction:
        token = self._registry_token(intent.token)
        sender = self.validate_address(intent.from_address)
        to = self.validate_address(intent.to_address)
        if nonce is None:
            raise MalformedTransaction("an EVM transaction needs a nonce")
        fields = evm_tx.fee_fields(fee.params, self.spec.eip1559)
        if evm_tx.max_fee_of(fields) > fee.max_fee:
            raise MalformedTransaction("the fee parameters could spend more than the reserved max_fee")
        intent = TransferIntent(sender, to, intent.amount, token)
        tx = evm_tx.transfer_tx(intent, to, self.spec.chain_id, nonce, fields, self.spec.eip1559)
        return evm_tx.build_unsigned(sender, tx)

    def attach_signature(self, payload: bytes, signatures: Sequence[bytes]) -> SignedTransaction:
        if len(signatures) != 1:
            raise InvalidSignature(f"an EVM transaction takes one signature, got {len(signatures)}")
        signature = signatures[0]
        _, tx = evm_tx.decode_payload(payload)
        if tx.get("chainId") != self.spec.chain_id:
            raise MalformedTransaction(
                f"payload is for chain id {tx.get('chainId')!r}, not {self.spec.name} ({self.spec.chain_id})"
            )
        return evm_tx.attach(payload, signature)

    def _registry_token(self, token: TokenSpec) -> TokenSpec:
        """The token as the registry has it: contract and decimals never come from the caller."""
        known = self.spec.token(token.symbol)
        if known != token:
            raise MalformedTransaction(f"token {token.symbol} does not match the {self.spec.name} registry entry")
        return known

    # --- broadcast and status --------------------------------------------------------------

    def broadcast(self, signed: SignedTransaction) -> str:
        try:
            answered = self._call("eth_sendRawTransaction", ["0x" + signed.raw.hex()])
        except NodeRpcError as exc:
            return self._classify_send_error(exc, signed)
        if isinstance(answered, str) and answered.lower() != signed.tx_hash.lower():
            raise ChainRpcError(f"{self.spec.name}: the node answered hash {answered[:80]!r} for {signed.tx_hash}")
        return signed.tx_hash

    def _classify_send_error(self, exc: NodeRpcError, signed: SignedTransaction) -> str:
        message = exc.node_message.lower()
        if any(k in message for k in _ALREADY_KNOWN + _NONCE_TOO_LOW):
            if self._find_transaction(signed.tx_hash) is not None:
                return signed.tx_hash  # the node has these very bytes: a repeated broadcast
            if any(k in message for k in _NONCE_TOO_LOW):
                # Not proof of failure by itself: our own bytes may be mined already and this node
                # lags (or the first send's answer was lost). The pipeline asks `nonce_taken_by`
                # which transaction used the nonce before it decides anything.
                raise TransactionRejected(
                    "nonce_too_low", f"nonce of {signed.tx_hash} is already used and the node does not show "
                    "this transaction", nonce_consumed=True) from None
            raise exc  # "already known" yet not findable: ask again later
        if "insufficient funds" in message:
            raise TransactionRejected("insufficient_funds_for_fee", exc.node_message) from None
        if any(k in message for k in _UNDERPRICED):
            # "replacement transaction underpriced" (another transaction holds the nonce and pays
            # more than ours does by less than the node's rule), "transaction underpriced", a fee
            # cap under the base fee of the next block (the base fee rose since the quote): pay more
            raise TransactionRejected("replacement_underpriced", exc.node_message) from None
        if exc.code in _TRANSIENT_CODES or any(k in message for k in _TRANSIENT):
            raise exc
        raise TransactionRejected("rejected_by_node", exc.node_message) from None

    def proves_unlandable(self, signed: SignedTransaction) -> bool:
        """True when our nonce is unused at the head and our hash is unknown (module docstring);
        every read from one endpoint (the order argument holds for one node, not across two)."""
        sender, nonce = _sender_and_nonce(signed)
        with self._rpc.pinned():
            head = to_int(self._call("eth_blockNumber", []), "block number")
            mined = to_int(self._call("eth_getTransactionCount", [sender, hex(head)]), "nonce")
            if mined > nonce:
                return False  # our nonce is used, perhaps by this very transaction: never proof
            return self._find_transaction(signed.tx_hash) is None

    def _find_transaction(self, tx_hash: str) -> dict[str, Any] | None:
        found = self._call("eth_getTransactionByHash", [tx_hash])
        return found if isinstance(found, dict) else None

    def get_status(self, signed: SignedTransaction) -> TxStatus:
        tx_hash = signed.tx_hash
        if not isinstance(tx_hash, str) or not _TX_HASH.match(tx_hash):
            raise MalformedTransaction(f"not an EVM transaction hash: {tx_hash!r}"[:200])
        with self._rpc.pinned():  # receipt, canonical block and head from one node
            return self._status_of(tx_hash)

    def _status_of(self, tx_hash: str) -> TxStatus:
        receipt = self._call("eth_getTransactionReceipt", [tx_hash])
        if isinstance(receipt, dict) and receipt.get("blockHash"):
            number = to_int(receipt.get("blockNumber"), "receipt block number")
            block = self._call("eth_getBlockByNumber", [hex(number), False])
            if isinstance(block, dict) and str(block.get("hash", "")).lower() == str(receipt["blockHash"]).lower():
                return self._included(receipt, number)
            # The receipt's block was reorganised away: the transaction is back in the pool, or gone.
        found = self._find_transaction(tx_hash)
        return TxStatus(TxState.PENDING if found is not None else TxState.NOT_FOUND)

    def _included(self, receipt: dict[str, Any], number: int) -> TxStatus:
        head = to_int(self._call("eth_blockNumber", []), "block number")
        return evm_tracking.included_status(receipt, number, head)

    def track(self, watched: Sequence[Watched], cursor: Mapping[str, Any]) -> Observation:
        """Many transactions in a few batches: nonces say what moved (chains.evm_tracking)."""
        if not self._chain_checked:
            self.verify_chain()
        with self._rpc.pinned():  # head, nonces, receipts and blocks of one tick from one node
            return evm_tracking.track(self._rpc, self.spec.confirmations, watched)

    # --- balances ----------------------------------------------------------------------------

    def balance_of(self, address: str, token: TokenSpec) -> int:
        owner = self.validate_address(address)
        if token.asset_type == "NATIVE":
            return to_int(self._call("eth_getBalance", [owner, "latest"]), "balance")
        if not token.contract:
            raise MalformedTransaction(f"token {token.symbol} has no contract")
        data = "0x" + evm_tx.erc20_balance_of_data(owner).hex()
        try:
            answer = self._call("eth_call", [{"to": token.contract, "data": data}, "latest"])
        except NodeRpcError as exc:
            if exc.code in _TRANSIENT_CODES or any(k in exc.node_message.lower() for k in _TRANSIENT):
                raise
            raise ChainError(f"{self.spec.name}: balanceOf on {token.symbol} {token.contract} failed: {exc.node_message}") from None
        if not isinstance(answer, str) or len(answer) < 66:
            raise ChainError(
                f"{self.spec.name}: {token.symbol} contract {token.contract} returned no balance "
                "(is there a token contract at that address on this node?)"
            )
        return int(answer[2:66], 16)


def _sender_and_nonce(signed: SignedTransaction) -> tuple[str, int]:
    """(sender, nonce) read back from the signed bytes themselves (typed or legacy EIP-155)."""
    from eth_account import Account
    from eth_keys.exceptions import BadSignature, ValidationError
    from eth_utils import keccak
    import rlp
    from rlp.exceptions import RLPException

    raw = bytes(signed.raw)
    if not raw or "0x" + keccak(raw).hex() != str(signed.tx_hash).lower():
        raise MalformedTransaction(f"signed bytes are not transaction {signed.tx_hash!r}"[:200])
    try:
        fields = rlp.decode(raw[1:] if raw[0] < 0x80 else raw)  # typed: type byte, then [chainId, nonce, ...]
        nonce = int.from_bytes(fields[1] if raw[0] < 0x80 else fields[0], "big")
        sender = Account.recover_transaction(raw)
    except (RLPException, BadSignature, ValidationError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise MalformedTransaction(f"unusable signed EVM transaction: {type(exc).__name__}") from None
    return str(sender), nonce
