"""A proof made of several reads is answered by one endpoint (chains/pinning.py), for Bitcoin,
TRON and Solana: the real adapters and clients over two endpoints, each a devnet/rpc_proxy.py
proxy in front of the same devnet node run in-process over HTTP (the Bitcoin, TRON and Solana
devnets, with clocks the tests drive).

The first endpoint dies in the middle of a proof (its proxy resets one of the proof's later reads
and everything after). Without pinning the pool would fail the rest of the proof over to the
second endpoint and conclude from two nodes' answers; pinned, the proof raises ChainRpcError, the
second endpoint is asked none of the proof's later reads, and the proof asked again (as the
pipeline does) runs whole on the endpoint that answers. With one endpoint, the proofs cost exactly the
requests they cost before.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from chains.base import SignedTransaction, TransferIntent, TxState
from chains.errors import ChainRpcError
from chains.failover import FailoverSettings
from chains.registry import ChainSpec, load_registry
from devnet.ports import free_port
from devnet.rpc_proxy import RpcProxy, _Handler

REGISTRY = load_registry("devnet")


class Endpoint(RpcProxy):
    """A proxy on (host, port: 0 for a free one) in front of a node, that dies at its first request
    labelled `dies_at` (a JSON-RPC method or TRON path): that request and every later one are reset."""

    def __init__(self, upstream_url: str, dies_at: str = "", *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(upstream_url, host=host)
        self.dies_at, self.fixed_port = dies_at, port

    def start(self) -> "Endpoint":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer((self._host, self.fixed_port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def _count(self, label: str) -> None:
        super()._count(label)
        if label == self.dies_at:
            self.set_mode("dead")


def serve(server: ThreadingHTTPServer) -> Iterator[str]:
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def pooled(spec: ChainSpec, *endpoints: RpcProxy) -> ChainSpec:
    """`spec` over these endpoints, its pool probing heads once only (at first use)."""
    settings = spec.failover or FailoverSettings.for_family(spec.family, chain=spec.name)
    return replace(spec, rpc_urls=tuple(e.url for e in endpoints), failover=replace(settings, probe_interval_s=3600.0))


def proof_reads(endpoint: RpcProxy, probes: tuple[str, ...]) -> Counter[str]:
    """What an endpoint was asked, less the pool's head and identity probes."""
    return Counter({label: n for label, n in endpoint.calls.items() if label not in probes})


# -- Bitcoin: every input unspent at a node at least at the tip ------------------------------------

BTC_PROBES = ("getblockcount",)


@dataclass
class BitcoinDevnet:
    url: str
    node: Any  # devnet.bitcoin.rpc.Methods, driven in-process
    miner: str  # an address to mine to
    signed: SignedTransaction  # spends an unspent output; never sent


@pytest.fixture
def bitcoin() -> Iterator[BitcoinDevnet]:
    from eth_keys import keys

    from chains import bitcoin_tx as btx
    from chains.bitcoin_address import address_from_public_key, compress_public_key, hash160, p2wpkh_script
    from devnet.bitcoin.chainstate import COINBASE_MATURITY, ChainState, faucet_key
    from devnet.bitcoin.rpc import Methods
    from devnet.bitcoin_node import make_server

    def key_script(secret: bytes) -> tuple[str, bytes]:
        public = compress_public_key(keys.PrivateKey(secret).public_key.to_bytes())
        return address_from_public_key(public, "regtest"), p2wpkh_script(hash160(public))

    alice_key = bytes.fromhex("44" * 32)
    faucet_address, faucet_script = key_script(faucet_key())
    alice, alice_script = key_script(alice_key)
    state = ChainState(fee_rate_sat_vb=2)
    state.mine(COINBASE_MATURITY + 1, faucet_script)
    node = Methods(state, faucet_key(), faucet_script)
    txid = node.sendtoaddress(alice, Decimal("0.01"))
    node.generatetoaddress(1, faucet_address)
    vout = next(n for n, o in enumerate(state.txs[txid].outputs) if o.script_pubkey == alice_script)
    unsigned = btx.build_unsigned("regtest", alice, [btx.Spend(txid, vout, 1_000_000)],
                                  [btx.TxOut(990_000, alice_script)])
    signed = btx.sign_with_key(unsigned.payload, unsigned.digests, alice_key)
    for url in serve(make_server(node)):
        yield BitcoinDevnet(url, node, faucet_address, signed)


def test_bitcoin_inputs_unspent_proof_is_asked_of_one_node(bitcoin: BitcoinDevnet) -> None:
    from chains.bitcoin import BitcoinAdapter

    with Endpoint(bitcoin.url, "gettxout") as first, Endpoint(bitcoin.url) as second:
        adapter = BitcoinAdapter(pooled(REGISTRY.chain("bitcoin"), first, second), timeout=2)
        with pytest.raises(ChainRpcError, match="cannot reach|unusable answer"):
            adapter.proves_unlandable(bitcoin.signed)  # the tip from the first, then it dies
        assert first.calls["getblockchaininfo"] >= 1 and second.calls["gettxout"] == 0
        assert adapter.proves_unlandable(bitcoin.signed) is True  # asked again: all of it on the second
        assert second.calls["gettxout"] == 1 and second.calls["getblockchaininfo"] >= 1


def test_bitcoin_status_is_asked_of_one_node(bitcoin: BitcoinDevnet) -> None:
    from chains.bitcoin import BitcoinAdapter

    txid = bitcoin.node.sendrawtransaction(bitcoin.signed.raw.hex())
    bitcoin.node.generatetoaddress(1, bitcoin.miner)
    with Endpoint(bitcoin.url, "getblockheader") as first, Endpoint(bitcoin.url) as second:
        adapter = BitcoinAdapter(pooled(REGISTRY.chain("bitcoin"), first, second), timeout=2)
        with pytest.raises(ChainRpcError):
            adapter.get_status(bitcoin.signed)  # the transaction from the first; it dies at its block header
        assert first.calls["getrawtransaction"] == 1 and second.calls["getrawtransaction"] == 0
        status = adapter.get_status(bitcoin.signed)  # asked again: all of it on the second
        assert status.state is TxState.INCLUDED and txid == bitcoin.signed.tx_hash
        assert second.calls["getrawtransaction"] == 1 and second.calls["getblockheader"] == 1


def test_bitcoin_one_endpoint_costs_the_same_requests(bitcoin: BitcoinDevnet) -> None:
    from chains.bitcoin import BitcoinAdapter

    with Endpoint(bitcoin.url) as only:
        adapter = BitcoinAdapter(replace(REGISTRY.chain("bitcoin"), rpc_urls=(only.url,)))
        assert adapter.proves_unlandable(bitcoin.signed) is True
        assert only.calls == Counter({"getblockchaininfo": 2, "gettxout": 1})  # chain check, tip, input


# -- TRON: the solidified blocks from the reference to the expiration, without our txID -------------

TRON_PROBES = ("wallet/getnowblock", "walletsolidity/getnowblock")
TRX = 1_000_000


@dataclass
class TronDevnet:
    url: str
    chain: Any
    clock: Any


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tron() -> Iterator[TronDevnet]:
    from tronpy.keys import to_hex_address

    from devnet.tron.chain import Token, TronChain
    from devnet.tron.fees import Fees
    from devnet.tron.server import make_server

    clock = _Clock()
    chain = TronChain([Token(to_hex_address("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"), "USDT", 6)], Fees(),
                      solidify_depth=3, clock=clock)
    for url in serve(make_server(chain, "127.0.0.1", 0, {})):
        yield TronDevnet(url, chain, clock)


def _tron_mine(tron: TronDevnet, blocks: int = 1) -> None:
    for _ in range(blocks):
        tron.clock.now += 0.25
        tron.chain.produce_block()


def _expired_tron_transfer(tron: TronDevnet, spec: ChainSpec) -> SignedTransaction:
    """A TRX transfer built (on one endpoint) and never sent, whose expiration is now solidified."""
    from tronpy.keys import PrivateKey

    from chains.tron import TronAdapter

    alice, bob = PrivateKey(bytes.fromhex("a1" * 32)), PrivateKey(bytes.fromhex("b0" * 32))
    sender, to = (key.public_key.to_base58check_address() for key in (alice, bob))
    tron.chain.fund(sender, 100 * TRX)
    tron.chain.fund(to, TRX)
    _tron_mine(tron, 5)
    builder = TronAdapter(replace(spec, rpc_urls=(tron.url,), options={**spec.options, "expiration_s": 2}))
    intent = TransferIntent(sender, to, TRX, spec.native)
    context = builder.build_context(intent)
    unsigned = builder.build(intent, builder.quote_fee(intent), None, context)
    signed = replace(builder.attach_signature(unsigned.payload, [alice.sign_msg_hash(unsigned.digests[0]).to_bytes()]),
                     context=context)
    while tron.chain.solid.timestamp < context["expiration"] + 1_000:
        _tron_mine(tron)
    assert builder.get_status(signed).state is TxState.EXPIRED  # the proof, on one endpoint
    return signed


def test_tron_expiry_proof_is_asked_of_one_node(tron: TronDevnet) -> None:
    from chains.tron import TronAdapter

    spec = REGISTRY.chain("tron")
    signed = _expired_tron_transfer(tron, spec)
    scan = "walletsolidity/getblockbylimitnext"
    with Endpoint(tron.url, scan) as first, Endpoint(tron.url) as second:
        adapter = TronAdapter(pooled(spec, first, second), timeout=2)
        with pytest.raises(ChainRpcError):
            adapter.proves_unlandable(signed)  # solid head, receipt and reference from the first; it dies at the scan
        assert first.calls["walletsolidity/getblockbynum"] >= 1
        assert proof_reads(second, TRON_PROBES) - Counter({"wallet/getblockbynum": 1}) == Counter()  # (identity)
        assert adapter.get_status(signed).state is TxState.EXPIRED  # asked again: the whole proof on the second
        assert second.calls[scan] >= 1 and second.calls["walletsolidity/getnowblock"] >= 1


def test_tron_with_a_solidity_port_pins_each_api_on_its_own(tron: TronDevnet) -> None:
    """Endpoints on two hosts (127.0.0.1 and 127.0.0.2), each serving the full API on one port and
    the solidity API on `solidity_port`: the solidity reads of the proof stay on one endpoint."""
    from chains.tron import TronAdapter

    spec = REGISTRY.chain("tron")
    signed = _expired_tron_transfer(tron, spec)
    port = free_port()
    scan = "walletsolidity/getblockbylimitnext"
    with Endpoint(tron.url) as api_a, Endpoint(tron.url, host="127.0.0.2") as api_b, \
            Endpoint(tron.url, scan, port=port) as solid_a, Endpoint(tron.url, host="127.0.0.2", port=port) as solid_b:
        pooled_spec = pooled(spec, api_a, api_b)
        adapter = TronAdapter(replace(pooled_spec, options={**spec.options, "solidity_port": port}), timeout=2)
        with pytest.raises(ChainRpcError):
            adapter.get_status(signed)
        assert solid_a.calls["walletsolidity/getnowblock"] >= 1 and solid_b.calls[scan] == 0
        assert api_a.calls["wallet/gettransactioninfobyid"] == 1 and api_b.calls["wallet/gettransactioninfobyid"] == 0
        assert adapter.get_status(signed).state is TxState.EXPIRED
        assert solid_b.calls[scan] >= 1 and solid_b.calls["walletsolidity/getblockbynum"] >= 1


def test_tron_one_endpoint_costs_the_same_requests(tron: TronDevnet) -> None:
    from chains.tron import TronAdapter

    spec = REGISTRY.chain("tron")
    signed = _expired_tron_transfer(tron, spec)
    with Endpoint(tron.url) as only:
        adapter = TronAdapter(replace(spec, rpc_urls=(only.url,)))
        assert adapter.get_status(signed).state is TxState.EXPIRED
        assert only.calls == Counter({"walletsolidity/getnowblock": 1, "wallet/gettransactioninfobyid": 1,
                                      "walletsolidity/getblockbynum": 1, "walletsolidity/getblockbylimitnext": 1})


# -- Solana: finalized height past the validity, then the fee payer's history ----------------------

SOL = 10**9
SOLANA_PROBES = ("getSlot", "getGenesisHash")


@dataclass
class SolanaDevnet:
    url: str
    cluster: Any


@pytest.fixture
def solana() -> Iterator[SolanaDevnet]:
    from devnet.solana.cluster import Cluster, ClusterConfig
    from devnet.solana.server import make_server

    cluster = Cluster(ClusterConfig(slot_ms=0, blockhash_max_age=10, confirm_depth=1, finalize_depth=3,
                                    status_cache_slots=20))
    for url in serve(make_server(cluster, "127.0.0.1", 0)):
        yield SolanaDevnet(url, cluster)


def _expired_solana_transfer(solana: SolanaDevnet, spec: ChainSpec) -> SignedTransaction:
    """A SOL transfer built (on one endpoint) and never sent, past its last valid block height."""
    from solders.keypair import Keypair

    from chains.solana import SolanaAdapter

    key = Keypair()
    solana.cluster.airdrop(key.pubkey(), 10 * SOL)
    solana.cluster.advance(3)
    builder = SolanaAdapter(replace(spec, rpc_urls=(solana.url,)))
    intent = TransferIntent(str(key.pubkey()), str(Keypair().pubkey()), SOL, spec.native)
    context = builder.build_context(intent)
    unsigned = builder.build(intent, builder.quote_fee(intent), None, context)
    signed = replace(builder.attach_signature(unsigned.payload, [bytes(key.sign_message(unsigned.digests[0]))]),
                     context=context)
    solana.cluster.advance(40)
    assert builder.get_status(signed).state is TxState.EXPIRED  # the proof, on one endpoint
    return signed


def test_solana_expiry_proof_is_asked_of_one_node(solana: SolanaDevnet) -> None:
    from chains.solana import SolanaAdapter

    spec = REGISTRY.chain("solana")
    signed = _expired_solana_transfer(solana, spec)
    with Endpoint(solana.url, "getSignaturesForAddress") as first, Endpoint(solana.url) as second:
        adapter = SolanaAdapter(pooled(spec, first, second), timeout=2)
        with pytest.raises(ChainRpcError):
            adapter.get_status(signed)  # status and finalized height from the first; it dies at the history
        assert first.calls["getEpochInfo"] == 1
        assert proof_reads(second, SOLANA_PROBES) == Counter()
        assert adapter.proves_unlandable(signed) is True  # asked again: the whole proof on the second
        assert proof_reads(second, SOLANA_PROBES) == Counter(
            {"getSignatureStatuses": 1, "getEpochInfo": 1, "getSignaturesForAddress": 1})


def test_solana_one_endpoint_costs_the_same_requests(solana: SolanaDevnet) -> None:
    from chains.solana import SolanaAdapter

    spec = REGISTRY.chain("solana")
    signed = _expired_solana_transfer(solana, spec)
    with Endpoint(solana.url) as only:
        adapter = SolanaAdapter(replace(spec, rpc_urls=(only.url,)))
        assert adapter.proves_unlandable(signed) is True
        assert only.calls == Counter({"getSignatureStatuses": 1, "getEpochInfo": 1, "getSignaturesForAddress": 1})
