"""EvmAdapter against a real EVM node (Foundry's anvil), started here on a free loopback port.

The whole life of a transfer as the pipeline drives it: quote, nonce, build, sign the digest
with a plain secp256k1 key (standing in for the MPC signer), attach, broadcast (twice: the
second is a no-op), status through confirmations, and reorgs that must take a transaction out
of INCLUDED. The ERC20 is the devnet token (shipped bytecode of devnet/contracts/Token.vy), deployed first from
anvil's account 0, so it lands at the address the devnet registry expects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import requests
from eth_account import Account
from eth_keys import keys

from chains.base import FeeQuote, SignedTransaction, TransferIntent, TxState, TxStatus
from chains.errors import ChainMismatch, TransactionRejected
from chains.evm import EvmAdapter
from chains.registry import ChainSpec, load_registry
from devnet.anvil import AnvilNode
from devnet.token import deploy_token, mint

pytestmark = pytest.mark.integration

ANVIL_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
ANVIL_ADDRESS = Account.from_key(ANVIL_KEY).address
TOKEN_SUPPLY = 10**15  # 1e9 USDT at 6 decimals

@dataclass
class Node:
    url: str

    def rpc(self, method: str, *params: Any) -> Any:
        answer = requests.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=10).json()
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def send_with(self, secret: bytes, tx: dict[str, Any]) -> str:
        return self.rpc("eth_sendRawTransaction", "0x" + Account.sign_transaction(tx, secret).raw_transaction.hex())

    def receipt(self, tx_hash: str) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while (receipt := self.rpc("eth_getTransactionReceipt", tx_hash)) is None:
            assert time.monotonic() < deadline, f"no receipt for {tx_hash}"
            time.sleep(0.02)
        return receipt

    def balance(self, address: str) -> int:
        return int(self.rpc("eth_getBalance", address, "latest"), 16)

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """A real anvil (installed from the npm registry by devnet.ensure_anvil when missing)."""
    with AnvilNode(chain_id=31337) as anvil:
        yield Node(anvil.rpc_url)


@pytest.fixture(scope="module")
def spec(node: Node) -> ChainSpec:
    return replace(load_registry("devnet").chain("ethereum"), rpc_urls=(node.url,))


@pytest.fixture(scope="module")
def token_deployed(node: Node, spec: ChainSpec) -> str:
    """The devnet's shipped ERC20 from account 0 at nonce 0: the registry's devnet USDT address."""
    assert int(node.rpc("eth_getTransactionCount", ANVIL_ADDRESS, "pending"), 16) == 0, "token must be the first deploy"
    contract = spec.token("USDT").contract
    assert deploy_token(node.url, "Tether USD (test)", "USDT", 6, expected_address=contract) == contract
    mint(node.url, contract, ANVIL_ADDRESS, TOKEN_SUPPLY)
    return contract


@pytest.fixture
def adapter(spec: ChainSpec, token_deployed: str) -> EvmAdapter:
    return EvmAdapter(spec)


def _sign_and_attach(adapter: EvmAdapter, secret: bytes, intent: TransferIntent, fee: FeeQuote | None = None) -> tuple[SignedTransaction, FeeQuote]:
    fee = fee or adapter.quote_fee(intent)
    unsigned = adapter.build(intent, fee, adapter.next_nonce(intent.from_address))
    signature = keys.PrivateKey(secret).sign_msg_hash(unsigned.digests[0]).to_bytes()
    return adapter.attach_signature(unsigned.payload, [signature]), fee


def _settled(adapter: EvmAdapter, signed: SignedTransaction) -> TxStatus:
    """Status once the node has mined it (anvil automines, but answers the send first)."""
    deadline = time.monotonic() + 10
    while (status := adapter.get_status(signed)).state in (TxState.PENDING, TxState.NOT_FOUND):
        assert time.monotonic() < deadline, f"{signed.tx_hash} still {status.state}"
        time.sleep(0.02)
    return status


def _funded_account(node: Node, wei: int) -> tuple[bytes, str]:
    account = Account.create()
    node.rpc("anvil_setBalance", account.address, hex(wei))
    return bytes(account.key), account.address


def test_native_transfer_through_confirmations(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    recipient = Account.create().address
    amount = 12345 * 10**12
    before = adapter.balance_of(ANVIL_ADDRESS, spec.native)
    intent = TransferIntent(ANVIL_ADDRESS, recipient.lower(), amount, spec.native)

    signed, fee = _sign_and_attach(adapter, ANVIL_KEY, intent)
    assert fee.params["gas"] == 21000 and fee.max_fee == 21000 * fee.params["maxFeePerGas"]
    assert signed.raw[0] == 2  # EIP-1559 typed transaction

    assert adapter.broadcast(signed) == signed.tx_hash
    assert adapter.broadcast(signed) == signed.tx_hash  # same bytes again: a no-op, not an error

    status = _settled(adapter, signed)
    assert status.state is TxState.INCLUDED and status.confirmations == 1
    node.rpc("anvil_mine", "0x2")
    later = adapter.get_status(signed)
    assert later.confirmations == 3 and later.block_hash == status.block_hash
    assert adapter.broadcast(signed) == signed.tx_hash  # still a no-op once mined ("nonce too low")

    assert adapter.balance_of(recipient, spec.native) == amount
    spent = before - adapter.balance_of(ANVIL_ADDRESS, spec.native)
    assert status.fee_paid == spent - amount
    assert 0 < status.fee_paid <= fee.max_fee


def test_legacy_gas_price_transaction(node: Node, spec: ChainSpec, token_deployed: str) -> None:
    legacy = EvmAdapter(replace(spec, eip1559=False))
    recipient = Account.create().address
    signed, fee = _sign_and_attach(legacy, ANVIL_KEY, TransferIntent(ANVIL_ADDRESS, recipient, 7, spec.native))
    assert set(fee.params) == {"gas", "gasPrice"} and signed.raw[0] >= 0xC0  # an RLP list: legacy
    legacy.broadcast(signed)
    status = _settled(legacy, signed)
    assert status.state is TxState.INCLUDED and status.fee_paid == 21000 * fee.params["gasPrice"]
    assert legacy.balance_of(recipient, spec.native) == 7


def test_erc20_transfer(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    usdt = spec.token("USDT")
    recipient = Account.create().address
    tokens_before = adapter.balance_of(ANVIL_ADDRESS, usdt)
    native_before = node.balance(ANVIL_ADDRESS)
    intent = TransferIntent(ANVIL_ADDRESS, recipient, 2_500_000, usdt)

    signed, fee = _sign_and_attach(adapter, ANVIL_KEY, intent)
    assert fee.params["gas"] > 21000
    adapter.broadcast(signed)
    status = _settled(adapter, signed)
    assert status.state is TxState.INCLUDED
    assert adapter.balance_of(recipient, usdt) == 2_500_000
    assert adapter.balance_of(ANVIL_ADDRESS, usdt) == tokens_before - 2_500_000
    assert status.fee_paid == native_before - node.balance(ANVIL_ADDRESS)
    assert status.fee_paid <= fee.max_fee


def test_erc20_without_tokens_is_rejected_at_quote(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    _, poor = _funded_account(node, 10**18)
    with pytest.raises(TransactionRejected) as info:
        adapter.quote_fee(TransferIntent(poor, ANVIL_ADDRESS, 1, spec.token("USDT")))
    assert info.value.reason == "insufficient_funds"


def test_erc20_that_reverts_on_chain_is_reverted(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    secret, poor = _funded_account(node, 10**18)
    fee = FeeQuote(max_fee=100_000 * 10**10, params={"gas": 100_000, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9})
    signed, _ = _sign_and_attach(adapter, secret, TransferIntent(poor, ANVIL_ADDRESS, 1, spec.token("USDT")), fee)
    adapter.broadcast(signed)
    status = _settled(adapter, signed)
    assert status.state is TxState.REVERTED and status.fee_paid == 10**18 - node.balance(poor) > 0


def test_no_native_for_the_fee_is_rejected_at_broadcast(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    account = Account.create()
    fee = FeeQuote(max_fee=21000 * 10**10, params={"gas": 21000, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9})
    signed, _ = _sign_and_attach(adapter, bytes(account.key), TransferIntent(account.address, ANVIL_ADDRESS, 1, spec.native), fee)
    with pytest.raises(TransactionRejected) as info:
        adapter.broadcast(signed)
    assert info.value.reason == "insufficient_funds_for_fee"
    assert adapter.get_status(signed).state is TxState.NOT_FOUND
    assert adapter.proves_unlandable(signed)  # its nonce is unused and nobody has the bytes


def test_proof_of_unlandable_needs_an_unused_nonce_and_an_unknown_hash(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    secret, sender = _funded_account(node, 10**18)
    intent = TransferIntent(sender, Account.create().address, 1, spec.native)
    first, fee = _sign_and_attach(adapter, secret, intent)
    assert adapter.proves_unlandable(first)  # never sent: nonce 0 unused, hash unknown
    node.rpc("evm_setAutomine", False)
    try:
        adapter.broadcast(first)
        assert not adapter.proves_unlandable(first)  # pending: the node knows the hash
    finally:
        node.rpc("evm_setAutomine", True)
    node.rpc("anvil_mine", "0x1")
    assert _settled(adapter, first).state is TxState.INCLUDED
    assert not adapter.proves_unlandable(first)  # mined: nonce used
    # Another transaction with the same nonce 0 (never sent): the nonce is used, so it can never land,
    # but an unknown hash behind a used nonce is not what proves_unlandable answers True for
    other = TransferIntent(sender, Account.create().address, 2, spec.native)
    unsigned = adapter.build(other, fee, 0)
    rival = adapter.attach_signature(unsigned.payload, [keys.PrivateKey(secret).sign_msg_hash(unsigned.digests[0]).to_bytes()])
    assert not adapter.proves_unlandable(rival)


def test_pending_in_the_pool_then_included(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    node.rpc("evm_setAutomine", False)
    try:
        signed, _ = _sign_and_attach(adapter, ANVIL_KEY, TransferIntent(ANVIL_ADDRESS, Account.create().address, 1, spec.native))
        adapter.broadcast(signed)
        adapter.broadcast(signed)  # "already known/imported": the node has these bytes
        assert adapter.get_status(signed).state is TxState.PENDING
        node.rpc("anvil_mine", "0x1")
        assert _settled(adapter, signed).state is TxState.INCLUDED
    finally:
        node.rpc("evm_setAutomine", True)


def test_reorg_takes_the_transaction_out_of_included(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    signed, _ = _sign_and_attach(adapter, ANVIL_KEY, TransferIntent(ANVIL_ADDRESS, Account.create().address, 5, spec.native))
    adapter.broadcast(signed)
    _settled(adapter, signed)
    node.rpc("anvil_mine", "0x2")
    included = adapter.get_status(signed)
    assert included.state is TxState.INCLUDED and included.confirmations == 3

    node.rpc("anvil_reorg", 3, [])  # the three blocks are replaced by empty ones
    gone = adapter.get_status(signed)
    assert gone.state is TxState.NOT_FOUND and gone.confirmations == 0

    assert adapter.broadcast(signed) == signed.tx_hash  # the stored bytes go out again
    again = _settled(adapter, signed)
    assert again.state is TxState.INCLUDED and again.block_hash != included.block_hash


def test_reorg_that_reincludes_the_transaction_elsewhere(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    signed, _ = _sign_and_attach(adapter, ANVIL_KEY, TransferIntent(ANVIL_ADDRESS, Account.create().address, 6, spec.native))
    adapter.broadcast(signed)
    _settled(adapter, signed)
    node.rpc("anvil_mine", "0x2")
    included = adapter.get_status(signed)
    node.rpc("anvil_reorg", 3, [["0x" + signed.raw.hex(), 1]])
    moved = adapter.get_status(signed)
    assert moved.state is TxState.INCLUDED
    assert (moved.block_number, moved.block_hash) != (included.block_number, included.block_hash)
    assert moved.confirmations == node.head() - moved.block_number + 1


def test_snapshot_revert_also_drops_inclusion(node: Node, adapter: EvmAdapter, spec: ChainSpec) -> None:
    snapshot = node.rpc("evm_snapshot")
    signed, _ = _sign_and_attach(adapter, ANVIL_KEY, TransferIntent(ANVIL_ADDRESS, Account.create().address, 8, spec.native))
    adapter.broadcast(signed)
    assert _settled(adapter, signed).state is TxState.INCLUDED
    assert node.rpc("evm_revert", snapshot) is True
    assert adapter.get_status(signed).state is not TxState.INCLUDED


def test_a_node_of_another_chain_is_refused(node: Node, token_deployed: str) -> None:
    bsc = replace(load_registry("devnet").chain("bsc"), rpc_urls=(node.url,))  # 31338 vs the node's 31337
    with pytest.raises(ChainMismatch):
        EvmAdapter(bsc).next_nonce(ANVIL_ADDRESS)
