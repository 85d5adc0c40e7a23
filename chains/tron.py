"""`TronAdapter`: the ChainAdapter for TRON (TRX and TRC20 tokens) over the node's HTTP wallet API.

Offline parts (addresses, raw_data, txID, signatures) live in `chains.tron_address` and
`chains.tron_tx`; node access and error mapping in `chains.tron_rpc`. This module holds the
decisions that need a node:

- fees: TRON burns TRX for bandwidth (bytes of the signed transaction x `bandwidth_price_sun`,
  unless the account's free or staked bandwidth covers it), for activating a new account (a TRX
  transfer to an address that does not exist yet: 1 TRX + 0.1 TRX on mainnet,
  `activation_fee_sun`), and for a TRC20 call's energy, capped by the transaction's `fee_limit`.
  The fee_limit is quoted from the node (`chains.tron_energy`): the transfer's energy estimate x
  the chain's energy price (`getEnergyFee`) x `energy_margin_percent`, stored in the quote
  (`params.fee_limit`, with `params.energy` and `params.energy_price_sun`) and built as is at
  every (re-)signing; an estimate above `fee_limit_cap_sun` is refused at quote time
  (TransactionRejected "fee_above_cap", the detail says by how much).
  `FeeQuote.max_fee` is the sum of the caps that apply; the receipt's `fee` is what was actually
  burnt (0 when free bandwidth covered a TRX transfer);
- TaPoS and expiry: a transaction names a reference block (TaPoS) and expires `expiration_s`
  after the newest block seen when it was built. The reference is the solidified head
  (`build_context`): an irreversible block, so no short fork can orphan it and leave signed bytes
  that can never pass TaPoS. java-tron takes it into block k only if the newest block at or
  below k's parent with the reference's low 16 bits is the reference (TaPoS) and the parent's
  timestamp is before the expiration; so the blocks that could ever hold it are ref+1 .. m, m
  being the first block whose timestamp is at or past the expiration. It is EXPIRED only on
  proof that none of those holds it (`_expiry_proof`), once the solidified head is at or past the
  expiration (so m exists and is irreversible): either the solidified blocks ref .. m, fetched
  from the solidity API by number and checked to be one chain (each block's parentHash is the
  previous blockID, starting at the reference block whose id matches the transaction's
  ref_block_hash), list no such txID; or the reference is not on the chain at all: the
  solidified block at its number carries another hash (every block TaPoS could compare it with,
  up to the solidified head, is another block), so the bytes can never be valid. A lagging
  backend cannot fake this: one that has not solidified a block answers `{}` (or a short list)
  for it, which is "no proof", never "not there"; a lookup by txID, whose "unknown" means
  nothing from a backend behind, is not relied on. The fields come from the signed bytes'
  raw_data (what the chain checks), and must agree with the stored build context. A broadcast
  refused as expired (or TAPOS_ERROR) becomes TransactionRejected("expired") only with that
  proof, so the pipeline re-signs;
- confirmations count from the head, but reach the registry's depth only once the block is
  solidified (irreversible), whatever the count says;
- broadcast is idempotent: the node already having this txID (DUP_TRANSACTION_ERROR, or an
  "expired"/TaPoS refusal for a transaction that is in fact on chain) is success;
- several endpoints (chains/failover.py): `get_status` (hence `proves_unlandable` and the check
  of a broadcast refused as expired), `build_context` and a `track` tick read through
  `_one_node()`: the full API's reads (receipt, head, block, pending pool) all go to one endpoint
  of `_api`, and the solidity API's reads (solidified head, reference block, solidified blocks) to
  one endpoint of `_solidity_api`, with no failover inside; a node dying midway raises
  ChainRpcError and the whole proof is asked again. Without `solidity_port` both APIs are one
  client, so one node answers the whole proof. With it, the two pools are pinned each on its own
  (endpoint i of one need not be endpoint i of the other), and the pairs assumed consistent are
  any full-API endpoint with any solidity endpoint of the chain: only solidified, irreversible
  data crosses between them. The expiry proof is the solidity endpoint's alone (its solidified
  head, reference block and blocks up to m); the full API's receipt lookup can only end it early
  (found: not expired); the solidified head number that confirmations are compared with, and the
  reference `build_context` takes, are final on every node. Not checked across the pair: that the
  full-API node's block at or below that number is the solidified one (a node on a minority fork
  below the solidified head); the pool's lag and stall checks are what keep such a node out.

Options (`[chains.<name>.options]` in the registry), all optional:
    fee_limit_cap_sun    the highest fee_limit (sun) a TRC20 transfer may be given (default 100 TRX);
                         `fee_limit_sun`, its name before fee limits were estimated, is read as
                         the cap when `fee_limit_cap_sun` is absent (not both)
    energy_margin_percent  fee_limit = energy estimate x energy price x this / 100 (default 120;
                         100 to 1000)
    expiration_s         how long a built transaction stays valid (default 60, at most 86400)
    bandwidth_price_sun  sun burnt per byte when no bandwidth is left (default 1000, mainnet's)
    activation_fee_sun   reserved for a TRX transfer to an unactivated address (default 1.1 TRX)
    genesis_block_id     if set, the node's block 0 must have this blockID (else ChainMismatch)
    solidity_port        a self-hosted java-tron serves /walletsolidity/* on its own HTTP port
                         (node.http.solidityPort, 8091 by default); hosted APIs such as TronGrid
                         serve both on one endpoint, which is the default (option unset)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Any, Mapping

from chains import tron_address, tron_energy, tron_tx
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
from chains.tron_rpc import REQUEST_TIMEOUT_S, TronHttpClient, node_message, to_int, with_port

# Far-future but realistic times (6-byte varints, like real ms timestamps until ~2109): the
# bandwidth estimate of a transaction must not depend on the clock.
_ESTIMATE_CONTEXT = {"ref_block_bytes": "0000", "ref_block_hash": "00" * 8, "expiration": 4_000_000_060_000,
                     "timestamp": 4_000_000_000_000}
_PERMANENT_CODES = {
    "SIGERROR": "rejected_by_node",  # signed by a key the account's permissions do not accept
    "BANDWITH_ERROR": "insufficient_funds_for_fee",  # (sic) no bandwidth and no TRX to burn for it
    "CONTRACT_VALIDATE_ERROR": "rejected_by_node",  # refined by message below
    "CONTRACT_EXE_ERROR": "rejected_by_node",
    "TOO_BIG_TRANSACTION_ERROR": "rejected_by_node",
}
_NOT_YET_DEAD_CODES = ("TRANSACTION_EXPIRATION_ERROR", "TAPOS_ERROR")
_NO_FUNDS = ("balance is not sufficient", "no owneraccount", "does not exist", "not enough")


_OLD_CAP_OPTION = "fee_limit_sun"  # the fixed fee_limit of TRC20 transfers before it was estimated: now the cap


@dataclass(frozen=True)
class TronOptions:
    """The registry's `options` for a TRON chain, checked once when the adapter is made."""

    fee_limit_cap_sun: int = 100_000_000
    energy_margin_percent: int = 120
    expiration_s: int = 60
    bandwidth_price_sun: int = 1_000
    activation_fee_sun: int = 1_100_000
    genesis_block_id: str | None = None
    solidity_port: int | None = None

    @classmethod
    def from_spec(cls, spec: ChainSpec) -> "TronOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec.options) - known - {_OLD_CAP_OPTION})
        if unknown:
            raise ChainError(f"{spec.name}: unknown TRON option(s) {unknown} (known: {sorted(known)})")
        values: dict[str, Any] = dict(spec.options)
        for name in known - {"genesis_block_id", "solidity_port"} | ({_OLD_CAP_OPTION} & set(values)):
            value = values.get(name, getattr(cls, name, None))
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name != "activation_fee_sun" else 0):
                raise ChainError(f"{spec.name}: option {name} must be a positive integer, got {value!r}")
        if _OLD_CAP_OPTION in values:
            if "fee_limit_cap_sun" in values:
                raise ChainError(f"{spec.name}: options fee_limit_sun and fee_limit_cap_sun name the same cap; "
                                 "keep fee_limit_cap_sun only")
            values["fee_limit_cap_sun"] = values.pop(_OLD_CAP_OPTION)
        if not values.get("expiration_s", cls.expiration_s) <= 86_400:
            raise ChainError(f"{spec.name}: option expiration_s must be at most 86400 (the node refuses more)")
        if not 100 <= values.get("energy_margin_percent", cls.energy_margin_percent) <= 1_000:
            raise ChainError(f"{spec.name}: option energy_margin_percent must be 100 to 1000 (below 100 the "
                             "estimated energy itself would not fit)")
        genesis = values.get("genesis_block_id")
        if genesis is not None and not tron_tx.is_txid(genesis):
            raise ChainError(f"{spec.name}: option genesis_block_id must be 64 lowercase hex digits")
        port = values.get("solidity_port")
        if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
            raise ChainError(f"{spec.name}: option solidity_port must be a TCP port, got {port!r}")
        return cls(**values)


@dataclass(frozen=True)
class _Block:
    number: int
    block_id: str
    timestamp: int  # ms
    parent_id: str = ""
    txids: frozenset[str] = frozenset()


# Solidified blocks fetched per walletsolidity/getblockbylimitnext call (java-tron serves at most
# 100; full mainnet blocks are large, so fewer per answer keeps each one well within the timeout).
_SCAN_BATCH = 20
_TAPOS_WINDOW = 65_536  # ref_block_bytes are the low 16 bits of the reference block's number
# Most blocks the solidified head (the reference) may trail the head at build time (mainnet: ~20;
# more is a solidity backend far behind, whose block would be a stale reference).
_MAX_REFERENCE_LAG = 4_096
_ORPHANED = object()  # _reference_block: the reference is not on the chain (TaPoS can never pass)
_VALIDITY_KEYS = ("ref_block_bytes", "ref_block_hash", "expiration", "timestamp")


class TronAdapter:
    """ChainAdapter for one TRON chain of the registry (family "tron")."""

    curve = Curve.SECP256K1
    key_name = "tron"
    uses_account_nonce = False  # TaPoS + expiration instead of nonces
    uses_utxos = False
    replacement = None  # a stuck transaction expires and is re-signed after the expiry proof, never bumped

    def __init__(self, spec: ChainSpec, *, timeout: float = REQUEST_TIMEOUT_S) -> None:
        if spec.family != "tron":
            raise ChainError(f"TronAdapter cannot serve {spec.name!r} of family {spec.family!r}")
        self.spec = spec
        self.options = TronOptions.from_spec(spec)
        self._api = TronHttpClient(spec.rpc_urls, timeout, failover=spec.failover)
        port = self.options.solidity_port
        self._solidity_api = TronHttpClient(with_port(spec.rpc_urls, port), timeout, failover=spec.failover,
                                            head_path="walletsolidity/getnowblock") if port else self._api
        self._chain_checked = self.options.genesis_block_id is None
        self._estimates_energy = True  # until the node says it does not serve wallet/estimateenergy

    def __repr__(self) -> str:
        return f"TronAdapter({self.spec.name!r}, {self.spec.network!r}, {self._api.endpoint})"

    # --- node access -----------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self._chain_checked:
            self.verify_chain()
        api = self._solidity_api if path.startswith("walletsolidity/") else self._api
        return api.post(path, body)

    def verify_chain(self) -> None:
        """Raise ChainMismatch unless the node's block 0 is the registry's genesis_block_id."""
        expected = self.options.genesis_block_id
        if expected is not None:
            served = self._api.post("wallet/getblockbynum", {"num": 0}).get("blockID")
            if served != expected:
                raise ChainMismatch(
                    f"{self.spec.name} ({self.spec.network}) has genesis block {expected}, but the node at "
                    f"{self._api.endpoint} serves {served!r}; refusing to use it"
                )
        self._chain_checked = True

    def _block(self, path: str) -> _Block:
        return self._parse_block(self._post(path), path)

    def _parse_block(self, answer: Any, path: str) -> _Block:
        block_header = answer.get("block_header") if isinstance(answer, dict) else None
        header = block_header.get("raw_data") if isinstance(block_header, dict) else None
        block_id = answer.get("blockID") if isinstance(answer, dict) else None
        listed = answer.get("transactions", []) if isinstance(answer, dict) else None
        if not tron_tx.is_txid(block_id) or not isinstance(header, dict) or not isinstance(listed, list):
            raise ChainRpcError(f"{self.spec.name}: {path} answered no usable block")
        txids = frozenset(str(t.get("txID")) for t in listed if isinstance(t, dict))
        # protobuf JSON omits zero fields: block 0 has no "number"
        return _Block(to_int(header.get("number", 0), "block number"), str(block_id),
                      to_int(header.get("timestamp", 0), "block timestamp"), str(header.get("parentHash", "")), txids)

    def _solid_block(self, number: int) -> _Block | None:
        """The solidified block at `number`, None if the answering node has not solidified it."""
        answer = self._post("walletsolidity/getblockbynum", {"num": number})
        return self._parse_block(answer, "walletsolidity/getblockbynum") if answer else None

    def _solid_blocks(self, start: int, end: int) -> list[_Block]:
        """Solidified blocks start .. end-1 as far as the answering node has them (maybe fewer, or none)."""
        answer = self._post("walletsolidity/getblockbylimitnext", {"startNum": start, "endNum": end})
        listed = answer.get("block", [])
        if not isinstance(listed, list):
            raise ChainRpcError(f"{self.spec.name}: walletsolidity/getblockbylimitnext answered no usable block list")
        return [self._parse_block(item, "walletsolidity/getblockbylimitnext") for item in listed]

    def _head(self) -> _Block:
        return self._block("wallet/getnowblock")

    def _one_node(self) -> AbstractContextManager[None]:
        """Every read inside on one endpoint of each API (`chains.pinning`; one client without
        `solidity_port`, so then one node answers everything)."""
        return one_endpoint(self._api, self._solidity_api)

    def _solid_head(self) -> _Block:
        return self._block("walletsolidity/getnowblock")

    # --- addresses (offline) ---------------------------------------------------------------

    def validate_address(self, address: str) -> str:
        return tron_address.validate_address(address, self.spec.name)

    def check_destination(self, address: str, token: TokenSpec | None = None) -> str:
        """validate_address plus the destination policy (no zero address, no token contract)."""
        contract = token.contract if token is not None else None
        return tron_address.check_destination(address, self.spec.name, contract)

    def address_from_public_key(self, public_key: bytes) -> str:
        return tron_address.address_from_public_key(public_key)

    # --- fees ------------------------------------------------------------------------------

    def list_utxos(self, address: str) -> list[Utxo]:
        return []  # account-based

    def replacement_quote(self, intent: TransferIntent, current: FeeQuote) -> FeeQuote | None:
        return None  # never replaced by fee (see `replacement`)

    def next_nonce(self, address: str) -> int:
        raise ChainError("TRON has no account nonce (uses_account_nonce is False)")

    def quote_fee(self, intent: TransferIntent, utxos: Sequence[Utxo] = ()) -> FeeQuote:
        token, sender, to = self._checked_intent(intent)
        if token.asset_type == "NATIVE":
            held = self._trx_balance(sender)
            if held < intent.amount:
                raise TransactionRejected(
                    "insufficient_funds", f"{sender} holds {held} sun on {self.spec.name}, the transfer needs {intent.amount}")
            raw = tron_tx.trx_transfer_raw_data(sender, to, intent.amount, _ESTIMATE_CONTEXT)
            activation = 0 if self._account(to) else self.options.activation_fee_sun
            params = {"kind": "TRX", "bandwidth_sun": self._bandwidth_fee(raw), "activation_sun": activation}
        else:
            held = self._trc20_balance(sender, token)
            if held < intent.amount:
                raise TransactionRejected(
                    "insufficient_funds",
                    f"{sender} holds {held} {token.symbol} base units on {self.spec.name}, the transfer needs {intent.amount}")
            energy, price, fee_limit = self._fee_limit(sender, token, to, intent.amount)
            raw = tron_tx.trc20_transfer_raw_data(sender, token.contract or "", to, intent.amount, fee_limit,
                                                  _ESTIMATE_CONTEXT)
            params = {"kind": "TRC20", "bandwidth_sun": self._bandwidth_fee(raw), "fee_limit": fee_limit,
                      "energy": energy, "energy_price_sun": price}
        return FeeQuote(max_fee=_max_fee(params), params=params)

    def _fee_limit(self, sender: str, token: TokenSpec, to: str, amount: int) -> tuple[int, int, int]:
        """(energy, sun per energy, fee_limit) of a TRC20 transfer, the fee_limit within the cap."""
        energy = self._energy(sender, token, to, amount)
        price = tron_energy.energy_price(self._post("wallet/getchainparameters"), self.spec.name)
        margin, cap = self.options.energy_margin_percent, self.options.fee_limit_cap_sun
        fee_limit = tron_energy.fee_limit(energy, price, margin)
        if fee_limit > cap:
            raise TransactionRejected(
                "fee_above_cap",
                f"the energy estimate exceeds the cap: {energy} energy x {price} sun x {margin}% = {fee_limit} sun, "
                f"over fee_limit_cap_sun {cap} of {self.spec.name}")
        return energy, price, fee_limit

    def _energy(self, sender: str, token: TokenSpec, to: str, amount: int) -> int:
        """The energy `transfer(to, amount)` will use: estimateenergy, or triggerconstantcontract once
        the node said it does not serve estimates (remembered for this adapter)."""
        body = {"owner_address": sender, "contract_address": token.contract, "visible": True,
                "function_selector": "transfer(address,uint256)", "parameter": tron_tx.trc20_transfer_parameter(to, amount)}
        what = f"a {token.symbol} transfer of {amount} from {sender}"
        if self._estimates_energy:
            energy = tron_energy.required(self._post("wallet/estimateenergy", body), self.spec.name, what)
            if energy is not None:
                return energy
            self._estimates_energy = False
        return tron_energy.used(self._post("wallet/triggerconstantcontract", body), self.spec.name, what)

    def _bandwidth_fee(self, raw_data: dict[str, Any]) -> int:
        return tron_tx.bandwidth_bytes(raw_data) * self.options.bandwidth_price_sun

    def _checked_intent(self, intent: TransferIntent) -> tuple[TokenSpec, str, str]:
        if not isinstance(intent.amount, int) or isinstance(intent.amount, bool) or intent.amount <= 0:
            raise MalformedTransaction(f"amount must be a positive integer of base units, got {intent.amount!r}")
        known = self.spec.token(intent.token.symbol)
        if known != intent.token:
            raise MalformedTransaction(f"token {intent.token.symbol} does not match the {self.spec.name} registry entry")
        if known.asset_type not in ("NATIVE", "TRC20"):
            raise MalformedTransaction(f"{self.spec.name} cannot move {known.asset_type} token {known.symbol}")
        return known, self.validate_address(intent.from_address), self.validate_address(intent.to_address)

    # --- offline build and signature -------------------------------------------------------

    def build_context(self, intent: TransferIntent) -> dict[str, Any]:
        """The solidified head as TaPoS reference; expiration `expiration_s` after the newest block.

        The reference must be irreversible: a transaction referencing the unconfirmed head is
        dead for good if a short fork orphans that block (TAPOS_ERROR everywhere), and can only
        be replaced once its expiration is solidified. The times come from the head (the newer
        of the two answers, so the reference is never newer than `timestamp`); a solidified head
        trailing the head by more than `_MAX_REFERENCE_LAG` blocks is refused (transient).
        """
        with self._one_node():
            solid = self._solid_head()
            head = self._head()
        if head.number - solid.number > _MAX_REFERENCE_LAG:
            raise ChainRpcError(f"{self.spec.name}: the solidified head {solid.number} trails the head "
                                f"{head.number} by more than {_MAX_REFERENCE_LAG} blocks; not a usable reference")
        now = max(head.timestamp, solid.timestamp)
        return {
            "ref_block_bytes": solid.block_id[12:16],  # bytes 6..8 of the block number
            "ref_block_hash": solid.block_id[16:32],  # bytes 8..16 of the block hash
            "expiration": now + self.options.expiration_s * 1000,
            "timestamp": now,
        }

    def build(self, intent: TransferIntent, fee: FeeQuote, nonce: int | None,
              context: dict[str, Any] | None = None) -> UnsignedTransaction:
        token, sender, to = self._checked_intent(intent)
        params = _fee_params(fee.params, token)
        if _max_fee(params) > fee.max_fee:
            raise MalformedTransaction("the fee parameters could spend more than the reserved max_fee")
        if context is None:
            raise MalformedTransaction("a TRON transaction needs the build context (reference block, expiration)")
        if token.asset_type == "NATIVE":
            raw = tron_tx.trx_transfer_raw_data(sender, to, intent.amount, context)
        else:
            raw = tron_tx.trc20_transfer_raw_data(sender, token.contract or "", to, intent.amount,
                                                  params["fee_limit"], context)
        return tron_tx.build_unsigned(raw)

    def attach_signature(self, payload: bytes, signatures: Sequence[bytes]) -> SignedTransaction:
        if len(signatures) != 1:
            raise InvalidSignature(f"a TRON transaction takes one signature, got {len(signatures)}")
        return tron_tx.attach(payload, signatures[0])

    # --- broadcast and status --------------------------------------------------------------

    def broadcast(self, signed: SignedTransaction) -> str:
        doc = tron_tx.decode_signed(signed.raw)
        if doc["txID"] != signed.tx_hash:
            raise MalformedTransaction(f"signed bytes are transaction {doc['txID']}, not {signed.tx_hash}")
        answer = self._post("wallet/broadcasttransaction", doc)
        if answer.get("result") is True:
            if answer.get("txid", signed.tx_hash) != signed.tx_hash:
                raise ChainRpcError(f"{self.spec.name}: the node answered txid {str(answer['txid'])[:80]!r} for {signed.tx_hash}")
            return signed.tx_hash
        return self._classify_refusal(answer, signed, int(doc["raw_data"]["expiration"]))

    def _classify_refusal(self, answer: dict[str, Any], signed: SignedTransaction, expiration: int) -> str:
        code, message = str(answer.get("code", "")), node_message(answer)
        detail = f"{code}: {message}"[:500]
        if code == "DUP_TRANSACTION_ERROR":
            return signed.tx_hash  # the node has these very bytes
        if code in _NOT_YET_DEAD_CODES:
            status = self.get_status(signed)
            if status.state in (TxState.INCLUDED, TxState.REVERTED, TxState.PENDING):
                return signed.tx_hash  # it made it after all: a repeated broadcast
            if status.state is TxState.EXPIRED:
                raise TransactionRejected("expired", f"{signed.tx_hash} can no longer be included ({detail})")
            # Refused, but not yet provably dead (the solidified head has not passed its
            # expiration): ask again later rather than re-sign a transaction that may still land.
            raise ChainRpcError(f"{self.spec.name}: {detail}; waiting until its expiration is solidified")
        if code in _PERMANENT_CODES:
            reason = _PERMANENT_CODES[code]
            if code == "CONTRACT_VALIDATE_ERROR" and any(k in message.lower() for k in _NO_FUNDS):
                reason = "insufficient_funds"
            raise TransactionRejected(reason, detail)
        # SERVER_BUSY, NO_CONNECTION, NOT_ENOUGH_EFFECTIVE_CONNECTION, BLOCK_UNSOLIDIFIED,
        # OTHER_ERROR, or something new: about the node, not the transaction.
        raise ChainRpcError(f"{self.spec.name}: broadcast not accepted ({detail or answer!r})"[:500])

    def get_status(self, signed: SignedTransaction) -> TxStatus:
        """Asked of one node per API (module docstring, several endpoints)."""
        txid = signed.tx_hash
        if not tron_tx.is_txid(txid):
            raise MalformedTransaction(f"not a TRON txID: {txid!r}"[:200])
        with self._one_node():
            return self._status(signed, txid)

    def _status(self, signed: SignedTransaction, txid: str) -> TxStatus:
        validity = _validity(signed)
        solid = self._solid_head()  # first: a transaction included after this read is still found below
        info = self._post("wallet/gettransactioninfobyid", {"value": txid})
        if info.get("id") == txid:
            return self._included(txid, info, solid)
        if validity is not None and solid.timestamp >= validity["expiration"]:
            proven = self._expiry_proof(txid, validity, solid)
            if proven is not None:
                return TxStatus(proven)
        pending = self._post("wallet/gettransactionfrompending", {"value": txid})
        return TxStatus(TxState.PENDING if pending.get("txID") == txid else TxState.NOT_FOUND)

    def proves_unlandable(self, signed: SignedTransaction) -> bool:
        """True iff `get_status` would say EXPIRED: the expiry proof of `_expiry_proof`."""
        return self.get_status(signed).state is TxState.EXPIRED

    def track(self, watched: Sequence[Watched], cursor: Mapping[str, Any]) -> Observation:
        """One tracker tick by block scan: one gettransactioninfobyblocknum per block since the
        cursor (capped), details only for matches, stored blocks re-checked at depth; see
        `chains.tron_tracking` (imported here: it builds on this module)."""
        from chains.tron_tracking import track_blocks

        with self._one_node():  # heads, blocks and their infos: one node's chain per API
            return track_blocks(self, watched, cursor)

    def _expiry_proof(self, txid: str, validity: Mapping[str, Any], solid: _Block) -> TxState | None:
        """EXPIRED when no block that could ever hold the transaction does; None when not proven.

        Blocks that could hold it: ref+1 .. m, m the first block with timestamp >= expiration
        (java-tron checks the expiration against the parent block's timestamp). The caller saw a
        solidified head at or past the expiration, so m is solidified. The reference block is
        found by number (its low 16 bits are ref_block_bytes) and must carry ref_block_hash; the
        blocks after it are fetched from the solidity API and must chain by parentHash up to m.
        A reference that is not on the chain (`_reference_block`) proves it at once: TaPoS can
        never pass. Any block the answering node does not have (a lagging backend of a pool, a
        node catching up) ends the scan without proof. PENDING if a solidified block lists it
        (the receipt lookup lagged): not dead, and the next poll sees its receipt.
        """
        expiration = validity["expiration"]
        previous = self._reference_block(validity, solid)
        if previous is _ORPHANED:
            return TxState.EXPIRED
        if not isinstance(previous, _Block):
            return None
        while previous.timestamp < expiration:
            if previous.number >= solid.number:
                return None  # the chain we followed does not reach the solidified head's time
            batch = self._solid_blocks(previous.number + 1, min(previous.number + 1 + _SCAN_BATCH, solid.number + 1))
            if not batch:
                return None  # the answering node has not solidified the next block: no proof
            for block in batch:
                if block.number != previous.number + 1 or block.parent_id != previous.block_id:
                    return None  # not one chain from the reference block: no proof
                if txid in block.txids:
                    return TxState.PENDING
                previous = block
                if previous.timestamp >= expiration:
                    break
        return TxState.EXPIRED

    def _reference_block(self, validity: Mapping[str, Any], solid: _Block) -> _Block | object | None:
        """The solidified block the transaction references (TaPoS); `_ORPHANED` when the reference
        is provably not on the chain; None when the answering node cannot tell.

        Candidates are the solidified blocks whose low 16 bits are ref_block_bytes, newest (at or
        below the solidified head) first; TaPoS compares the reference with the newest of them
        at or below a block's parent. One carrying ref_block_hash is the reference. Candidates
        newer than the transaction (timestamp past its `timestamp`) cannot be it and are passed;
        the first one that is not newer, if it carries another hash (or if none is left), means
        the reference was orphaned: TaPoS fails for every parent from there to the solidified
        head, and a block whose parent is older was made before the transaction existed.
        Built from the solidified head (`build_context`) this never happens; a transaction
        built on an unconfirmed head that a short fork replaced is thus proven dead, not left
        waiting forever. A candidate the answering node has not solidified: None (no proof).
        """
        low = int(validity["ref_block_bytes"], 16)
        number = solid.number - ((solid.number - low) % _TAPOS_WINDOW)
        while number >= 0:
            block = self._solid_block(number)
            if block is None:
                return None
            if block.number != number:
                raise ChainRpcError(f"{self.spec.name}: walletsolidity/getblockbynum {number} answered block {block.number}")
            if block.block_id[16:32] == validity["ref_block_hash"]:
                return block
            if block.timestamp <= validity["timestamp"]:
                return _ORPHANED  # the block TaPoS checks at this number is another one: never valid
            number -= _TAPOS_WINDOW
        return _ORPHANED  # no block at any candidate number is the reference

    def _included(self, txid: str, info: dict[str, Any], solid: _Block) -> TxStatus:
        number = to_int(info.get("blockNumber"), "receipt block number")
        head = self._head()
        block = self._post("wallet/getblockbynum", {"num": number})
        listed = block.get("transactions", [])
        if not isinstance(listed, list) or not any(isinstance(t, dict) and t.get("txID") == txid for t in listed):
            return TxStatus(TxState.PENDING)  # the receipt's block is being replaced (a fork switch)
        return receipt_status(info, number, str(block.get("blockID")), head.number, solid.number, self.spec.confirmations)

    # --- balances ----------------------------------------------------------------------------

    def _account(self, address: str) -> dict[str, Any]:
        """The account, or {} if it was never activated."""
        return self._post("wallet/getaccount", {"address": address, "visible": True})

    def _trx_balance(self, address: str) -> int:
        return to_int(self._account(address).get("balance", 0), "balance")

    def _trc20_balance(self, owner: str, token: TokenSpec) -> int:
        answer = self._post("wallet/triggerconstantcontract", {
            "owner_address": owner, "contract_address": token.contract,
            "function_selector": "balanceOf(address)", "parameter": tron_tx.trc20_balance_of_parameter(owner),
            "visible": True,
        })
        result = answer.get("result") if isinstance(answer.get("result"), dict) else {}
        outputs = answer.get("constant_result")
        if result.get("result") is not True or not isinstance(outputs, list) or not outputs:
            why = node_message(result) or str(result.get("code", "")) or "no result"
            raise ChainError(f"{self.spec.name}: balanceOf on {token.symbol} {token.contract} failed: {why}"[:300])
        value = outputs[0]
        if not isinstance(value, str) or len(value) < 64:
            raise ChainError(f"{self.spec.name}: {token.symbol} contract {token.contract} returned no balance")
        try:
            return int(value[:64], 16)
        except ValueError:
            raise ChainRpcError(f"{self.spec.name}: unusable balanceOf answer {value[:80]!r}") from None

    def balance_of(self, address: str, token: TokenSpec) -> int:
        owner = self.validate_address(address)
        if token.asset_type == "NATIVE":
            return self._trx_balance(owner)
        if not token.contract:
            raise MalformedTransaction(f"token {token.symbol} has no contract")
        return self._trc20_balance(owner, token)


def _validity(signed: SignedTransaction) -> dict[str, Any] | None:
    """Reference block and times that decide where the transaction can land, from the signed
    bytes' raw_data (what the chain checks); None (nothing can be proven) when there are no bytes,
    they are another transaction's, or the stored build context disagrees with them."""
    if not signed.raw:
        return None
    doc = tron_tx.decode_signed(signed.raw)
    if doc["txID"] != signed.tx_hash:
        return None
    raw_data = doc["raw_data"]
    try:
        validity = tron_tx.check_context({key: raw_data.get(key) for key in _VALIDITY_KEYS})
    except MalformedTransaction:
        return None
    context = signed.context if isinstance(signed.context, Mapping) else {}
    if any(key in context and context[key] != validity[key] for key in _VALIDITY_KEYS):
        return None
    return validity


def _fee_params(params: Mapping[str, Any], token: TokenSpec) -> dict[str, int]:
    """A stored FeeQuote.params, checked against the token it is used for."""
    kind = "TRX" if token.asset_type == "NATIVE" else "TRC20"
    if params.get("kind") != kind:
        raise MalformedTransaction(f"fee parameters are for {params.get('kind')!r}, not a {kind} transfer")
    keys = ("bandwidth_sun", "activation_sun") if kind == "TRX" else ("bandwidth_sun", "fee_limit")
    checked: dict[str, int] = {}
    for key in keys:
        value = params.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 2**63 - 1:
            raise MalformedTransaction(f"fee parameter {key!r} must be a non-negative integer, got {value!r}")
        checked[key] = value
    if kind == "TRC20" and checked["fee_limit"] < 1:
        raise MalformedTransaction("fee_limit must be positive")
    return checked


def _max_fee(params: Mapping[str, Any]) -> int:
    """Most sun the transaction can burn: bandwidth + activation (TRX) or + fee_limit (TRC20)."""
    return sum(int(params.get(key, 0)) for key in ("bandwidth_sun", "activation_sun", "fee_limit"))


def receipt_status(info: Mapping[str, Any], number: int, block_id: str, head: int, solid: int, depth: int) -> TxStatus:
    """The status a transaction info in canonical block `number` gives (get_status and track)."""
    confirmations = max(head - number + 1, 1)
    # Irreversible only once solidified: the count alone never reaches the depth before that.
    confirmations = max(confirmations, depth) if number <= solid else min(confirmations, depth - 1)
    receipt = info.get("receipt") if isinstance(info.get("receipt"), dict) else {}
    failed = info.get("result") == "FAILED" or receipt.get("result", "SUCCESS") != "SUCCESS"
    why = receipt.get("result") if receipt.get("result", "SUCCESS") != "SUCCESS" else _decode_message(info.get("resMessage"))
    return TxStatus(
        state=TxState.REVERTED if failed else TxState.INCLUDED,
        block_number=number,
        block_hash=block_id,
        confirmations=confirmations,
        fee_paid=to_int(info.get("fee", 0), "receipt fee"),  # absent = 0: free bandwidth paid
        detail=str(why)[:200] if failed and why else None,
    )


def _decode_message(value: object) -> str | None:
    """TRON returns resMessage as hex of the text."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return bytes.fromhex(value).decode("utf-8", errors="replace")
    except ValueError:
        return value
