"""The `Signer` seam: how the pipeline gets signatures without ever holding a key.

The protocol is asynchronous on purpose: the pipeline asks for a signature (`request_signature`)
and later collects it (`fetch_signature`), because an MPC signer answers after a round of its
parties, not within a call. A local signer simply has the answer ready at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chains.base import Curve


class SignerError(Exception):
    """Base of signer errors; `transient` says whether asking again can help, `holds` that the
    fault is the deployment's (hold the transfer, keep its locks), not the transfer's."""

    transient: bool = False
    holds: bool = False


class SignerUnavailable(SignerError):
    """The signer could not be reached or is busy."""

    transient = True


class UnknownKey(SignerError):
    """No key exists for that wallet and curve."""


class SignatureRefused(SignerError):
    """The signer will not sign this request (e.g. the same request id with another digest)."""


class MasterKeyMismatch(SignerError):
    """The master key does not open this wallet's sealed key: a wrong PARATRO_SIGNER_MASTER_KEY
    (or a sealed row moved or altered). Not transient, not a refusal: the deployment is at fault,
    so the transfer is held with this reason and keeps its locks until the key is fixed."""

    holds = True


@dataclass(frozen=True)
class KeyRef:
    """Which key: a wallet has one key per chain family (`key_name`: "evm", "tron", "bitcoin",
    "solana"), as an HD wallet derives one path per coin type; all EVM chains share "evm"."""

    wallet_id: str
    key_name: str
    curve: Curve

    def __post_init__(self) -> None:
        object.__setattr__(self, "curve", Curve(self.curve))  # also accept the curve by value ("ed25519")


@dataclass(frozen=True)
class PublicKey:
    curve: Curve
    key: bytes  # secp256k1: 64-byte uncompressed X||Y (no 0x04 prefix); ed25519: 32 bytes


class Signer(Protocol):
    def create_key(self, ref: KeyRef) -> PublicKey:
        """Generate (or return the existing) key; idempotent."""

    def public_key(self, ref: KeyRef) -> PublicKey:
        """The key's public half; raises UnknownKey."""

    def request_signature(self, request_id: str, ref: KeyRef, payloads: Sequence[bytes]) -> None:
        """Ask for one signature per payload, as one request (a Bitcoin transaction signs every
        input at once). secp256k1 payloads are 32-byte digests; ed25519 payloads are the message.
        Asking twice with the same id and payloads is a no-op; other payloads -> SignatureRefused."""

    def fetch_signature(self, request_id: str) -> list[bytes] | None:
        """The signatures in payload order once ready (secp256k1: 65 bytes r||s||recovery_id;
        ed25519: 64 bytes), else None."""
