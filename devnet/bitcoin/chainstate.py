"""The devnet Bitcoin node's state: blocks, the UTXO set and the mempool; validation and mining.

What is real: transactions are parsed from their wire bytes; every input must exist (in the UTXO
set or as an unspent output of a mempool transaction), must not be spent twice, and must carry a
valid signature: P2WPKH witnesses are checked with the BIP143 digest and ECDSA (strict DER,
low-s, compressed key, key hash = program). Coinbase outputs mature after 100 blocks. Outputs
must be standard scripts above the dust limit, the fee at least 1 sat/vB. Blocks link by hash,
carry a real merkle root, and can be disconnected (`invalidate`) with their transactions going
back to the mempool, as bitcoind does on a reorg.

A spend of an input that a mempool transaction already spends is a BIP125 replacement, judged
by bitcoind's opt-in rules (`devnet.bitcoin.replacement`): it evicts the original and its
descendants, or is refused with bitcoind's code -26 and words.

Devnet controls, to test what a busy chain does to a transfer: a fee-rate spike
(`set_min_fee_rate`: while set, mined blocks take only mempool transactions paying at least that
rate, the others wait in the mempool, and `estimatesmartfee` answers it) and withheld transactions
(`withhold`: the miner skips them, they stay in the mempool, until released). A transaction is
mined only with its mempool parents (no child-pays-for-parent: a child never pulls a skipped
parent into a block).

What is not: no proof of work, no P2P, only P2WPKH inputs can be spent (any standard output can
be paid), no script interpreter beyond that. The error codes and messages are bitcoind's, so
clients see what they would see in production.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from chains.bitcoin_address import REGTEST, dust_limit, hash160, p2wpkh_script, sha256d
from chains.bitcoin_tx import (
    MAX_MONEY,
    SIGHASH_ALL,
    Tx,
    TxIn,
    TxOut,
    bip143_sighash,
    der_decode,
    p2wpkh_script_code,
    parse_tx,
    verify_signature,
)
from chains.secp256k1 import SECP256K1_N
from devnet.bitcoin import replacement

COINBASE_MATURITY = 100
HALVING_INTERVAL = 150  # regtest
MIN_RELAY_SAT_VB = 1
MAX_STANDARD_WEIGHT = 400_000
NULL_TXID = "00" * 32

Outpoint = tuple[str, int]


class RpcFailure(Exception):
    """A bitcoind-style JSON-RPC error (code and message as bitcoind reports them)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def rejected(reason: str) -> RpcFailure:
    return RpcFailure(-26, reason)


@dataclass
class Coin:
    value: int
    script: bytes
    height: int  # -1 while only in the mempool
    coinbase: bool = False


@dataclass
class Block:
    hash: str
    height: int
    prev: str
    time: int
    merkle_root: str
    header: bytes
    txids: list[str]
    undo: list[tuple[Outpoint, Coin]] = field(default_factory=list)


@dataclass
class MempoolEntry:
    tx: Tx
    fee: int
    time: int
    height: int  # tip height when it entered


def merkle_root(txids: list[str]) -> bytes:
    layer = [bytes.fromhex(t)[::-1] for t in txids]
    while len(layer) > 1:
        if len(layer) % 2:
            layer.append(layer[-1])
        layer = [sha256d(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def _push(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def is_standard_output(script: bytes) -> bool:
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return True  # P2PKH
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[22:] == b"\x87":
        return True  # P2SH
    if 4 <= len(script) <= 42 and (script[0] == 0 or 0x51 <= script[0] <= 0x60) and script[1] + 2 == len(script):
        return script[0] != 0 or len(script) in (22, 34)  # witness program (v0: 20 or 32 bytes)
    return script[:1] == b"\x6a" and len(script) <= 83  # OP_RETURN data carrier


class ChainState:
    """One regtest chain; every public method takes the lock, so RPC threads and the miner share it."""

    def __init__(self, *, fee_rate_sat_vb: int = 2, clock: Any = time.time) -> None:
        self.lock = threading.RLock()
        self.fee_rate_sat_vb = fee_rate_sat_vb
        self._clock = clock
        self.blocks: dict[str, Block] = {}
        self.active: list[str] = []  # block hashes by height: the main chain
        self.invalid: set[str] = set()
        self.txs: dict[str, Tx] = {}  # every transaction seen, by txid
        self.prevouts: dict[str, list[Coin]] = {}  # what each transaction spent (verbosity 2, fees)
        self.tx_block: dict[str, str] = {}  # txindex: txid -> the last block that included it (kept on reorg)
        self.utxos: dict[Outpoint, Coin] = {}
        self.mempool: dict[str, MempoolEntry] = {}
        self.mempool_spends: dict[Outpoint, str] = {}
        self.min_fee_rate_sat_vb = 0  # a fee-rate spike: blocks take only transactions paying this much (0: none)
        self.withheld: set[str] = set()  # txids the miner skips until released
        self._extra_nonce = itertools.count()
        self._mine_one(b"\x6a")  # genesis pays an unspendable script, like Bitcoin's

    # --- queries ----------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self.active) - 1

    @property
    def tip(self) -> Block:
        return self.blocks[self.active[-1]]

    def confirmations(self, block_hash: str) -> int:
        """bitcoind's header confirmations: -1 for a block off the main chain."""
        block = self.blocks[block_hash]
        on_main = block.height < len(self.active) and self.active[block.height] == block_hash
        return self.height - block.height + 1 if on_main else -1

    def coin(self, outpoint: Outpoint, include_mempool: bool = True) -> Coin | None:
        """The unspent output at `outpoint` (None if unknown or spent, counting mempool spends)."""
        if outpoint in self.mempool_spends:
            return None
        return self._output(outpoint, include_mempool)

    def _output(self, outpoint: Outpoint, include_mempool: bool = True) -> Coin | None:
        """The output at `outpoint`, in the UTXO set or (`include_mempool`) made by a mempool
        transaction, whether or not a mempool transaction spends it."""
        found = self.utxos.get(outpoint)
        if found is None and include_mempool and outpoint[0] in self.mempool:
            outputs = self.mempool[outpoint[0]].tx.outputs
            if outpoint[1] < len(outputs):
                return Coin(outputs[outpoint[1]].value, outputs[outpoint[1]].script_pubkey, -1)
        return found

    def outputs_paying(self, scripts: set[bytes], include_mempool: bool) -> list[tuple[Outpoint, Coin]]:
        found = [(op, c) for op, c in self.utxos.items()
                 if c.script in scripts and (not include_mempool or op not in self.mempool_spends)]
        if include_mempool:
            for txid, entry in self.mempool.items():
                for n, out in enumerate(entry.tx.outputs):
                    if out.script_pubkey in scripts and (txid, n) not in self.mempool_spends:
                        found.append(((txid, n), Coin(out.value, out.script_pubkey, -1)))
        return found

    # --- the mempool ------------------------------------------------------------------------

    def submit(self, raw: bytes) -> str:
        """sendrawtransaction: validate and add to the mempool; RpcFailure as bitcoind words it."""
        try:
            tx = parse_tx(raw)
        except (ValueError, KeyError) as exc:
            raise RpcFailure(-22, f"TX decode failed. Make sure the tx has at least one input. ({exc})") from None
        with self.lock:
            if tx.txid in self.mempool:
                if self.mempool[tx.txid].tx.wtxid != tx.wtxid:
                    raise rejected("txn-same-nonwitness-data-in-mempool")
                return tx.txid  # bitcoind answers the txid for a transaction it already has
            if any((tx.txid, n) in self.utxos for n in range(len(tx.outputs))):
                raise RpcFailure(-27, "Transaction outputs already in utxo set")
            self._accept(tx, verify_scripts=True)
            return tx.txid

    def _accept(self, tx: Tx, verify_scripts: bool, may_replace: bool = True) -> None:
        """Validate and add `tx`; a spend of what the mempool already spends replaces (BIP125) when
        `may_replace`, and is refused as a conflict otherwise (re-adding after a reorg)."""
        self._check_standard(tx)
        conflicts = sorted({self.mempool_spends[(i.txid, i.vout)] for i in tx.inputs
                            if (i.txid, i.vout) in self.mempool_spends})
        if conflicts and (not may_replace or not all(replacement.signals(self.mempool[t].tx) for t in conflicts)):
            raise rejected("txn-mempool-conflict")  # bitcoind checks the opt-in before the inputs
        coins = self._spent_coins(tx)
        fee = sum(c.value for c in coins) - sum(o.value for o in tx.outputs)
        if fee < 0:
            raise rejected("bad-txns-in-belowout")
        if fee < tx.vsize * MIN_RELAY_SAT_VB:
            raise rejected(f"min relay fee not met, {fee} < {tx.vsize * MIN_RELAY_SAT_VB}")
        evicted = self._replaceable(tx, fee, conflicts) if conflicts else []
        if verify_scripts:
            for index, coin in enumerate(coins):
                self._verify_input(tx, index, coin)
        for txid in evicted:
            self._evict(txid)
        self.txs[tx.txid] = tx
        self.prevouts[tx.txid] = coins
        self.mempool[tx.txid] = MempoolEntry(tx, fee, int(self._clock()), self.height)
        for i in tx.inputs:
            self.mempool_spends[(i.txid, i.vout)] = tx.txid

    def _check_standard(self, tx: Tx) -> None:
        if tx.is_coinbase() or any(i.txid == NULL_TXID for i in tx.inputs):
            raise RpcFailure(-26, "coinbase")
        if tx.version not in (1, 2, 3):
            raise rejected("version")
        if tx.weight > MAX_STANDARD_WEIGHT:
            raise rejected("tx-size")
        if len({(i.txid, i.vout) for i in tx.inputs}) != len(tx.inputs):
            raise rejected("bad-txns-inputs-duplicate")
        if sum(o.value for o in tx.outputs) > MAX_MONEY:
            raise rejected("bad-txns-txouttotal-toolarge")
        for out in tx.outputs:
            if not is_standard_output(out.script_pubkey):
                raise rejected("scriptpubkey")
            if out.value < dust_limit(out.script_pubkey):
                raise rejected("dust")
        if tx.locktime and tx.locktime >= min(self.height + 1, 500_000_000) and \
                any(i.sequence != 0xFFFFFFFF for i in tx.inputs):
            raise rejected("non-final")

    def _replaceable(self, tx: Tx, fee: int, conflicts: list[str]) -> list[str]:
        """The txids `tx` evicts (its conflicts and their descendants); RpcFailure -26 in bitcoind's
        words when the BIP125 rules refuse the replacement."""
        evicted = self._with_descendants(conflicts)
        candidates = {txid: replacement.Candidate(self.mempool[txid].tx, self.mempool[txid].fee) for txid in evicted}
        try:
            replacement.check(tx, fee, [candidates[t] for t in conflicts], list(candidates.values()), set(self.mempool))
        except replacement.Refused as refusal:
            raise rejected(str(refusal)) from None
        return evicted

    def _with_descendants(self, txids: list[str]) -> list[str]:
        """`txids` and every mempool transaction spending their outputs, transitively."""
        found, queue = list(txids), list(txids)
        while queue:
            parent = queue.pop()
            for n in range(len(self.mempool[parent].tx.outputs)):
                child = self.mempool_spends.get((parent, n))
                if child is not None and child not in found:
                    found.append(child)
                    queue.append(child)
        return found

    def _evict(self, txid: str) -> None:
        """Remove a replaced transaction from the mempool (it stays known in `txs`, like any
        transaction the node saw, but getrawtransaction no longer finds it)."""
        entry = self.mempool.pop(txid)
        for i in entry.tx.inputs:
            if self.mempool_spends.get((i.txid, i.vout)) == txid:
                del self.mempool_spends[(i.txid, i.vout)]

    def _spent_coins(self, tx: Tx) -> list[Coin]:
        """The outputs `tx` spends: unspent in the chain, or in the mempool (a conflicting mempool
        spend is judged by the replacement rules, not here)."""
        coins = []
        for i in tx.inputs:
            outpoint = (i.txid, i.vout)
            found = self._output(outpoint)
            if found is None:
                raise RpcFailure(-25, "bad-txns-inputs-missingorspent")
            if found.coinbase and self.height + 1 - found.height < COINBASE_MATURITY:
                raise rejected(f"bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth "
                               f"{self.height + 1 - found.height}")
            coins.append(found)
        return coins

    @staticmethod
    def _verify_input(tx: Tx, index: int, coin: Coin) -> None:
        spent = tx.inputs[index]
        script = coin.script
        if not (len(script) == 22 and script[:2] == b"\x00\x14"):
            raise rejected("non-mandatory-script-verify-flag (this devnet node spends P2WPKH outputs only)")
        if spent.script_sig:
            raise rejected("mandatory-script-verify-flag-failed (Witness requires empty scriptSig)")
        if len(spent.witness) != 2:
            raise rejected("mandatory-script-verify-flag-failed (Witness program hash mismatch)")
        signature, public_key = spent.witness
        if len(public_key) != 33 or public_key[0] not in (2, 3):
            raise rejected("non-mandatory-script-verify-flag (Using non-compressed keys in segwit)")
        if hash160(public_key) != script[2:]:
            raise rejected("mandatory-script-verify-flag-failed (Witness program hash mismatch)")
        if not signature or signature[-1] != SIGHASH_ALL:
            raise rejected("non-mandatory-script-verify-flag (this devnet node verifies SIGHASH_ALL only)")
        try:
            r, s = der_decode(signature[:-1])
        except ValueError:
            raise rejected("non-mandatory-script-verify-flag (Non-canonical DER signature)") from None
        if s > SECP256K1_N // 2:
            raise rejected("non-mandatory-script-verify-flag (Non-canonical signature: S value is unnecessarily high)")
        digest = bip143_sighash(tx, index, p2wpkh_script_code(script[2:]), coin.value)
        if not (0 < r < SECP256K1_N and 0 < s) or not verify_signature(public_key, digest, r, s):
            raise rejected("mandatory-script-verify-flag-failed (Signature must be zero for failed CHECK(MULTI)SIG operation)")

    # --- blocks -----------------------------------------------------------------------------

    def subsidy(self, height: int) -> int:
        halvings = height // HALVING_INTERVAL
        return 0 if halvings >= 64 else (50 * 100_000_000) >> halvings

    def mine(self, count: int, script: bytes) -> list[str]:
        """generatetoaddress: `count` blocks with the whole mempool, paying `script`."""
        with self.lock:
            return [self._mine_one(script) for _ in range(count)]

    def set_min_fee_rate(self, sat_vb: int) -> None:
        """Start (sat_vb > 0) or end (0) a fee-rate spike: see the module docstring."""
        with self.lock:
            self.min_fee_rate_sat_vb = max(0, sat_vb)

    def withhold(self, txid: str, withheld: bool = True) -> None:
        """Make the miner skip `txid` (it need not be in the mempool yet), or release it."""
        with self.lock:
            (self.withheld.add if withheld else self.withheld.discard)(txid)

    def estimate_sat_vb(self) -> int:
        """What estimatesmartfee answers: the configured rate, or a spike's if higher (0: none)."""
        return max(self.fee_rate_sat_vb, self.min_fee_rate_sat_vb)

    def _block_body(self) -> list[MempoolEntry]:
        """Mempool transactions the next block takes, in mempool (parents-first) order: not withheld,
        paying at least a spike's rate, and with every mempool parent taken too."""
        taken: set[str] = set()
        body = []
        for txid, entry in self.mempool.items():
            parents = {i.txid for i in entry.tx.inputs if i.txid in self.mempool}
            if txid in self.withheld or entry.fee < self.min_fee_rate_sat_vb * entry.tx.vsize or not parents <= taken:
                continue
            taken.add(txid)
            body.append(entry)
        return body

    def _mine_one(self, script: bytes) -> str:
        height = len(self.active)
        body = self._block_body()
        fees = sum(entry.fee for entry in body)
        coinbase = Tx(
            (TxIn(NULL_TXID, 0xFFFFFFFF, sequence=0xFFFFFFFF,
                  script_sig=_push(height.to_bytes(4, "little")) + _push(next(self._extra_nonce).to_bytes(8, "little"))),),
            (TxOut(self.subsidy(height) + fees, script),),
        )
        txs = [coinbase] + [entry.tx for entry in body]
        prev = self.active[-1] if self.active else NULL_TXID
        block_time = max(int(self._clock()), self.blocks[prev].time + 1 if prev in self.blocks else 0)
        root = merkle_root([t.txid for t in txs])
        header = (0x20000000).to_bytes(4, "little") + bytes.fromhex(prev)[::-1] + root + \
            block_time.to_bytes(4, "little") + bytes.fromhex("207fffff")[::-1] + height.to_bytes(4, "little")
        block_hash = sha256d(header)[::-1].hex()
        block = Block(block_hash, height, prev, block_time, root[::-1].hex(), header, [t.txid for t in txs])
        self.txs[coinbase.txid] = coinbase
        self.prevouts[coinbase.txid] = []
        self.blocks[block_hash] = block
        self._connect(block)
        return block_hash

    def _connect(self, block: Block) -> None:
        block.undo = []
        for index, txid in enumerate(block.txids):
            tx = self.txs[txid]
            if index:
                for i in tx.inputs:
                    outpoint = (i.txid, i.vout)
                    block.undo.append((outpoint, self.utxos.pop(outpoint)))
                    self.mempool_spends.pop(outpoint, None)
                self.mempool.pop(txid, None)
            for n, out in enumerate(tx.outputs):
                if out.script_pubkey[:1] != b"\x6a":
                    self.utxos[(txid, n)] = Coin(out.value, out.script_pubkey, block.height, coinbase=index == 0)
            self.tx_block[txid] = block.hash
        self.active.append(block.hash)

    def invalidate(self, block_hash: str) -> None:
        """invalidateblock: disconnect `block_hash` and its descendants; their transactions go back
        to the mempool (those that are still valid), ahead of what was already there."""
        with self.lock:
            if block_hash not in self.blocks:
                raise RpcFailure(-5, "Block not found")
            block = self.blocks[block_hash]
            if block.height == 0:
                raise RpcFailure(-8, "cannot invalidate the genesis block")
            self.invalid.add(block_hash)
            if self.confirmations(block_hash) < 0:
                return
            returned: list[Tx] = []
            while self.height >= block.height:
                returned = self._disconnect_tip() + returned
            waiting = [entry.tx for entry in self.mempool.values()]
            self.mempool.clear()
            self.mempool_spends.clear()
            for tx in returned + waiting:
                try:
                    self._accept(tx, verify_scripts=False, may_replace=False)  # verified when first accepted
                except RpcFailure:
                    pass  # e.g. it spent a coinbase of a disconnected block

    def _disconnect_tip(self) -> list[Tx]:
        block = self.blocks[self.active.pop()]
        for txid in block.txids:
            for n in range(len(self.txs[txid].outputs)):
                self.utxos.pop((txid, n), None)
        for outpoint, coin in block.undo:
            self.utxos[outpoint] = coin
        return [self.txs[txid] for txid in block.txids[1:]]

    # --- the faucet -------------------------------------------------------------------------

    def faucet_send(self, key: bytes, script: bytes, amount: int) -> str:
        """sendtoaddress from the devnet key: a signed P2WPKH transaction through `submit`."""
        from chains.base import Utxo
        from chains.bitcoin import NotEnoughFunds, select_inputs
        from chains.bitcoin_address import address_from_public_key, compress_public_key
        from chains.bitcoin_tx import Spend, build_unsigned, sign_with_key
        from eth_keys import keys

        public = compress_public_key(keys.PrivateKey(key).public_key.to_bytes())
        own_script = p2wpkh_script(hash160(public))
        with self.lock:
            spendable = [Utxo(op[0], op[1], coin.value) for op, coin in self.outputs_paying({own_script}, True)
                         if not (coin.coinbase and self.height + 1 - coin.height < COINBASE_MATURITY)]
            try:
                chosen = select_inputs(spendable, amount, script, own_script, self.fee_rate_sat_vb)
            except NotEnoughFunds as exc:
                raise RpcFailure(-6, f"Insufficient funds ({exc})") from None
            outputs = [TxOut(amount, script)] + ([TxOut(chosen.change, own_script)] if chosen.change else [])
            unsigned = build_unsigned(REGTEST.name, address_from_public_key(public, REGTEST.name),
                                      [Spend(u.txid, u.vout, u.value) for u in chosen.inputs], outputs)
            signed = sign_with_key(unsigned.payload, unsigned.digests, key)
            return self.submit(signed.raw)


def faucet_key(seed: bytes = b"paratro devnet bitcoin faucet") -> bytes:
    """The devnet's publicly known faucet key: never use it for anything real."""
    return hashlib.sha256(seed).digest()
