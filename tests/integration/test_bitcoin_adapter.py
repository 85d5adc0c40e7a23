"""BitcoinAdapter against the devnet Bitcoin node (its own process, bitcoind's JSON-RPC over HTTP).

The life of a transfer as the pipeline drives it: list UTXOs, quote (selecting inputs), build,
sign each BIP143 digest with a plain secp256k1 key (standing in for the MPC signer), attach,
broadcast (twice: the second is a no-op), follow the status through the registry's 2
confirmations, and check the chain's balances against amount + fee. Also: several destination
types, two transfers with disjoint reserved inputs accepted together, a forged signature refused
by the node, insufficient funds, a reorg taking a transaction out of INCLUDED, unconfirmed change
with the wallet UTXO source, RPC credentials, and a node on the wrong network.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from eth_keys import keys

from chains import bitcoin_tx as btx
from chains.base import FeeQuote, SignedTransaction, TransferIntent, TxState, Utxo
from chains.bitcoin import BitcoinAdapter
from chains.bitcoin_address import b58encode_check, decode_address, encode_segwit
from chains.errors import ChainMismatch, ChainRpcError, TransactionRejected
from chains.registry import ChainSpec, load_registry
from devnet.bitcoin_node import BitcoinNode

pytestmark = pytest.mark.integration


@dataclass
class Wallet:
    """A key the test holds, standing in for the signer's key of one wallet."""

    secret: bytes
    address: str

    @classmethod
    def new(cls, adapter: BitcoinAdapter) -> "Wallet":
        secret = secrets.token_bytes(32)
        return cls(secret, adapter.address_from_public_key(keys.PrivateKey(secret).public_key.to_bytes()))

    def sign(self, digests: tuple[bytes, ...]) -> list[bytes]:
        key = keys.PrivateKey(self.secret)
        return [key.sign_msg_hash(digest).to_bytes() for digest in digests]


@pytest.fixture(scope="module")
def node() -> Iterator[BitcoinNode]:
    """Mines only when told to, so every confirmation count, and what a block takes, is exact
    (also the fixture of test_bitcoin_rbf)."""
    with BitcoinNode(block_interval=0) as running:
        yield running


@pytest.fixture(scope="module")
def spec(node: BitcoinNode) -> ChainSpec:
    return replace(load_registry("devnet").chain("bitcoin"), rpc_urls=(node.rpc_url,))


@pytest.fixture(scope="module")
def adapter(spec: ChainSpec) -> BitcoinAdapter:
    return BitcoinAdapter(spec)


def transfer(adapter: BitcoinAdapter, wallet: Wallet, to: str, amount: int,
             utxos: list[Utxo] | None = None) -> tuple[FeeQuote, SignedTransaction]:
    """quote -> build -> sign -> attach, as the pipeline's lock_funds and signing steps do."""
    intent = TransferIntent(wallet.address, adapter.check_destination(to), amount, adapter.spec.native)
    quote = adapter.quote_fee(intent, adapter.list_utxos(wallet.address) if utxos is None else utxos)
    unsigned = adapter.build(intent, quote, None, adapter.build_context(intent))
    return quote, adapter.attach_signature(unsigned.payload, wallet.sign(unsigned.digests))


def balance(adapter: BitcoinAdapter, address: str) -> int:
    return adapter.balance_of(address, adapter.spec.native)


def test_a_transfer_with_change_through_two_confirmations(node: BitcoinNode, adapter: BitcoinAdapter) -> None:
    # Given a wallet funded by the faucet with two confirmed outputs
    wallet, recipient = Wallet.new(adapter), Wallet.new(adapter)
    node.fund_sats(wallet.address, 600_000)
    node.fund_sats(wallet.address, 400_000)
    assert balance(adapter, wallet.address) == 1_000_000
    # When it sends 700_000 sat (both outputs needed) and the bytes are broadcast twice
    quote, signed = transfer(adapter, wallet, recipient.address, 700_000)
    assert len(quote.inputs) == 2 and quote.params["change"] == 300_000 - quote.max_fee
    assert adapter.broadcast(signed) == adapter.broadcast(signed) == signed.tx_hash
    # Then it is pending, then included, and final at the registry's depth
    assert adapter.get_status(signed).state is TxState.PENDING
    node.mine(1)
    first = adapter.get_status(signed)
    assert (first.state, first.confirmations) == (TxState.INCLUDED, 1)
    node.mine(1)
    final = adapter.get_status(signed)
    assert final.confirmations == adapter.spec.confirmations == 2 and final.block_hash == first.block_hash
    # And the chain agrees with the ledger: the balance dropped by exactly amount + fee
    assert final.fee_paid == quote.max_fee == 1_000_000 - balance(adapter, wallet.address) - 700_000
    assert balance(adapter, recipient.address) == 700_000
    assert adapter.broadcast(signed) == signed.tx_hash  # already in a block: still success


@pytest.mark.parametrize("kind", ["p2wpkh", "p2tr", "p2pkh", "p2sh", "p2wsh"])
def test_every_destination_type_is_paid(node: BitcoinNode, adapter: BitcoinAdapter, kind: str) -> None:
    wallet = Wallet.new(adapter)
    node.fund_sats(wallet.address, 100_000)
    body = secrets.token_bytes(32 if kind in ("p2tr", "p2wsh") else 20)
    to = {
        "p2wpkh": lambda: encode_segwit("bcrt", 0, body), "p2wsh": lambda: encode_segwit("bcrt", 0, body),
        "p2tr": lambda: encode_segwit("bcrt", 1, body),
        "p2pkh": lambda: b58encode_check(b"\x6f" + body), "p2sh": lambda: b58encode_check(b"\xc4" + body),
    }[kind]()
    quote, signed = transfer(adapter, wallet, to, 50_000)
    adapter.broadcast(signed)
    node.mine(1)
    paid = node.rpc("getrawtransaction", signed.tx_hash, 1)["vout"][0]
    assert paid["scriptPubKey"]["hex"] == decode_address(to, "regtest").script_pubkey.hex()
    assert paid["scriptPubKey"].get("address") == to and adapter.get_status(signed).fee_paid == quote.max_fee


def test_two_transfers_with_disjoint_reserved_inputs_are_accepted_together(node: BitcoinNode, adapter: BitcoinAdapter) -> None:
    # Given three confirmed outputs
    wallet = Wallet.new(adapter)
    for sats in (300_000, 200_000, 100_000):
        node.fund_sats(wallet.address, sats, confirm=False)
    node.mine(1)
    listed = adapter.list_utxos(wallet.address)
    # When a first transfer reserves what its quote selected, and a second quotes from the rest
    first_quote, first = transfer(adapter, wallet, Wallet.new(adapter).address, 250_000, listed)
    reserved = {u.outpoint for u in first_quote.inputs}
    second_quote, second = transfer(adapter, wallet, Wallet.new(adapter).address, 250_000,
                                    [u for u in listed if u.outpoint not in reserved])
    # Then the input sets are disjoint and the node takes both into one block
    assert reserved.isdisjoint({u.outpoint for u in second_quote.inputs})
    adapter.broadcast(first)
    adapter.broadcast(second)
    assert set(node.rpc("getrawmempool")) >= {first.tx_hash, second.tx_hash}
    node.mine(1)
    assert adapter.get_status(first).block_hash == adapter.get_status(second).block_hash
    assert balance(adapter, wallet.address) == 600_000 - 500_000 - first_quote.max_fee - second_quote.max_fee


def test_the_node_refuses_a_forged_signature(node: BitcoinNode, adapter: BitcoinAdapter) -> None:
    wallet = Wallet.new(adapter)
    node.fund_sats(wallet.address, 100_000)
    _, signed = transfer(adapter, wallet, Wallet.new(adapter).address, 50_000)
    tx = btx.parse_tx(signed.raw)
    signature, public = tx.inputs[0].witness
    r, s = btx.der_decode(signature[:-1])
    forged = replace(tx, inputs=(replace(tx.inputs[0], witness=(btx.der_encode(r, s ^ 1) + signature[-1:], public)),))
    with pytest.raises(TransactionRejected) as rejected:
        adapter.broadcast(SignedTransaction(raw=forged.serialize(), tx_hash=forged.txid))
    assert rejected.value.reason == "rejected_by_node" and "script-verify" in rejected.value.detail
    assert adapter.get_status(signed).state is TxState.NOT_FOUND  # nothing was accepted
    assert adapter.proves_unlandable(SignedTransaction(raw=forged.serialize(), tx_hash=forged.txid))  # inputs unspent
    assert adapter.broadcast(signed) == signed.tx_hash  # the genuine bytes still go through
    assert not adapter.proves_unlandable(signed)  # its inputs are spent in the mempool now
    node.mine(1)
    assert not adapter.proves_unlandable(signed)  # ... and in a block


def test_a_double_spend_is_rejected_by_the_node(node: BitcoinNode, adapter: BitcoinAdapter) -> None:
    wallet = Wallet.new(adapter)
    node.fund_sats(wallet.address, 100_000)
    listed = adapter.list_utxos(wallet.address)
    _, first = transfer(adapter, wallet, Wallet.new(adapter).address, 40_000, listed)
    _, second = transfer(adapter, wallet, Wallet.new(adapter).address, 30_000, listed)  # same output, no reservation
    adapter.broadcast(first)
    with pytest.raises(TransactionRejected) as conflict:  # same rate: no BIP125 replacement of the first
        adapter.broadcast(second)
    assert conflict.value.reason == "replacement_underpriced" and "insufficient fee" in conflict.value.detail
    node.mine(1)
    with pytest.raises(TransactionRejected, match="missingorspent"):
        adapter.broadcast(second)
    assert not adapter.proves_unlandable(second)  # its input is spent (by the first): no proof, held for ops


def test_insufficient_funds(node: BitcoinNode, adapter: BitcoinAdapter) -> None:
    wallet = Wallet.new(adapter)
    node.fund_sats(wallet.address, 100_000)
    with pytest.raises(TransactionRejected) as rejected:
        transfer(adapter, wallet, Wallet.new(adapter).address, 100_000)  # leaves nothing for the fee
    assert rejected.value.reason == "insufficient_funds"
    with pytest.raises(TransactionRejected, match="insufficient_funds"):
        transfer(adapter, Wallet.new(adapter), wallet.address, 1_000)  # an empty wallet


def test_a_reorg_takes_the_transaction_out_of_included(node: BitcoinNode, adapter: BitcoinAdapter) -> None:
    wallet = Wallet.new(adapter)
    node.fund_sats(wallet.address, 100_000)
    _, signed = transfer(adapter, wallet, Wallet.new(adapter).address, 50_000)
    adapter.broadcast(signed)
    [block] = node.mine(1)
    assert adapter.get_status(signed).block_hash == block
    node.rpc("invalidateblock", block)  # the block leaves the main chain; the tx returns to the mempool
    assert adapter.get_status(signed).state is TxState.PENDING
    node.mine(2)
    again = adapter.get_status(signed)
    assert again.state is TxState.INCLUDED and again.block_hash != block and again.confirmations == 2
    node.reorg(2)  # the devnet helper: both blocks replaced by three new ones
    third = adapter.get_status(signed)
    assert third.block_hash not in (block, again.block_hash) and third.confirmations == 3


def test_unconfirmed_change_is_spendable_with_the_wallet_source(node: BitcoinNode, spec: ChainSpec) -> None:
    adapter = BitcoinAdapter(replace(spec, options={**spec.options, "utxo_source": "wallet", "min_confirmations": 0}))
    wallet = Wallet.new(adapter)
    node.fund_sats(wallet.address, 500_000)
    _, first = transfer(adapter, wallet, Wallet.new(adapter).address, 100_000)
    adapter.broadcast(first)
    # The change of `first` is in the mempool only, and is what the second transfer spends
    quote, second = transfer(adapter, wallet, Wallet.new(adapter).address, 100_000)
    assert [u.txid for u in quote.inputs] == [first.tx_hash]
    adapter.broadcast(second)
    node.mine(1)
    assert adapter.get_status(second).state is TxState.INCLUDED


def test_automine_gives_a_block_per_transaction() -> None:
    with BitcoinNode(block_interval=None) as automine:  # what the stack starts with block_time=None
        adapter = BitcoinAdapter(replace(load_registry("devnet").chain("bitcoin"), rpc_urls=(automine.rpc_url,)))
        wallet = Wallet.new(adapter)
        automine.fund_sats(wallet.address, 100_000)
        height = automine.height()
        _, signed = transfer(adapter, wallet, Wallet.new(adapter).address, 50_000)
        adapter.broadcast(signed)
        assert adapter.get_status(signed).confirmations == 1 and automine.height() == height + 1


def test_rpc_credentials_and_chain_identity() -> None:
    with BitcoinNode(block_interval=0.2, rpc_user="paratro", rpc_password="s3cret-pw") as secured:
        spec = replace(load_registry("devnet").chain("bitcoin"), rpc_urls=(secured.rpc_url,))
        adapter = BitcoinAdapter(spec)
        wallet = Wallet.new(adapter)
        secured.fund_sats(wallet.address, 100_000, confirm=False)
        deadline = time.monotonic() + 10  # interval mining confirms it without being asked
        while balance(adapter, wallet.address) != 100_000:
            assert time.monotonic() < deadline, "the interval miner did not confirm the funding"
            time.sleep(0.05)
        wrong = BitcoinAdapter(replace(spec, rpc_urls=(secured.rpc_url.replace("s3cret-pw", "guess"),)))
        with pytest.raises(ChainRpcError) as refused:
            wrong.list_utxos(wallet.address)
        assert "401" in str(refused.value) and "guess" not in str(refused.value) and "paratro" not in str(refused.value)
        mainnet = BitcoinAdapter(replace(load_registry("mainnet").chain("bitcoin"), rpc_urls=(secured.rpc_url,)))
        with pytest.raises(ChainMismatch):
            mainnet.fee_rate()
