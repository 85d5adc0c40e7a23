"""The bitcoind JSON-RPC methods the devnet node answers, shaped like bitcoind's own answers.

Amounts are BTC as JSON numbers with 8 decimals (`Decimal`, never float), heights and sizes are
integers, errors carry bitcoind's codes. Methods: getblockchaininfo, getblockcount,
getbestblockhash, getblockhash, getblockheader, getblock, getrawtransaction (verbosity 0/1/2),
getrawmempool, getmempoolentry, getmempoolinfo, gettxout, sendrawtransaction, estimatesmartfee,
scantxoutset, listunspent, generatetoaddress, invalidateblock, and the devnet faucet
`sendtoaddress` (bitcoind's wallet call, paid from the devnet key).

Devnet-only controls (not bitcoind's; named devnet_* so no client mistakes them for it):
`devnet_setminfeerate [sat_per_vb]` starts a fee-rate spike (0 or no argument ends it) and answers
the rate now in force; `devnet_withhold <txid> [true|false]` makes the miner skip a transaction,
or releases it. See `devnet.bitcoin.chainstate`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from chains.bitcoin_address import AddressKind, REGTEST, decode_address, encode_segwit
from chains.bitcoin_address import b58encode_check
from chains.bitcoin_tx import Tx
from chains.errors import InvalidAddress
from devnet.bitcoin.chainstate import ChainState, Coin, RpcFailure
from devnet.bitcoin.replacement import signals

SATOSHI = Decimal(100_000_000)


def btc(sats: int) -> Decimal:
    return (Decimal(sats) / SATOSHI).quantize(Decimal("0.00000001"))


def sats_of(amount: Any) -> int:
    try:
        value = Decimal(str(amount)) * SATOSHI
    except ArithmeticError:
        raise RpcFailure(-3, "Invalid amount") from None
    if value != value.to_integral_value() or value <= 0:
        raise RpcFailure(-3, "Invalid amount")
    return int(value)


def script_of(address: Any) -> bytes:
    try:
        return decode_address(address, REGTEST.name).script_pubkey
    except InvalidAddress:
        raise RpcFailure(-5, "Invalid address") from None


def address_of(script: bytes) -> str | None:
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14":
        return b58encode_check(bytes([REGTEST.p2pkh_version]) + script[3:23])
    if len(script) == 23 and script[:2] == b"\xa9\x14":
        return b58encode_check(bytes([REGTEST.p2sh_version]) + script[2:22])
    if 4 <= len(script) <= 42 and (script[0] == 0 or 0x51 <= script[0] <= 0x60) and script[1] + 2 == len(script):
        try:
            return encode_segwit(REGTEST.hrp, script[0] - 0x50 if script[0] else 0, script[2:])
        except ValueError:
            return None
    return None


def script_type(script: bytes) -> str:
    address = address_of(script)
    if address is None:
        return "nulldata" if script[:1] == b"\x6a" else "nonstandard"
    kind = decode_address(address, REGTEST.name).kind
    return {AddressKind.P2PKH: "pubkeyhash", AddressKind.P2SH: "scripthash", AddressKind.P2WPKH: "witness_v0_keyhash",
            AddressKind.P2WSH: "witness_v0_scripthash", AddressKind.P2TR: "witness_v1_taproot"}.get(kind, "witness_unknown")


def script_json(script: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"hex": script.hex(), "type": script_type(script)}
    address = address_of(script)
    if address is not None:
        out["address"] = address
    return out


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or int(value) != value:
        raise RpcFailure(-1, f"JSON value of type {type(value).__name__} is not of expected type number ({name})")
    return int(value)


def _txid(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise RpcFailure(-8, "parameter 1 must be hexadecimal string (not '" + str(value)[:70] + "')")
    return value.lower()


class Methods:
    """Method name -> handler over one ChainState; `faucet_key` pays `sendtoaddress`."""

    def __init__(self, state: ChainState, faucet_key: bytes, faucet_script: bytes, *, automine: bool = False) -> None:
        self.state = state
        self.faucet_key = faucet_key
        self.faucet_script = faucet_script
        self.automine = automine  # a block per accepted transaction, like anvil without --block-time
        self.table: dict[str, Callable[..., Any]] = {
            name: getattr(self, name) for name in (
                "getblockchaininfo", "getblockcount", "getbestblockhash", "getblockhash", "getblockheader",
                "getblock", "getrawtransaction", "getrawmempool", "getmempoolentry", "getmempoolinfo", "gettxout",
                "sendrawtransaction",
                "estimatesmartfee", "scantxoutset", "listunspent", "generatetoaddress", "invalidateblock",
                "sendtoaddress", "devnet_setminfeerate", "devnet_withhold",
            )
        }

    def call(self, method: str, params: list[Any]) -> Any:
        handler = self.table.get(method)
        if handler is None:
            raise RpcFailure(-32601, "Method not found")
        try:
            with self.state.lock:
                return handler(*params)
        except TypeError as exc:
            raise RpcFailure(-1, f"{method}: wrong number or type of parameters ({exc})") from None

    # --- chain --------------------------------------------------------------------------------

    def getblockchaininfo(self) -> dict[str, Any]:
        s = self.state
        return {"chain": "regtest", "blocks": s.height, "headers": s.height, "bestblockhash": s.tip.hash,
                "mediantime": s.tip.time, "initialblockdownload": False, "pruned": False}

    def getblockcount(self) -> int:
        return self.state.height

    def getbestblockhash(self) -> str:
        return self.state.tip.hash

    def getblockhash(self, height: Any) -> str:
        height = _int(height, "height")
        if not 0 <= height <= self.state.height:
            raise RpcFailure(-8, "Block height out of range")
        return self.state.active[height]

    def _block(self, block_hash: Any) -> Any:
        block = self.state.blocks.get(str(block_hash).lower())
        if block is None:
            raise RpcFailure(-5, "Block not found")
        return block

    def getblockheader(self, block_hash: Any, verbose: bool = True) -> Any:
        block = self._block(block_hash)
        if not verbose:
            return block.header.hex()
        s = self.state
        confirmations = s.confirmations(block.hash)
        header = {"hash": block.hash, "confirmations": confirmations, "height": block.height, "version": 0x20000000,
                  "merkleroot": block.merkle_root, "time": block.time, "mediantime": block.time, "nonce": block.height,
                  "bits": "207fffff", "nTx": len(block.txids)}
        if block.height:
            header["previousblockhash"] = block.prev
        if confirmations > 1:
            header["nextblockhash"] = s.active[block.height + 1]
        return header

    def getblock(self, block_hash: Any, verbosity: int = 1) -> Any:
        header = self.getblockheader(block_hash)
        return {**header, "tx": list(self._block(block_hash).txids)}

    # --- transactions -------------------------------------------------------------------------

    def getrawtransaction(self, txid: Any, verbosity: Any = 0, block_hash: Any = None) -> Any:
        txid = _txid(txid)
        s = self.state
        level = 1 if verbosity is True else 0 if verbosity in (False, None) else _int(verbosity, "verbosity")
        in_block = None if txid in s.mempool else s.tx_block.get(txid)
        if block_hash is not None:
            in_block = str(block_hash).lower()
            if txid not in self._block(in_block).txids:
                raise RpcFailure(-5, "No such transaction found in the provided block.")
        elif txid not in s.mempool and in_block is None:
            raise RpcFailure(-5, "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.")
        tx = s.txs[txid]
        if level == 0:
            return tx.serialize().hex()
        answer = self._tx_json(tx, with_prevouts=level >= 2)
        if in_block is not None:
            block = s.blocks[in_block]
            confirmations = s.confirmations(block.hash)
            answer.update(blockhash=block.hash, confirmations=max(confirmations, 0), time=block.time,
                          blocktime=block.time)
        return answer

    def _tx_json(self, tx: Tx, with_prevouts: bool) -> dict[str, Any]:
        spent: list[Coin] = self.state.prevouts.get(tx.txid, [])
        vin = []
        for n, i in enumerate(tx.inputs):
            if tx.is_coinbase():
                vin.append({"coinbase": i.script_sig.hex(), "sequence": i.sequence})
                continue
            item: dict[str, Any] = {"txid": i.txid, "vout": i.vout, "scriptSig": {"asm": "", "hex": i.script_sig.hex()},
                                    "sequence": i.sequence}
            if i.witness:
                item["txinwitness"] = [w.hex() for w in i.witness]
            if with_prevouts and n < len(spent):
                item["prevout"] = {"generated": spent[n].coinbase, "height": spent[n].height,
                                   "value": btc(spent[n].value), "scriptPubKey": script_json(spent[n].script)}
            vin.append(item)
        answer: dict[str, Any] = {
            "txid": tx.txid, "hash": tx.wtxid, "version": tx.version, "size": len(tx.serialize()), "vsize": tx.vsize,
            "weight": tx.weight, "locktime": tx.locktime, "vin": vin,
            "vout": [{"value": btc(o.value), "n": n, "scriptPubKey": script_json(o.script_pubkey)}
                     for n, o in enumerate(tx.outputs)],
            "hex": tx.serialize().hex(),
        }
        if with_prevouts and not tx.is_coinbase() and spent:
            answer["fee"] = btc(sum(c.value for c in spent) - sum(o.value for o in tx.outputs))
        return answer

    def getrawmempool(self, verbose: bool = False) -> Any:
        return list(self.state.mempool)

    def getmempoolentry(self, txid: Any) -> dict[str, Any]:
        entry = self.state.mempool.get(_txid(txid))
        if entry is None:
            raise RpcFailure(-5, "Transaction not in mempool")
        return {"vsize": entry.tx.vsize, "weight": entry.tx.weight, "time": entry.time, "height": entry.height,
                "fees": {"base": btc(entry.fee)}, "wtxid": entry.tx.wtxid, "bip125-replaceable": signals(entry.tx),
                "depends": sorted({i.txid for i in entry.tx.inputs if i.txid in self.state.mempool})}

    def getmempoolinfo(self) -> dict[str, Any]:
        mempool = self.state.mempool
        return {"loaded": True, "size": len(mempool), "bytes": sum(e.tx.vsize for e in mempool.values()),
                "mempoolminfee": btc(1000), "minrelaytxfee": btc(1000), "incrementalrelayfee": btc(1000)}

    def gettxout(self, txid: Any, n: Any, include_mempool: Any = True) -> dict[str, Any] | None:
        """The unspent output, or null when it is unknown or spent (with include_mempool, a spend in
        the mempool counts and a mempool transaction's outputs are seen, at 0 confirmations)."""
        outpoint = (_txid(txid), _int(n, "n"))
        coin = self.state.coin(outpoint) if include_mempool else self.state.utxos.get(outpoint)
        if coin is None:
            return None
        confirmations = 0 if coin.height < 0 else self.state.height - coin.height + 1
        return {"bestblock": self.state.tip.hash, "confirmations": confirmations, "value": btc(coin.value),
                "scriptPubKey": script_json(coin.script), "coinbase": coin.coinbase}

    def sendrawtransaction(self, hexstring: Any, maxfeerate: Any = None) -> str:
        try:
            raw = bytes.fromhex(hexstring)
        except (TypeError, ValueError):
            raise RpcFailure(-22, "TX decode failed. Make sure the tx has at least one input.") from None
        return self._mined(self.state.submit(raw))

    def _mined(self, txid: str) -> str:
        if self.automine and txid in self.state.mempool:
            self.state.mine(1, self.faucet_script)
        return txid

    def estimatesmartfee(self, conf_target: Any, estimate_mode: str = "conservative") -> dict[str, Any]:
        target = _int(conf_target, "conf_target")
        rate = self.state.estimate_sat_vb()
        if rate <= 0:
            return {"errors": ["Insufficient data or no feerate found"], "blocks": 0}
        return {"feerate": btc(rate * 1000), "blocks": max(target, 2)}

    # --- outputs ------------------------------------------------------------------------------

    def scantxoutset(self, action: str, scanobjects: Any = None) -> Any:
        if action in ("abort", "status"):
            return False if action == "abort" else None
        if action != "start" or not isinstance(scanobjects, list):
            raise RpcFailure(-8, "Invalid action or scan objects")
        scripts = {self._descriptor_script(item) for item in scanobjects}
        s = self.state
        unspents = []
        for (txid, vout), coin in sorted(s.outputs_paying(scripts, include_mempool=False)):
            unspents.append({"txid": txid, "vout": vout, "scriptPubKey": coin.script.hex(),
                             "desc": f"addr({address_of(coin.script)})", "amount": btc(coin.value),
                             "coinbase": coin.coinbase, "height": coin.height,
                             "blockhash": s.active[coin.height], "confirmations": s.height - coin.height + 1})
        return {"success": True, "txouts": len(s.utxos), "height": s.height, "bestblock": s.tip.hash,
                "unspents": unspents, "total_amount": btc(sum(sats_of_json(u["amount"]) for u in unspents))}

    @staticmethod
    def _descriptor_script(item: Any) -> bytes:
        text = item.get("desc") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise RpcFailure(-8, "Scan object needs to be either a string or an object")
        text = text.split("#", 1)[0]
        if text.startswith("addr(") and text.endswith(")"):
            return script_of(text[5:-1])
        if text.startswith("raw(") and text.endswith(")"):
            return bytes.fromhex(text[4:-1])
        raise RpcFailure(-5, f"devnet scantxoutset understands addr(...) and raw(...) descriptors, not {text[:60]!r}")

    def listunspent(self, minconf: Any = 1, maxconf: Any = 9_999_999, addresses: Any = None,
                    include_unsafe: bool = True, query_options: Any = None) -> list[dict[str, Any]]:
        """Every address counts as watched here (bitcoind needs them imported into the wallet first).
        `safe` is what bitcoind means: confirmed, or unconfirmed change of a transaction whose
        inputs all belong to the same address set."""
        low, high = _int(minconf, "minconf"), _int(maxconf, "maxconf")
        scripts = {script_of(a) for a in (addresses or [])}
        s = self.state
        found = []
        for (txid, vout), coin in sorted(s.outputs_paying(scripts, include_mempool=True)):
            if coin.coinbase and s.height + 1 - coin.height < 100:
                continue
            confirmations = 0 if coin.height < 0 else s.height - coin.height + 1
            safe = confirmations > 0 or all(c.script in scripts for c in s.prevouts.get(txid, []))
            if low <= confirmations <= high and (safe or include_unsafe):
                found.append({"txid": txid, "vout": vout, "address": address_of(coin.script),
                              "scriptPubKey": coin.script.hex(), "amount": btc(coin.value),
                              "confirmations": confirmations, "spendable": False, "solvable": False, "safe": safe})
        return found

    # --- devnet controls ----------------------------------------------------------------------

    def generatetoaddress(self, nblocks: Any, address: Any, maxtries: Any = None) -> list[str]:
        return self.state.mine(_int(nblocks, "nblocks"), script_of(address))

    def invalidateblock(self, block_hash: Any) -> None:
        self.state.invalidate(str(block_hash).lower())

    def sendtoaddress(self, address: Any, amount: Any, *ignored: Any) -> str:
        return self._mined(self.state.faucet_send(self.faucet_key, script_of(address), sats_of(amount)))

    def devnet_setminfeerate(self, sat_per_vb: Any = 0) -> int:
        """A fee-rate spike of `sat_per_vb` (0: none); answers the rate in force."""
        rate = _int(sat_per_vb, "sat_per_vb")
        if rate < 0:
            raise RpcFailure(-8, "sat_per_vb must be 0 or more")
        self.state.set_min_fee_rate(rate)
        return self.state.min_fee_rate_sat_vb

    def devnet_withhold(self, txid: Any, withheld: Any = True) -> bool:
        """The miner skips `txid` (withheld true) or takes it again (false); answers the setting."""
        if not isinstance(withheld, bool):
            raise RpcFailure(-1, "JSON value is not of expected type bool (withheld)")
        self.state.withhold(_txid(txid), withheld)
        return withheld


def sats_of_json(amount: Decimal) -> int:
    return int(amount * SATOSHI)
