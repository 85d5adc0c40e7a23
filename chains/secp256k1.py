"""The secp256k1 signature form every family here receives from the signer, checked in one place.

EVM, TRON and Bitcoin all take the signer's 65-byte r||s||v and need the same things from it: the
right size, r and s in range, a recovery id, and the low-s twin of a high-s signature (EIP-2,
BIP62/146: nodes refuse high s, the twin is equally valid).
"""

from __future__ import annotations

from chains.errors import InvalidSignature

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def split_signature(signature: bytes) -> tuple[int, int, int]:
    """(recovery_id, r, s) from r(32)||s(32)||v(1), v 0/1 (or 27/28), s made low; InvalidSignature."""
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != 65:
        size = len(signature) if isinstance(signature, (bytes, bytearray)) else type(signature).__name__
        raise InvalidSignature(f"secp256k1 signature must be 65 bytes r||s||v, got {size}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1):
        raise InvalidSignature(f"recovery id must be 0 or 1 (or 27/28), got {signature[64]}")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise InvalidSignature("signature r or s is out of range")
    if s > SECP256K1_N // 2:
        s, v = SECP256K1_N - s, v ^ 1
    return v, r, s
