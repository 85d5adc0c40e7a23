"""RPC failover (chains/failover.py) against real devnet nodes: a real anvil and the Bitcoin devnet
node, each reached through the fault proxy (devnet/rpc_proxy.py) as one of two endpoints.

- an adapter whose first endpoint is killed in the middle of a transfer finishes the transfer on
  the second (balance, quote, nonce, broadcast, status, tracker), while the same adapter on the
  killed endpoint alone fails: the control that shows the pool is what saves it;
- a lagging endpoint is left out of reads once the probes see its lag;
- a broadcast reaches both endpoints of a pool (two proxies over one node): both forward it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from eth_account import Account
from eth_keys import keys

from chains.base import SignedTransaction, TransferIntent, TxState, Watched
from chains.bitcoin import BitcoinAdapter
from chains.errors import ChainRpcError
from chains.evm import EvmAdapter
from chains.registry import ChainSpec, load_registry
from devnet.anvil import AnvilNode
from devnet.bitcoin_node import BitcoinNode
from devnet.rpc_proxy import RpcProxy

pytestmark = pytest.mark.integration

ANVIL_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilNode]:
    with AnvilNode(chain_id=31337) as node:
        yield node


@pytest.fixture(scope="module")
def bitcoin() -> Iterator[BitcoinNode]:
    with BitcoinNode(block_interval=0) as node:
        yield node


@pytest.fixture
def evm_spec() -> ChainSpec:
    return load_registry("devnet").chain("ethereum")


def _funded(anvil: AnvilNode) -> tuple[bytes, str]:
    account = Account.create()
    anvil.set_balance(account.address, 10**18)
    return bytes(account.key), account.address


def _evm_signed(adapter: EvmAdapter, secret: bytes, sender: str, amount: int) -> SignedTransaction:
    intent = TransferIntent(sender, Account.create().address, amount, adapter.spec.native)
    unsigned = adapter.build(intent, adapter.quote_fee(intent), adapter.next_nonce(sender))
    signature = keys.PrivateKey(secret).sign_msg_hash(unsigned.digests[0]).to_bytes()
    return adapter.attach_signature(unsigned.payload, [signature])


def _included(adapter: EvmAdapter | BitcoinAdapter, signed: SignedTransaction) -> None:
    deadline = time.monotonic() + 10
    while adapter.get_status(signed).state is not TxState.INCLUDED:
        assert time.monotonic() < deadline, f"{signed.tx_hash} not included"
        time.sleep(0.05)


# -- EVM ------------------------------------------------------------------------------------------

def test_an_evm_transfer_survives_its_first_endpoint_being_killed_midway(anvil: AnvilNode, evm_spec: ChainSpec) -> None:
    secret, sender = _funded(anvil)
    with RpcProxy(anvil.rpc_url) as proxy:
        adapter = EvmAdapter(replace(evm_spec, rpc_urls=(proxy.url, anvil.rpc_url)))
        alone = EvmAdapter(replace(evm_spec, rpc_urls=(proxy.url,)))
        assert adapter.balance_of(sender, evm_spec.native) == alone.balance_of(sender, evm_spec.native) == 10**18
        assert proxy.calls["eth_getBalance"] == 2  # the primary served both
        intent = TransferIntent(sender, Account.create().address, 10**15, evm_spec.native)
        quote = adapter.quote_fee(intent)

        proxy.close()  # killed: refused from now on, kept-alive connections reset

        with pytest.raises(ChainRpcError, match="cannot reach"):
            alone.balance_of(sender, evm_spec.native)  # without failover the transfer stops here
        nonce = adapter.next_nonce(sender)
        unsigned = adapter.build(intent, quote, nonce)
        signature = keys.PrivateKey(secret).sign_msg_hash(unsigned.digests[0]).to_bytes()
        signed = adapter.attach_signature(unsigned.payload, [signature])
        assert adapter.broadcast(signed) == signed.tx_hash
        _included(adapter, signed)
        observed = adapter.track([Watched("t1", signed, sender, nonce)], {})
        assert observed.statuses["t1"].state is TxState.INCLUDED
        assert adapter.balance_of(sender, evm_spec.native) < 10**18 - 10**15
        assert adapter._rpc.health()[0]["status"] in ("failing", "down", "half-open")


def test_a_lagging_evm_endpoint_is_excluded_from_reads(anvil: AnvilNode, evm_spec: ChainSpec) -> None:
    anvil.mine(20)
    _, sender = _funded(anvil)
    with RpcProxy(anvil.rpc_url) as proxy:
        adapter = EvmAdapter(replace(evm_spec, rpc_urls=(proxy.url, anvil.rpc_url)))
        adapter.balance_of(sender, evm_spec.native)
        assert proxy.calls["eth_getBalance"] == 1
        proxy.set_mode("lagging", 10)  # more than the EVM default max_lag of 5
        rows = adapter._rpc.refresh()
        assert [row["status"] for row in rows] == ["lagging", "ok"] and rows[1]["head"] - rows[0]["head"] == 10
        for _ in range(3):
            assert adapter.balance_of(sender, evm_spec.native) == 10**18
        assert proxy.calls["eth_getBalance"] == 1  # reads went to the endpoint that is not behind
        proxy.set_mode("pass")
        adapter._rpc.refresh()
        adapter.balance_of(sender, evm_spec.native)
        assert proxy.calls["eth_getBalance"] == 2  # caught up: the primary again


def test_an_evm_broadcast_reaches_every_endpoint(anvil: AnvilNode, evm_spec: ChainSpec) -> None:
    secret, sender = _funded(anvil)
    with RpcProxy(anvil.rpc_url) as first, RpcProxy(anvil.rpc_url) as second:
        adapter = EvmAdapter(replace(evm_spec, rpc_urls=(first.url, second.url)))
        signed = _evm_signed(adapter, secret, sender, 10**15)
        assert adapter.broadcast(signed) == signed.tx_hash
        deadline = time.monotonic() + 5
        while second.calls["eth_sendRawTransaction"] + first.calls["eth_sendRawTransaction"] < 2:
            assert time.monotonic() < deadline, "the send did not reach both endpoints"
            time.sleep(0.02)
        assert first.calls["eth_sendRawTransaction"] == second.calls["eth_sendRawTransaction"] == 1
        _included(adapter, signed)
        assert anvil.rpc("eth_getTransactionByHash", [signed.tx_hash])["hash"] == signed.tx_hash


# -- Bitcoin --------------------------------------------------------------------------------------

def _bitcoin_wallet(adapter: BitcoinAdapter) -> tuple[bytes, str]:
    secret = secrets.token_bytes(32)
    return secret, adapter.address_from_public_key(keys.PrivateKey(secret).public_key.to_bytes())


def test_a_bitcoin_transfer_survives_its_first_endpoint_being_killed_midway(bitcoin: BitcoinNode) -> None:
    spec = load_registry("devnet").chain("bitcoin")
    with RpcProxy(bitcoin.rpc_url) as proxy:
        adapter = BitcoinAdapter(replace(spec, rpc_urls=(proxy.url, bitcoin.rpc_url)))
        alone = BitcoinAdapter(replace(spec, rpc_urls=(proxy.url,)))
        secret, address = _bitcoin_wallet(adapter)
        bitcoin.fund_sats(address, 500_000)
        assert adapter.balance_of(address, spec.native) == 500_000
        intent = TransferIntent(address, _bitcoin_wallet(adapter)[1], 200_000, spec.native)
        quote = adapter.quote_fee(intent, adapter.list_utxos(address))
        assert proxy.calls["scantxoutset"] >= 1  # the primary served the reads so far

        proxy.close()

        with pytest.raises(ChainRpcError):
            alone.balance_of(address, spec.native)
        unsigned = adapter.build(intent, quote, None, adapter.build_context(intent))
        key = keys.PrivateKey(secret)
        signed = adapter.attach_signature(unsigned.payload, [key.sign_msg_hash(d).to_bytes() for d in unsigned.digests])
        assert adapter.broadcast(signed) == signed.tx_hash
        bitcoin.mine(1)
        status = adapter.get_status(signed)
        assert status.state is TxState.INCLUDED and status.fee_paid == quote.max_fee


def test_a_lagging_bitcoin_endpoint_is_excluded_and_a_broadcast_reaches_both(bitcoin: BitcoinNode) -> None:
    spec = load_registry("devnet").chain("bitcoin")
    bitcoin.mine(5)
    with RpcProxy(bitcoin.rpc_url) as first, RpcProxy(bitcoin.rpc_url) as second:
        adapter = BitcoinAdapter(replace(spec, rpc_urls=(first.url, second.url)))
        secret, address = _bitcoin_wallet(adapter)
        bitcoin.fund_sats(address, 300_000)
        first.set_mode("lagging", 3)  # more than the Bitcoin default max_lag of 2
        assert [row["status"] for row in adapter._rpc.refresh()] == ["lagging", "ok"]
        before = first.calls["scantxoutset"]
        assert adapter.balance_of(address, spec.native) == 300_000
        assert first.calls["scantxoutset"] == before and second.calls["scantxoutset"] >= 1
        first.set_mode("pass")
        adapter._rpc.refresh()
        intent = TransferIntent(address, _bitcoin_wallet(adapter)[1], 100_000, spec.native)
        quote = adapter.quote_fee(intent, adapter.list_utxos(address))
        unsigned = adapter.build(intent, quote, None, adapter.build_context(intent))
        key = keys.PrivateKey(secret)
        signed = adapter.attach_signature(unsigned.payload, [key.sign_msg_hash(d).to_bytes() for d in unsigned.digests])
        assert adapter.broadcast(signed) == signed.tx_hash
        deadline = time.monotonic() + 5
        while first.calls["sendrawtransaction"] + second.calls["sendrawtransaction"] < 2:
            assert time.monotonic() < deadline, "the send did not reach both endpoints"
            time.sleep(0.02)
        assert signed.tx_hash in bitcoin.rpc("getrawmempool")
