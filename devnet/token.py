"""Deploy and drive the devnet ERC20 (contracts/Token.vy) on an anvil node.

Why: the EVM adapter and the pipeline move real tokens in the tests and the demo, so a real
contract is deployed on a real node. Transactions are signed locally (EIP-1559) with anvil's
default account 0, a publicly known test key; nothing here is for real funds. The ABI and
bytecode come from the shipped contracts/Token.json, so the runtime does not need vyper.

Deployment is deterministic: account 0 at nonce 0 on a fresh node creates
``DEFAULT_TOKEN_ADDRESS``. Pass ``expected_address`` to make a deploy idempotent (an existing
token there is reused) and verified (a deploy that lands elsewhere raises).
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TransactionNotFound

from devnet.anvil import DEFAULT_PRIVATE_KEY

ARTIFACT = Path(__file__).resolve().parent / "contracts" / "Token.json"
#: The CREATE address of account 0 (0xf39F...2266) at nonce 0.
DEFAULT_TOKEN_ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PRIORITY_FEE_WEI = 1_000_000_000  # 1 gwei
RECEIPT_POLL_SECONDS = 0.05


class TokenError(RuntimeError):
    """A token deployment or call did not do what was asked."""


@lru_cache(maxsize=1)
def load_artifact() -> dict[str, Any]:
    """ABI and bytecode of Token.vy, as written by ``python -m devnet.contracts.build``."""
    return json.loads(ARTIFACT.read_text())


def token_abi() -> list[dict[str, Any]]:
    return list(load_artifact()["abi"])


def _web3(rpc_url: str) -> Web3:
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))


def _account(private_key: str) -> LocalAccount:
    return Account.from_key(private_key)


def create_address(deployer: str, nonce: int) -> str:
    """The address a CREATE from ``deployer`` at ``nonce`` produces (EIP-55 checksummed)."""
    import rlp  # a web3 dependency
    from eth_utils import keccak, to_bytes

    raw = keccak(rlp.encode([to_bytes(hexstr=deployer), nonce]))[12:]
    return to_checksum_address(raw)


def send_transaction(
    w3: Web3, account: LocalAccount, tx: dict[str, Any], *, timeout: float = 60.0
) -> dict[str, Any]:
    """Fill nonce/fees/gas, sign locally (EIP-1559), send, and poll for a successful receipt."""
    tx = dict(tx)
    tx.setdefault("from", account.address)
    tx.setdefault("chainId", w3.eth.chain_id)
    tx.setdefault("nonce", w3.eth.get_transaction_count(account.address, "pending"))
    if "maxFeePerGas" not in tx:
        base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        tx["maxPriorityFeePerGas"] = PRIORITY_FEE_WEI
        tx["maxFeePerGas"] = 2 * base_fee + PRIORITY_FEE_WEI
    tx.setdefault("type", 2)
    if "gas" not in tx:
        tx["gas"] = int(w3.eth.estimate_gas(tx) * 12 // 10)
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = wait_for_receipt(w3, tx_hash, timeout=timeout)
    if receipt["status"] != 1:
        raise TokenError(f"transaction {Web3.to_hex(tx_hash)} reverted")
    return receipt


def wait_for_receipt(w3: Web3, tx_hash: bytes, *, timeout: float = 60.0) -> dict[str, Any]:
    """Poll every 50 ms: works with automine and with ``--block-time``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dict(w3.eth.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            pass
        if time.monotonic() >= deadline:
            raise TokenError(f"no receipt for {Web3.to_hex(tx_hash)} within {timeout:.0f}s")
        time.sleep(RECEIPT_POLL_SECONDS)


def token_contract(rpc_url: str, token: str, w3: Web3 | None = None) -> Contract:
    w3 = w3 or _web3(rpc_url)
    return w3.eth.contract(address=to_checksum_address(token), abi=token_abi())


def deploy_token(
    rpc_url: str,
    name: str,
    symbol: str,
    decimals: int,
    *,
    expected_address: str | None = None,
    private_key: str = DEFAULT_PRIVATE_KEY,
    timeout: float = 60.0,
) -> str:
    """Deploy Token.vy and return its checksummed address.

    With ``expected_address``: if a contract is already there and reports the same symbol and
    decimals, reuse it; otherwise deploy and raise TokenError if the deploy lands elsewhere
    (the deployer's nonce was not the one expected).
    """
    w3 = _web3(rpc_url)
    account = _account(private_key)
    if expected_address is not None:
        expected_address = to_checksum_address(expected_address)
        if w3.eth.get_code(expected_address):
            token = token_contract(rpc_url, expected_address, w3)
            try:
                found = (token.functions.symbol().call(), token.functions.decimals().call())
            except Exception as exc:  # noqa: BLE001 - not our token
                raise TokenError(f"{expected_address} holds a contract that is not a token") from exc
            if found != (symbol, decimals):
                raise TokenError(
                    f"{expected_address} holds token {found[0]}/{found[1]}, "
                    f"not {symbol}/{decimals}"
                )
            return expected_address
        nonce = w3.eth.get_transaction_count(account.address, "pending")
        would_be = create_address(account.address, nonce)
        if would_be != expected_address:
            raise TokenError(
                f"deployer {account.address} at nonce {nonce} would create {would_be}, "
                f"not the expected {expected_address}"
            )
    artifact = load_artifact()
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(name, symbol, decimals).build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    )
    receipt = send_transaction(w3, account, _without_fees(tx), timeout=timeout)
    address = to_checksum_address(receipt["contractAddress"])
    if expected_address is not None and address != expected_address:
        raise TokenError(f"token deployed at {address}, expected {expected_address}")
    return address


def _without_fees(tx: dict[str, Any]) -> dict[str, Any]:
    # build_transaction fills fee fields from the node; keep ours (send_transaction) uniform.
    tx = dict(tx)
    for key in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "gas"):
        tx.pop(key, None)
    return tx


def mint(
    rpc_url: str,
    token: str,
    to: str,
    amount: int,
    *,
    private_key: str = DEFAULT_PRIVATE_KEY,
    timeout: float = 60.0,
) -> str:
    """Owner-only mint of ``amount`` base units to ``to``; returns the tx hash (0x-hex)."""
    return _call_token(rpc_url, token, "mint", [to_checksum_address(to), amount], private_key, timeout)


def transfer(
    rpc_url: str,
    token: str,
    to: str,
    amount: int,
    *,
    private_key: str = DEFAULT_PRIVATE_KEY,
    timeout: float = 60.0,
) -> str:
    """ERC20 ``transfer`` signed by ``private_key``; returns the tx hash (0x-hex)."""
    return _call_token(
        rpc_url, token, "transfer", [to_checksum_address(to), amount], private_key, timeout
    )


def _call_token(
    rpc_url: str, token: str, fn: str, args: list[Any], private_key: str, timeout: float
) -> str:
    w3 = _web3(rpc_url)
    account = _account(private_key)
    contract = token_contract(rpc_url, token, w3)
    tx = getattr(contract.functions, fn)(*args).build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    )
    receipt = send_transaction(w3, account, _without_fees(tx), timeout=timeout)
    return Web3.to_hex(receipt["transactionHash"])


def token_balance(rpc_url: str, token: str, owner: str) -> int:
    """``balanceOf(owner)`` in base units."""
    contract = token_contract(rpc_url, token)
    return int(contract.functions.balanceOf(to_checksum_address(owner)).call())
