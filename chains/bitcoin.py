"""`BitcoinAdapter`: the ChainAdapter for a Bitcoin registry entry, talking to bitcoind JSON-RPC.

Offline parts live in `chains.bitcoin_address` (addresses) and `chains.bitcoin_tx` (building,
digests, signatures); node access and error mapping in `chains.bitcoin_rpc`. This module holds
the decisions that need a node, or that are policy:

- The node must serve the registry's network (`getblockchaininfo.chain`), checked on first use
  (ChainMismatch otherwise). It needs `-txindex=1`: `getrawtransaction` is how confirmations
  are followed.
- Wallet keys are P2WPKH (native segwit v0); every transfer spends the sender's own outputs and
  sends its change back to the same address. Destinations may be any standard address.
- UTXOs (`options.utxo_source`):
  * "scantxoutset" (default): bitcoind's UTXO-set scan of `addr(<address>)`. Works on any node
    without a wallet, sees *confirmed* outputs only, so change is spendable after one block. It
    does not see spends in the mempool either; that is what the pipeline's reservations are for
    (an output stays reserved until its transfer is final, i.e. spent in a deep block).
  * "wallet": `listunspent` on a watch-only wallet into which the addresses were imported
    (endpoint URL `.../wallet/<name>`); it sees the mempool, and with `min_confirmations = 0`
    spends unconfirmed change of our own transactions (never unconfirmed third-party outputs:
    `include_unsafe` is off). Faster than a UTXO-set scan on mainnet.
  Immature coinbase outputs (< 100 confirmations) are never offered.
- Fee rate: max(estimatesmartfee(`fee_target_blocks`) rounded up to sat/vB, the mempool's minimum
  fee rate, `fee_floor_sat_vb`), capped at `fee_cap_sat_vb` (default 500) so a confused node
  cannot drain a wallet in fees.
- Input selection, largest-first: add the largest unreserved outputs until they pay
  amount + fee of a transaction with a change output (fee = rate * estimated vsize, where each
  P2WPKH input counts its largest possible signature). Change under the dust limit of the
  sender's P2WPKH output (294 sat) is not created: it goes to the fee. Largest-first keeps the
  input count, hence the fee and the number of outputs locked per transfer, small. The quote's
  `max_fee` is exactly inputs - amount - change, which is what the chain will charge.
- Fee bumps (BIP125; every input signals with sequence 0xfffffffd, see `bitcoin_tx`):
  `replacement` is ReplacementPolicy(after_s=`rbf_after_s` (default 600), percent=`bump_percent`
  (default 20)). `replacement_quote` keeps the inputs and the outputs and takes the higher fee from
  the change; its rate is max(old rate + `bump_percent`, the market rate now (as `fee_rate`, before
  the cap), old rate + the node's incremental relay fee), at most `max_fee_rate_sat_vb` (default
  the larger of 1000 and `fee_cap_sat_vb`), with the rate math in `bitcoin_bump`. None when the
  transaction already pays the market rate; BumpRefused("at_fee_cap") when the cap leaves no rate
  the node would accept, BumpRefused("change_below_dust") when the change cannot pay (or there is
  none): the bump fails, the transfer keeps its transaction.
- Broadcast is idempotent: the node already having this transaction (mempool or chain) is
  success; a replacement refused for paying too little ("insufficient fee, rejecting replacement
  ...", bitcoind 28's "does not improve feerate diagram") is TransactionRejected
  ("replacement_underpriced"), which is also what re-sending a transaction that a replacement has
  evicted gets; any other refusal for policy (fee, dust, scripts, missing inputs that are not our
  own transaction's) is TransactionRejected("rejected_by_node"). So is "txn-mempool-conflict":
  bitcoind says it when an input is spent in its mempool by a transaction that does not signal
  BIP125 (ours always do, so not ours: a third party with the key, or a non-RBF wallet), which no
  fee can replace; the pipeline's `proves_unlandable` then finds the input spent and holds the
  transfer for ops instead of failing it.
- Status is reorg-aware: a transaction counts as INCLUDED only while its block is on the main
  chain (`getblockheader.confirmations` is -1 for a block that was reorganised away). Bitcoin has
  no expiry: a transaction is PENDING, INCLUDED or NOT_FOUND, never EXPIRED.
- `proves_unlandable` (asked after a refusal for good): every input of the signed bytes is still
  unspent, in the chain and in the mempool (`gettxout` with include_mempool); then no block and no
  mempool of that node has our transaction, and the pipeline may release the inputs. Asked in an
  order a lagging node cannot pass: the tip first (`getblockchaininfo`; a node in initial block
  download proves nothing), then each input, whose answer must come from a node whose best block
  is at least that tip (its `bestblock` is the tip, or a main-chain block at or above its height).
  An input spent or unknown is never proof: it may be spent by this very transaction.
  With several endpoints (chains/failover.py) every read of the proof goes to one node
  (`chains.pinning.one_endpoint`): the tip of one node and the outputs of another would make the
  `bestblock` check compare two chains. So do `get_status` (the transaction, its block header and
  the mempool) and a `track` tick (tip, window and blocks). A node dying midway raises
  ChainRpcError; the whole proof is asked again, and may then start on another endpoint.
- balance_of is the sum of the address's spendable outputs as the UTXO source sees them (confirmed
  only with scantxoutset; immature coinbase left out), so after a confirmed send it has dropped
  by exactly amount + fee.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from chains import bitcoin_address as addr
from chains import bitcoin_bump, bitcoin_tracking
from chains import bitcoin_tx as btx
from chains.base import (
    Curve,
    FeeQuote,
    Observation,
    ReplacementPolicy,
    SignedTransaction,
    TransferIntent,
    TxState,
    TxStatus,
    UnsignedTransaction,
    Utxo,
    Watched,
)
from chains.bitcoin_rpc import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_IN_WARMUP,
    RPC_VERIFY_ALREADY_IN_CHAIN,
    REQUEST_TIMEOUT_S,
    BitcoinRpcClient,
    NodeRpcError,
    btc_to_sat,
    to_int,
)
from chains.errors import (
    BumpRefused,
    ChainError,
    ChainMismatch,
    ChainRpcError,
    InvalidAddress,
    MalformedTransaction,
    TransactionRejected,
)
from chains.pinning import one_endpoint
from chains.registry import ChainSpec, TokenSpec

COINBASE_MATURITY = 100
MAX_INPUTS = 500  # keeps a transaction far below the 100 kvB standardness limit
SCAN_TIMEOUT_S = 120.0  # a mainnet UTXO-set scan takes a while
_TXID = re.compile(r"^[0-9a-f]{64}$")
# getblockchaininfo "chain" per registry network.
_NODE_CHAIN = {"mainnet": "main", "testnet": "test", "testnet4": "testnet4", "signet": "signet", "regtest": "regtest"}

# sendrawtransaction refusals (lower-cased substrings).
# "same-nonwitness-data": the mempool has this txid with another witness (e.g. a second signing by
# an MPC signer with fresh nonces); the txid, which fixes inputs and outputs, is what confirms.
_ALREADY_HAVE = ("txn-already-in-mempool", "txn-already-known", "already in block chain", "already in utxo set",
                 "txn-same-nonwitness-data-in-mempool")
_MISSING_INPUTS = ("missing inputs", "missingorspent", "missing-inputs")
# BIP125 rules 3, 4 and 6 (bitcoind <= 27: "insufficient fee, rejecting replacement <txid>...";
# 28's package RBF: "insufficient feerate: does not improve feerate diagram"); a higher fee can pass.
# "min relay fee not met" / "mempool min fee not met": the mempool wants a higher rate now; the
# pipeline bumps (the replacement quote prices at least mempoolminfee), never fails for it.
_UNDERPRICED = ("insufficient fee", "does not improve feerate diagram", "min fee not met", "min relay fee not met")
_TRANSIENT = ("loading", "verifying", "rescanning", "warmup", "timeout", "work queue depth exceeded",
              # mempool pressure: the same bytes can be accepted later, so wait rather than fail
              "mempool full", "too-long-mempool-chain", "too many unconfirmed")


@dataclass(frozen=True)
class Selection:
    """Inputs chosen for a transfer and what they pay."""

    inputs: tuple[Utxo, ...]
    fee: int
    change: int
    vsize: int


class NotEnoughFunds(Exception):
    """The offered outputs cannot pay amount + fee."""

    def __init__(self, available: int, needed: int, count: int) -> None:
        super().__init__(f"{available} sat in {count} outputs, need at least {needed}")
        self.available, self.needed, self.count = available, needed, count


def select_inputs(utxos: Sequence[Utxo], amount: int, destination_script: bytes, change_script: bytes,
                  fee_rate: int) -> Selection:
    """Largest-first selection (see the module docstring); NotEnoughFunds if the outputs cannot pay."""
    unique = {u.outpoint: u for u in utxos}
    ordered = sorted(unique.values(), key=lambda u: (-u.value, u.txid, u.vout))[:MAX_INPUTS]
    chosen: list[Utxo] = []
    total = 0
    for utxo in ordered:
        chosen.append(utxo)
        total += utxo.value
        vsize_alone = btx.estimate_vsize(len(chosen), [destination_script])
        if total < amount + vsize_alone * fee_rate:
            continue
        vsize = btx.estimate_vsize(len(chosen), [destination_script, change_script])
        change = total - amount - vsize * fee_rate
        if change >= addr.dust_limit(change_script):
            return Selection(tuple(chosen), vsize * fee_rate, change, vsize)
        return Selection(tuple(chosen), total - amount, 0, vsize_alone)
    needed = amount + btx.estimate_vsize(max(len(chosen), 1), [destination_script]) * fee_rate
    raise NotEnoughFunds(total, needed, len(chosen))


def _int_option(options: dict[str, Any], key: str, default: int, low: int, high: int, chain: str) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ChainError(f"{chain}: option {key} must be an integer {low}..{high}, got {value!r}")
    return value


class BitcoinAdapter:
    """ChainAdapter for one Bitcoin registry entry (family "bitcoin")."""

    curve = Curve.SECP256K1
    key_name = "bitcoin"
    uses_account_nonce = False
    uses_utxos = True
    replacement: ReplacementPolicy  # from the registry options, in __init__ (module docstring: fee bumps)

    def __init__(self, spec: ChainSpec, *, timeout: float = REQUEST_TIMEOUT_S) -> None:
        if spec.family != "bitcoin":
            raise ChainError(f"BitcoinAdapter cannot serve {spec.name!r} of family {spec.family!r}")
        addr.network_of(spec.network)  # UnknownChain for a network we have no prefixes for
        options = dict(spec.options)
        self.fee_floor = _int_option(options, "fee_floor_sat_vb", 1, 1, 100_000, spec.name)
        self.fee_cap = _int_option(options, "fee_cap_sat_vb", 500, self.fee_floor, 100_000, spec.name)
        self.fee_target = _int_option(options, "fee_target_blocks", 6, 1, 1008, spec.name)
        self.min_confirmations = _int_option(options, "min_confirmations", 1, 0, 1000, spec.name)
        self.max_fee_rate = _int_option(options, "max_fee_rate_sat_vb", max(1000, self.fee_cap), self.fee_cap, 100_000,
                                        spec.name)
        self.replacement = ReplacementPolicy(
            after_s=float(_int_option(options, "rbf_after_s", 600, 1, 604_800, spec.name)),
            percent=_int_option(options, "bump_percent", 20, 1, 1000, spec.name))
        self.utxo_source = options.get("utxo_source", "scantxoutset")
        if self.utxo_source not in ("scantxoutset", "wallet"):
            raise ChainError(f"{spec.name}: option utxo_source must be 'scantxoutset' or 'wallet'")
        self.spec = spec
        self._rpc = BitcoinRpcClient(spec.rpc_urls, timeout, failover=spec.failover)
        self._chain_checked = False
        self._scan_lock = threading.Lock()  # bitcoind runs one UTXO-set scan at a time

    def __repr__(self) -> str:
        return f"BitcoinAdapter({self.spec.name!r}, {self.spec.network!r}, {self._rpc.endpoint})"

    # --- node access -----------------------------------------------------------------------

    def _call(self, method: str, params: list[Any], timeout: float | None = None) -> Any:
        if not self._chain_checked:
            self.verify_chain()
        return self._rpc.call(method, params, timeout)

    def verify_chain(self) -> None:
        """Raise ChainMismatch unless the node serves the registry's network."""
        info = self._rpc.call("getblockchaininfo", [])
        served = info.get("chain") if isinstance(info, dict) else None
        expected = _NODE_CHAIN[self.spec.network]
        if served != expected:
            raise ChainMismatch(
                f"{self.spec.name} is on {self.spec.network} (bitcoind chain {expected!r}), but the node at "
                f"{self._rpc.endpoint} serves {served!r}; refusing to use it"
            )
        self._chain_checked = True

    # --- addresses (offline) ---------------------------------------------------------------

    def validate_address(self, address: str) -> str:
        return addr.validate_address(address, self.spec.name, self.spec.network)

    def check_destination(self, address: str, token: TokenSpec | None = None) -> str:
        contract = token.contract if token is not None else None
        return addr.check_destination(address, self.spec.name, contract, self.spec.network)

    def address_from_public_key(self, public_key: bytes) -> str:
        return addr.address_from_public_key(public_key, self.spec.network)

    def _sender_script(self, address: str) -> tuple[str, bytes]:
        try:
            program = addr.p2wpkh_program(address, self.spec.network, self.spec.name)
        except InvalidAddress as exc:
            raise MalformedTransaction(f"the source must be a P2WPKH address of {self.spec.name}: {exc.reason}") from None
        return addr.validate_address(address, self.spec.name, self.spec.network), addr.p2wpkh_script(program)

    # --- UTXOs and fees --------------------------------------------------------------------

    def list_utxos(self, address: str) -> list[Utxo]:
        owner = self.validate_address(address)
        utxos = self._scan(owner) if self.utxo_source == "scantxoutset" else self._listunspent(owner)
        return sorted((u for u in utxos if u.confirmations >= self.min_confirmations), key=lambda u: (u.txid, u.vout))

    def _scan(self, address: str) -> list[Utxo]:
        with self._scan_lock:  # other processes may still collide: "Scan already in progress" is transient
            answer = self._call("scantxoutset", ["start", [f"addr({address})"]], timeout=SCAN_TIMEOUT_S)
        if not isinstance(answer, dict) or not answer.get("success") or not isinstance(answer.get("unspents"), list):
            raise ChainRpcError(f"{self.spec.name}: scantxoutset did not complete")
        height = to_int(answer.get("height"), "scan height")
        utxos = []
        for item in answer["unspents"]:
            confirmations = height - to_int(item.get("height"), "output height") + 1
            if item.get("coinbase") and confirmations < COINBASE_MATURITY:
                continue
            utxos.append(self._utxo(item, confirmations))
        return utxos

    def _listunspent(self, address: str) -> list[Utxo]:
        answer = self._call("listunspent", [0, 9_999_999, [address], False])
        if not isinstance(answer, list):
            raise ChainRpcError(f"{self.spec.name}: listunspent answered {type(answer).__name__}")
        utxos = []
        for item in answer:  # bitcoind's wallet already leaves immature coinbase out
            utxos.append(self._utxo(item, to_int(item.get("confirmations"), "confirmations")))
        return utxos

    @staticmethod
    def _utxo(item: dict[str, Any], confirmations: int) -> Utxo:
        txid = item.get("txid")
        if not isinstance(txid, str) or not _TXID.match(txid):
            raise ChainRpcError(f"node listed an output with an unusable txid {txid!r}"[:200])
        return Utxo(txid=txid, vout=to_int(item.get("vout"), "vout"), value=btc_to_sat(item.get("amount")),
                    script_pubkey=str(item.get("scriptPubKey", "")), confirmations=confirmations)

    def fee_rate(self) -> int:
        """sat/vB of a new transfer: the market rate (`_market`), at most `fee_cap_sat_vb`."""
        return min(self._market()[0], self.fee_cap)

    def _market(self) -> tuple[int, int]:
        """(rate, incremental) in sat/vB. rate: the node's estimate for `fee_target_blocks`, at least
        the floor and the mempool's minimum (a full mempool refuses cheaper transactions).
        incremental: what a replacement must add per vB (BIP125 rule 4), 1 when the node is silent."""
        answer = self._call("estimatesmartfee", [self.fee_target])
        rates = [self.fee_floor, self._sat_per_vb(answer.get("feerate") if isinstance(answer, dict) else None)]
        try:
            info = self._call("getmempoolinfo", [])
        except NodeRpcError:
            info = None  # optional: the estimate and the floor still apply
        if not isinstance(info, dict):
            return max(rates), 1
        rates.append(self._sat_per_vb(info.get("mempoolminfee")))
        return max(rates), max(1, self._sat_per_vb(info.get("incrementalrelayfee")))

    @staticmethod
    def _sat_per_vb(btc_per_kvb: Any) -> int:
        """BTC/kvB (as bitcoind reports fee rates) to sat/vB, rounded up; 0 when absent (e.g. a
        fresh regtest node has no estimate)."""
        return 0 if btc_per_kvb is None else -(-btc_to_sat(btc_per_kvb, "fee rate") // 1000)

    def quote_fee(self, intent: TransferIntent, utxos: Sequence[Utxo] = ()) -> FeeQuote:
        self._registry_token(intent.token)
        amount = intent.amount
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise MalformedTransaction(f"amount must be a positive integer of satoshi, got {amount!r}")
        sender, change_script = self._sender_script(intent.from_address)
        destination = addr.decode_address(self.check_destination(intent.to_address), self.spec.network, self.spec.name)
        dust = addr.dust_limit(destination.script_pubkey)
        if amount < dust:
            raise TransactionRejected("rejected_by_node",
                                      f"{amount} sat is below the dust limit of a {destination.kind.value} output ({dust} sat)")
        own = [u for u in utxos if not u.script_pubkey or u.script_pubkey == change_script.hex()]
        rate = self.fee_rate()
        try:
            chosen = select_inputs(own, amount, destination.script_pubkey, change_script, rate)
        except NotEnoughFunds as short:
            raise TransactionRejected(
                "insufficient_funds",
                f"{sender} has {short.available} sat spendable in {short.count} unreserved outputs on {self.spec.name}; "
                f"sending {amount} sat at {rate} sat/vB needs at least {short.needed}",
            ) from None
        return FeeQuote(max_fee=chosen.fee, params={"fee_rate": rate, "change": chosen.change, "vsize": chosen.vsize},
                        inputs=chosen.inputs)

    def replacement_quote(self, intent: TransferIntent, current: FeeQuote) -> FeeQuote | None:
        """The quote of a BIP125 replacement of the transaction built from `current`: the same inputs
        and outputs, the change smaller by the extra fee (module docstring, `bitcoin_bump`)."""
        old_change, change_script, vsize = self._replaced(intent, current)
        market, incremental = self._market()
        if bitcoin_bump.pays_estimate(current.max_fee, vsize, market):
            return None
        rate = bitcoin_bump.replacement_rate(current.max_fee, vsize, len(current.inputs), percent=self.replacement.percent,
                                             market=market, incremental=incremental, cap=self.max_fee_rate)
        change = old_change + current.max_fee - rate * vsize
        dust = addr.dust_limit(change_script)
        if not old_change or change < dust:
            raise BumpRefused("change_below_dust", f"paying {rate} sat/vB ({rate * vsize} sat) leaves {change} sat of "
                                                  f"change of {old_change}, below the dust limit of {dust} sat")
        return FeeQuote(max_fee=rate * vsize, params={"fee_rate": rate, "change": change, "vsize": vsize},
                        inputs=current.inputs)

    def _replaced(self, intent: TransferIntent, current: FeeQuote) -> tuple[int, bytes, int]:
        """(change, change script, estimated vsize) of the transaction `current` builds, checked to
        add up as `build` checks it (inputs - amount - change = max_fee)."""
        self._registry_token(intent.token)
        _, change_script = self._sender_script(intent.from_address)
        destination = addr.decode_address(self.check_destination(intent.to_address), self.spec.network, self.spec.name)
        change = self._stored_change(current)
        if not current.inputs or sum(u.value for u in current.inputs) - intent.amount - change != current.max_fee:
            raise MalformedTransaction("the current quote's inputs - amount - change is not its max_fee")
        scripts = [destination.script_pubkey] + ([change_script] if change else [])
        return change, change_script, btx.estimate_vsize(len(current.inputs), scripts)

    @staticmethod
    def _stored_change(fee: FeeQuote) -> int:
        change = fee.params.get("change") if isinstance(fee.params, dict) else None
        if not isinstance(change, int) or isinstance(change, bool) or change < 0:
            raise MalformedTransaction(f"fee quote has no usable change amount: {change!r}")
        return change

    def next_nonce(self, address: str) -> int:
        raise ChainError("bitcoin has no account nonce (uses_account_nonce is False)")

    # --- offline build and signature -------------------------------------------------------

    def build_context(self, intent: TransferIntent) -> dict[str, Any]:
        return {}  # everything is fixed by the quote: inputs, change and fee

    def build(self, intent: TransferIntent, fee: FeeQuote, nonce: int | None,
              context: dict[str, Any] | None = None) -> UnsignedTransaction:
        self._registry_token(intent.token)
        sender, change_script = self._sender_script(intent.from_address)
        destination = addr.decode_address(self.check_destination(intent.to_address), self.spec.network, self.spec.name)
        change = self._stored_change(fee)
        if not fee.inputs:
            raise MalformedTransaction("fee quote selected no inputs")
        spends = []
        for utxo in fee.inputs:
            if utxo.script_pubkey and utxo.script_pubkey != change_script.hex():
                raise MalformedTransaction(f"input {utxo.outpoint} is not an output of {sender}")
            spends.append(btx.Spend(utxo.txid, utxo.vout, utxo.value))
        if sum(s.value for s in spends) - intent.amount - change != fee.max_fee:
            raise MalformedTransaction("inputs - amount - change must equal the reserved max_fee")
        if 0 < change < addr.dust_limit(change_script):
            raise MalformedTransaction(f"change of {change} sat would be a dust output")
        outputs = [btx.TxOut(intent.amount, destination.script_pubkey)]
        if change:
            outputs.append(btx.TxOut(change, change_script))
        return btx.build_unsigned(self.spec.network, sender, spends, outputs)

    def attach_signature(self, payload: bytes, signatures: Sequence[bytes]) -> SignedTransaction:
        network = btx.decode_payload(payload).network
        if network != self.spec.network:
            raise MalformedTransaction(f"payload is for {network!r}, not {self.spec.name} ({self.spec.network})")
        return btx.attach(payload, signatures)

    def _registry_token(self, token: TokenSpec) -> TokenSpec:
        known = self.spec.token(token.symbol)
        if known != token or known.asset_type != "NATIVE":
            raise MalformedTransaction(f"token {token.symbol} is not the native coin of {self.spec.name}")
        return known

    # --- broadcast and status --------------------------------------------------------------

    def broadcast(self, signed: SignedTransaction) -> str:
        try:
            answered = self._call("sendrawtransaction", [signed.raw.hex()])
        except NodeRpcError as exc:
            return self._classify_send_error(exc, signed)
        if answered != signed.tx_hash:
            raise ChainRpcError(f"{self.spec.name}: the node answered txid {str(answered)[:80]!r} for {signed.tx_hash}")
        return signed.tx_hash

    def _classify_send_error(self, exc: NodeRpcError, signed: SignedTransaction) -> str:
        message = exc.node_message.lower()
        if exc.code == RPC_VERIFY_ALREADY_IN_CHAIN or any(k in message for k in _ALREADY_HAVE):
            return signed.tx_hash  # these very bytes are in the mempool or a block
        if exc.code == RPC_IN_WARMUP or any(k in message for k in _TRANSIENT):
            raise exc
        if any(k in message for k in _MISSING_INPUTS):
            if self._known(signed.tx_hash):
                return signed.tx_hash  # spent by this very transaction, already mined
            raise TransactionRejected("rejected_by_node", f"inputs missing or already spent: {exc.node_message}") from None
        if any(k in message for k in _UNDERPRICED):
            raise TransactionRejected("replacement_underpriced", exc.node_message) from None
        if exc.code in (-22, -25, -26):  # decode failed, verify error, policy/consensus rejection
            raise TransactionRejected("rejected_by_node", exc.node_message) from None
        raise exc  # anything else is about the node, not the transaction: retry later

    def _known(self, txid: str) -> bool:
        try:
            self._call("getrawtransaction", [txid, False])
        except NodeRpcError as exc:
            if exc.code == RPC_INVALID_ADDRESS_OR_KEY and "txindex" in exc.node_message.lower():
                # Without -txindex a mined transaction is invisible: "unknown" is not proof of failure.
                raise ChainRpcError(f"{self.spec.name}: the node runs without -txindex=1 and cannot see "
                                    "confirmed transactions; enable it") from None
            if exc.code == RPC_INVALID_ADDRESS_OR_KEY:
                return False
            raise
        return True

    def get_status(self, signed: SignedTransaction) -> TxStatus:
        """The transaction, its block's header and the mempool, all asked of one node."""
        txid = signed.tx_hash
        if not isinstance(txid, str) or not _TXID.match(txid):
            raise MalformedTransaction(f"not a bitcoin txid: {txid!r}"[:200])
        with one_endpoint(self._rpc):
            return self._status(signed, txid)

    def _status(self, signed: SignedTransaction, txid: str) -> TxStatus:
        try:
            found = self._call("getrawtransaction", [txid, 2])
        except NodeRpcError as exc:
            if exc.code != RPC_INVALID_ADDRESS_OR_KEY:
                raise
            if "txindex" in exc.node_message.lower():
                raise ChainRpcError(f"{self.spec.name}: the node runs without -txindex=1 and cannot see "
                                    "confirmed transactions; enable it") from None
            return TxStatus(TxState.NOT_FOUND)
        if not isinstance(found, dict):
            raise ChainRpcError(f"{self.spec.name}: getrawtransaction answered {type(found).__name__}")
        block_hash = found.get("blockhash")
        if not block_hash:
            return TxStatus(TxState.PENDING)
        header = self._call("getblockheader", [block_hash, True])
        confirmations = to_int(header.get("confirmations"), "confirmations") if isinstance(header, dict) else -1
        if confirmations < 1:  # the block was reorganised away; the node keeps the stale index entry
            return TxStatus(TxState.PENDING if self._in_mempool(txid) else TxState.NOT_FOUND)
        return TxStatus(TxState.INCLUDED, block_number=to_int(header.get("height"), "height"),
                        block_hash=str(block_hash), confirmations=confirmations, fee_paid=self._fee_of(found))

    def track(self, watched: Sequence[Watched], cursor: Mapping[str, Any]) -> Observation:
        """One tracker tick: scan the blocks since the cursor in JSON-RPC batches and match the
        watched txids (chains.bitcoin_tracking); fees read by `_fee_of`, as get_status reads them."""
        checked = 0
        if not self._chain_checked:
            self.verify_chain()
            checked = 1
        with one_endpoint(self._rpc):  # the tip, the window's hashes and its blocks: one node's chain
            observation = bitcoin_tracking.track(self._rpc, self.spec, self._fee_of, watched, cursor)
        return replace(observation, rpc_calls=observation.rpc_calls + checked)

    def proves_unlandable(self, signed: SignedTransaction) -> bool:
        """True when every input is unspent at a node at least as far as the tip (module docstring)."""
        inputs = _inputs_of(signed)
        with one_endpoint(self._rpc):
            return self._inputs_unspent(inputs)

    def _inputs_unspent(self, inputs: Sequence[tuple[str, int]]) -> bool:
        tip = self._synced_tip()
        if tip is None:
            return False
        for txid, vout in inputs:
            out = self._call("gettxout", [txid, vout, True])
            if out is None:
                return False  # spent (perhaps by this very transaction) or unknown: never proof
            if not isinstance(out, dict) or not self._reaches(out.get("bestblock"), tip):
                return False
        return True

    def _synced_tip(self) -> tuple[str, int] | None:
        """(best block hash, height), or None while the node is still in initial block download."""
        info = self._call("getblockchaininfo", [])
        if not isinstance(info, dict) or not isinstance(info.get("bestblockhash"), str):
            raise ChainRpcError(f"{self.spec.name}: unusable getblockchaininfo answer")
        if info.get("initialblockdownload") is not False:
            return None  # catching up: what it says about outputs may be long out of date
        return info["bestblockhash"], to_int(info.get("blocks"), "block count")

    def _reaches(self, best_block: Any, tip: tuple[str, int]) -> bool:
        """Whether an answer given at `best_block` saw at least `tip` (a backend behind did not)."""
        if best_block == tip[0]:
            return True
        if not isinstance(best_block, str) or not _TXID.match(best_block):
            return False
        try:
            header = self._call("getblockheader", [best_block, True])
        except NodeRpcError as exc:
            if exc.code == RPC_INVALID_ADDRESS_OR_KEY:
                return False  # a block this node does not know
            raise
        if not isinstance(header, dict):
            return False
        height, confirmations = to_int(header.get("height"), "height"), to_int(header.get("confirmations"), "confirmations")
        return height >= tip[1] and confirmations >= 1

    def _in_mempool(self, txid: str) -> bool:
        try:
            self._call("getmempoolentry", [txid])
        except NodeRpcError as exc:
            if exc.code == RPC_INVALID_ADDRESS_OR_KEY:
                return False
            raise
        return True

    def _fee_of(self, found: dict[str, Any]) -> int:
        """inputs - outputs: the node's "fee" (verbosity 2), else summed from the spent outputs."""
        if found.get("fee") is not None:
            return btc_to_sat(found["fee"], "fee")
        try:  # older nodes: look the spent outputs up
            spent = 0
            for vin in found["vin"]:
                previous = vin.get("prevout")
                if previous is None:
                    parent = self._call("getrawtransaction", [vin["txid"], 1])
                    previous = parent["vout"][to_int(vin["vout"], "vout")]
                spent += btc_to_sat(previous["value"], "input value")
            return spent - sum(btc_to_sat(out["value"], "output value") for out in found["vout"])
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ChainRpcError(f"{self.spec.name}: cannot work out the fee of {found.get('txid')!r}: {exc!r}"[:300]) from None

    # --- balances ----------------------------------------------------------------------------

    def balance_of(self, address: str, token: TokenSpec) -> int:
        self._registry_token(token)
        owner = self.validate_address(address)
        utxos = self._scan(owner) if self.utxo_source == "scantxoutset" else self._listunspent(owner)
        return sum(u.value for u in utxos)


def _inputs_of(signed: SignedTransaction) -> list[tuple[str, int]]:
    """The outpoints the signed bytes spend, read back from them (txid checked against tx_hash)."""
    try:
        tx = btx.parse_tx(signed.raw)
    except (ValueError, IndexError) as exc:
        raise MalformedTransaction(f"unusable signed bitcoin transaction: {exc}"[:200]) from None
    if tx.txid != signed.tx_hash:
        raise MalformedTransaction(f"signed bytes are transaction {tx.txid}, not {signed.tx_hash}")
    return [(i.txid, i.vout) for i in tx.inputs]
