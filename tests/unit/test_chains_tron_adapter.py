"""TronAdapter against a scripted HTTP node: error mapping, fees, broadcast idempotency, status and expiry.

A tiny HTTP server in a thread plays the node (per-path answers), so the real requests path is
exercised. The real-node behaviour is in tests/integration/test_tron_adapter.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tronpy.keys import PrivateKey

from chains import clear_adapter_cache, get_adapter
from chains.base import SignedTransaction, TransferIntent, TxState
from chains.errors import ChainError, ChainMismatch, ChainRpcError, MalformedTransaction, TransactionRejected
from chains.registry import load_registry
from chains.tron import TronAdapter

SPEC = load_registry("devnet").chain("tron")
USDT = SPEC.token("USDT")
KEY = PrivateKey(bytes.fromhex("11" * 32))
SENDER = KEY.public_key.to_base58check_address()
DEST = PrivateKey(bytes.fromhex("22" * 32)).public_key.to_base58check_address()
NOW = 1_800_000_000_000
EXPIRATION = NOW + 60_000
BLOCK_MS = 3_000
REF = 100  # the reference block of _signed(): ref_block_bytes "0064", timestamp NOW
FIRST_PAST = REF + 20  # the first block whose timestamp reaches EXPIRATION: the last that could hold it

Answer = Any  # a dict, or a callable(body) -> dict


def block_id(number: int) -> str:
    return f"{number:016x}" + "ab" * 24


def block(number: int, timestamp: int, txids: tuple[str, ...] = ()) -> dict[str, Any]:
    header: dict[str, Any] = {"timestamp": timestamp, "parentHash": block_id(max(number - 1, 0))}
    if number:
        header["number"] = number
    doc: dict[str, Any] = {"blockID": block_id(number), "block_header": {"raw_data": header}}
    if txids:
        doc["transactions"] = [{"txID": txid} for txid in txids]
    return doc


def chain(last: int, holding: dict[int, tuple[str, ...]] | None = None) -> dict[int, dict[str, Any]]:
    """Blocks 0..last, one every BLOCK_MS, block REF at NOW; `holding` lists txIDs per block number."""
    return {n: block(n, NOW + (n - REF) * BLOCK_MS, (holding or {}).get(n, ())) for n in range(last + 1)}


class FakeNode:
    def __init__(self) -> None:
        self.solid_blocks = chain(200)  # what the solidity API serves by number
        self.answers: dict[str, Answer] = {
            "wallet/getnowblock": block(100, NOW),
            "walletsolidity/getnowblock": block(98, NOW - 500),
            "wallet/gettransactioninfobyid": {},
            "wallet/gettransactionfrompending": {},
            "walletsolidity/getblockbynum": lambda body: self.solid_blocks.get(body["num"], {}),
            "walletsolidity/getblockbylimitnext": self._limit_next,
        }
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.http_status = 200
        self.raw_body: bytes | None = None

    def answer(self, path: str, body: dict[str, Any]) -> Any:
        self.calls.append((path, body))
        answer = self.answers.get(path, {"Error": f"no {path}"})
        return answer(body) if callable(answer) else answer

    def paths(self) -> list[str]:
        return [path for path, _ in self.calls]

    def _limit_next(self, body: dict[str, Any]) -> dict[str, Any]:
        listed = [self.solid_blocks[n] for n in range(body["startNum"], body["endNum"]) if n in self.solid_blocks]
        return {"block": listed} if listed else {}  # java-tron: {} when it has none of them


@pytest.fixture
def node() -> Iterator[tuple[FakeNode, str]]:
    fake = FakeNode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            fake.headers.append(dict(self.headers))
            path = self.path.split("?")[0]
            assert path.startswith("/v1/SECRETKEY123/"), path  # a key in the path stays in the path
            if fake.raw_body is not None or fake.http_status != 200:
                data = fake.raw_body or b"upstream exploded"
            else:
                data = json.dumps(fake.answer(path.removeprefix("/v1/SECRETKEY123/"), body)).encode()
            self.send_response(fake.http_status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    # The path and the query stand for API keys: they must never show up in an error message.
    yield fake, f"http://127.0.0.1:{server.server_address[1]}/v1/SECRETKEY123/"
    server.shutdown()
    server.server_close()


def _adapter(url: str, **options: Any) -> TronAdapter:
    return TronAdapter(replace(SPEC, rpc_urls=(url,), options={**SPEC.options, **options}), timeout=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _signed(amount: int = 5, expiration: int = EXPIRATION) -> SignedTransaction:
    adapter = TronAdapter(SPEC)
    context = {"ref_block_bytes": "0064", "ref_block_hash": "ab" * 8, "expiration": expiration, "timestamp": NOW}
    fee_params = {"kind": "TRX", "bandwidth_sun": 268_000, "activation_sun": 0}
    from chains.base import FeeQuote

    unsigned = adapter.build(TransferIntent(SENDER, DEST, amount, SPEC.native), FeeQuote(268_000, fee_params), None, context)
    return adapter.attach_signature(unsigned.payload, [KEY.sign_msg_hash(unsigned.digests[0]).to_bytes()])


# --- transport errors ------------------------------------------------------------------------------


def test_connection_refused_is_a_transient_rpc_error_without_the_key() -> None:
    adapter = _adapter(f"http://127.0.0.1:{_free_port()}/v1/SECRETKEY123?api_key=QUERYKEY")
    with pytest.raises(ChainRpcError) as info:
        adapter.balance_of(SENDER, SPEC.native)
    assert info.value.transient
    assert "SECRETKEY123" not in str(info.value) and "QUERYKEY" not in str(info.value)
    assert "cannot reach http://127.0.0.1" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_http_errors_garbage_and_java_exceptions_are_transient(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.http_status = 503
    with pytest.raises(ChainRpcError, match="HTTP 503") as info:
        _adapter(url).balance_of(SENDER, SPEC.native)
    assert "SECRETKEY123" not in str(info.value)
    fake.http_status, fake.raw_body = 200, b"<html>not json</html>"
    with pytest.raises(ChainRpcError, match="unusable answer"):
        _adapter(url).balance_of(SENDER, SPEC.native)
    fake.raw_body = b"[1, 2]"
    with pytest.raises(ChainRpcError, match="not a JSON object"):
        _adapter(url).balance_of(SENDER, SPEC.native)
    fake.raw_body = None
    fake.answers["wallet/getaccount"] = {"Error": "class java.lang.NullPointerException : null"}
    with pytest.raises(ChainRpcError, match="NullPointerException") as info:
        _adapter(url).balance_of(SENDER, SPEC.native)
    assert info.value.transient


def test_a_timeout_is_a_transient_rpc_error() -> None:
    with socket.socket() as listener:  # accepts the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        adapter = TronAdapter(replace(SPEC, rpc_urls=(f"http://127.0.0.1:{listener.getsockname()[1]}",)), timeout=0.2)
        with pytest.raises(ChainRpcError, match="timed out"):
            adapter.balance_of(SENDER, SPEC.native)


def test_an_api_key_in_the_query_goes_in_trongrids_header(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.answers["wallet/getaccount"] = {"balance": 7}
    assert _adapter(url.rstrip("/") + "?api_key=QUERYKEY").balance_of(SENDER, SPEC.native) == 7
    assert fake.headers[-1].get("TRON-PRO-API-KEY") == "QUERYKEY"


# --- options and chain identity --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"fee_limit": 1}, "unknown TRON option"),
        ({"fee_limit_sun": 0}, "positive integer"),
        ({"fee_limit_sun": "100"}, "positive integer"),
        ({"expiration_s": 90_000}, "at most 86400"),
        ({"expiration_s": True}, "positive integer"),
        ({"genesis_block_id": "0x00"}, "64 lowercase hex"),
        ({"solidity_port": 70_000}, "TCP port"),
    ],
)
def test_bad_options_are_refused_when_the_adapter_is_made(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ChainError, match=match):
        _adapter("http://127.0.0.1:1", **options)


def test_a_node_with_another_genesis_is_refused(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.answers["wallet/getblockbynum"] = block(0, NOW)
    fake.answers["wallet/getaccount"] = {"balance": 1}
    with pytest.raises(ChainMismatch):
        _adapter(url, genesis_block_id="cd" * 32).balance_of(SENDER, SPEC.native)
    assert _adapter(url, genesis_block_id=block(0, NOW)["blockID"]).balance_of(SENDER, SPEC.native) == 1


def test_a_solidity_port_sends_walletsolidity_calls_to_that_port(node: tuple[FakeNode, str]) -> None:
    from chains.tron_rpc import with_port

    assert with_port("https://user:pw@host.example:8090/v1/KEY?a=1", 8091) == "https://user:pw@host.example:8091/v1/KEY?a=1"
    assert with_port("http://[::1]/x", 8091) == "http://[::1]:8091/x"
    fake, url = node
    closed = _free_port()
    with pytest.raises(ChainRpcError, match=f"walletsolidity/getnowblock: cannot reach http://127.0.0.1:{closed}"):
        _adapter(url, solidity_port=closed).get_status(_signed())
    assert fake.paths() == []  # the solidified head is asked first, and of the solidity port


def test_the_family_table_builds_the_tron_adapter() -> None:
    clear_adapter_cache()
    adapter = get_adapter(SPEC)
    assert isinstance(adapter, TronAdapter) and adapter.key_name == "tron" and not adapter.uses_account_nonce
    assert adapter.list_utxos(SENDER) == [] and get_adapter(SPEC) is adapter
    with pytest.raises(ChainError, match="no account nonce"):
        adapter.next_nonce(SENDER)
    clear_adapter_cache()


# --- fees and context -------------------------------------------------------------------------------


def test_a_trx_quote_reserves_bandwidth_and_activation_only_for_a_new_account(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.answers["wallet/getaccount"] = lambda body: {"balance": 10**9} if body["address"] == SENDER else {}
    quote = _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 10**6, SPEC.native))
    # (267 bytes signed, with the 64-byte result allowance) x 1000 sun
    assert quote.params == {"kind": "TRX", "bandwidth_sun": 267_000, "activation_sun": 1_100_000}
    assert quote.max_fee == 1_367_000
    fake.answers["wallet/getaccount"] = {"balance": 10**9}
    assert _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 10**6, SPEC.native)).max_fee == 267_000


def test_a_trc20_quote_reserves_the_fee_limit_and_checks_the_token_balance(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.answers["wallet/triggerconstantcontract"] = {"result": {"result": True}, "constant_result": [f"{5:064x}"]}
    fake.answers["wallet/estimateenergy"] = {"result": {"result": True}, "energy_required": 130_000}
    fake.answers["wallet/getchainparameters"] = {"chainParameter": [{"key": "getEnergyFee", "value": 100}]}
    quote = _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 5, USDT))
    # fee_limit: 130,000 energy x 100 sun x 120% (tests/unit/test_chains_tron_energy.py has the rest)
    assert quote.params == {"kind": "TRC20", "bandwidth_sun": 345_000, "fee_limit": 15_600_000, "energy": 130_000,
                            "energy_price_sun": 100}
    assert quote.max_fee == 15_945_000
    call = dict(fake.calls)["wallet/triggerconstantcontract"]
    assert call["function_selector"] == "balanceOf(address)" and call["contract_address"] == USDT.contract
    with pytest.raises(TransactionRejected) as info:
        _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 6, USDT))
    assert info.value.reason == "insufficient_funds"


def test_too_little_trx_is_refused_at_quote(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.answers["wallet/getaccount"] = {}  # never activated: no TRX at all
    with pytest.raises(TransactionRejected) as info:
        _adapter(url).quote_fee(TransferIntent(SENDER, DEST, 1, SPEC.native))
    assert info.value.reason == "insufficient_funds"


def test_a_token_contract_that_does_not_answer_is_a_permanent_error(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.answers["wallet/triggerconstantcontract"] = {
        "result": {"code": "CONTRACT_VALIDATE_ERROR", "message": b"No contract or not a valid smart contract".hex()}}
    with pytest.raises(ChainError, match="No contract") as info:
        _adapter(url).balance_of(SENDER, USDT)
    assert not info.value.transient


def test_the_build_context_references_the_solidified_head_and_expires_after_the_head(node: tuple[FakeNode, str]) -> None:
    # The unconfirmed head can be orphaned by a short fork, and a transaction referencing it then
    # fails TaPoS everywhere, for good. The solidified head cannot be orphaned.
    fake, url = node
    solid = block(0x1234567, NOW - 57_000)
    fake.answers["walletsolidity/getnowblock"] = solid
    fake.answers["wallet/getnowblock"] = block(0x1234567 + 19, NOW)
    context = _adapter(url, expiration_s=120).build_context(TransferIntent(SENDER, DEST, 1, SPEC.native))
    assert context == {"ref_block_bytes": "4567", "ref_block_hash": solid["blockID"][16:32],
                       "expiration": NOW + 120_000, "timestamp": NOW}
    # a head answer older than the solidified one (two backends): the times never precede the reference
    fake.answers["wallet/getnowblock"] = block(0x1234500, NOW - 200_000)
    assert _adapter(url).build_context(TransferIntent(SENDER, DEST, 1, SPEC.native))["timestamp"] == NOW - 57_000
    fake.answers["wallet/getnowblock"] = block(0x1234567 + 4097, NOW)  # a solidity backend far behind
    with pytest.raises(ChainRpcError, match="trails the head"):
        _adapter(url).build_context(TransferIntent(SENDER, DEST, 1, SPEC.native))
    fake.answers["walletsolidity/getnowblock"] = {}
    with pytest.raises(ChainRpcError, match="no usable block"):
        _adapter(url).build_context(TransferIntent(SENDER, DEST, 1, SPEC.native))


# --- broadcast -----------------------------------------------------------------------------------------


def _refusal(code: str, message: str) -> dict[str, Any]:
    return {"result": False, "code": code, "message": message.encode().hex()}


def test_an_accepted_or_duplicate_broadcast_is_success(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    signed = _signed()
    fake.answers["wallet/broadcasttransaction"] = {"result": True, "txid": signed.tx_hash}
    assert _adapter(url).broadcast(signed) == signed.tx_hash
    sent = dict(fake.calls)["wallet/broadcasttransaction"]
    assert sent == json.loads(signed.raw) and sent["signature"] and sent["visible"] is False
    fake.answers["wallet/broadcasttransaction"] = _refusal("DUP_TRANSACTION_ERROR", "Dup transaction.")
    assert _adapter(url).broadcast(signed) == signed.tx_hash
    fake.answers["wallet/broadcasttransaction"] = {"result": True, "txid": "00" * 32}
    with pytest.raises(ChainRpcError, match="answered txid"):
        _adapter(url).broadcast(signed)


@pytest.mark.parametrize(
    ("code", "message", "reason"),
    [
        ("SIGERROR", "Validate signature error: not contained of permission", "rejected_by_node"),
        ("BANDWITH_ERROR", "Account resource insufficient error.", "insufficient_funds_for_fee"),
        ("CONTRACT_VALIDATE_ERROR", "Validate TransferContract error, balance is not sufficient.", "insufficient_funds"),
        ("CONTRACT_VALIDATE_ERROR", "Validate TransferContract error, no OwnerAccount.", "insufficient_funds"),
        ("CONTRACT_VALIDATE_ERROR", "No contract or not a smart contract", "rejected_by_node"),
        ("TOO_BIG_TRANSACTION_ERROR", "too big", "rejected_by_node"),
    ],
)
def test_refusals_for_good_are_rejections_with_a_reason(node: tuple[FakeNode, str], code: str, message: str,
                                                        reason: str) -> None:
    fake, url = node
    fake.answers["wallet/broadcasttransaction"] = _refusal(code, message)
    with pytest.raises(TransactionRejected) as info:
        _adapter(url).broadcast(_signed())
    assert info.value.reason == reason and message in info.value.detail and not info.value.transient


@pytest.mark.parametrize("code", ["SERVER_BUSY", "NO_CONNECTION", "NOT_ENOUGH_EFFECTIVE_CONNECTION", "OTHER_ERROR", ""])
def test_refusals_about_the_node_are_transient(node: tuple[FakeNode, str], code: str) -> None:
    fake, url = node
    fake.answers["wallet/broadcasttransaction"] = _refusal(code, "busy") if code else {"result": False}
    with pytest.raises(ChainRpcError) as info:
        _adapter(url).broadcast(_signed())
    assert info.value.transient


@pytest.mark.parametrize("code", ["TRANSACTION_EXPIRATION_ERROR", "TAPOS_ERROR"])
def test_expired_is_only_said_once_it_is_provable(node: tuple[FakeNode, str], code: str) -> None:
    fake, url = node
    signed = _signed()
    fake.answers["wallet/broadcasttransaction"] = _refusal(code, "Transaction expired")
    # The solidified head has not reached the expiration: it might still land somewhere. Ask later.
    fake.answers["walletsolidity/getnowblock"] = fake.solid_blocks[FIRST_PAST - 1]
    with pytest.raises(ChainRpcError, match="waiting until its expiration is solidified"):
        _adapter(url).broadcast(signed)
    # Solidified past its expiration, but the solidity API (a lagging backend) lacks blocks: no proof.
    fake.answers["walletsolidity/getnowblock"] = fake.solid_blocks[FIRST_PAST]
    served = fake.solid_blocks
    fake.solid_blocks = {n: b for n, b in served.items() if n < FIRST_PAST}
    with pytest.raises(ChainRpcError, match="waiting until its expiration is solidified"):
        _adapter(url).broadcast(signed)
    # Solidified past its expiration and in none of the blocks that could hold it: dead, the pipeline re-signs.
    fake.solid_blocks = served
    with pytest.raises(TransactionRejected) as info:
        _adapter(url).broadcast(signed)
    assert info.value.reason == "expired"


def test_an_expired_refusal_for_a_transaction_on_chain_is_success(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    signed = _signed()
    fake.answers["wallet/broadcasttransaction"] = _refusal("TRANSACTION_EXPIRATION_ERROR", "Transaction expired")
    fake.answers["walletsolidity/getnowblock"] = block(98, EXPIRATION + 10_000)
    fake.answers["wallet/gettransactioninfobyid"] = {"id": signed.tx_hash, "blockNumber": 90, "receipt": {}}
    fake.answers["wallet/getblockbynum"] = block(90, NOW, (signed.tx_hash,))
    assert _adapter(url).broadcast(signed) == signed.tx_hash  # it landed earlier: never re-sign it


def test_signed_bytes_that_are_not_this_transaction_are_refused(node: tuple[FakeNode, str]) -> None:
    _, url = node
    signed = _signed()
    with pytest.raises(MalformedTransaction):
        _adapter(url).broadcast(replace(signed, tx_hash="00" * 32))
    with pytest.raises(MalformedTransaction):
        _adapter(url).broadcast(replace(signed, raw=b"{}"))


# --- status --------------------------------------------------------------------------------------------


def _included(fake: FakeNode, signed: SignedTransaction, number: int, **info: Any) -> None:
    fake.answers["wallet/gettransactioninfobyid"] = {"id": signed.tx_hash, "blockNumber": number, **info}
    fake.answers["wallet/getblockbynum"] = lambda body: block(body["num"], NOW, (signed.tx_hash,))


def test_confirmations_reach_the_depth_only_once_solidified(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    signed = _signed()
    _included(fake, signed, 99, fee=268_000, receipt={"net_fee": 268_000})
    fake.answers["walletsolidity/getnowblock"] = block(98, NOW - 500)
    status = _adapter(url).get_status(signed)  # head 100: 2 confirmations, not solid
    assert status.state is TxState.INCLUDED and status.confirmations == 2 and status.fee_paid == 268_000
    assert status.block_number == 99 and status.block_hash == block(99, NOW)["blockID"]
    fake.answers["wallet/getnowblock"] = block(110, NOW)  # 12 confirmations by count, still not solid
    assert _adapter(url).get_status(signed).confirmations == SPEC.confirmations - 1
    fake.answers["walletsolidity/getnowblock"] = block(99, NOW)
    assert _adapter(url).get_status(signed).confirmations == 12
    fake.answers["wallet/getnowblock"] = block(99, NOW)  # solid at once (a node with a shallow depth)
    assert _adapter(url).get_status(signed).confirmations == SPEC.confirmations
    assert fake.paths().index("walletsolidity/getnowblock") < fake.paths().index("wallet/gettransactioninfobyid")


def test_free_bandwidth_means_a_fee_of_zero(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    signed = _signed()
    _included(fake, signed, 99, receipt={"net_usage": 268})
    assert _adapter(url).get_status(signed).fee_paid == 0


@pytest.mark.parametrize("receipt", [{"result": "OUT_OF_ENERGY", "energy_fee": 10**6}, {"result": "REVERT"}])
def test_a_failed_contract_call_is_reverted_with_its_fee(node: tuple[FakeNode, str], receipt: dict[str, Any]) -> None:
    fake, url = node
    signed = _signed()
    _included(fake, signed, 99, fee=1_345_000, result="FAILED", receipt=receipt)
    status = _adapter(url).get_status(signed)
    assert status.state is TxState.REVERTED and status.fee_paid == 1_345_000


def test_a_receipt_whose_block_does_not_list_it_is_not_included(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    signed = _signed()
    fake.answers["wallet/gettransactioninfobyid"] = {"id": signed.tx_hash, "blockNumber": 99}
    fake.answers["wallet/getblockbynum"] = block(99, NOW, ("cd" * 32,))
    assert _adapter(url).get_status(signed).state is TxState.PENDING


def test_unknown_pending_and_expired(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    signed = _signed()
    assert _adapter(url).get_status(signed).state is TxState.NOT_FOUND
    fake.answers["wallet/gettransactionfrompending"] = {"txID": signed.tx_hash}
    assert _adapter(url).get_status(signed).state is TxState.PENDING
    fake.answers["wallet/getnowblock"] = block(200, EXPIRATION + 1)  # the head alone proves nothing
    assert _adapter(url).get_status(signed).state is TxState.PENDING
    fake.answers["walletsolidity/getnowblock"] = block(198, EXPIRATION)
    assert _adapter(url).get_status(signed).state is TxState.EXPIRED


# --- expiry proof ----------------------------------------------------------------------------------


def _solid_past_expiration(fake: FakeNode, number: int = 125) -> None:
    fake.answers["walletsolidity/getnowblock"] = fake.solid_blocks[number] if number in fake.solid_blocks else \
        block(number, NOW + (number - REF) * BLOCK_MS)


def test_a_real_expiry_scans_the_solidified_blocks_from_the_reference_to_the_expiration(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    signed = _signed()
    _solid_past_expiration(fake)
    adapter = _adapter(url)
    assert adapter.get_status(signed).state is TxState.EXPIRED
    assert adapter.proves_unlandable(signed) is True
    scans = [(path, body) for path, body in fake.calls if path.startswith("walletsolidity/getblockby")]
    # the reference block by number (TaPoS), then the blocks after it up to the first past the expiration
    assert scans[0] == ("walletsolidity/getblockbynum", {"num": REF})
    assert scans[1] == ("walletsolidity/getblockbylimitnext", {"startNum": REF + 1, "endNum": FIRST_PAST + 1})
    assert len(scans) == 2 * 2  # get_status, then proves_unlandable: the same proof


def test_an_expiry_scan_spans_several_batches(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    signed = _signed(expiration=NOW + 90 * BLOCK_MS)
    fake.answers["walletsolidity/getnowblock"] = fake.solid_blocks[195]
    assert _adapter(url).get_status(signed).state is TxState.EXPIRED
    ranges = [(b["startNum"], b["endNum"]) for p, b in fake.calls if p == "walletsolidity/getblockbylimitnext"]
    assert ranges == [(101, 121), (121, 141), (141, 161), (161, 181), (181, 196)]


def test_before_the_solidified_head_reaches_the_expiration_nothing_is_scanned(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.answers["wallet/getnowblock"] = block(300, EXPIRATION + 100_000)  # the head alone proves nothing
    fake.answers["walletsolidity/getnowblock"] = block(119, EXPIRATION - 1)
    adapter = _adapter(url)
    assert adapter.get_status(_signed()).state is TxState.NOT_FOUND
    assert adapter.proves_unlandable(_signed()) is False
    assert not any(path.startswith("walletsolidity/getblockby") for path in fake.paths())


@pytest.mark.parametrize("served_up_to", [REF - 1, REF, REF + 5, FIRST_PAST - 1])
def test_a_lagging_solidity_backend_never_gives_expired(node: tuple[FakeNode, str], served_up_to: int) -> None:
    # The solidified head came from an up-to-date backend; the blocks from one that has solidified only
    # up to `served_up_to`: it answers {} or a short list past that, which is no proof of absence.
    fake, url = node
    _solid_past_expiration(fake)
    fake.solid_blocks = {n: b for n, b in fake.solid_blocks.items() if n <= served_up_to}
    adapter = _adapter(url)
    for _ in range(3):
        assert adapter.get_status(_signed()).state is TxState.NOT_FOUND
        assert adapter.proves_unlandable(_signed()) is False


def test_a_lagging_solidity_head_gives_no_proof(node: tuple[FakeNode, str]) -> None:
    # A backend behind says its solidified head is before the expiration: not proven, whatever it lacks
    fake, url = node
    fake.answers["walletsolidity/getnowblock"] = fake.solid_blocks[110]
    fake.solid_blocks = {n: b for n, b in fake.solid_blocks.items() if n <= 110}
    assert _adapter(url).get_status(_signed()).state is TxState.NOT_FOUND


def test_a_transaction_in_a_solidified_block_is_never_expired(node: tuple[FakeNode, str]) -> None:
    # The receipt lookup (another backend) does not know it, but a solidified block lists it
    fake, url = node
    signed = _signed()
    fake.solid_blocks = chain(200, {FIRST_PAST: (signed.tx_hash,)})
    _solid_past_expiration(fake)
    adapter = _adapter(url)
    assert adapter.get_status(signed).state is TxState.PENDING
    assert adapter.proves_unlandable(signed) is False


def test_blocks_that_do_not_chain_from_the_reference_are_no_proof(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    _solid_past_expiration(fake)
    forked = block(110, NOW + 10 * BLOCK_MS)
    forked["block_header"]["raw_data"]["parentHash"] = "ff" * 32
    fake.solid_blocks[110] = forked
    assert _adapter(url).get_status(_signed()).state is TxState.NOT_FOUND


def _orphan_reference(fake: FakeNode, timestamp: int = NOW) -> None:
    """The solidified block at the reference's number is another one: ours was orphaned by a fork."""
    other = block(REF, timestamp)
    other["blockID"] = block_id(REF)[:16] + "cd" * 24
    fake.solid_blocks[REF] = other


def test_a_reference_orphaned_by_a_fork_is_expired_once_the_expiration_is_solidified(node: tuple[FakeNode, str]) -> None:
    # Built on an unconfirmed head that a short fork replaced: TAPOS_ERROR at every node, for good.
    fake, url = node
    signed = _signed()
    _orphan_reference(fake)
    fake.answers["wallet/broadcasttransaction"] = _refusal("TAPOS_ERROR", "Tapos check error")
    adapter = _adapter(url)
    # Before the solidified head reaches the expiration: nothing is proven (it is not scanned either)
    fake.answers["walletsolidity/getnowblock"] = fake.solid_blocks[FIRST_PAST - 1]
    assert adapter.get_status(signed).state is TxState.NOT_FOUND
    with pytest.raises(ChainRpcError, match="waiting until its expiration is solidified"):
        adapter.broadcast(signed)
    # Then: the solidified block at the reference number is another, the bytes can never be valid
    _solid_past_expiration(fake)
    assert adapter.get_status(signed).state is TxState.EXPIRED
    assert adapter.proves_unlandable(signed) is True
    with pytest.raises(TransactionRejected) as info:
        adapter.broadcast(signed)
    assert info.value.reason == "expired"  # the pipeline re-signs it (a recorded replacement)
    assert [b["num"] for p, b in fake.calls if p == "walletsolidity/getblockbynum"][-1] == REF
    assert "walletsolidity/getblockbylimitnext" not in fake.paths()


def test_an_orphaned_reference_whose_replacement_is_newer_than_the_transaction_is_expired(node: tuple[FakeNode, str]) -> None:
    # The block that won the fork at that number came later than ours; there is no older candidate
    fake, url = node
    _orphan_reference(fake, timestamp=NOW + BLOCK_MS)
    _solid_past_expiration(fake)
    assert _adapter(url).get_status(_signed()).state is TxState.EXPIRED


@pytest.mark.parametrize("served_up_to", [REF - 1, 50])
def test_an_orphaned_reference_on_a_lagging_solidity_backend_is_no_proof(node: tuple[FakeNode, str], served_up_to: int) -> None:
    # The solidified head past the expiration came from an up-to-date backend; the reference number is
    # asked of one that has not solidified it: {} is no proof that the reference is gone.
    fake, url = node
    _orphan_reference(fake)
    _solid_past_expiration(fake)
    fake.solid_blocks = {n: b for n, b in fake.solid_blocks.items() if n <= served_up_to}
    adapter = _adapter(url)
    assert adapter.get_status(_signed()).state is TxState.NOT_FOUND
    assert adapter.proves_unlandable(_signed()) is False


def test_the_reference_is_found_a_tapos_window_back(node: tuple[FakeNode, str]) -> None:
    # Asked long after: the newest block with the reference's low 16 bits is a later one
    fake, url = node
    later = REF + 65_536
    fake.solid_blocks[later] = block(later, NOW + 65_536 * BLOCK_MS)
    fake.answers["walletsolidity/getnowblock"] = block(later + 10, NOW + (65_546) * BLOCK_MS)
    fake.solid_blocks[later]["blockID"] = f"{later:016x}" + "cd" * 24
    assert _adapter(url).get_status(_signed()).state is TxState.EXPIRED
    nums = [b["num"] for p, b in fake.calls if p == "walletsolidity/getblockbynum"]
    assert nums == [later, REF]


@pytest.mark.parametrize("context", [
    {"expiration": EXPIRATION - 1},  # the stored context is not the one these bytes were built with
    {"ref_block_hash": "cd" * 8},
])
def test_a_context_that_disagrees_with_the_signed_bytes_proves_nothing(node: tuple[FakeNode, str],
                                                                        context: dict[str, Any]) -> None:
    fake, url = node
    _solid_past_expiration(fake)
    signed = replace(_signed(), context={"ref_block_bytes": "0064", "ref_block_hash": "ab" * 8,
                                         "expiration": EXPIRATION, "timestamp": NOW, **context})
    assert _adapter(url).get_status(signed).state is TxState.NOT_FOUND


def test_the_matching_context_and_no_bytes(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    _solid_past_expiration(fake)
    context = {"ref_block_bytes": "0064", "ref_block_hash": "ab" * 8, "expiration": EXPIRATION, "timestamp": NOW}
    assert _adapter(url).get_status(replace(_signed(), context=context)).state is TxState.EXPIRED
    assert _adapter(url).get_status(replace(_signed(), raw=b"")).state is TxState.NOT_FOUND  # nothing to prove with


@pytest.mark.parametrize("answer", [{"block": "nope"}, {"block": [{"blockID": "zz"}]}])
def test_unusable_block_answers_are_rpc_errors(node: tuple[FakeNode, str], answer: dict[str, Any]) -> None:
    fake, url = node
    _solid_past_expiration(fake)
    fake.answers["walletsolidity/getblockbylimitnext"] = answer
    with pytest.raises(ChainRpcError):
        _adapter(url).get_status(_signed())


def test_a_status_needs_a_tron_txid(node: tuple[FakeNode, str]) -> None:
    _, url = node
    with pytest.raises(MalformedTransaction):
        _adapter(url).get_status(SignedTransaction(raw=b"", tx_hash="0x" + "ab" * 32))


def test_balances(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.answers["wallet/getaccount"] = {}
    assert _adapter(url).balance_of(SENDER, SPEC.native) == 0  # never activated
    fake.answers["wallet/getaccount"] = {"address": SENDER, "balance": 12}
    assert _adapter(url).balance_of(SENDER, SPEC.native) == 12
    fake.answers["wallet/triggerconstantcontract"] = {"result": {"result": True}, "constant_result": [f"{10**20:064x}"]}
    assert _adapter(url).balance_of(SENDER, USDT) == 10**20


def test_a_solidity_answer_for_another_block_number_is_an_rpc_error(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    _solid_past_expiration(fake)
    fake.answers["walletsolidity/getblockbynum"] = lambda body: fake.solid_blocks[body["num"] - 1]
    with pytest.raises(ChainRpcError, match="answered block"):
        _adapter(url).get_status(_signed())
