"""A local single-key signer: one generated key per wallet and curve, encrypted at rest.

This is not MPC: it holds whole private keys, each sealed with AES-256-GCM under a master key
that lives only in the environment (`PARATRO_SIGNER_MASTER_KEY`), with the wallet id and curve as
associated data so a sealed key cannot be moved to another wallet's row. It implements the same
asynchronous `Signer` protocol an MPC service would (request, then fetch), and answers at once.

Cost per signature: one DB transaction (is the request known? else sign and store it). A key is
unsealed once per signer instance (so once per worker process) and kept opened in memory
(`_OpenKeys`, bounded, least recently used out first); it is never logged, returned, put in an
error or shown by a repr. The signatures this instance just stored are remembered (bounded), so
the `fetch_signature` that follows a `request_signature` needs no second transaction: a stored
request is never changed, so the copy cannot go stale.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_keys import keys as eth_keys
from sqlalchemy import DateTime, Engine, LargeBinary, String, Text, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from chains.base import Curve
from signer.base import (
    KeyRef,
    MasterKeyMismatch,
    PublicKey,
    SignatureRefused,
    SignerError,
    SignerUnavailable,
    UnknownKey,
)

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
OPEN_KEYS_MAX = 10_000  # opened keys kept per signer instance (a worker process)
RECENT_SIGNATURES_MAX = 1_024  # stored requests remembered for the fetch that follows


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class SignerBase(DeclarativeBase):
    pass


class SignerKey(SignerBase):
    __tablename__ = "signer_keys"

    wallet_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_name: Mapped[str] = mapped_column(String(16), primary_key=True)
    curve: Mapped[str] = mapped_column(String(16))
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)  # nonce(12) || AES-GCM ciphertext
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class SignatureRequest(SignerBase):
    __tablename__ = "signer_requests"

    request_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(String(40))
    key_name: Mapped[str] = mapped_column(String(16))
    payloads_sha256: Mapped[str] = mapped_column(String(64))  # what was asked, to refuse a reused id
    signatures: Mapped[str | None] = mapped_column(Text)  # JSON list of hex, in payload order
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


def new_master_key() -> str:
    """A fresh master key in the form `PARATRO_SIGNER_MASTER_KEY` expects (base64url of 32 bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _decode_master_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.encode())
    except (ValueError, TypeError):
        key = b""
    if len(key) != 32:
        raise SignerError("signer master key must be base64url of 32 bytes (see `paratro signer new-master-key`)")
    return key


class _OpenKeys:
    """Unsealed signing keys by (wallet id, key name), bounded, least recently used out first.

    Holds private key material: it has no useful repr and nothing here logs. The sealed row is
    read and opened on a miss only; rows are never rewritten, so an opened key stays right."""

    __slots__ = ("_keys", "_lock", "_max")

    def __init__(self, max_keys: int = OPEN_KEYS_MAX) -> None:
        self._keys: OrderedDict[tuple[str, str], _OpenedKey] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_keys

    def get(self, wallet_id: str, key_name: str) -> "_OpenedKey | None":
        with self._lock:
            found = self._keys.get((wallet_id, key_name))
            if found is not None:
                self._keys.move_to_end((wallet_id, key_name))
            return found

    def put(self, wallet_id: str, key_name: str, key: "_OpenedKey") -> None:
        with self._lock:
            self._keys[(wallet_id, key_name)] = key
            self._keys.move_to_end((wallet_id, key_name))
            while len(self._keys) > self._max:
                self._keys.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<{len(self._keys)} open keys>"


@dataclass(frozen=True)
class _Stored:
    """A request as stored: what was asked (to refuse a reused id) and its signatures."""

    fingerprint: str
    wallet_id: str
    key_name: str
    signatures: tuple[bytes, ...]


class LocalKeySigner:
    """`Signer` backed by sealed keys in a SQL database (the pipeline's, or its own)."""

    def __init__(self, engine: Engine, master_key: str) -> None:
        self._engine = engine
        self._aead = AESGCM(_decode_master_key(master_key))
        self._open = _OpenKeys()
        self._recent: OrderedDict[str, _Stored] = OrderedDict()
        self._recent_lock = threading.Lock()

    def install(self) -> None:
        """Create the signer's tables if missing (the signer owns its schema)."""
        SignerBase.metadata.create_all(self._engine)

    # -- Signer protocol -------------------------------------------------------------------------
    def create_key(self, ref: KeyRef) -> PublicKey:
        private, public = _generate(ref.curve)
        row = SignerKey(wallet_id=ref.wallet_id, key_name=ref.key_name, curve=ref.curve.value, public_key=public,
                        sealed_private_key=self._seal(private, ref))
        try:
            with self._session() as session:
                session.add(row)
        except IntegrityError:
            pass  # created before (a retried request): the existing key stands
        return self.public_key(ref)

    def public_key(self, ref: KeyRef) -> PublicKey:
        with self._session() as session:
            row = session.get(SignerKey, (ref.wallet_id, ref.key_name))
            if row is None or row.curve != ref.curve.value:
                raise UnknownKey(f"no {ref.curve.value} key {ref.key_name!r} for wallet {ref.wallet_id}")
            return PublicKey(ref.curve, row.public_key)

    def request_signature(self, request_id: str, ref: KeyRef, payloads: Sequence[bytes]) -> None:
        if not payloads:
            raise SignatureRefused("nothing to sign")
        if ref.curve is Curve.SECP256K1 and any(len(p) != 32 for p in payloads):
            raise SignatureRefused("secp256k1 signing takes 32-byte digests")
        fingerprint = _fingerprint(payloads)
        remembered = self._remembered(request_id)
        if remembered is not None:
            _same_request(request_id, remembered, ref, fingerprint)
            return
        try:
            # One transaction: known already (a redelivery) -> nothing to do; else sign and store.
            with self._session() as session:
                existing = session.get(SignatureRequest, request_id)
                if existing is not None:
                    _same_request(request_id, _stored(existing), ref, fingerprint)
                    return
                signatures = self._sign(session, ref, payloads)
                session.add(SignatureRequest(request_id=request_id, wallet_id=ref.wallet_id, key_name=ref.key_name,
                                             payloads_sha256=fingerprint,
                                             signatures=json.dumps([sig.hex() for sig in signatures])))
        except IntegrityError:
            # The same request arrived twice at once; the one that was stored decides.
            if not self._known_request(request_id, ref, fingerprint):
                raise SignerUnavailable(f"request {request_id} could not be stored; ask again") from None
            return
        self._remember(request_id, _Stored(fingerprint, ref.wallet_id, ref.key_name, tuple(signatures)))

    def _known_request(self, request_id: str, ref: KeyRef, fingerprint: str) -> bool:
        """True if this exact request exists; SignatureRefused if the id was used for other payloads."""
        with self._session() as session:
            existing = session.get(SignatureRequest, request_id)
            if existing is None:
                return False
            _same_request(request_id, _stored(existing), ref, fingerprint)
            return True

    def fetch_signature(self, request_id: str) -> list[bytes] | None:
        remembered = self._remembered(request_id)
        if remembered is not None:
            return list(remembered.signatures)
        with self._session() as session:
            row = session.get(SignatureRequest, request_id)
            if row is None or row.signatures is None:
                return None
            return [bytes.fromhex(sig) for sig in json.loads(row.signatures)]

    def _remembered(self, request_id: str) -> _Stored | None:
        with self._recent_lock:
            return self._recent.get(request_id)

    def _remember(self, request_id: str, stored: _Stored) -> None:
        """Only once committed: what is remembered is what the database holds."""
        with self._recent_lock:
            self._recent[request_id] = stored
            while len(self._recent) > RECENT_SIGNATURES_MAX:
                self._recent.popitem(last=False)

    # -- internals -------------------------------------------------------------------------------
    def _session(self) -> "_SignerSession":
        return _SignerSession(self._engine)

    def _seal(self, private: bytes, ref: KeyRef) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, private, _associated_data(ref.wallet_id, ref.key_name, ref.curve.value))

    def check_master_key(self, sample: int = 5) -> None:
        """Raise MasterKeyMismatch if none of the `sample` newest sealed keys opens with this master
        key (a worker started with the wrong key would hold every transfer); no keys yet is fine."""
        with self._session() as session:
            rows = session.scalars(select(SignerKey).order_by(SignerKey.created_at.desc()).limit(sample)).all()
        failures = 0
        for row in rows:
            try:
                self._unseal(row)
                return
            except MasterKeyMismatch:
                failures += 1
        if failures:
            raise MasterKeyMismatch(f"PARATRO_SIGNER_MASTER_KEY opens none of the {failures} newest sealed wallet "
                                    "keys: it is not the key they were sealed with")

    def _unseal(self, key: SignerKey) -> bytes:
        try:
            return self._aead.decrypt(key.sealed_private_key[:12], key.sealed_private_key[12:],
                                      _associated_data(key.wallet_id, key.key_name, key.curve))
        except InvalidTag:
            raise MasterKeyMismatch(f"sealed {key.key_name!r} key of wallet {key.wallet_id} does not open with this "
                                    "master key (wrong PARATRO_SIGNER_MASTER_KEY, or the sealed row was moved)") from None

    def _sign(self, session: Session, ref: KeyRef, payloads: Sequence[bytes]) -> list[bytes]:
        opened = self._open.get(ref.wallet_id, ref.key_name)
        if opened is None:
            row = session.get(SignerKey, (ref.wallet_id, ref.key_name))
            if row is None or row.curve != ref.curve.value:
                raise UnknownKey(f"no {ref.curve.value} key {ref.key_name!r} for wallet {ref.wallet_id}")
            opened = _OpenedKey(row.curve, self._unseal(row))
            self._open.put(ref.wallet_id, ref.key_name, opened)
        if opened.curve != ref.curve.value:
            raise UnknownKey(f"no {ref.curve.value} key {ref.key_name!r} for wallet {ref.wallet_id}")
        return opened.sign(payloads)


class _OpenedKey:
    """An unsealed key as the signing library's object (secp256k1: eth_keys; ed25519: cryptography),
    behind a repr that shows nothing: eth_keys' own repr is the private key in hex, and this object
    lives in memory for the process (a log line or an error reporter that renders locals must not
    print it)."""

    __slots__ = ("curve", "_key")

    def __init__(self, curve: str, private: bytes) -> None:
        self.curve = curve
        self._key = (eth_keys.PrivateKey(private) if curve == Curve.SECP256K1.value
                     else Ed25519PrivateKey.from_private_bytes(private))

    def sign(self, payloads: Sequence[bytes]) -> list[bytes]:
        if self.curve == Curve.SECP256K1.value:
            return [self._key.sign_msg_hash(digest).to_bytes() for digest in payloads]
        return [self._key.sign(message) for message in payloads]

    def __repr__(self) -> str:
        return f"<opened {self.curve} key>"

    __str__ = __repr__


def _stored(row: SignatureRequest) -> _Stored:
    signatures = tuple(bytes.fromhex(sig) for sig in json.loads(row.signatures or "[]"))
    return _Stored(row.payloads_sha256, row.wallet_id, row.key_name, signatures)


def _same_request(request_id: str, stored: _Stored, ref: KeyRef, fingerprint: str) -> None:
    """A request id is used once: asking again with other payloads (or another key) is refused."""
    if (stored.fingerprint, stored.wallet_id, stored.key_name) != (fingerprint, ref.wallet_id, ref.key_name):
        raise SignatureRefused(f"request {request_id} was already made for different payloads")


def _associated_data(wallet_id: str, key_name: str, curve: str) -> bytes:
    """Binds a sealed key to its row: moved to another wallet, family or curve, it will not open."""
    return f"{wallet_id}|{key_name}|{curve}".encode()


def _fingerprint(payloads: Sequence[bytes]) -> str:
    digest = hashlib.sha256()
    for payload in payloads:
        digest.update(len(payload).to_bytes(4, "big") + payload)
    return digest.hexdigest()


class _SignerSession:
    """A committed-or-rolled-back session; a busy database is SignerUnavailable (transient)."""

    def __init__(self, engine: Engine) -> None:
        self._session = Session(engine, expire_on_commit=False)

    def __enter__(self) -> Session:
        self._session.begin()
        return self._session

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is None:
                self._session.commit()
            else:
                self._session.rollback()
        except OperationalError as err:
            raise SignerUnavailable(f"signer store busy: {err.orig.__class__.__name__}") from None
        finally:
            self._session.close()
        if isinstance(exc, OperationalError):
            raise SignerUnavailable(f"signer store busy: {exc.orig.__class__.__name__}") from None


def _generate(curve: Curve) -> tuple[bytes, bytes]:
    if curve is Curve.SECP256K1:
        while True:
            private = secrets.token_bytes(32)
            if 0 < int.from_bytes(private, "big") < _SECP256K1_N:
                return private, eth_keys.PrivateKey(private).public_key.to_bytes()
    key = Ed25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


__all__ = ["LocalKeySigner", "new_master_key"]
