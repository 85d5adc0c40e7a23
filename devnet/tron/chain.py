"""The TRON devnet's chain, in Python: blocks, a pending pool, TRX accounts and TRC20 tokens.

Not a TVM: a TRC20 contract is a balance table plus the decoding of `transfer(address,uint256)`
call data, which is all a custody pipeline sends. A constant call of `transfer`
(triggerconstantcontract) and `estimate_energy` (wallet/estimateenergy; refused as by a java-tron
without vm.estimateEnergy when `estimates_energy` is off) report the energy its execution burns.
What it does check, as java-tron does and in its order: a duplicate txID (DUP_TRANSACTION_ERROR), the TaPoS reference block (TAPOS_ERROR),
the expiration against the head block (TRANSACTION_EXPIRATION_ERROR), that the one signature
recovers to the owner address (SIGERROR), the bandwidth it must burn (BANDWITH_ERROR), and the
contract's own rules (CONTRACT_VALIDATE_ERROR). A transaction is executed on the pending state
when broadcast (so pool members see each other) and executed again on the block's state when a
block is produced; one that no longer validates then (e.g. it expired) is dropped, as on
mainnet. Fees are in `devnet.tron.fees`. Blocks are solidified `solidify_depth` deep: block b is
solid once the head is at b + depth - 1, the moment it has `depth` confirmations. `fork` replaces
unsolidified blocks by a sibling branch (new ids), as a short fork switch does; a transaction
whose TaPoS reference was one of them is refused with TAPOS_ERROR from then on, and dropped from
the pool at the next block.

Thread-safety: every public method takes the one lock; the HTTP server and the block producer
call in from their own threads.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tronpy.keys import Signature, keccak256, to_base58check_address, to_hex_address
from tronpy.proto import calculate_txid_from_raw_data, tron_pb2
from tronpy.proto.transaction import _raw_data_to_protobuf  # tronpy's own encoder, not the adapter's

from devnet.tron.fees import MAX_FEE_LIMIT, Fees

TRANSFER = bytes.fromhex("a9059cbb")
TRANSFER_TOPIC = keccak256(b"Transfer(address,address,uint256)").hex()
MAX_EXPIRATION_MS = 86_400_000  # expiration may be at most 24 h after the head block
TAPOS_WINDOW = 65_536
DAY_MS = 86_400_000
WITNESS = "41" + "77" * 20  # the devnet's one block producer


class Refused(Exception):
    """The node refuses a broadcast with a java-tron response code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class BadRequest(Exception):
    """The request itself is unusable; answered as java-tron does, `{"Error": ...}`."""


def hex_address(value: Any) -> str:
    """"41..." hex of a base58check or hex address; BadRequest otherwise."""
    try:
        return str(to_hex_address(value)).lower()
    except (ValueError, TypeError, IndexError) as exc:
        raise BadRequest(f"invalid address {value!r}: {exc}") from None


@dataclass(frozen=True)
class Token:
    contract: str  # hex "41..."
    symbol: str
    decimals: int
    name: str = ""


@dataclass
class Ledger:
    """Balances at one point: accounts (present = activated), token holdings, bandwidth used."""

    balances: dict[str, int] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)
    holdings: dict[str, dict[str, int]] = field(default_factory=dict)
    net_used: dict[str, tuple[int, int]] = field(default_factory=dict)

    def copy(self) -> "Ledger":
        return Ledger(dict(self.balances), dict(self.created),
                      {token: dict(held) for token, held in self.holdings.items()}, dict(self.net_used))


@dataclass(frozen=True)
class Block:
    number: int
    block_id: str
    parent_id: str
    timestamp: int
    txids: tuple[str, ...]
    tx_root: str


@dataclass(frozen=True)
class Included:
    tx: dict[str, Any]
    block: int
    info: dict[str, Any]
    ret: str  # contractRet: SUCCESS, OUT_OF_ENERGY, REVERT


def _block_id(number: int, parent_id: str, timestamp: int, tx_root: str, branch: int = 0) -> str:
    salt = f"|branch{branch}" if branch else ""  # another witness's block at the same slot: another id
    digest = hashlib.sha256(f"{number}|{parent_id}|{timestamp}|{tx_root}{salt}".encode()).digest()
    return (number.to_bytes(8, "big") + digest[8:]).hex()


def _uint(value: int) -> str:
    return value.to_bytes(32, "big").hex()


def _reverted(energy: int) -> dict[str, Any]:
    """A constant call that reverted, as java-tron answers it (result true, the message, ret FAILED)."""
    return {"result": {"result": True, "message": "REVERT opcode executed"}, "energy_used": energy,
            "constant_result": [""], "transaction": {"ret": [{"ret": "FAILED"}]}}


def _abi_string(text: str) -> str:
    data = text.encode()
    return _uint(32) + _uint(len(data)) + data.ljust(-(-len(data) // 32) * 32, b"\0").hex()


class TronChain:
    """The whole devnet state behind one lock."""

    def __init__(self, tokens: Sequence[Token] = (), fees: Fees = Fees(), solidify_depth: int = 3,
                 clock: Callable[[], float] = time.time, estimates_energy: bool = True) -> None:
        if solidify_depth < 1:
            raise ValueError("solidify_depth must be >= 1")
        self.lock = threading.RLock()
        self.fees = fees
        self.estimates_energy = estimates_energy  # False: a node without vm.estimateEnergy (java-tron's default)
        self.solidify_depth = solidify_depth
        self.clock = clock
        self.tokens = {token.contract: token for token in tokens}
        ts = self._now_ms()
        self.blocks = [Block(0, _block_id(0, "00" * 32, ts, ""), "00" * 32, ts, (), "")]
        self.ledger = Ledger(holdings={contract: {} for contract in self.tokens})
        self.pending_ledger = self.ledger.copy()
        self.pending: dict[str, dict[str, Any]] = {}
        self.included: dict[str, Included] = {}
        self._branches = 0

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- blocks ------------------------------------------------------------------------------

    @property
    def head(self) -> Block:
        return self.blocks[-1]

    @property
    def solid(self) -> Block:
        return self.blocks[max(0, self.head.number - (self.solidify_depth - 1))]

    def produce_block(self) -> Block:
        """Apply the pool to a new block on the head; whatever no longer validates is dropped."""
        with self.lock:
            parent = self.head
            timestamp = max(self._now_ms(), parent.timestamp + 1)
            ledger = self.ledger.copy()
            applied: list[tuple[str, dict[str, Any], dict[str, Any], str]] = []
            for txid, tx in self.pending.items():
                try:
                    self._check_tapos(tx["raw_data"])  # its reference may have been forked away since
                    receipt, ret = self._execute(ledger, tx, parent, timestamp)
                except Refused:
                    continue
                applied.append((txid, tx, receipt, ret))
            txids = tuple(txid for txid, *_ in applied)
            root = hashlib.sha256(b"".join(bytes.fromhex(t) for t in txids)).hexdigest() if txids else ""
            number = parent.number + 1
            block = Block(number, _block_id(number, parent.block_id, timestamp, root), parent.block_id, timestamp,
                          txids, root)
            for txid, tx, receipt, ret in applied:
                info = {"id": txid, "blockNumber": number, "blockTimeStamp": timestamp, **receipt}
                self.included[txid] = Included(tx, number, info, ret)
            self.blocks.append(block)
            self.ledger = ledger
            self.pending = {}
            self.pending_ledger = ledger.copy()
            return block

    def fork(self, start: int) -> list[Block]:
        """Replace blocks `start` .. head by a sibling branch: same numbers and times, new ids (a
        short fork switch). Only unsolidified blocks, and only empty ones (the devnet does not
        replay transactions onto a new branch). Returns the replaced blocks."""
        with self.lock:
            first, head = self.solid.number + 1, self.head.number
            if not first <= start <= head:
                raise BadRequest(f"only unsolidified blocks can be forked away: {first}..{head}, not {start}")
            replaced = self.blocks[start:]
            if any(old.txids for old in replaced):
                raise BadRequest("the devnet forks only blocks without transactions")
            self._branches += 1
            parent = self.blocks[start - 1]
            branch: list[Block] = []
            for old in replaced:
                parent = Block(old.number, _block_id(old.number, parent.block_id, old.timestamp, old.tx_root, self._branches),
                               parent.block_id, old.timestamp, (), old.tx_root)
                branch.append(parent)
            self.blocks[start:] = branch
            return replaced

    def block(self, number: int, solid: bool = False) -> Block | None:
        """The block at `number`; with `solid`, only once it is solidified (the solidity API's view)."""
        with self.lock:
            last = self.solid.number if solid else self.head.number
            return self.blocks[number] if 0 <= number <= last else None

    def block_json(self, block: Block) -> dict[str, Any]:
        with self.lock:
            header: dict[str, Any] = {"txTrieRoot": block.tx_root or "00" * 32, "witness_address": WITNESS,
                                      "parentHash": block.parent_id, "version": 30, "timestamp": block.timestamp}
            if block.number:
                header["number"] = block.number  # protobuf JSON omits zero fields
            answer: dict[str, Any] = {"blockID": block.block_id, "block_header": {"raw_data": header}}
            if block.txids:
                answer["transactions"] = [self._tx_json(self.included[txid]) for txid in block.txids]
            return answer

    # --- broadcast ---------------------------------------------------------------------------

    def broadcast(self, doc: dict[str, Any]) -> str:
        """Validate and pool a signed transaction; its txID, or Refused / BadRequest."""
        with self.lock:
            raw_data = doc.get("raw_data")
            if not isinstance(raw_data, dict):
                raise BadRequest("raw_data is missing")
            try:
                txid = calculate_txid_from_raw_data(raw_data)
                raw_bytes = self._raw_bytes(raw_data)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise BadRequest(f"cannot parse raw_data: {exc!r}") from None
            if txid in self.pending or txid in self.included:
                raise Refused("DUP_TRANSACTION_ERROR", "Dup transaction.")
            tx = {"txID": txid, "raw_data": raw_data, "raw_data_hex": raw_bytes.hex(),
                  "signature": doc.get("signature"), "visible": bool(doc.get("visible", False))}
            self._check_tapos(raw_data)
            self._check_expiration(raw_data, self.head.timestamp)
            self._check_signature(tx)
            ledger = self.pending_ledger.copy()
            self._execute(ledger, tx, self.head, self.head.timestamp)
            self.pending_ledger = ledger
            self.pending[txid] = tx
            return txid

    @staticmethod
    def _raw_bytes(raw_data: dict[str, Any]) -> bytes:
        return bytes(_raw_data_to_protobuf(raw_data).SerializeToString())

    @staticmethod
    def _bandwidth_bytes(tx: dict[str, Any]) -> int:
        """Serialized size of the signed transaction plus the 64-byte result allowance."""
        signed = tron_pb2.Transaction(raw_data=_raw_data_to_protobuf(tx["raw_data"]),
                                      signature=[bytes.fromhex(sig) for sig in tx["signature"]])
        return len(signed.SerializeToString()) + 64

    def _check_tapos(self, raw_data: dict[str, Any]) -> None:
        try:
            ref_num, ref_hash = int(raw_data["ref_block_bytes"], 16), raw_data["ref_block_hash"]
        except (KeyError, TypeError, ValueError):
            raise Refused("TAPOS_ERROR", "Tapos check error: no reference block") from None
        head = self.head.number
        number = head - ((head - ref_num) % TAPOS_WINDOW)  # the one block in the window with those 2 bytes
        if number < 0 or self.blocks[number].block_id[16:32] != ref_hash:
            raise Refused("TAPOS_ERROR", f"Tapos check error: reference block {raw_data['ref_block_bytes']} "
                                         f"{ref_hash} is not on this chain")

    @staticmethod
    def _check_expiration(raw_data: dict[str, Any], head_time: int) -> None:
        expiration = raw_data.get("expiration")
        if not isinstance(expiration, int) or expiration <= head_time:
            raise Refused("TRANSACTION_EXPIRATION_ERROR", "Transaction expired")
        if expiration > head_time + MAX_EXPIRATION_MS:
            raise Refused("TRANSACTION_EXPIRATION_ERROR", "expiration is more than 24 h after the head block")

    def _check_signature(self, tx: dict[str, Any]) -> None:
        signatures = tx["signature"]
        owner = self._owner(tx["raw_data"])
        if not isinstance(signatures, list) or len(signatures) != 1:
            raise Refused("SIGERROR", "Validate signature error: exactly one signature is required")
        try:
            public = Signature(bytes.fromhex(signatures[0])).recover_public_key_from_msg_hash(bytes.fromhex(tx["txID"]))
        except (ValueError, TypeError) as exc:
            raise Refused("SIGERROR", f"Validate signature error: {exc}") from None
        signer = public.to_hex_address()
        if signer != owner:
            raise Refused("SIGERROR", f"Validate signature error: {signatures[0]} is signed by "
                                      f"{to_base58check_address(signer)} but it is not contained of permission.")

    @staticmethod
    def _owner(raw_data: dict[str, Any]) -> str:
        try:
            return hex_address(raw_data["contract"][0]["parameter"]["value"]["owner_address"])
        except (KeyError, IndexError, TypeError):
            raise BadRequest("raw_data has no owner_address") from None

    # --- execution ---------------------------------------------------------------------------

    def _execute(self, ledger: Ledger, tx: dict[str, Any], parent: Block, timestamp: int) -> tuple[dict[str, Any], str]:
        """Apply `tx` to `ledger` on top of `parent`: (receipt fields of the info, contractRet)."""
        raw_data = tx["raw_data"]
        self._check_expiration(raw_data, parent.timestamp)
        contract = raw_data["contract"][0]
        kind, value = contract.get("type"), contract["parameter"]["value"]
        owner = self._owner(raw_data)
        if owner not in ledger.balances:
            raise Refused("CONTRACT_VALIDATE_ERROR", f"Validate {kind} error, no OwnerAccount.")
        size = self._bandwidth_bytes(tx)
        if kind == "TransferContract":
            return self._transfer_trx(ledger, owner, value, size, timestamp)
        if kind == "TriggerSmartContract":
            return self._trigger(ledger, owner, value, raw_data.get("fee_limit", 0), size, timestamp)
        raise Refused("CONTRACT_VALIDATE_ERROR", f"the devnet does not support {kind}")

    def _bandwidth(self, ledger: Ledger, owner: str, size: int, timestamp: int) -> dict[str, int]:
        """Use free bandwidth, else burn TRX for `size` bytes; the receipt's net fields."""
        day, used = ledger.net_used.get(owner, (timestamp // DAY_MS, 0))
        if day != timestamp // DAY_MS:
            day, used = timestamp // DAY_MS, 0
        if used + size <= self.fees.free_bandwidth:
            ledger.net_used[owner] = (day, used + size)
            return {"net_usage": size}
        fee = size * self.fees.bandwidth_price
        if ledger.balances[owner] < fee:
            raise Refused("BANDWITH_ERROR", "Account resource insufficient error.")
        ledger.balances[owner] -= fee
        return {"net_fee": fee}

    def _transfer_trx(self, ledger: Ledger, owner: str, value: dict[str, Any], size: int,
                      timestamp: int) -> tuple[dict[str, Any], str]:
        to, amount = hex_address(value.get("to_address")), value.get("amount")
        if not isinstance(amount, int) or amount <= 0:
            raise Refused("CONTRACT_VALIDATE_ERROR", "Validate TransferContract error, Amount must be greater than 0.")
        if to == owner:
            raise Refused("CONTRACT_VALIDATE_ERROR", "Validate TransferContract error, Cannot transfer TRX to yourself.")
        creates = to not in ledger.balances
        if creates:  # the create-account bandwidth fee replaces the per-byte one
            if ledger.balances[owner] < self.fees.create_account_fee:
                raise Refused("BANDWITH_ERROR", "Account resource insufficient error.")
            net = {"net_fee": self.fees.create_account_fee}
            ledger.balances[owner] -= self.fees.create_account_fee
        else:
            net = self._bandwidth(ledger, owner, size, timestamp)
        system_fee = self.fees.create_account_system_fee if creates else 0
        if ledger.balances[owner] < amount + system_fee:
            raise Refused("CONTRACT_VALIDATE_ERROR", "Validate TransferContract error, balance is not sufficient.")
        ledger.balances[owner] -= amount + system_fee
        ledger.balances[to] = ledger.balances.get(to, 0) + amount
        ledger.created.setdefault(to, timestamp)
        fee = net.get("net_fee", 0) + system_fee
        receipt: dict[str, Any] = {"contractResult": [""], "receipt": net}
        if fee:
            receipt["fee"] = fee
        return receipt, "SUCCESS"

    def _trigger(self, ledger: Ledger, owner: str, value: dict[str, Any], fee_limit: Any, size: int,
                 timestamp: int) -> tuple[dict[str, Any], str]:
        contract = hex_address(value.get("contract_address"))
        if contract not in self.tokens:
            raise Refused("CONTRACT_VALIDATE_ERROR", "No contract or not a smart contract")
        if not isinstance(fee_limit, int) or not 0 <= fee_limit <= MAX_FEE_LIMIT:
            raise Refused("CONTRACT_VALIDATE_ERROR", f"feeLimit must be >= 0 and <= {MAX_FEE_LIMIT}")
        net = self._bandwidth(ledger, owner, size, timestamp)
        price = self.fees.energy_price
        energy_limit = min(fee_limit, ledger.balances[owner]) // price
        data = bytes.fromhex(value.get("data", ""))
        held = ledger.holdings[contract]
        if data[:4] == TRANSFER and len(data) == 68:
            to, amount = "41" + data[16:36].hex(), int.from_bytes(data[36:68], "big")
            needed, ok = self._transfer_energy(held, owner, to, amount)
        else:
            to, amount, needed, ok = "", 0, self.fees.revert_energy, False
        if needed > energy_limit:
            used, ret = energy_limit, "OUT_OF_ENERGY"
        else:
            used, ret = needed, "SUCCESS" if ok else "REVERT"
        burnt = used * price
        ledger.balances[owner] -= burnt
        receipt: dict[str, Any] = {"energy_usage_total": used, "result": ret, **net}
        if burnt:
            receipt["energy_fee"] = burnt
        info: dict[str, Any] = {"contract_address": contract, "receipt": receipt, "contractResult": [""]}
        if ret == "SUCCESS":
            held[owner] -= amount
            held[to] = held.get(to, 0) + amount
            info["contractResult"] = [_uint(1)]
            info["log"] = [{"address": contract[2:], "topics": [TRANSFER_TOPIC, _uint(int(owner[2:], 16)),
                                                                _uint(int(to[2:], 16))], "data": _uint(amount)}]
        else:
            message = "Not enough energy" if ret == "OUT_OF_ENERGY" else "REVERT opcode executed"
            info.update(result="FAILED", resMessage=message.encode().hex())
        fee = burnt + net.get("net_fee", 0)
        if fee:
            info["fee"] = fee
        return info, ret

    def _transfer_energy(self, held: dict[str, int], owner: str, to: str, amount: int) -> tuple[int, bool]:
        """(energy, succeeds) of `transfer(to, amount)` by `owner`: what execution burns, and what
        a constant call or an estimate of it reports (a revert stops early, at `revert_energy`)."""
        needed = self.fees.trc20_energy if held.get(to, 0) > 0 else self.fees.trc20_energy_new_holder
        ok = held.get(owner, 0) >= amount
        return (needed if ok else min(needed, self.fees.revert_energy)), ok

    # --- queries -----------------------------------------------------------------------------

    def _tx_json(self, found: Included) -> dict[str, Any]:
        return {**found.tx, "ret": [{"contractRet": found.ret}]}

    def transaction(self, txid: str, solid: bool = False) -> dict[str, Any]:
        with self.lock:
            found = self.included.get(txid)
            if found is None or (solid and found.block > self.solid.number):
                return {}
            return self._tx_json(found)

    def transaction_info(self, txid: str, solid: bool = False) -> dict[str, Any]:
        with self.lock:
            found = self.included.get(txid)
            if found is None or (solid and found.block > self.solid.number):
                return {}
            return dict(found.info)

    def block_transaction_infos(self, number: int, solid: bool = False) -> list[dict[str, Any]]:
        """The infos of every transaction in block `number`, in block order, as
        gettransactioninfobyblocknum lists them: [] for a block the node does not have (past its
        head, or not solidified yet with `solid`) or one without transactions."""
        with self.lock:
            found = self.block(number, solid=solid)
            return [dict(self.included[txid].info) for txid in found.txids] if found is not None else []

    def pending_transaction(self, txid: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.pending.get(txid, {}))

    def account(self, address: str) -> dict[str, Any] | None:
        with self.lock:
            owner = hex_address(address)
            if owner not in self.ledger.balances:
                return None
            return {"address": owner, "balance": self.ledger.balances[owner], "create_time": self.ledger.created[owner]}

    def account_resource(self, address: str) -> dict[str, Any]:
        with self.lock:
            owner = hex_address(address)
            day, used = self.ledger.net_used.get(owner, (0, 0))
            used = used if day == self.head.timestamp // DAY_MS else 0
            return {"freeNetLimit": self.fees.free_bandwidth, "freeNetUsed": used} if owner in self.ledger.balances else {}

    def constant_call(self, contract: str, owner: str | None, data: bytes) -> dict[str, Any]:
        """A read-only call on the head state, as /wallet/triggerconstantcontract answers it."""
        with self.lock:
            token = self.tokens.get(hex_address(contract))
            if token is None:
                return {"result": {"code": "CONTRACT_VALIDATE_ERROR",
                                   "message": b"No contract or not a valid smart contract".hex()}}
            held = self.ledger.holdings[token.contract]
            selector, args = data[:4].hex(), data[4:]
            answers = {
                "70a08231": lambda: _uint(held.get("41" + args[12:32].hex(), 0)),  # balanceOf(address)
                "313ce567": lambda: _uint(token.decimals),  # decimals()
                "95d89b41": lambda: _abi_string(token.symbol),  # symbol()
                "06fdde03": lambda: _abi_string(token.name or token.symbol),  # name()
                "18160ddd": lambda: _uint(sum(held.values())),  # totalSupply()
            }
            if selector == "a9059cbb" and owner is not None and len(args) == 64:
                return self._constant_transfer(held, hex_address(owner), args)
            if selector not in answers or (selector == "70a08231" and len(args) != 32):
                return _reverted(self.fees.revert_energy)
            return {"result": {"result": True}, "energy_used": 500, "constant_result": [answers[selector]()]}

    def _constant_transfer(self, held: dict[str, int], owner: str, args: bytes) -> dict[str, Any]:
        """`transfer(to, amount)` run on the head state: the energy execution would use, as a node reports it."""
        energy, ok = self._transfer_energy(held, owner, "41" + args[12:32].hex(), int.from_bytes(args[32:64], "big"))
        if not ok:
            return _reverted(energy)
        return {"result": {"result": True}, "energy_used": energy, "constant_result": [_uint(1)]}

    def estimate_energy(self, contract: str, owner: str | None, data: bytes) -> dict[str, Any]:
        """/wallet/estimateenergy: `energy_required` of the call, or java-tron's refusals (visible=true
        messages): on a node without vm.estimateEnergy, for a revert, for a missing contract."""
        if not self.estimates_energy:
            return {"result": {"code": "OTHER_ERROR", "message": "this node does not support estimate energy"}}
        answer = self.constant_call(contract, owner, data)
        result = answer["result"]
        if result.get("result") is not True:
            return {"result": result}
        if result.get("message"):
            return {"result": {"code": "OTHER_ERROR", "message": f"REVERT opcode executed: {result['message']}"}}
        return {"result": {"result": True}, "energy_required": answer["energy_used"]}

    # --- devnet faucets ----------------------------------------------------------------------

    def fund(self, address: str, amount: int) -> int:
        """Credit TRX (activating the account); applied at once, to the pending state too."""
        with self.lock:
            owner = hex_address(address)
            for ledger in (self.ledger, self.pending_ledger):
                ledger.balances[owner] = ledger.balances.get(owner, 0) + amount
                ledger.created.setdefault(owner, self.head.timestamp)
            return self.ledger.balances[owner]

    def mint(self, contract: str, address: str, amount: int) -> int:
        """Create `amount` token units for `address` at once (the account is not activated)."""
        with self.lock:
            token, owner = hex_address(contract), hex_address(address)
            if token not in self.tokens:
                raise BadRequest(f"no TRC20 contract at {contract}")
            for ledger in (self.ledger, self.pending_ledger):
                ledger.holdings[token][owner] = ledger.holdings[token].get(owner, 0) + amount
            return self.ledger.holdings[token][owner]
