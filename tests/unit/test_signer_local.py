"""The local signer: one sealed key per wallet and key name (chain family); sign once per request, one
signature per payload in order; never leak a secret."""

from __future__ import annotations

import base64
import hashlib
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
from signer.base import (
    KeyRef,
    MasterKeyMismatch,
    PublicKey,
    SignatureRefused,
    SignerError,
    SignerUnavailable,
    UnknownKey,
)
from signer.local import LocalKeySigner, SignatureRequest, SignerKey, new_master_key

W1 = "w_01JAAAAAAAAAAAAAAAAAAAAAA1"
W2 = "w_01JAAAAAAAAAAAAAAAAAAAAAA2"
W3 = "w_01JAAAAAAAAAAAAAAAAAAAAAA3"
DIGEST = keccak(b"transfer 1")
OTHER_DIGEST = keccak(b"transfer 2")
# Which key: a wallet has one per chain family; every EVM chain shares "evm".
EVM1 = KeyRef(W1, "evm", Curve.SECP256K1)
EVM2 = KeyRef(W2, "evm", Curve.SECP256K1)
EVM3 = KeyRef(W3, "evm", Curve.SECP256K1)
TRON1 = KeyRef(W1, "tron", Curve.SECP256K1)
BTC1 = KeyRef(W1, "bitcoin", Curve.SECP256K1)
SOL1 = KeyRef(W1, "solana", Curve.ED25519)


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


def key_row(engine: Engine, wallet_id: str, key_name: str = "evm", curve: str = "secp256k1") -> tuple[bytes, bytes]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT sealed_private_key, public_key FROM signer_keys"
                                " WHERE wallet_id = :w AND key_name = :k AND curve = :c"),
                           {"w": wallet_id, "k": key_name, "c": curve}).one()
        return bytes(row[0]), bytes(row[1])


def unseal(master_key: str, sealed: bytes, wallet_id: str, key_name: str, curve: str) -> bytes:
    """What only the holder of the master key can do: open the sealed key."""
    aead = AESGCM(base64.urlsafe_b64decode(master_key))
    return aead.decrypt(sealed[:12], sealed[12:], f"{wallet_id}|{key_name}|{curve}".encode())


def count(engine: Engine, model: type) -> int:
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


# -- keys ------------------------------------------------------------------------------------------

def test_given_a_wallet_when_its_key_is_created_twice_then_the_same_key_comes_back(signer: LocalKeySigner, engine: Engine) -> None:
    first = signer.create_key(EVM1)
    again = signer.create_key(EVM1)
    assert first == again == signer.public_key(EVM1)
    assert first.curve is Curve.SECP256K1 and len(first.key) == 64
    assert count(engine, SignerKey) == 1


def test_each_wallet_and_curve_gets_its_own_key(signer: LocalKeySigner) -> None:
    a, b = signer.create_key(EVM1), signer.create_key(EVM2)
    ed = signer.create_key(SOL1)
    assert a.key != b.key
    assert ed.curve is Curve.ED25519 and len(ed.key) == 32


def test_the_curve_may_be_given_by_value(signer: LocalKeySigner) -> None:
    ed = signer.create_key(SOL1)
    assert signer.create_key(KeyRef(W1, "solana", "ed25519")) == ed  # type: ignore[arg-type]
    assert signer.public_key(KeyRef(W1, "solana", "ed25519")) == ed  # type: ignore[arg-type]


def test_a_secp256k1_key_given_by_value_signs_a_digest(signer: LocalKeySigner) -> None:
    public = signer.create_key(EVM1)
    by_value = KeyRef(W1, "evm", "secp256k1")  # type: ignore[arg-type]
    with pytest.raises(SignatureRefused, match="32-byte"):
        signer.request_signature("r0", by_value, [b"short"])
    signer.request_signature("r1", by_value, [DIGEST])
    [signature] = signer.fetch_signature("r1") or [b""]
    assert eth_keys.Signature(signature).recover_public_key_from_msg_hash(DIGEST).to_bytes() == public.key


def test_each_key_name_of_one_wallet_is_its_own_key(signer: LocalKeySigner, engine: Engine) -> None:
    # Given one wallet with a key per family (three of them on the same curve)
    evm, tron, btc, sol = (signer.create_key(ref) for ref in (EVM1, TRON1, BTC1, SOL1))

    # Then they are four different keys, each readable under its own name only
    assert len({evm.key, tron.key, btc.key, sol.key}) == 4
    assert [signer.public_key(ref) for ref in (EVM1, TRON1, BTC1, SOL1)] == [evm, tron, btc, sol]
    assert count(engine, SignerKey) == 4
    with pytest.raises(UnknownKey):
        signer.public_key(KeyRef(W1, "evm", Curve.ED25519))  # a key name has one curve
    with pytest.raises(UnknownKey):
        signer.public_key(KeyRef(W2, "tron", Curve.SECP256K1))  # and belongs to one wallet

    # And a signature under each name is by that name's key
    signer.request_signature("r-evm", EVM1, [DIGEST])
    signer.request_signature("r-tron", TRON1, [DIGEST])
    recovered = {name: eth_keys.Signature(signer.fetch_signature(f"r-{name}")[0]).recover_public_key_from_msg_hash(DIGEST)
                 for name in ("evm", "tron")}
    assert (recovered["evm"].to_bytes(), recovered["tron"].to_bytes()) == (evm.key, tron.key)


def test_given_a_created_key_then_it_is_sealed_at_rest_and_opens_only_with_the_master_key(
    signer: LocalKeySigner, engine: Engine, master_key: str, tmp_path: Path
) -> None:
    public = signer.create_key(EVM1)
    sealed, stored_public = key_row(engine, W1)

    private = unseal(master_key, sealed, W1, "evm", "secp256k1")  # the test holds the master key

    assert eth_keys.PrivateKey(private).public_key.to_bytes() == public.key == stored_public
    assert len(sealed) == 12 + 32 + 16  # nonce || ciphertext || GCM tag
    assert private not in sealed and private.hex().encode() not in sealed
    engine.dispose()  # checkpoint the WAL, then look at every byte on disk
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("signer.db*"))
    assert private not in on_disk and private.hex().encode() not in on_disk


def test_the_same_private_key_is_sealed_differently_each_time(signer: LocalKeySigner, engine: Engine, master_key: str) -> None:
    signer.create_key(EVM1)
    sealed, _ = key_row(engine, W1)
    private = unseal(master_key, sealed, W1, "evm", "secp256k1")
    assert signer._seal(private, EVM1) != sealed  # fresh random nonce


def test_given_an_unknown_wallet_then_unknown_key(signer: LocalKeySigner) -> None:
    with pytest.raises(UnknownKey):
        signer.public_key(EVM1)
    with pytest.raises(UnknownKey):
        signer.request_signature("r1", EVM1, [DIGEST])
    signer.create_key(EVM1)
    with pytest.raises(UnknownKey):
        signer.request_signature("r1", KeyRef(W1, "evm", Curve.ED25519), [DIGEST])  # no ed25519 key for it
    with pytest.raises(UnknownKey):
        signer.request_signature("r1", SOL1, [DIGEST])  # no solana key for it
    with pytest.raises(UnknownKey):
        signer.request_signature("r1", TRON1, [DIGEST])  # nor a tron one, though the curve matches
    assert signer.fetch_signature("r1") is None


# -- signing ---------------------------------------------------------------------------------------

def test_given_a_secp256k1_request_then_the_signature_recovers_to_the_wallets_key(signer: LocalKeySigner) -> None:
    public = signer.create_key(EVM1)
    assert signer.fetch_signature("r1") is None  # nothing asked yet

    signer.request_signature("r1", EVM1, [DIGEST])
    signatures = signer.fetch_signature("r1")

    assert signatures is not None and len(signatures) == 1
    signature = signatures[0]
    assert len(signature) == 65 and signature[64] in (0, 1)
    recovered = eth_keys.Signature(signature).recover_public_key_from_msg_hash(DIGEST)
    assert recovered.to_bytes() == public.key


def test_given_an_ed25519_request_then_the_signature_verifies_under_the_wallets_key(signer: LocalKeySigner) -> None:
    public = signer.create_key(SOL1)
    message = b"solana message bytes of any length"
    signer.request_signature("r-ed", SOL1, [message])
    signatures = signer.fetch_signature("r-ed")
    assert signatures is not None and len(signatures) == 1
    signature = signatures[0]
    assert len(signature) == 64
    Ed25519PublicKey.from_public_bytes(public.key).verify(signature, message)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public.key).verify(signature, message + b"!")


def test_given_the_same_request_again_then_it_is_a_noop_with_the_same_signature(signer: LocalKeySigner, engine: Engine) -> None:
    signer.create_key(EVM1)
    signer.request_signature("r1", EVM1, [DIGEST])
    first = signer.fetch_signature("r1")
    signer.request_signature("r1", EVM1, [DIGEST])  # a redelivered task asks again
    assert first is not None and signer.fetch_signature("r1") == first
    assert count(engine, SignatureRequest) == 1


@pytest.mark.parametrize(
    ("ref", "payloads"),
    [(EVM1, [OTHER_DIGEST]), (EVM2, [DIGEST]), (TRON1, [DIGEST]), (EVM1, [DIGEST, DIGEST]), (EVM1, [DIGEST, OTHER_DIGEST])],
    ids=["other digest", "other wallet", "other key name", "one more payload", "added payload"],
)
def test_given_a_request_id_reused_for_another_payload_then_signature_refused(
    signer: LocalKeySigner, engine: Engine, ref: KeyRef, payloads: list[bytes]
) -> None:
    signer.create_key(EVM1)
    signer.create_key(EVM2)
    signer.create_key(TRON1)
    signer.request_signature("r1", EVM1, [DIGEST])
    first = signer.fetch_signature("r1")
    with pytest.raises(SignatureRefused, match="r1"):
        signer.request_signature("r1", ref, payloads)
    assert signer.fetch_signature("r1") == first  # the original stands
    assert count(engine, SignatureRequest) == 1


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33, b"x" * 64])
def test_a_secp256k1_digest_must_be_32_bytes(signer: LocalKeySigner, digest: bytes) -> None:
    signer.create_key(EVM1)
    with pytest.raises(SignatureRefused, match="32-byte"):
        signer.request_signature("r1", EVM1, [digest])
    with pytest.raises(SignatureRefused, match="32-byte"):
        signer.request_signature("r1", EVM1, [DIGEST, digest, OTHER_DIGEST])  # one bad payload refuses all
    assert signer.fetch_signature("r1") is None


def test_a_request_with_nothing_to_sign_is_refused(signer: LocalKeySigner) -> None:
    signer.create_key(EVM1)
    signer.create_key(SOL1)
    for ref in (EVM1, SOL1):
        with pytest.raises(SignatureRefused):
            signer.request_signature("r1", ref, [])
    assert signer.fetch_signature("r1") is None


def test_given_several_payloads_then_one_signature_each_in_payload_order(signer: LocalKeySigner, engine: Engine) -> None:
    # Given a Bitcoin-like transaction with three inputs: three digests, one request
    public = signer.create_key(BTC1)
    digests = [keccak(b"input 0"), keccak(b"input 1"), keccak(b"input 2")]

    signer.request_signature("r-btc", BTC1, digests)
    signatures = signer.fetch_signature("r-btc")

    # Then three signatures come back, the i-th over the i-th digest, all by the wallet's key
    assert signatures is not None and len(signatures) == 3 and len(set(signatures)) == 3
    for signature, digest in zip(signatures, digests, strict=True):
        assert len(signature) == 65
        assert eth_keys.Signature(signature).recover_public_key_from_msg_hash(digest).to_bytes() == public.key
    # (and not in some other order)
    assert eth_keys.Signature(signatures[0]).recover_public_key_from_msg_hash(digests[1]).to_bytes() != public.key
    assert count(engine, SignatureRequest) == 1
    # asking again is a no-op; the same payloads in another order are another request
    signer.request_signature("r-btc", BTC1, digests)
    assert signer.fetch_signature("r-btc") == signatures
    with pytest.raises(SignatureRefused, match="r-btc"):
        signer.request_signature("r-btc", BTC1, list(reversed(digests)))
    assert signer.fetch_signature("r-btc") == signatures


def test_ed25519_signs_each_message_itself_not_a_hash_of_it(signer: LocalKeySigner) -> None:
    public = Ed25519PublicKey.from_public_bytes(signer.create_key(SOL1).key)
    messages = [b"\x01" + b"m" * 200, b"", b"x" * 32, bytes(range(256)) * 4]  # any length, even empty

    signer.request_signature("r-sol", SOL1, messages)
    signatures = signer.fetch_signature("r-sol")

    assert signatures is not None and len(signatures) == len(messages)
    for signature, message in zip(signatures, messages, strict=True):
        assert len(signature) == 64
        public.verify(signature, message)  # raises InvalidSignature if not over the message itself
        for hashed in (keccak(message), hashlib.sha256(message).digest()):
            with pytest.raises(InvalidSignature):
                public.verify(signature, hashed)
    with pytest.raises(InvalidSignature):
        public.verify(signatures[0], messages[1])  # in order


def test_an_ed25519_request_id_reused_with_the_same_bytes_split_differently_is_refused(signer: LocalKeySigner) -> None:
    signer.create_key(SOL1)
    signer.request_signature("r1", SOL1, [b"ab", b"c"])
    first = signer.fetch_signature("r1")
    with pytest.raises(SignatureRefused, match="r1"):
        signer.request_signature("r1", SOL1, [b"a", b"bc"])
    with pytest.raises(SignatureRefused, match="r1"):
        signer.request_signature("r1", SOL1, [b"abc"])
    assert signer.fetch_signature("r1") == first


# -- the master key and the sealed rows ------------------------------------------------------------

def test_given_a_different_master_key_then_a_held_master_key_mismatch_not_a_refusal(signer: LocalKeySigner, engine: Engine) -> None:
    signer.create_key(EVM1)
    other = LocalKeySigner(engine, new_master_key())
    with pytest.raises(MasterKeyMismatch, match="does not open") as info:
        other.request_signature("r1", EVM1, [DIGEST])
    # the deployment is at fault, not the transfer: hold it (locks kept), never fail it as refused
    assert not isinstance(info.value, SignatureRefused)
    assert info.value.holds is True and info.value.transient is False
    assert other.fetch_signature("r1") is None
    # public keys are not secret: the other instance can still read them
    assert other.public_key(EVM1) == signer.public_key(EVM1)


def test_given_a_sealed_key_copied_onto_another_wallets_row_then_the_key_does_not_open(signer: LocalKeySigner, engine: Engine) -> None:
    # Given W1's sealed key (and public key) pasted over W2's row, e.g. by a bad restore or an attacker
    w1 = signer.create_key(EVM1)
    signer.create_key(EVM2)
    sealed, public = key_row(engine, W1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE signer_keys SET sealed_private_key = :s, public_key = :p WHERE wallet_id = :w"),
                     {"s": sealed, "p": public, "w": W2})
    assert signer.public_key(EVM2) == PublicKey(Curve.SECP256K1, w1.key)
    # Then W2 cannot sign with W1's key
    with pytest.raises(MasterKeyMismatch):
        signer.request_signature("r2", EVM2, [DIGEST])


def test_given_a_sealed_key_copied_onto_another_key_name_of_the_wallet_then_the_key_does_not_open(
    signer: LocalKeySigner, engine: Engine
) -> None:
    evm = signer.create_key(EVM1)
    signer.create_key(TRON1)
    sealed, public = key_row(engine, W1, "evm")
    with engine.begin() as conn:
        conn.execute(text("UPDATE signer_keys SET sealed_private_key = :s, public_key = :p"
                          " WHERE wallet_id = :w AND key_name = 'tron'"), {"s": sealed, "p": public, "w": W1})
    assert signer.public_key(TRON1) == evm
    with pytest.raises(MasterKeyMismatch):
        signer.request_signature("r-tron", TRON1, [DIGEST])


def test_given_a_sealed_row_moved_to_another_wallet_id_then_the_key_does_not_open(signer: LocalKeySigner, engine: Engine) -> None:
    signer.create_key(EVM1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE signer_keys SET wallet_id = :new WHERE wallet_id = :old"), {"new": W3, "old": W1})
    with pytest.raises(MasterKeyMismatch):
        signer.request_signature("r3", EVM3, [DIGEST])


def test_given_a_sealed_row_moved_to_another_curve_then_the_key_does_not_open(signer: LocalKeySigner, engine: Engine) -> None:
    signer.create_key(EVM1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE signer_keys SET curve = 'ed25519' WHERE wallet_id = :w"), {"w": W1})
    with pytest.raises(MasterKeyMismatch):
        signer.request_signature("r1", KeyRef(W1, "evm", Curve.ED25519), [DIGEST])


def test_given_a_sealed_row_moved_to_another_key_name_then_the_key_does_not_open(signer: LocalKeySigner, engine: Engine) -> None:
    signer.create_key(EVM1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE signer_keys SET key_name = 'tron' WHERE wallet_id = :w"), {"w": W1})
    with pytest.raises(MasterKeyMismatch):
        signer.request_signature("r1", TRON1, [DIGEST])


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
    signer.create_key(EVM1)
    sealed, _ = key_row(engine, W1)
    private = unseal(master_key, sealed, W1, "evm", "secp256k1")
    other_master = new_master_key()
    errors: list[BaseException] = []
    attempts = [
        lambda: LocalKeySigner(engine, other_master).request_signature("r1", EVM1, [DIGEST]),
        lambda: LocalKeySigner(engine, master_key[:-4]),
        lambda: signer.request_signature("r2", EVM1, [b"short"]),
        lambda: signer.request_signature("r3", EVM2, [DIGEST]),
        lambda: signer.request_signature("r5", EVM1, []),
    ]
    for attempt in attempts:
        with pytest.raises(SignerError) as info:
            attempt()
        errors.append(info.value)
    signer.request_signature("r4", EVM1, [DIGEST])
    with pytest.raises(SignerError) as info:
        signer.request_signature("r4", EVM1, [OTHER_DIGEST])
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
    for error in (SignerError, UnknownKey, SignatureRefused, MasterKeyMismatch):
        assert error.transient is False
    assert MasterKeyMismatch.holds is True
    for error in (SignerError, SignerUnavailable, UnknownKey, SignatureRefused):
        assert error.holds is False


def test_check_master_key_passes_on_an_empty_store_and_with_the_right_key(signer: LocalKeySigner, master_key: str,
                                                                           engine: Engine) -> None:
    signer.check_master_key()  # no sealed keys yet: nothing to disagree with
    signer.create_key(EVM1)
    signer.create_key(SOL1)
    signer.check_master_key()
    LocalKeySigner(engine, master_key).check_master_key()


def test_check_master_key_refuses_a_well_formed_but_wrong_key_without_echoing_it(signer: LocalKeySigner,
                                                                                 engine: Engine) -> None:
    signer.create_key(EVM1)
    signer.create_key(TRON1)
    wrong = new_master_key()
    with pytest.raises(MasterKeyMismatch, match="opens none of the 2 newest") as info:
        LocalKeySigner(engine, wrong).check_master_key()
    assert wrong not in str(info.value) and "\n" not in str(info.value)


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
            LocalKeySigner(impatient, master_key).create_key(EVM1)
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
    public = signer.create_key(SOL1)
    sealed, _ = key_row(engine, W1, "solana", "ed25519")
    private = unseal(master_key, sealed, W1, "solana", "ed25519")
    derived = Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert derived == public.key
