"""The JSON-RPC methods of the devnet Solana node: Solana's names, parameters and result shapes.

Each handler takes the cluster and the request's `params` list and returns the `result`, or raises
RpcError. Results follow the real node: reads at a commitment answer `{"context": {"slot"},
"value": ...}`, statuses and transactions use the RPC JSON forms. The history methods
(getSignaturesForAddress, getTransaction, getBlock) answer -32011 on a node without transaction
history and see only the slots its ledger still has (`minimumLedgerSlot`). Faucet and control methods
(`requestAirdrop`, `devnet_mintTo`, `devnet_advanceSlots`, `devnet_setPrioritizationFee`, `devnet_info`)
exist for tests and the demo.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from solders.pubkey import Pubkey
from solders.token.state import Mint, TokenAccount
from solders.transaction import VersionedTransaction

from chains.solana_address import b58decode, b58encode
from devnet.solana.cluster import COMMITMENTS, TOKEN_PROGRAM, Cluster, Landed
from devnet.solana.errors import RpcError, invalid_params
from devnet.solana.priority import MAX_ACCOUNTS, priority_fee

API_VERSION = "2.1.0"
LAMPORTS_PER_SIGNATURE = 5000
SLOTS_PER_EPOCH = 432_000  # mainnet's
_LEGACY_COMMITMENTS = {"recent": "processed", "single": "confirmed", "singleGossip": "confirmed",
                       "max": "finalized", "root": "finalized"}

Handler = Callable[[Cluster, list[Any]], Any]


# --- parameter helpers ------------------------------------------------------------------------

def _config(params: list[Any], index: int) -> dict[str, Any]:
    value = params[index] if len(params) > index else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_params(f"expected a configuration object at position {index}")
    return value


def _commitment(config: dict[str, Any]) -> str:
    level = config.get("commitment", "finalized")
    level = _LEGACY_COMMITMENTS.get(level, level)
    if level not in COMMITMENTS:
        raise invalid_params(f"unknown commitment {level!r}")
    return level


def _pubkey(params: list[Any], index: int = 0) -> Pubkey:
    try:
        return Pubkey.from_string(params[index])
    except (IndexError, TypeError, ValueError):
        raise RpcError(-32602, "Invalid param: Invalid") from None


def _context(cluster: Cluster, commitment: str, value: Any) -> dict[str, Any]:
    return {"context": {"slot": cluster.commitment_slot(commitment), "apiVersion": API_VERSION}, "value": value}


def _decode_transaction(params: list[Any], config: dict[str, Any]) -> VersionedTransaction:
    encoding = config.get("encoding", "base58")
    if encoding not in ("base58", "base64"):
        raise invalid_params(f"unsupported encoding: {encoding}")
    try:
        data = params[0]
        raw = base64.b64decode(data, validate=True) if encoding == "base64" else b58decode(data)
        return VersionedTransaction.from_bytes(raw)
    except (IndexError, TypeError, ValueError, binascii.Error):
        raise invalid_params("failed to deserialize solana_transaction::versioned::VersionedTransaction") from None


# --- cluster and blockhash --------------------------------------------------------------------

def get_health(cluster: Cluster, params: list[Any]) -> str:
    return "ok"


def get_version(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    return {"solana-core": f"{API_VERSION}-litesvm-devnet", "feature-set": 0}


def get_genesis_hash(cluster: Cluster, params: list[Any]) -> str:
    return cluster.genesis_hash


def get_slot(cluster: Cluster, params: list[Any]) -> int:
    return cluster.commitment_slot(_commitment(_config(params, 0)))


def get_epoch_info(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    """The real shape (no RpcResponse wrapper): height and slot of the bank at the commitment, read
    together, so a caller can tell which slot a height was seen at."""
    commitment = _commitment(_config(params, 0))
    with cluster.lock:
        slot = cluster.commitment_slot(commitment)
        return {"absoluteSlot": slot, "blockHeight": slot, "epoch": slot // SLOTS_PER_EPOCH,
                "slotIndex": slot % SLOTS_PER_EPOCH, "slotsInEpoch": SLOTS_PER_EPOCH,
                "transactionCount": cluster.transaction_count(slot)}


def get_latest_blockhash(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    commitment = _commitment(_config(params, 0))
    with cluster.lock:
        blockhash, last_valid = cluster.latest_blockhash(commitment)
        return _context(cluster, commitment, {"blockhash": blockhash, "lastValidBlockHeight": last_valid})


def is_blockhash_valid(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    if not params or not isinstance(params[0], str):
        raise invalid_params("expected a blockhash")
    commitment = _commitment(_config(params, 1))
    with cluster.lock:
        return _context(cluster, commitment, cluster.blockhash_valid(params[0], commitment))


def get_block(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    if not params or not isinstance(params[0], int) or isinstance(params[0], bool):
        raise invalid_params("expected a slot number")
    config = _config(params, 1)
    slot, commitment = params[0], _commitment(config)
    with cluster.lock:
        cluster.require_history()
        lowest = cluster.minimum_ledger_slot()
        if slot < lowest:
            raise RpcError(-32001, f"Block {slot} cleaned up, does not exist on node. First available block: {lowest}")
        block = cluster.block(slot) if slot <= cluster.commitment_slot(commitment) else None
        if block is None:
            raise RpcError(-32004, f"Block not available for slot {slot}")
        blockhash, previous, block_time, signatures = block
        result: dict[str, Any] = {"blockhash": blockhash, "previousBlockhash": previous, "parentSlot": max(slot - 1, 0),
                                  "blockHeight": slot, "blockTime": block_time}
        details = config.get("transactionDetails", "full")
        if details == "signatures":
            result["signatures"] = signatures
        elif details in ("full", "accounts"):
            result["transactions"] = [_transaction_json(cluster.landed(sig)) for sig in signatures]  # type: ignore[arg-type]
        return result


def minimum_ledger_slot(cluster: Cluster, params: list[Any]) -> int:
    return cluster.minimum_ledger_slot()


# --- transactions -----------------------------------------------------------------------------

def send_transaction(cluster: Cluster, params: list[Any]) -> str:
    config = _config(params, 1)
    tx = _decode_transaction(params, config)
    return cluster.send(tx, preflight=not config.get("skipPreflight", False))


def simulate_transaction(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    config = _config(params, 1)
    tx = _decode_transaction(params, config)
    return _context(cluster, "processed", cluster.simulate(tx))


def get_fee_for_message(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    from solders.message import Message

    try:
        message = Message.from_bytes(base64.b64decode(params[0], validate=True))
    except (IndexError, TypeError, ValueError, binascii.Error):
        raise invalid_params("failed to deserialize the message") from None
    fee = LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures + priority_fee(message)
    return _context(cluster, _commitment(_config(params, 1)), fee)


def get_recent_prioritization_fees(cluster: Cluster, params: list[Any]) -> list[dict[str, int]]:
    """Per recent slot (oldest first), the price it took to land writing the given accounts."""
    accounts = params[0] if params and params[0] is not None else []
    if not isinstance(accounts, list):
        raise invalid_params("expected an array of account addresses")
    if len(accounts) > MAX_ACCOUNTS:
        raise invalid_params(f"Too many inputs provided; max {MAX_ACCOUNTS}")
    return cluster.prioritization_fees([str(_pubkey(accounts, i)) for i in range(len(accounts))])


def get_signature_statuses(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    signatures = params[0] if params else None
    if not isinstance(signatures, list) or not all(isinstance(s, str) for s in signatures) or len(signatures) > 256:
        raise invalid_params("expected a list of up to 256 signatures")
    search = bool(_config(params, 1).get("searchTransactionHistory", False))
    with cluster.lock:
        # As the real node: the context is the processed bank's slot (the newest the node has), which
        # is what tells a caller how far the node had got when it said "unknown".
        return _context(cluster, "processed", [cluster.status(sig, search) for sig in signatures])


def get_transaction(cluster: Cluster, params: list[Any]) -> dict[str, Any] | None:
    config = _config(params, 1)
    commitment = _commitment(config)
    if commitment == "processed":
        raise invalid_params("Method does not support commitment below `confirmed`")
    encoding = config.get("encoding", "json")
    if encoding not in ("json", "base64", "base58"):
        raise invalid_params(f"this devnet serves getTransaction with encoding json, base64 or base58, not {encoding!r}")
    with cluster.lock:
        cluster.require_history()
        landed = cluster.landed(params[0]) if params and isinstance(params[0], str) else None
        if landed is None or landed.slot > cluster.commitment_slot(commitment) or not cluster.in_history(landed.slot):
            return None
        result = _transaction_json(landed)
        if encoding != "json":  # the wire bytes, as the real node encodes them: [data, encoding]
            data = base64.b64encode(landed.raw).decode() if encoding == "base64" else b58encode(landed.raw)
            result["transaction"] = [data, encoding]
        if "maxSupportedTransactionVersion" in config:
            result["version"] = "legacy"
        return result


def get_signatures_for_address(cluster: Cluster, params: list[Any]) -> list[dict[str, Any]]:
    """Newest first, at "confirmed" or "finalized" (the default); `minContextSlot` is checked
    against the finalized root at "finalized" (-32016 below it), as agave does."""
    address, config = str(_pubkey(params)), _config(params, 1)
    commitment = _commitment(config)
    if commitment == "processed":
        raise invalid_params("Method does not support commitment below `confirmed`")
    limit = config.get("limit", 1000)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise invalid_params("Invalid limit; max 1000")
    bounds = [config.get(key) for key in ("before", "until")]
    if not all(bound is None or isinstance(bound, str) for bound in bounds):
        raise invalid_params("before/until must be signatures")
    min_slot = config.get("minContextSlot")
    with cluster.lock:
        cluster.require_history()
        highest = cluster.commitment_slot(commitment)
        if isinstance(min_slot, int) and highest < min_slot:
            raise RpcError(-32016, "Minimum context slot has not been reached", {"contextSlot": highest})
        listed = cluster.signatures_for_address(address, highest, bounds[0], bounds[1], limit)
        return [{"signature": landed.signature, "slot": landed.slot, "err": landed.err, "memo": None,
                 "blockTime": landed.block_time, "confirmationStatus": cluster.level_of(landed.slot)}
                for landed in listed]


def _transaction_json(landed: Landed) -> dict[str, Any]:
    status = {"Ok": None} if landed.err is None else {"Err": landed.err}
    meta = {"err": landed.err, "status": status, "fee": landed.fee, "preBalances": landed.pre_balances,
            "postBalances": landed.post_balances, "innerInstructions": [], "logMessages": landed.logs,
            "preTokenBalances": [], "postTokenBalances": [], "rewards": [],
            "loadedAddresses": {"writable": [], "readonly": []}, "computeUnitsConsumed": landed.units}
    return {"slot": landed.slot, "blockTime": landed.block_time, "meta": meta, "transaction": landed.message}


# --- accounts -----------------------------------------------------------------------------------

def get_balance(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    address, commitment = _pubkey(params), _commitment(_config(params, 1))
    with cluster.lock:
        return _context(cluster, commitment, cluster.svm.get_balance(address) or 0)


def get_account_info(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    address, config = _pubkey(params), _config(params, 1)
    encoding = config.get("encoding", "base58")
    if encoding not in ("base58", "base64", "jsonParsed"):
        raise invalid_params(f"unsupported encoding: {encoding}")
    with cluster.lock:
        account = cluster.svm.get_account(address)
        if account is None or (account.lamports == 0 and not account.data):
            return _context(cluster, _commitment(config), None)
        data = bytes(account.data)
        encoded = [b58encode(data), "base58"] if encoding == "base58" else [base64.b64encode(data).decode(), "base64"]
        value = {"lamports": account.lamports, "owner": str(account.owner), "data": encoded,
                 "executable": account.executable, "rentEpoch": account.rent_epoch, "space": len(data)}
        return _context(cluster, _commitment(config), value)


def get_token_account_balance(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    address, commitment = _pubkey(params), _commitment(_config(params, 1))
    with cluster.lock:
        account = cluster.svm.get_account(address)
        if account is None or (account.lamports == 0 and not account.data):
            raise RpcError(-32602, "Invalid param: could not find account")
        if account.owner != TOKEN_PROGRAM or len(account.data) != 165:
            raise RpcError(-32602, "Invalid param: not a Token account")
        token = TokenAccount.from_bytes(bytes(account.data))
        mint_account = cluster.svm.get_account(token.mint)
        decimals = Mint.from_bytes(bytes(mint_account.data)).decimals if mint_account is not None else 0
        ui = token.amount / 10**decimals
        ui_string = f"{token.amount / 10**decimals:.{decimals}f}".rstrip("0").rstrip(".") if decimals else str(token.amount)
        value = {"amount": str(token.amount), "decimals": decimals, "uiAmount": ui, "uiAmountString": ui_string}
        return _context(cluster, commitment, value)


def get_minimum_balance_for_rent_exemption(cluster: Cluster, params: list[Any]) -> int:
    size = params[0] if params else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise invalid_params("expected a data length")
    with cluster.lock:
        return cluster.svm.minimum_balance_for_rent_exemption(size)


# --- faucets and devnet control ------------------------------------------------------------

def request_airdrop(cluster: Cluster, params: list[Any]) -> str:
    lamports = params[1] if len(params) > 1 else None
    if not isinstance(lamports, int) or isinstance(lamports, bool) or lamports <= 0:
        raise invalid_params("expected a positive lamport amount")
    return cluster.airdrop(_pubkey(params), lamports)


def devnet_mint_to(cluster: Cluster, params: list[Any]) -> str:
    """{owner, mint, amount}: create the owner's associated token account if needed and mint."""
    request = params[0] if params and isinstance(params[0], dict) else dict(zip(("owner", "mint", "amount"), params))
    amount = request.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise invalid_params("amount must be a positive integer of base units")
    return cluster.mint_to(_pubkey([request.get("owner")]), str(request.get("mint")), amount)


def devnet_advance_slots(cluster: Cluster, params: list[Any]) -> int:
    slots = params[0] if params else 1
    if not isinstance(slots, int) or isinstance(slots, bool) or not 0 <= slots <= 100_000:
        raise invalid_params("expected a number of slots 0..100000")
    return cluster.advance(slots)


def devnet_set_prioritization_fee(cluster: Cluster, params: list[Any]) -> int:
    """[micro_lamports]: every recent slot reports at least this compute-unit price (a busy
    cluster); 0 goes back to what landed transactions paid."""
    price = params[0] if params else None
    if not isinstance(price, int) or isinstance(price, bool) or not 0 <= price < 2**64:
        raise invalid_params("expected a compute-unit price in micro-lamports, 0..2^64-1")
    cluster.set_prioritization_floor(price)
    return price


def devnet_info(cluster: Cluster, params: list[Any]) -> dict[str, Any]:
    config = cluster.config
    return {"mintAuthority": str(cluster.authority.pubkey()), "mints": dict(cluster.mints), "slot": cluster.slot,
            "genesisHash": cluster.genesis_hash, "slotMs": config.slot_ms, "blockhashMaxAge": config.blockhash_max_age,
            "confirmDepth": config.confirm_depth, "finalizeDepth": config.finalize_depth,
            "transactionHistory": config.transaction_history, "ledgerSlots": config.ledger_slots,
            "minimumLedgerSlot": cluster.minimum_ledger_slot(), "prioritizationFeeFloor": cluster.priority.floor}


METHODS: dict[str, Handler] = {
    "getHealth": get_health,
    "getVersion": get_version,
    "getGenesisHash": get_genesis_hash,
    "getSlot": get_slot,
    "getBlockHeight": get_slot,  # one block per slot: height == slot
    "getEpochInfo": get_epoch_info,
    "getLatestBlockhash": get_latest_blockhash,
    "isBlockhashValid": is_blockhash_valid,
    "getBlock": get_block,
    "sendTransaction": send_transaction,
    "simulateTransaction": simulate_transaction,
    "getFeeForMessage": get_fee_for_message,
    "getRecentPrioritizationFees": get_recent_prioritization_fees,
    "getSignatureStatuses": get_signature_statuses,
    "getTransaction": get_transaction,
    "getSignaturesForAddress": get_signatures_for_address,
    "minimumLedgerSlot": minimum_ledger_slot,
    "getBalance": get_balance,
    "getAccountInfo": get_account_info,
    "getTokenAccountBalance": get_token_account_balance,
    "getMinimumBalanceForRentExemption": get_minimum_balance_for_rent_exemption,
    "requestAirdrop": request_airdrop,
    "devnet_mintTo": devnet_mint_to,
    "devnet_advanceSlots": devnet_advance_slots,
    "devnet_setPrioritizationFee": devnet_set_prioritization_fee,
    "devnet_info": devnet_info,
}
