"""EvmAdapter against a scripted JSON-RPC node: error mapping, broadcast idempotency, reorgs.

A tiny HTTP server in a thread plays the node, so the real web3 HTTPProvider path is exercised;
each test scripts the answers per method. (The real-node behaviour is in
tests/integration/test_evm_adapter.py.)
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chains import clear_adapter_cache, get_adapter
from chains.base import SignedTransaction, TransferIntent, TxState
from chains.errors import ChainError, ChainMismatch, ChainRpcError, TransactionRejected
from chains.evm import EvmAdapter
from chains.registry import load_registry

DEVNET = load_registry("devnet")
SENDER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
DEST = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
TX_HASH = "0x" + "ab" * 32
BLOCK_A = "0x" + "a1" * 32
BLOCK_B = "0x" + "b2" * 32
SIGNED = SignedTransaction(raw=b"\x02\xf8", tx_hash=TX_HASH)

Answer = Any  # a result value, an RpcError, or a callable(params) -> either


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message


class FakeNode:
    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {"eth_chainId": hex(31337)}
        self.calls: list[tuple[str, list[Any]]] = []
        self.http_status = 200
        self.raw_body: bytes | None = None
        self.batches: list[list[str]] = []  # the methods of each batch request, in order

    def answer(self, method: str, params: list[Any]) -> dict[str, Any]:
        self.calls.append((method, params))
        answer = self.answers.get(method, RpcError(-32601, f"method {method} not found"))
        if callable(answer) and not isinstance(answer, RpcError):
            answer = answer(params)
        if isinstance(answer, RpcError):
            return {"error": {"code": answer.code, "message": answer.message}}
        return {"result": answer}

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]


@pytest.fixture
def node() -> Iterator[tuple[FakeNode, str]]:
    fake = FakeNode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if fake.raw_body is not None or fake.http_status != 200:
                body = fake.raw_body or b"upstream exploded"
            elif isinstance(request, list):  # a JSON-RPC batch: one answer per call
                fake.batches.append([item["method"] for item in request])
                body = json.dumps([{"jsonrpc": "2.0", "id": item["id"], **fake.answer(item["method"], item["params"])}
                                   for item in request]).encode()
            else:
                body = json.dumps({"jsonrpc": "2.0", "id": request["id"], **fake.answer(request["method"], request["params"])}).encode()
            self.send_response(fake.http_status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    # The path stands for an API key: it must never show up in an error message.
    yield fake, f"http://127.0.0.1:{server.server_address[1]}/v3/SECRETKEY123"
    server.shutdown()
    server.server_close()


def _adapter(url: str, chain: str = "ethereum") -> EvmAdapter:
    return EvmAdapter(replace(DEVNET.chain(chain), rpc_urls=(url,)), timeout=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- transport errors --------------------------------------------------------------------------


def test_connection_refused_is_a_transient_rpc_error_without_the_url_path() -> None:
    adapter = _adapter(f"http://127.0.0.1:{_free_port()}/v3/SECRETKEY123")
    with pytest.raises(ChainRpcError) as info:
        adapter.next_nonce(SENDER)
    assert info.value.transient
    assert "SECRETKEY123" not in str(info.value) and "cannot reach http://127.0.0.1" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_http_500_and_garbage_are_transient_rpc_errors(node) -> None:
    fake, url = node
    fake.http_status = 500
    with pytest.raises(ChainRpcError, match="HTTP 500") as info:
        _adapter(url).next_nonce(SENDER)
    assert "SECRETKEY123" not in str(info.value)
    fake.http_status, fake.raw_body = 200, b"<html>not json</html>"
    with pytest.raises(ChainRpcError, match="unusable answer"):
        _adapter(url).next_nonce(SENDER)


def test_a_timeout_is_a_transient_rpc_error() -> None:
    with socket.socket() as listener:  # accepts the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        adapter = EvmAdapter(replace(DEVNET.chain("ethereum"), rpc_urls=(f"http://127.0.0.1:{listener.getsockname()[1]}",)), timeout=0.2)
        with pytest.raises(ChainRpcError, match="timed out"):
            adapter.next_nonce(SENDER)


def test_node_errors_on_reads_are_transient(node) -> None:
    fake, url = node
    fake.answers["eth_getTransactionCount"] = RpcError(-32005, "limit exceeded")
    with pytest.raises(ChainRpcError, match="limit exceeded"):
        _adapter(url).next_nonce(SENDER)


# --- chain id check ----------------------------------------------------------------------------


def test_a_node_of_another_chain_is_refused_before_anything_else(node) -> None:
    fake, url = node
    fake.answers["eth_getTransactionCount"] = "0x7"
    adapter = _adapter(url, "bsc")  # devnet bsc is 31338; the node says 31337
    with pytest.raises(ChainMismatch, match="31338.*31337") as info:
        adapter.next_nonce(SENDER)
    assert not info.value.transient and isinstance(info.value, ChainError)
    assert fake.methods() == ["eth_chainId"]
    with pytest.raises(ChainMismatch):
        adapter.broadcast(SIGNED)
    assert "eth_sendRawTransaction" not in fake.methods()


def test_the_chain_id_is_checked_once(node) -> None:
    fake, url = node
    fake.answers["eth_getTransactionCount"] = "0x7"
    adapter = _adapter(url)
    assert adapter.next_nonce(SENDER) == 7
    assert adapter.next_nonce(SENDER.lower()) == 7
    assert fake.methods() == ["eth_chainId", "eth_getTransactionCount", "eth_getTransactionCount"]
    assert fake.calls[1][1] == [SENDER, "pending"]


# --- fees --------------------------------------------------------------------------------------


def test_quote_eip1559_native(node) -> None:
    fake, url = node
    fake.answers.update({
        "eth_estimateGas": "0x5208",
        "eth_getBlockByNumber": {"number": "0x10", "hash": BLOCK_A, "baseFeePerGas": hex(7 * 10**9)},
        "eth_maxPriorityFeePerGas": hex(2 * 10**9),
    })
    spec = DEVNET.chain("ethereum")
    quote = _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 10**18, spec.native))
    assert quote.params == {"gas": 21000, "maxFeePerGas": 16 * 10**9, "maxPriorityFeePerGas": 2 * 10**9}
    assert quote.max_fee == 21000 * 16 * 10**9
    assert json.loads(json.dumps(quote.params)) == quote.params


def test_quote_falls_back_to_one_gwei_tip_and_pads_token_gas(node) -> None:
    fake, url = node
    fake.answers.update({
        "eth_estimateGas": hex(50_000),
        "eth_getBlockByNumber": {"number": "0x10", "hash": BLOCK_A, "baseFeePerGas": hex(10)},
    })
    spec = DEVNET.chain("ethereum")
    quote = _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 5, spec.token("USDT")))
    assert quote.params == {"gas": 60_000, "maxFeePerGas": 20 + 10**9, "maxPriorityFeePerGas": 10**9}
    call = dict(fake.calls)["eth_estimateGas"][0]
    assert call["to"] == spec.token("USDT").contract and call["data"].startswith("0xa9059cbb")


def test_quote_legacy_uses_gas_price(node) -> None:
    fake, url = node
    fake.answers.update({"eth_chainId": hex(31338), "eth_estimateGas": "0x5208", "eth_gasPrice": hex(3 * 10**9)})
    spec = DEVNET.chain("bsc")
    quote = _adapter(url, "bsc").quote_fee(TransferIntent(SENDER, DEST, 1, spec.native))
    assert quote.params == {"gas": 21000, "gasPrice": 3 * 10**9} and quote.max_fee == 21000 * 3 * 10**9


def test_token_transfer_that_would_revert_for_lack_of_tokens_is_insufficient_funds(node) -> None:
    fake, url = node
    fake.answers.update({"eth_estimateGas": RpcError(3, "execution reverted"), "eth_call": "0x" + "00" * 31 + "04"})
    spec = DEVNET.chain("ethereum")
    with pytest.raises(TransactionRejected) as info:
        _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 5, spec.token("USDT")))
    assert info.value.reason == "insufficient_funds" and "holds 4" in info.value.detail
    fake.answers["eth_call"] = "0x" + "00" * 31 + "05"  # holds enough: it reverts for another reason
    with pytest.raises(TransactionRejected) as info:
        _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 5, spec.token("USDT")))
    assert info.value.reason == "rejected_by_node"


# --- broadcast ---------------------------------------------------------------------------------


def test_broadcast_returns_the_hash(node) -> None:
    fake, url = node
    fake.answers["eth_sendRawTransaction"] = TX_HASH
    assert _adapter(url).broadcast(SIGNED) == TX_HASH
    assert fake.calls[-1] == ("eth_sendRawTransaction", ["0x02f8"])


@pytest.mark.parametrize("message", ["already known", "transaction already imported", "nonce too low", "ErrAlreadyKnown"])
def test_rebroadcast_of_bytes_the_node_has_is_success(node, message: str) -> None:
    fake, url = node
    fake.answers.update({"eth_sendRawTransaction": RpcError(-32000, message), "eth_getTransactionByHash": {"hash": TX_HASH}})
    assert _adapter(url).broadcast(SIGNED) == TX_HASH


def test_nonce_too_low_without_our_transaction_visible_is_a_refusal_that_says_the_nonce_is_used(node) -> None:
    # Our bytes may be mined already behind a lagging node: the refusal says only that the nonce
    # is used (never releasable); the pipeline asks nonce_taken_by which transaction used it.
    fake, url = node
    fake.answers.update({"eth_sendRawTransaction": RpcError(-32000, "nonce too low"), "eth_getTransactionByHash": None})
    with pytest.raises(TransactionRejected) as info:
        _adapter(url).broadcast(SIGNED)
    assert (info.value.reason, info.value.nonce_consumed) == ("nonce_too_low", True)


@pytest.mark.parametrize(
    ("message", "code", "outcome"),
    [
        ("insufficient funds for gas * price + value", -32000, "insufficient_funds_for_fee"),
        ("Insufficient funds for gas * price + value", -32003, "insufficient_funds_for_fee"),
        ("intrinsic gas too low", -32000, "rejected_by_node"),
        ("invalid chain id for signer", -32003, "rejected_by_node"),
        ("replacement transaction underpriced", -32000, "replacement_underpriced"),
        ("transaction underpriced", -32000, "replacement_underpriced"),
        ("rate limit exceeded", -32000, ChainRpcError),
        ("something odd", -32603, ChainRpcError),
        ("already known", -32000, ChainRpcError),  # ...but the node cannot find it: ask again later
    ],
)
def test_broadcast_errors_are_classified(node, message: str, code: int, outcome) -> None:
    fake, url = node
    fake.answers.update({"eth_sendRawTransaction": RpcError(code, message), "eth_getTransactionByHash": None})
    if isinstance(outcome, str):
        with pytest.raises(TransactionRejected) as info:
            _adapter(url).broadcast(SIGNED)
        assert info.value.reason == outcome and not info.value.transient
    else:
        with pytest.raises(outcome) as info:
            _adapter(url).broadcast(SIGNED)
        assert info.value.transient and not isinstance(info.value, TransactionRejected)


# --- proof that refused bytes can never land ----------------------------------------------------

KEY = "0x" + "4c" * 32
OUR_NONCE = 7


def _really_signed(nonce: int = OUR_NONCE, legacy: bool = False) -> tuple[SignedTransaction, str]:
    """Signed bytes as attach makes them (eth_account produces the same), and their sender."""
    from eth_account import Account

    account = Account.from_key(KEY)
    tx: dict[str, Any] = {"to": DEST, "value": 5, "gas": 21000, "nonce": nonce, "chainId": 31337}
    tx.update({"gasPrice": 10**9} if legacy else {"maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9, "type": 2})
    signed = account.sign_transaction(tx)
    return SignedTransaction(raw=bytes(signed.raw_transaction), tx_hash="0x" + bytes(signed.hash).hex()), account.address


def _proof_node(fake, mined: int, known: Any, head: str = "0x40") -> None:
    fake.answers.update({"eth_blockNumber": head, "eth_getTransactionCount": hex(mined), "eth_getTransactionByHash": known})


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("mined", [OUR_NONCE - 2, OUR_NONCE])
def test_our_nonce_unused_at_the_head_and_our_hash_unknown_is_proof(node, legacy: bool, mined: int) -> None:
    fake, url = node
    signed, sender = _really_signed(legacy=legacy)
    _proof_node(fake, mined=mined, known=None)
    assert _adapter(url).proves_unlandable(signed) is True
    # the head first, the nonce of the sender read back from the bytes *at that block*, the hash last
    assert [c for c in fake.calls if c[0] != "eth_chainId"] == [
        ("eth_blockNumber", []), ("eth_getTransactionCount", [sender, "0x40"]),
        ("eth_getTransactionByHash", [signed.tx_hash])]


def test_our_hash_known_is_not_proof(node) -> None:
    fake, url = node
    signed, _ = _really_signed()
    _proof_node(fake, mined=OUR_NONCE, known={"hash": TX_HASH, "blockHash": None})  # pending somewhere
    assert _adapter(url).proves_unlandable(signed) is False


@pytest.mark.parametrize("mined", [OUR_NONCE + 1, OUR_NONCE + 50])
def test_our_nonce_used_at_the_head_is_not_proof(node, mined: int) -> None:
    # Used, maybe by this very transaction on a node that cannot find it by hash: never proof
    fake, url = node
    signed, _ = _really_signed()
    _proof_node(fake, mined=mined, known=None)
    assert _adapter(url).proves_unlandable(signed) is False
    assert "eth_getTransactionByHash" not in fake.methods()


def test_a_backend_without_the_head_block_gives_no_proof(node) -> None:
    # The nonce is read at the block number just seen: a backend behind it cannot answer for it
    fake, url = node
    signed, _ = _really_signed()
    _proof_node(fake, mined=OUR_NONCE, known=None)
    fake.answers["eth_getTransactionCount"] = RpcError(-32000, "header not found")
    with pytest.raises(ChainRpcError) as info:
        _adapter(url).proves_unlandable(signed)
    assert info.value.transient and not isinstance(info.value, TransactionRejected)


def test_bytes_that_are_not_the_stored_hash_are_malformed(node) -> None:
    from chains.errors import MalformedTransaction

    _, url = node
    signed, _ = _really_signed()
    with pytest.raises(MalformedTransaction):
        _adapter(url).proves_unlandable(replace(signed, tx_hash=TX_HASH))
    with pytest.raises(MalformedTransaction):
        _adapter(url).proves_unlandable(SIGNED)


def test_status_is_never_expired(node) -> None:
    # An EVM transaction has no expiry: unknown stays NOT_FOUND however long
    fake, url = node
    signed, _ = _really_signed()
    fake.answers.update({"eth_getTransactionReceipt": None, "eth_getTransactionByHash": None})
    assert _adapter(url).get_status(signed).state is TxState.NOT_FOUND


# --- status ------------------------------------------------------------------------------------


def _receipt(status: str = "0x1", block_hash: str = BLOCK_A, **extra: Any) -> dict[str, Any]:
    return {"transactionHash": TX_HASH, "blockNumber": "0x10", "blockHash": block_hash, "status": status,
            "gasUsed": hex(21000), "effectiveGasPrice": hex(7 * 10**9), **extra}


def _blocks(canonical_hash: str) -> Callable[[list[Any]], dict[str, Any]]:
    return lambda params: {"number": params[0], "hash": canonical_hash}


def test_status_included_with_confirmations_and_fee(node) -> None:
    fake, url = node
    fake.answers.update({"eth_getTransactionReceipt": _receipt(), "eth_getBlockByNumber": _blocks(BLOCK_A), "eth_blockNumber": "0x12"})
    status = _adapter(url).get_status(SignedTransaction(b"", TX_HASH))
    assert (status.state, status.block_number, status.block_hash) == (TxState.INCLUDED, 16, BLOCK_A)
    assert status.confirmations == 3 and status.fee_paid == 21000 * 7 * 10**9
    assert ("eth_getBlockByNumber", ["0x10", False]) in fake.calls


def test_status_reverted_and_op_stack_l1_fee(node) -> None:
    fake, url = node
    fake.answers.update({"eth_getTransactionReceipt": _receipt("0x0", l1Fee=hex(5)), "eth_getBlockByNumber": _blocks(BLOCK_A), "eth_blockNumber": "0x10"})
    status = _adapter(url).get_status(SignedTransaction(b"", TX_HASH))
    assert status.state is TxState.REVERTED and status.confirmations == 1 and status.fee_paid == 21000 * 7 * 10**9 + 5


@pytest.mark.parametrize(("in_pool", "state"), [({"hash": TX_HASH, "blockHash": None}, TxState.PENDING), (None, TxState.NOT_FOUND)])
def test_a_receipt_from_a_reorganised_block_does_not_count(node, in_pool, state) -> None:
    fake, url = node
    fake.answers.update({"eth_getTransactionReceipt": _receipt(block_hash=BLOCK_A), "eth_getBlockByNumber": _blocks(BLOCK_B),
                         "eth_getTransactionByHash": in_pool, "eth_blockNumber": "0x20"})
    status = _adapter(url).get_status(SignedTransaction(b"", TX_HASH))
    assert status.state is state and status.confirmations == 0 and status.block_hash is None


@pytest.mark.parametrize(("in_pool", "state"), [({"hash": TX_HASH, "blockHash": None}, TxState.PENDING), (None, TxState.NOT_FOUND)])
def test_no_receipt_is_pending_or_not_found(node, in_pool, state) -> None:
    fake, url = node
    fake.answers.update({"eth_getTransactionReceipt": None, "eth_getTransactionByHash": in_pool})
    assert _adapter(url).get_status(SignedTransaction(b"", TX_HASH)).state is state


def test_balances(node) -> None:
    fake, url = node
    fake.answers.update({"eth_getBalance": hex(10**18), "eth_call": "0x" + (123).to_bytes(32, "big").hex()})
    spec = DEVNET.chain("ethereum")
    adapter = _adapter(url)
    assert adapter.balance_of(SENDER, spec.native) == 10**18
    assert adapter.balance_of(SENDER, spec.token("USDT")) == 123
    fake.answers["eth_call"] = "0x"
    with pytest.raises(ChainError, match="no balance"):
        adapter.balance_of(SENDER, spec.token("USDT"))


def test_get_adapter_caches_per_chain_and_endpoint(node) -> None:
    _, url = node
    clear_adapter_cache()
    spec = replace(DEVNET.chain("ethereum"), rpc_urls=(url,))
    first = get_adapter(spec)
    assert isinstance(first, EvmAdapter) and get_adapter(spec) is first
    assert get_adapter(replace(spec, rpc_urls=(url + "x",))) is not first
    assert get_adapter(DEVNET.chain("bsc")) is not first
    clear_adapter_cache()
    assert get_adapter(spec) is not first


def test_estimate_errors_that_are_about_the_node_stay_transient(node) -> None:
    fake, url = node
    fake.answers.update({"eth_estimateGas": RpcError(-32000, "header not found")})
    spec = DEVNET.chain("ethereum")
    with pytest.raises(ChainRpcError) as info:
        _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 5, spec.native))
    assert not isinstance(info.value, TransactionRejected)
    fake.answers.update({"eth_estimateGas": RpcError(-32000, "insufficient funds for transfer")})
    with pytest.raises(TransactionRejected) as rejected:
        _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 5, spec.native))
    assert rejected.value.reason == "insufficient_funds"
    fake.answers.update({"eth_estimateGas": RpcError(3, "execution reverted")})  # e.g. a contract refusing ETH
    with pytest.raises(TransactionRejected) as rejected:
        _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 5, spec.native))
    assert rejected.value.reason == "rejected_by_node"
