"""API credentials: a client's key id and secret, created, rotated and read back for verification.

Requests are signed with HMAC-SHA256 under the API secret, so the server must hold the secret
itself: it is sealed under PARATRO_SECRETS_KEY (pipeline.sealing) and opened only to verify a
signature. The secret is shown once, when created or rotated; nothing else returns it.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.errors import ConfigurationError, InvalidInput, NotFound
from pipeline.ids import check_id, new_id
from pipeline.models import Client
from pipeline.onboarding import check_name
from pipeline.sealing import SECRETS_KEY_ENV, SecretBox, api_context
from pipeline.settings import Settings, get_settings

API_KEY_PREFIX = "ak_"


def secret_box(settings: Settings | None = None) -> SecretBox:
    """The box of the configured PARATRO_SECRETS_KEY; ConfigurationError if unset or malformed."""
    settings = settings or get_settings()
    if settings.secrets_key is None:
        raise ConfigurationError(f"{SECRETS_KEY_ENV} is not set: API and webhook secrets cannot be sealed or "
                                 "opened (see `paratro client new-secrets-key`)")
    return SecretBox(settings.secrets_key.get_secret_value())


def create_client(session: Session, box: SecretBox, name: str, max_wallets: int = 100) -> tuple[Client, str]:
    """A new client with its API key id and secret; the secret is returned here only."""
    name = check_name("client name", name)
    if not isinstance(max_wallets, int) or isinstance(max_wallets, bool) or max_wallets < 1:
        raise InvalidInput("max_wallets must be a positive integer")
    client_id = new_id("client")
    secret = _new_secret()
    client = Client(client_id=client_id, name=name, api_key_id=API_KEY_PREFIX + secrets.token_hex(12),
                    api_secret_sealed=box.seal(secret, api_context(client_id)), max_wallets=max_wallets,
                    webhook_events="[]")
    session.add(client)
    session.flush()
    return client, secret


def rotate_secret(session: Session, box: SecretBox, client_id: str) -> tuple[Client, str]:
    """A new API secret for the client (the old one stops working at once); returned here only."""
    client = _client(session, client_id)
    secret = _new_secret()
    client.api_secret_sealed = box.seal(secret, api_context(client.client_id))
    client.api_secret_hash = None
    return client, secret


def client_by_key(session: Session, api_key_id: str) -> Client | None:
    return session.scalar(select(Client).where(Client.api_key_id == api_key_id))


def api_secret(box: SecretBox, client: Client) -> str | None:
    """The client's API secret, to verify a signature; None for a client from before sealed secrets
    (it must rotate its secret to sign requests)."""
    if client.api_secret_sealed is None:
        return None
    return box.open(client.api_secret_sealed, api_context(client.client_id))


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def _client(session: Session, client_id: str) -> Client:
    check_id("client", client_id)
    client = session.get(Client, client_id, with_for_update=True)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    return client
