"""Sealing the secrets the server must read back: API secrets (to verify HMAC-signed requests) and
webhook signing secrets (to sign deliveries).

A hash would do for a password, but an HMAC can only be verified with the secret itself, so it is
kept sealed: AES-256-GCM under `PARATRO_SECRETS_KEY` (base64url of 32 bytes, in the environment
only), a fresh 12-byte nonce per seal, and the owner and purpose ("cli_…:api") as associated data
so that a sealed value copied to another client's row does not open. `cryptography`'s AESGCM does
the cryptography; this module only fixes the format and the error messages.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.errors import ConfigurationError

NONCE_BYTES = 12
SECRETS_KEY_ENV = "PARATRO_SECRETS_KEY"


class SealedSecretMismatch(ConfigurationError):
    """The secrets key does not open a sealed value: a wrong PARATRO_SECRETS_KEY (or a moved row)."""


def new_secrets_key() -> str:
    """A fresh key in the form PARATRO_SECRETS_KEY expects."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


class SecretBox:
    """Seal and open short secrets under one key; the key never leaves this object."""

    def __init__(self, key_text: str) -> None:
        try:
            key = base64.urlsafe_b64decode(key_text.encode())
        except (ValueError, TypeError):
            key = b""
        if len(key) != 32:
            raise ConfigurationError(f"{SECRETS_KEY_ENV} must be base64url of 32 bytes "
                                     "(see `paratro client new-secrets-key`)")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<sealed>)"

    def seal(self, plaintext: str, context: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, context: str) -> str:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, ValueError):
            raise SealedSecretMismatch(f"{SECRETS_KEY_ENV} does not open the sealed secret of {context}: "
                                       "wrong key, or the row was altered") from None


def api_context(client_id: str) -> str:
    return f"{client_id}:api"


def webhook_context(client_id: str) -> str:
    return f"{client_id}:webhook"
