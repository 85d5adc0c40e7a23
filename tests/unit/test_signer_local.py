"""The local signer: one sealed key per wallet and curve; sign once per request; never leak a secret."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_keys import keys as eth_keys
from eth_utils import keccak
from sqlalchemy import Engine, func, select, text

from chains.base import Curve
from pipeline.db import make_engine
from signer.base import PublicKey, SignatureRefused, SignerError, SignerUnavailable, UnknownKey
from signer.local import LocalKeySigner, SignatureRequest, SignerKey, new_master_key

W1 = "w_01JAAAAAAAAAAAAAAAAAAAAAA1"
W2 = "w_01JAAAAAAAAAAAAAAAAAAAAAA2"
W3 = "w_01JAAAAAAAAAAAAAAAAAAAAAA3"
DIGEST = keccak(b"transfer 1")
OTHER_DIGEST = keccak(b"transfer 2")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'signer.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def signer(engine: Engine, master_key: str) -> LocalKeySigner:
    s = LocalKeySigner(engine, master_key)
    s.install()
    return s


def key_row(engine: Engine, wallet_id: str, curve: str = "secp256k1") -> tuple[bytes, bytes]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT sealed_private_key, public_key FROM signer_keys WHERE wallet_id = :w AND curve = :c"),
                           {"w": wallet_id, "c": curve}).one()
        return bytes(row[0]), bytes(row[1])


def unseal(master_key: str, sealed: bytes, wallet_id: str, curve: str) -> bytes:
    """What only the holder of the master key can do: open the sealed key."""
    aead = AESGCM(base64.urlsafe_b64decode(master_key))
    return aead.decrypt(sealed[:12], sealed[12:], f"{wallet_id}|{curve}".encode())


def count(engine: Engine, model: type) -> int:
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


# -- keys ------------------------------------------------------------------------------------------

def test_given_a_wallet_when_its_key_is_created_twice_then_the_same_key_comes_back(signer: LocalKeySigner, engine: Engine) -> None:
    first = signer.create_key(W1, Curve.SECP256K1)
    again = signer.create_key(W1, Curve.SECP256K1)
    assert first == again == signer.public_key(W1, Curve.SECP256K1)
    assert first.curve is Curve.SECP256K1 and len(first.key) == 64
    assert count(engine, SignerKey) == 1


def test_each_wallet_and_curve_gets_its_own_key(signer: LocalKeySigner) -> None:
    a, b = signer.create_key(W1, Curve.SECP256K1), signer.create_key(W2, Curve.SECP256K1)
    ed = signer.create_key(W1, Curve.ED25519)
    assert a.key != b.key
    assert ed.curve is Curve.ED25519 and len(ed.key) == 32
    assert signer.create_key(W1, "ed25519") == ed  # the curve may be given by value


def test_given_a_created_key_then_it_is_sealed_at_rest_and_opens_only_with_the_master_key(
    signer: LocalKeySigner, engine: Engine, master_key: str, tmp_path: Path
) -> None:
    public = signer.create_key(W1, Curve.SECP256K1)
    sealed, stored_public = key_row(engine, W1)

    private = unseal(master_key, sealed, W1, "secp256k1")  # the test holds the master key

    assert eth_keys.PrivateKey(private).public_key.to_bytes() == public.key == stored_public
    assert len(sealed) == 12 + 32 + 16  # nonce || ciphertext || GCM tag
    assert private not in sealed and private.hex().encode() not in sealed
    engine.dispose()  # checkpoint the WAL, then look at every byte on disk
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("signer.db*"))
    assert private not in on_disk and private.hex().encode() not in on_disk


def test_the_same_private_key_is_sealed_differently_each_time(signer: LocalKeySigner, engine: Engine, master_key: str) -> None:
    signer.create_key(W1, Curve.SECP256K1)
    sealed, _ = key_row(engine, W1)
    private = unseal(master_key, sealed, W1, "secp256k1")
    assert signer._seal(private, W1, Curve.SECP256K1) != sealed  # fresh random nonce


def test_given_an_unknown_wallet_then_unknown_key(signer: LocalKeySigner) -> None:
    with pytest.raises(UnknownKey):
        signer.public_key(W1, Curve.SECP256K1)
    with pytest.raises(UnknownKey):
        signer.request_signature("r1", W1, Curve.SECP256K1, DIGEST)
    signer.create_key(W1, Curve.SECP256K1)
    with pytest.raises(UnknownKey):
        signer.request_signature("r1", W1, Curve.ED25519, DIGEST)  # no ed25519 key for it
    assert signer.fetch_signature("r1") is None


# -- signing ---------------------------------------------------------------------------------------

def test_given_a_secp256k1_request_then_the_signature_recovers_to_the_wallets_key(signer: LocalKeySigner) -> None:
    public = signer.create_key(W1, Curve.SECP256K1)
    assert signer.fetch_signature("r1") is None  # nothing asked yet

    signer.request_signature("r1", W1, Curve.SECP256K1, DIGEST)
    signature = signer.fetch_signature("r1")

    assert signature is not None and len(signature) == 65 and signature[64] in (0, 1)
    recovered = eth_keys.Signature(signature).recover_public_key_from_msg_hash(DIGEST)
    assert recovered.to_bytes() == public.key


def test_given_an_ed25519_request_then_the_signature_verifies_under_the_wallets_key(signer: LocalKeySigner) -> None:
    public = signer.create_key(W1, Curve.ED25519)
    message = b"solana message bytes of any length"
    signer.request_signature("r-ed", W1, Curve.ED25519, message)
    signature = signer.fetch_signature("r-ed")
    assert signature is not None and len(signature) == 64
    Ed25519PublicKey.from_public_bytes(public.key).verify(signature, message)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public.key).verify(signature, message + b"!")


def test_given_the_same_request_again_then_it_is_a_noop_with_the_same_signature(signer: LocalKeySigner, engine: Engine) -> None:
    signer.create_key(W1, Curve.SECP256K1)
    signer.request_signature("r1", W1, Curve.SECP256K1, DIGEST)
    first = signer.fetch_signature("r1")
    signer.request_signature("r1", W1, Curve.SECP256K1, DIGEST)  # a redelivered task asks again
    assert signer.fetch_signature("r1") == first
    assert count(engine, SignatureRequest) == 1


@pytest.mark.parametrize(("wallet", "digest"), [(W1, OTHER_DIGEST), (W2, DIGEST)], ids=["other digest", "other wallet"])
def test_given_a_request_id_reused_for_another_payload_then_signature_refused(
    signer: LocalKeySigner, engine: Engine, wallet: str, digest: bytes
) -> None:
    signer.create_key(W1, Curve.SECP256K1)
    signer.create_key(W2, Curve.SECP256K1)
    signer.request_signature("r1", W1, Curve.SECP256K1, DIGEST)
    first = signer.fetch_signature("r1")
    with pytest.raises(SignatureRefused, match="r1"):
        signer.request_signature("r1", wallet, Curve.SECP256K1, digest)
    assert signer.fetch_signature("r1") == first  # the original stands
    assert count(engine, SignatureRequest) == 1


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33, b"x" * 64])
def test_a_secp256k1_digest_must_be_32_bytes(signer: LocalKeySigner, digest: bytes) -> None:
    signer.create_key(W1, Curve.SECP256K1)
    with pytest.raises(SignatureRefused, match="32-byte"):
        signer.request_signature("r1", W1, Curve.SECP256K1, digest)
    assert signer.fetch_signature("r1") is None


# -- the master key and the sealed rows ------------------------------------------------------------

def test_given_a_different_master_key_then_signing_is_refused(signer: LocalKeySigner, engine: Engine) -> None:
    signer.create_key(W1, Curve.SECP256K1)
    other = LocalKeySigner(engine, new_master_key())
    with pytest.raises(SignatureRefused, match="does not open"):
        other.request_signature("r1", W1, Curve.SECP256K1, DIGEST)
    assert other.fetch_signature("r1") is None
    # public keys are not secret: the other instance can still read them
    assert other.public_key(W1, Curve.SECP256K1) == signer.public_key(W1, Curve.SECP256K1)


def test_given_a_sealed_key_copied_onto_another_wallets_row_then_signing_is_refused(signer: LocalKeySigner, engine: Engine) -> None:
    # Given W1's sealed key (and public key) pasted over W2's row, e.g. by a bad restore or an attacker
    w1 = signer.create_key(W1, Curve.SECP256K1)
    signer.create_key(W2, Curve.SECP256K1)
    sealed, public = key_row(engine, W1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE signer_keys SET sealed_private_key = :s, public_key = :p WHERE wallet_id = :w"),
                     {"s": sealed, "p": public, "w": W2})
    assert signer.public_key(W2, Curve.SECP256K1) == PublicKey(Curve.SECP256K1, w1.key)
    # Then W2 cannot sign with W1's key
    with pytest.raises(SignatureRefused):
        signer.request_signature("r2", W2, Curve.SECP256K1, DIGEST)


def test_given_a_sealed_row_moved_to_another_wallet_id_then_signing_is_refused(signer: LocalKeySigner, engine: Engine) -> None:
    signer.create_key(W1, Curve.SECP256K1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE signer_keys SET wallet_id = :new WHERE wallet_id = :old"), {"new": W3, "old": W1})
    with pytest.raises(SignatureRefused):
        signer.request_signature("r3", W3, Curve.SECP256K1, DIGEST)


def test_given_a_sealed_row_moved_to_another_curve_then_signing_is_refused(signer: LocalKeySigner, engine: Engine) -> None:
    signer.create_key(W1, Curve.SECP256K1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE signer_keys SET curve = 'ed25519' WHERE wallet_id = :w"), {"w": W1})
    with pytest.raises(SignatureRefused):
        signer.request_signature("r1", W1, Curve.ED25519, DIGEST)


@pytest.mark.parametrize(
    "bad",
    ["", "short", "!!!!not base64!!!!", base64.urlsafe_b64encode(b"k" * 16).decode(),
     base64.urlsafe_b64encode(b"k" * 31).decode(), base64.urlsafe_b64encode(b"k" * 33).decode(),
     base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")[:-1]],
    ids=["empty", "short", "not base64", "16 bytes", "31 bytes", "33 bytes", "truncated"],
)
def test_given_a_malformed_master_key_then_signer_error_that_does_not_echo_it(engine: Engine, bad: str) -> None:
    with pytest.raises(SignerError) as info:
        LocalKeySigner(engine, bad)
    assert type(info.value) is SignerError and info.value.transient is False
    if bad:
        assert bad not in str(info.value)
    assert info.value.__cause__ is None


def test_new_master_key_is_32_random_bytes_in_base64url() -> None:
    a, b = new_master_key(), new_master_key()
    assert a != b
    assert len(base64.urlsafe_b64decode(a)) == 32


def test_no_secret_appears_in_any_error_message(signer: LocalKeySigner, engine: Engine, master_key: str) -> None:
    signer.create_key(W1, Curve.SECP256K1)
    sealed, _ = key_row(engine, W1)
    private = unseal(master_key, sealed, W1, "secp256k1")
    other_master = new_master_key()
    errors: list[BaseException] = []
    attempts = [
        lambda: LocalKeySigner(engine, other_master).request_signature("r1", W1, Curve.SECP256K1, DIGEST),
        lambda: LocalKeySigner(engine, master_key[:-4]),
        lambda: signer.request_signature("r2", W1, Curve.SECP256K1, b"short"),
        lambda: signer.request_signature("r3", W2, Curve.SECP256K1, DIGEST),
    ]
    for attempt in attempts:
        with pytest.raises(SignerError) as info:
            attempt()
        errors.append(info.value)
    signer.request_signature("r4", W1, Curve.SECP256K1, DIGEST)
    with pytest.raises(SignerError) as info:
        signer.request_signature("r4", W1, Curve.SECP256K1, OTHER_DIGEST)
    errors.append(info.value)

    secrets = [master_key, other_master, master_key[:-4], private.hex(), private.hex().upper(),
               base64.b64encode(private).decode(), sealed.hex()]
    for error in errors:
        chain = [error, error.__cause__, error.__context__ if not error.__suppress_context__ else None]
        shown = " | ".join(f"{e!s} {e!r}" for e in chain if e is not None)
        for secret in secrets:
            assert secret not in shown, f"{type(error).__name__} leaks secret material"


def test_error_transience() -> None:
    assert SignerUnavailable.transient is True
    for error in (SignerError, UnknownKey, SignatureRefused):
        assert error.transient is False


def test_given_a_busy_store_then_signer_unavailable(tmp_path: Path, master_key: str) -> None:
    # Given another connection holding the SQLite write lock, and a signer with a short busy timeout
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    setup = LocalKeySigner(make_engine(url), master_key)
    setup.install()
    impatient = create_engine(url, connect_args={"timeout": 0.05})
    holder_engine = create_engine(url)
    holder = holder_engine.raw_connection()
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(SignerUnavailable):
            LocalKeySigner(impatient, master_key).create_key(W1, Curve.SECP256K1)
    finally:
        holder.rollback()
        holder.close()
        holder_engine.dispose()
        impatient.dispose()


def test_the_local_signer_and_the_fake_agree_on_the_protocol_shape() -> None:
    # Both must offer exactly the Signer protocol's four methods used by the pipeline.
    from tests.unit.fakes import FakeSigner

    for method in ("create_key", "public_key", "request_signature", "fetch_signature"):
        assert callable(getattr(LocalKeySigner, method)) and callable(getattr(FakeSigner, method))


def test_the_ed25519_public_key_matches_the_sealed_private_key(signer: LocalKeySigner, engine: Engine, master_key: str) -> None:
    public = signer.create_key(W1, Curve.ED25519)
    sealed, _ = key_row(engine, W1, "ed25519")
    private = unseal(master_key, sealed, W1, "ed25519")
    derived = Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert derived == public.key
