"""Bitcoin transactions offline: serialisation, BIP143 signing digests, signatures, size estimates.

Why our own code and not bitcoinlib's `Transaction`: this module decides what the signer signs, so
it must be small enough to read and pure (no node, no clock, no database, no config files). It
is checked byte-for-byte against the BIP143 test vectors and against bitcoinlib in the unit tests.

What we build: version 2, native segwit v0 (P2WPKH) inputs only, every input from the sender's
one P2WPKH address, sequence 0xfffffffd (opts in to BIP125 replacement, so a stuck transfer can
be fee-bumped by an explicit, recorded replacement), locktime 0, SIGHASH_ALL. Outputs may pay any
standard script. The payload the pipeline stores is canonical JSON:

    {"format": "btc-p2wpkh/1", "network": ..., "from": <sender P2WPKH address>, "version": 2,
     "locktime": 0, "inputs": [{"txid", "vout", "value", "sequence"}],
     "outputs": [{"script_pubkey": hex, "value"}]}

Input values are in it because BIP143 commits to them: `attach` recomputes every digest from the
payload (it never trusts stored digests) and refuses a signature that does not recover to the
sender's key.

bitcoinlib, when anything needs it (the tests cross-check against it), is imported only through
`load_bitcoinlib()`, which keeps it out of the user's home directory and silent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from chains.base import SignedTransaction, UnsignedTransaction
from chains.bitcoin_address import hash160, p2pkh_script, p2wpkh_program, p2wpkh_script, sha256d
from chains.errors import InvalidAddress, InvalidSignature, MalformedTransaction
from chains.secp256k1 import split_signature

PAYLOAD_FORMAT = "btc-p2wpkh/1"
TX_VERSION = 2
SEQUENCE_RBF = 0xFFFFFFFD
SIGHASH_ALL = 0x01
MAX_MONEY = 21_000_000 * 100_000_000

# Size of one P2WPKH input: outpoint 36 + empty scriptSig 1 + sequence 4 (non-witness), and the
# witness: item count 1 + sig push 1+72 (a low-s DER signature is at most 71 bytes + sighash type)
# + key push 1+33. Estimates use the maximum, so the real transaction is never larger.
_INPUT_BASE = 41
_INPUT_WITNESS = 108


# --- the transaction model ------------------------------------------------------------------------


@dataclass(frozen=True)
class TxIn:
    txid: str  # of the output being spent, as displayed (big-endian hex)
    vout: int
    sequence: int = SEQUENCE_RBF
    script_sig: bytes = b""
    witness: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class TxOut:
    value: int
    script_pubkey: bytes


@dataclass(frozen=True)
class Tx:
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    version: int = TX_VERSION
    locktime: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, init=False)

    @property
    def has_witness(self) -> bool:
        return any(i.witness for i in self.inputs)

    def serialize(self, witness: bool = True) -> bytes:
        """Wire bytes; with `witness` and any witness present, the BIP144 segwit form."""
        segwit = witness and self.has_witness
        parts = [self.version.to_bytes(4, "little")]
        if segwit:
            parts.append(b"\x00\x01")
        parts.append(varint(len(self.inputs)))
        for i in self.inputs:
            parts += [bytes.fromhex(i.txid)[::-1], i.vout.to_bytes(4, "little"), varbytes(i.script_sig),
                      i.sequence.to_bytes(4, "little")]
        parts.append(varint(len(self.outputs)))
        for o in self.outputs:
            parts += [o.value.to_bytes(8, "little"), varbytes(o.script_pubkey)]
        if segwit:
            for i in self.inputs:
                parts.append(varint(len(i.witness)) + b"".join(varbytes(item) for item in i.witness))
        parts.append(self.locktime.to_bytes(4, "little"))
        return b"".join(parts)

    @property
    def txid(self) -> str:
        if "txid" not in self._cache:
            self._cache["txid"] = sha256d(self.serialize(witness=False))[::-1].hex()
        return str(self._cache["txid"])

    @property
    def wtxid(self) -> str:
        return sha256d(self.serialize())[::-1].hex()

    @property
    def weight(self) -> int:
        return 3 * len(self.serialize(witness=False)) + len(self.serialize())

    @property
    def vsize(self) -> int:
        return -(-self.weight // 4)

    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].txid == "00" * 32 and self.inputs[0].vout == 0xFFFFFFFF


def varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def varbytes(data: bytes) -> bytes:
    return varint(len(data)) + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated transaction")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def varint(self) -> int:
        first = self.int(1)
        return first if first < 0xFD else self.int({0xFD: 2, 0xFE: 4, 0xFF: 8}[first])

    def varbytes(self) -> bytes:
        return self.take(self.varint())


def parse_tx(raw: bytes) -> Tx:
    """A transaction from its wire bytes (legacy or BIP144 segwit); ValueError if malformed."""
    r = _Reader(bytes(raw))
    version = r.int(4)
    segwit = r.data[r.pos:r.pos + 2] == b"\x00\x01"
    if segwit:
        r.take(2)
    inputs = []
    for _ in range(r.varint()):
        txid = r.take(32)[::-1].hex()
        inputs.append(TxIn(txid, r.int(4), script_sig=r.varbytes(), sequence=r.int(4)))
    outputs = [TxOut(r.int(8), r.varbytes()) for _ in range(r.varint())]
    if segwit:
        inputs = [replace(i, witness=tuple(r.varbytes() for _ in range(r.varint()))) for i in inputs]
        if not any(i.witness for i in inputs):
            raise ValueError("segwit marker without any witness")
    locktime = r.int(4)
    if r.pos != len(r.data):
        raise ValueError("trailing bytes after the transaction")
    if not inputs or not outputs:
        raise ValueError("a transaction needs inputs and outputs")
    return Tx(tuple(inputs), tuple(outputs), version, locktime)


# --- BIP143 digest and signatures -------------------------------------------------------------------


def p2wpkh_script_code(pubkey_hash: bytes) -> bytes:
    """BIP143 scriptCode of a P2WPKH input: the P2PKH script of the same key hash."""
    return p2pkh_script(pubkey_hash)


def bip143_sighash(tx: Tx, index: int, script_code: bytes, value: int, sighash_type: int = SIGHASH_ALL) -> bytes:
    """The BIP143 (segwit v0) signature hash of input `index`; SIGHASH_ALL is all we sign."""
    if sighash_type != SIGHASH_ALL:
        raise MalformedTransaction(f"only SIGHASH_ALL is supported, not {sighash_type:#x}")
    hash_prevouts = sha256d(b"".join(bytes.fromhex(i.txid)[::-1] + i.vout.to_bytes(4, "little") for i in tx.inputs))
    hash_sequence = sha256d(b"".join(i.sequence.to_bytes(4, "little") for i in tx.inputs))
    hash_outputs = sha256d(b"".join(o.value.to_bytes(8, "little") + varbytes(o.script_pubkey) for o in tx.outputs))
    spent = tx.inputs[index]
    preimage = b"".join([
        tx.version.to_bytes(4, "little"), hash_prevouts, hash_sequence,
        bytes.fromhex(spent.txid)[::-1], spent.vout.to_bytes(4, "little"),
        varbytes(script_code), value.to_bytes(8, "little"), spent.sequence.to_bytes(4, "little"),
        hash_outputs, tx.locktime.to_bytes(4, "little"), sighash_type.to_bytes(4, "little"),
    ])
    return sha256d(preimage)


def der_encode(r: int, s: int) -> bytes:
    """Strict DER (BIP66) of (r, s)."""
    def integer(x: int) -> bytes:
        body = x.to_bytes((x.bit_length() + 7) // 8 or 1, "big")
        if body[0] & 0x80:
            body = b"\x00" + body
        return b"\x02" + bytes([len(body)]) + body

    content = integer(r) + integer(s)
    return b"\x30" + bytes([len(content)]) + content


def der_decode(sig: bytes) -> tuple[int, int]:
    """(r, s) of a strict-DER signature (BIP66 rules); ValueError otherwise."""
    if len(sig) < 8 or len(sig) > 72 or sig[0] != 0x30 or sig[1] != len(sig) - 2:
        raise ValueError("not a DER sequence")
    values = []
    pos = 2
    for _ in range(2):
        if pos + 2 > len(sig) or sig[pos] != 0x02:
            raise ValueError("not a DER integer")
        size = sig[pos + 1]
        body = sig[pos + 2:pos + 2 + size]
        if size == 0 or len(body) != size or body[0] & 0x80 or (size > 1 and body[0] == 0 and not body[1] & 0x80):
            raise ValueError("non-canonical DER integer")
        values.append(int.from_bytes(body, "big"))
        pos += 2 + size
    if pos != len(sig):
        raise ValueError("trailing bytes in DER signature")
    return values[0], values[1]


def recover_public_key(digest: bytes, v: int, r: int, s: int) -> bytes:
    """The 33-byte compressed key that made (v, r, s) over `digest`; InvalidSignature if none."""
    from eth_keys import keys
    from eth_keys.exceptions import BadSignature

    try:
        return bytes(keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest).to_compressed_bytes())
    except (BadSignature, ValueError) as exc:
        raise InvalidSignature(f"signature does not recover a public key: {exc}") from None


def verify_signature(public_key: bytes, digest: bytes, r: int, s: int) -> bool:
    """Plain ECDSA verification of (r, s) over `digest` by a 33-byte compressed key."""
    from eth_keys import keys
    from eth_keys.exceptions import BadSignature, ValidationError

    try:
        key = keys.PublicKey.from_compressed_bytes(public_key)
        return bool(key.verify_msg_hash(digest, keys.Signature(vrs=(0, r, s))))
    except (BadSignature, ValidationError, ValueError):
        return False


# --- sizes ------------------------------------------------------------------------------------------


def estimate_vsize(n_inputs: int, output_scripts: Sequence[bytes]) -> int:
    """Upper bound of the virtual size of a transaction spending `n_inputs` P2WPKH inputs."""
    base = 4 + len(varint(n_inputs)) + n_inputs * _INPUT_BASE + len(varint(len(output_scripts))) + 4
    base += sum(8 + len(varbytes(script)) for script in output_scripts)
    witness = 2 + n_inputs * _INPUT_WITNESS
    return -(-(4 * base + witness) // 4)


# --- the stored payload -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    """An output the sender spends, with the value BIP143 commits to."""

    txid: str
    vout: int
    value: int


def _check_amount(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MONEY:
        raise MalformedTransaction(f"{what} must be an integer number of satoshi, got {value!r}"[:200])
    return value


def _check_txid(txid: object) -> str:
    if not isinstance(txid, str) or len(txid) != 64 or any(c not in "0123456789abcdef" for c in txid):
        raise MalformedTransaction(f"not a lowercase hex txid: {txid!r}"[:200])
    return txid


def encode_payload(network: str, sender: str, spends: Sequence[Spend], outputs: Sequence[TxOut]) -> bytes:
    doc = {
        "format": PAYLOAD_FORMAT, "network": network, "from": sender, "version": TX_VERSION, "locktime": 0,
        "inputs": [{"txid": s.txid, "vout": s.vout, "value": s.value, "sequence": SEQUENCE_RBF} for s in spends],
        "outputs": [{"script_pubkey": o.script_pubkey.hex(), "value": o.value} for o in outputs],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Payload:
    network: str
    sender: str
    pubkey_hash: bytes
    tx: Tx  # unsigned
    values: tuple[int, ...]

    @property
    def fee(self) -> int:
        return sum(self.values) - sum(o.value for o in self.tx.outputs)

    def digests(self) -> tuple[bytes, ...]:
        code = p2wpkh_script_code(self.pubkey_hash)
        return tuple(bip143_sighash(self.tx, n, code, value) for n, value in enumerate(self.values))


def decode_payload(payload: bytes) -> Payload:
    """The payload `build_unsigned` made, fully re-validated; MalformedTransaction otherwise."""
    try:
        doc = json.loads(payload)
        if not isinstance(doc, dict) or doc.get("format") != PAYLOAD_FORMAT:
            raise MalformedTransaction(f"payload is not a {PAYLOAD_FORMAT} document")
        network, sender = doc["network"], doc["from"]
        pubkey_hash = p2wpkh_program(sender, network)
        inputs, values = [], []
        for item in doc["inputs"]:
            vout = item["vout"]
            if not isinstance(vout, int) or isinstance(vout, bool) or not 0 <= vout < 2**32:
                raise MalformedTransaction(f"bad output index {vout!r}")
            inputs.append(TxIn(_check_txid(item["txid"]), vout, sequence=SEQUENCE_RBF))
            values.append(_check_amount(item["value"], "input value"))
        outputs = tuple(TxOut(_check_amount(o["value"], "output value"), bytes.fromhex(o["script_pubkey"]))
                        for o in doc["outputs"])
        if doc.get("version") != TX_VERSION or doc.get("locktime") != 0 or not inputs or not outputs:
            raise MalformedTransaction("payload has an unexpected version, locktime, or no inputs/outputs")
    except MalformedTransaction:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, InvalidAddress) as exc:
        raise MalformedTransaction(f"payload is not a {PAYLOAD_FORMAT} document: {exc!r}"[:300]) from None
    result = Payload(network, sender, pubkey_hash, Tx(tuple(inputs), outputs), tuple(values))
    if result.fee < 0:
        raise MalformedTransaction("outputs exceed inputs")
    return result


def build_unsigned(network: str, sender: str, spends: Sequence[Spend], outputs: Sequence[TxOut]) -> UnsignedTransaction:
    """The payload and one BIP143 digest per input (all inputs are the sender's P2WPKH outputs)."""
    payload = encode_payload(network, sender, spends, outputs)
    return UnsignedTransaction(payload=payload, digests=decode_payload(payload).digests())


def attach(payload: bytes, signatures: Sequence[bytes]) -> SignedTransaction:
    """The signed segwit transaction; InvalidSignature unless every signature is the sender's."""
    decoded = decode_payload(payload)
    digests = decoded.digests()
    if len(signatures) != len(digests):
        raise InvalidSignature(f"the transaction has {len(digests)} inputs, got {len(signatures)} signatures")
    inputs = []
    for n, (spent, digest, signature) in enumerate(zip(decoded.tx.inputs, digests, signatures)):
        v, r, s = split_signature(signature)
        public_key = recover_public_key(digest, v, r, s)
        if hash160(public_key) != decoded.pubkey_hash:
            raise InvalidSignature(f"signature {n} is not by the key of {decoded.sender}")
        inputs.append(replace(spent, witness=(der_encode(r, s) + bytes([SIGHASH_ALL]), public_key)))
    signed = replace(decoded.tx, inputs=tuple(inputs))
    return SignedTransaction(raw=signed.serialize(), tx_hash=signed.txid)


def sign_with_key(payload: bytes, digests: Sequence[bytes], private_key: bytes) -> SignedTransaction:
    """Sign with a plain private key (devnet faucet, tests) through the same `attach` path."""
    from eth_keys import keys

    key = keys.PrivateKey(private_key)
    return attach(payload, [key.sign_msg_hash(d).to_bytes() for d in digests])


def p2wpkh_output(pubkey_hash: bytes, value: int) -> TxOut:
    return TxOut(value, p2wpkh_script(pubkey_hash))


# --- bitcoinlib, kept out of $HOME --------------------------------------------------------------------


def bitcoinlib_data_dir() -> Path:
    """$BCL_DATA_DIR, else $PARATRO_HOME/.devnet/bitcoinlib, else ./.devnet/bitcoinlib."""
    if os.environ.get("BCL_DATA_DIR"):
        return Path(os.environ["BCL_DATA_DIR"]).expanduser()
    return Path(os.environ.get("PARATRO_HOME") or Path.cwd()).resolve() / ".devnet" / "bitcoinlib"


def load_bitcoinlib() -> ModuleType:
    """Import bitcoinlib with its data directory out of the user's home and its logging off.

    bitcoinlib reads `$BCL_DATA_DIR/config.ini` at import, and on a first run (no install.log)
    overwrites it with defaults (logging on) and copies its data files (networks.json, ...) there.
    Doing that first run ourselves, with our config.ini, keeps logging off for good.
    """
    import importlib.util
    import shutil
    import sys

    if "bitcoinlib" not in sys.modules:
        data_dir = bitcoinlib_data_dir()
        data_dir.mkdir(parents=True, exist_ok=True)
        os.environ["BCL_DATA_DIR"] = str(data_dir)
        if not (data_dir / "install.log").exists():
            spec = importlib.util.find_spec("bitcoinlib")
            if spec is None or spec.origin is None:
                raise ImportError("bitcoinlib is not installed")
            for source in (Path(spec.origin).parent / "data").glob("*.json"):
                shutil.copyfile(source, data_dir / source.name)
            (data_dir / "config.ini").write_text("[logs]\nenable_bitcoinlib_logging = False\n")
            (data_dir / "install.log").write_text("initialised by chains.bitcoin_tx.load_bitcoinlib\n")
    import logging

    import bitcoinlib
    import bitcoinlib.transactions  # noqa: F401 - what the callers use

    logger = logging.getLogger("bitcoinlib")
    logger.handlers.clear()
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return bitcoinlib
