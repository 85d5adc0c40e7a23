"""The `Signer` seam: how the pipeline gets signatures without ever holding a key.

The protocol is asynchronous on purpose: the pipeline asks for a signature (`request_signature`)
and later collects it (`fetch_signature`), because an MPC signer answers after a round of its
parties, not within a call. A local signer simply has the answer ready at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chains.base import Curve


class SignerError(Exception):
    """Base of signer errors; `transient` says whether asking again can help."""

    transient: bool = False


class SignerUnavailable(SignerError):
    """The signer could not be reached or is busy."""

    transient = True


class UnknownKey(SignerError):
    """No key exists for that wallet and curve."""


class SignatureRefused(SignerError):
    """The signer will not sign this request (e.g. the same request id with another digest)."""


@dataclass(frozen=True)
class PublicKey:
    curve: Curve
    key: bytes  # secp256k1: 64-byte uncompressed X||Y (no 0x04 prefix); ed25519: 32 bytes


class Signer(Protocol):
    def create_key(self, wallet_id: str, curve: Curve) -> PublicKey:
        """Generate (or return the existing) key of `wallet_id` on `curve`; idempotent."""

    def public_key(self, wallet_id: str, curve: Curve) -> PublicKey:
        """The wallet's public key; raises UnknownKey."""

    def request_signature(self, request_id: str, wallet_id: str, curve: Curve, digest: bytes) -> None:
        """Ask for a signature over `digest`; asking twice with the same id and digest is a no-op."""

    def fetch_signature(self, request_id: str) -> bytes | None:
        """The signature once ready (secp256k1: 65 bytes r||s||recovery_id), else None."""
