"""The TRON devnet's HTTP API: the subset of java-tron's wallet API that tronpy and the adapter use.

Answers have java-tron's shapes: HTTP 200 with `{}` for "not found", `{"Error": "..."}` for a
request the node cannot parse, and `{"result": false, "code": ..., "message": <hex>}` for a
refused broadcast (hex-encoded with visible=false, as java-tron does). Addresses in requests may
be base58 or hex; `visible: true` answers use base58.

Devnet-only endpoints (no TRON node has them):
    POST /devnet/fund        {"address", "amount_sun"}           -> {"address", "balance"}
    POST /devnet/mint_trc20  {"address", "amount", "contract"?}  -> {"address", "balance"}
    POST /devnet/produce     {"blocks"?: 1}                      -> {"number"}  (a block now)
    POST /devnet/fork        {"from"}                            -> {"number", "replaced"}  (a short fork:
                             unsolidified empty blocks from..head get new ids)
    GET  /devnet/info                                            -> block time, depth, fees, tokens
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tronpy.keys import keccak256, to_base58check_address

from devnet.tron.chain import BadRequest, Refused, TronChain, hex_address

Handler = Callable[[TronChain, dict[str, Any]], Any]  # a JSON object, or a list (gettransactioninfobyblocknum)
BLOCK_LIMIT_NUM = 100  # java-tron's most blocks per getblockbylimitnext


def _value(body: dict[str, Any]) -> str:
    value = body.get("value")
    if not isinstance(value, str):
        raise BadRequest("value (a transaction id) is required")
    return value.lower()


def _visible(body: dict[str, Any], address: str) -> str:
    return to_base58check_address(address) if body.get("visible") else address


def _broadcast(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"result": True, "txid": chain.broadcast(body)}
    except Refused as exc:
        message = exc.message if body.get("visible") else exc.message.encode().hex()
        return {"result": False, "code": exc.code, "message": message}


def _account(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    found = chain.account(body.get("address", ""))
    if found is None:
        return {}
    if not found["balance"]:
        del found["balance"]  # protobuf JSON omits zero fields
    return {**found, "address": _visible(body, found["address"])}


def _call_data(body: dict[str, Any]) -> bytes:
    if body.get("data"):
        return bytes.fromhex(body["data"])
    selector = body.get("function_selector")
    if not isinstance(selector, str):
        raise BadRequest("function_selector or data is required")
    return keccak256(selector.replace(" ", "").encode())[:4] + bytes.fromhex(body.get("parameter", ""))


def _constant(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    owner = body.get("owner_address")
    return chain.constant_call(body.get("contract_address", ""), owner, _call_data(body))


def _estimate_energy(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    """java-tron's EstimateEnergyServlet: refusals in `result` (message hex-encoded unless visible)."""
    answer = chain.estimate_energy(body.get("contract_address", ""), body.get("owner_address"), _call_data(body))
    message = answer["result"].get("message")
    if message is not None and not body.get("visible"):
        answer["result"]["message"] = message.encode().hex()
    return answer


def _unsigned(chain: TronChain, kind: str, value: dict[str, Any], fee_limit: int | None, body: dict[str, Any]) -> dict[str, Any]:
    """An unsigned transaction on the head block, as createtransaction/triggersmartcontract build it."""
    from tronpy.proto import calculate_txid_from_raw_data

    head = chain.head
    raw_data: dict[str, Any] = {
        "contract": [{"parameter": {"value": value, "type_url": f"type.googleapis.com/protocol.{kind}"}, "type": kind}],
        "ref_block_bytes": head.block_id[12:16], "ref_block_hash": head.block_id[16:32],
        "expiration": head.timestamp + 60_000, "timestamp": head.timestamp,
    }
    if fee_limit is not None:
        raw_data["fee_limit"] = fee_limit
    return {"visible": bool(body.get("visible")), "txID": calculate_txid_from_raw_data(raw_data), "raw_data": raw_data,
            "raw_data_hex": chain._raw_bytes(raw_data).hex()}


def _create_transaction(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    value = {"owner_address": hex_address(body.get("owner_address")), "to_address": hex_address(body.get("to_address")),
             "amount": body.get("amount")}
    return _unsigned(chain, "TransferContract", value, None, {**body, "visible": False})


def _trigger(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    value = {"owner_address": hex_address(body.get("owner_address")),
             "contract_address": hex_address(body.get("contract_address")), "data": _call_data(body).hex()}
    if body.get("call_value"):
        value["call_value"] = body["call_value"]
    transaction = _unsigned(chain, "TriggerSmartContract", value, body.get("fee_limit", 0), {**body, "visible": False})
    return {"result": {"result": True}, "transaction": transaction}


def _block_by_num(chain: TronChain, body: dict[str, Any], solid: bool = False) -> dict[str, Any]:
    found = chain.block(int(body.get("num", 0)), solid=solid)
    return chain.block_json(found) if found is not None else {}


def _blocks_by_limit_next(chain: TronChain, body: dict[str, Any], solid: bool = False) -> dict[str, Any]:
    """Blocks startNum .. endNum-1 (at most 100) that the node has (solidified ones only on the solidity
    API): fewer, or `{}`, past its head, as java-tron answers."""
    start, end = int(body.get("startNum", 0)), int(body.get("endNum", 0))
    if not (end > 0 and end > start and end - start <= BLOCK_LIMIT_NUM):
        return {}
    blocks = [found for number in range(max(start, 0), end) if (found := chain.block(number, solid=solid)) is not None]
    return {"block": [chain.block_json(found) for found in blocks]} if blocks else {}


def _infos_by_block_num(chain: TronChain, body: dict[str, Any], solid: bool = False) -> list[dict[str, Any]] | dict[str, Any]:
    """gettransactioninfobyblocknum: a JSON *array* of the block's transaction infos (java-tron's
    GetTransactionInfoByBlockNumServlet prints a list), `[]` for a block without transactions or
    one the node does not have; `{}` for num <= 0, as java-tron answers."""
    number = int(body.get("num", 0))
    return chain.block_transaction_infos(number, solid=solid) if number > 0 else {}


def _node_info(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    head, solid = chain.head, chain.solid
    return {"block": f"Num:{head.number},ID:{head.block_id}", "solidityBlock": f"Num:{solid.number},ID:{solid.block_id}"}


def _fund(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    amount = body.get("amount_sun")
    if not isinstance(amount, int) or amount <= 0:
        raise BadRequest("amount_sun must be a positive integer")
    return {"address": body.get("address"), "balance": chain.fund(body.get("address", ""), amount)}


def _mint(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    amount = body.get("amount")
    if not isinstance(amount, int) or amount <= 0:
        raise BadRequest("amount must be a positive integer")
    contract = body.get("contract") or next(iter(chain.tokens), "")
    return {"address": body.get("address"), "balance": chain.mint(contract, body.get("address", ""), amount)}


def _produce(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    for _ in range(int(body.get("blocks", 1))):
        block = chain.produce_block()
    return {"number": block.number}


def _fork(chain: TronChain, body: dict[str, Any]) -> dict[str, Any]:
    start = body.get("from")
    if not isinstance(start, int) or isinstance(start, bool):
        raise BadRequest("from (a block number) is required")
    replaced = chain.fork(start)
    return {"number": chain.head.number, "replaced": [old.block_id for old in replaced]}


ROUTES: dict[str, Handler] = {
    "/wallet/getnowblock": lambda chain, body: chain.block_json(chain.head),
    "/walletsolidity/getnowblock": lambda chain, body: chain.block_json(chain.solid),
    "/wallet/getblockbynum": _block_by_num,
    "/walletsolidity/getblockbynum": lambda chain, body: _block_by_num(chain, body, solid=True),
    "/wallet/getblockbylimitnext": _blocks_by_limit_next,
    "/walletsolidity/getblockbylimitnext": lambda chain, body: _blocks_by_limit_next(chain, body, solid=True),
    "/wallet/gettransactioninfobyblocknum": _infos_by_block_num,
    "/walletsolidity/gettransactioninfobyblocknum": lambda chain, body: _infos_by_block_num(chain, body, solid=True),
    "/wallet/getnodeinfo": _node_info,
    "/wallet/getchainparameters": lambda chain, body: {"chainParameter": chain.fees.chain_parameters()},
    "/wallet/broadcasttransaction": _broadcast,
    "/wallet/createtransaction": _create_transaction,
    "/wallet/triggersmartcontract": _trigger,
    "/wallet/triggerconstantcontract": _constant,
    "/wallet/estimateenergy": _estimate_energy,
    "/wallet/gettransactionbyid": lambda chain, body: chain.transaction(_value(body)),
    "/walletsolidity/gettransactionbyid": lambda chain, body: chain.transaction(_value(body), solid=True),
    "/wallet/gettransactioninfobyid": lambda chain, body: chain.transaction_info(_value(body)),
    "/walletsolidity/gettransactioninfobyid": lambda chain, body: chain.transaction_info(_value(body), solid=True),
    "/wallet/gettransactionfrompending": lambda chain, body: chain.pending_transaction(_value(body)),
    "/wallet/getaccount": _account,
    "/wallet/getaccountresource": lambda chain, body: chain.account_resource(body.get("address", "")),
    "/devnet/fund": _fund,
    "/devnet/mint_trc20": _mint,
    "/devnet/produce": _produce,
    "/devnet/fork": _fork,
}


def make_server(chain: TronChain, host: str, port: int, info: dict[str, Any]) -> ThreadingHTTPServer:
    """An HTTP server answering ROUTES (POST with a JSON body, or GET) for `chain`."""

    class TronApiHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: without this, 40 ms per call

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
            pass

        def _answer(self, status: int, doc: Any) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, body: dict[str, Any]) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/devnet/info":
                return self._answer(200, {**info, "fees": asdict(chain.fees), "head": chain.head.number})
            route = ROUTES.get(path)
            if route is None:
                return self._answer(404, {"Error": f"no such API: {path}"})
            try:
                self._answer(200, route(chain, body))
            except (BadRequest, ValueError, TypeError, KeyError) as exc:
                self._answer(200, {"Error": f"class java.lang.IllegalArgumentException : {exc}"})

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError as exc:
                return self._answer(200, {"Error": f"class org.tron.core.services.http.JsonFormat$ParseException : {exc}"})
            self._handle(body if isinstance(body, dict) else {})

        def do_GET(self) -> None:  # noqa: N802
            self._handle({})

    server = ThreadingHTTPServer((host, port), TronApiHandler)
    server.daemon_threads = True
    return server


def produce_blocks(chain: TronChain, interval: float, stop: threading.Event) -> None:
    """Produce a block every `interval` seconds until `stop` is set."""
    while not stop.wait(interval):
        chain.produce_block()
