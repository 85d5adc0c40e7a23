"""The Paratro API client: signs every request, raises typed errors, waits for outcomes.

Depends on httpx and the standard library only, so client code can vendor this one file.

    from api.client import ParatroClient, ParatroAPIError

    with ParatroClient("http://127.0.0.1:8000/api/v1", api_key, api_secret) as paratro:
        wallet = paratro.wait_wallet_active(paratro.create_wallet("treasury")["wallet_id"])
        account = paratro.create_account(wallet["wallet_id"], "ethereum")
        paratro.add_asset(account["account_id"], "USDT")
        tx = paratro.create_transaction(account["address"], "0x...", "ethereum", "USDT", "1.5",
                                        idempotency_key="order-42")
        final = paratro.wait_transaction_final(tx["transaction_id"])

Signing (what the server checks): headers X-Paratro-Key, X-Paratro-Timestamp (unix seconds),
X-Paratro-Nonce (fresh, 8-64 chars of [A-Za-z0-9_-]) and X-Paratro-Signature = lowercase hex
HMAC-SHA256(api_secret, timestamp + "\\n" + nonce + "\\n" + METHOD + "\\n" + path_with_query + "\\n" +
hex(sha256(body))), where path_with_query is the request target exactly as sent and body the exact
bytes sent (b"" when there is none). A request is signed anew on every send, so retrying a call
is always a fresh nonce; retry POST /transactions with the same idempotency key.

Why that matters: the v1 string to sign does not cover the Idempotency-Key header (see api.auth).
The server refuses signed bytes it has seen (the nonce), but a signed POST that never reached it
could be sent by whoever captured it under another Idempotency-Key. So this client never puts the
same signed bytes on the wire twice: every send (a retry included) is signed again with a nonce
that is random AND carries a per-signer sequence number (unique within the process by
construction, across processes and forks by the random part), it never retries by itself
(httpx's transport retries stay off), and a retry is a new call with the same Idempotency-Key.

Webhook receivers: `verify_webhook(secret, headers, body)` checks a delivery's signature and
timestamp (from pipeline.webhook_signing, re-exported here when that module is installed).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import httpx

from api.signing import sign_request

__all__ = ["ParatroAPIError", "ParatroClient", "ParatroError", "WalletFailed", "sign_request", "verify_webhook",
           "WebhookSignatureError"]

USER_AGENT = "paratro-python-client/1"
FINAL_STATUSES = frozenset({"CONFIRMED", "FAILED"})


class ParatroError(Exception):
    """Base of the client's errors."""


class ParatroAPIError(ParatroError):
    """The API answered an error: `status` (HTTP), `code` (stable, e.g. "idempotency_conflict"),
    `message` (for people), `field` (the request field it is about, or None), `retry_after` (s)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field
        self.retry_after = retry_after


class WalletFailed(ParatroError):
    """The wallet's key generation failed (status FAILED); `wallet` is its last state."""

    def __init__(self, wallet: Mapping[str, Any]) -> None:
        super().__init__(f"wallet {wallet.get('wallet_id')} FAILED: {wallet.get('failure_reason')}")
        self.wallet = dict(wallet)


class _Signer(httpx.Auth):
    """httpx calls this with the final request (URL encoded, body built) just before each send."""

    requires_request_body = True

    def __init__(self, api_key: str, api_secret: str) -> None:
        self._api_key = api_key
        self._api_secret = api_secret
        self._signed = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_Signer({self._api_key!r}, secret=<hidden>)"

    def nonce(self) -> str:
        """A nonce this signer has never issued: 20 random characters, "-", then its sequence number
        (hex). The number makes it unique here even if the random source repeated; the random part
        keeps two processes (or a forked copy of this signer) from colliding."""
        with self._lock:
            self._signed += 1
            sequence = self._signed
        return f"{secrets.token_urlsafe(15)}-{sequence:x}"  # 22-38 characters of [A-Za-z0-9_-]

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        timestamp = str(int(time.time()))
        nonce = self.nonce()
        target = request.url.raw_path.decode("ascii")  # path + "?" + query, exactly as it goes on the wire
        request.headers["X-Paratro-Key"] = self._api_key
        request.headers["X-Paratro-Timestamp"] = timestamp
        request.headers["X-Paratro-Nonce"] = nonce
        request.headers["X-Paratro-Signature"] = sign_request(self._api_secret, timestamp, nonce, request.method,
                                                              target, request.content)
        yield request


def _amount_text(amount: str | Decimal | int) -> str:
    if isinstance(amount, bool) or isinstance(amount, float):
        raise TypeError("amount must be a decimal string (or Decimal/int), never a float: floats lose money")
    if isinstance(amount, Decimal):
        return format(amount, "f")
    return str(amount)


class ParatroClient:
    """A signed-request client for one API key. Thread-safe (one httpx connection pool)."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._http = httpx.Client(base_url=self.base_url + "/", timeout=timeout, auth=_Signer(api_key, api_secret),
                                  headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                                  follow_redirects=False)

    def __repr__(self) -> str:
        return f"ParatroClient({self.base_url!r}, api_key={self.api_key!r})"

    def __enter__(self) -> "ParatroClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- transport -----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> httpx.Response:
        """Send one signed request (`path` relative to base_url, e.g. "wallets") and return the
        response, whatever its status. `body` is sent as compact JSON; None sends no body."""
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        sent_headers = dict(headers or {})
        if content is not None:
            sent_headers["Content-Type"] = "application/json"
        query = {name: value for name, value in (params or {}).items() if value is not None}
        return self._http.request(method, path.lstrip("/"), content=content, params=query or None,
                                  headers=sent_headers)

    def call(self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None,
             headers: Mapping[str, str] | None = None) -> Any:
        """`request`, then the decoded JSON of a 2xx answer; ParatroAPIError for any other."""
        response = self.request(method, path, body, params, headers)
        if response.is_success:
            return response.json() if response.content else None
        raise _api_error(response)

    # --- wallets, accounts, assets --------------------------------------------------------------

    def create_wallet(self, name: str) -> dict[str, Any]:
        return self.call("POST", "wallets", {"wallet_name": name})

    def get_wallet(self, wallet_id: str) -> dict[str, Any]:
        return self.call("GET", f"wallets/{wallet_id}")

    def list_wallets(self, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        return self.call("GET", "wallets", params={"limit": limit, "cursor": cursor})

    def wait_wallet_active(self, wallet_id: str, timeout: float = 60, poll_s: float = 0.25) -> dict[str, Any]:
        """Poll until the wallet is ACTIVE (returned); WalletFailed if it FAILED; TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            wallet = self.get_wallet(wallet_id)
            if wallet["status"] == "ACTIVE":
                return wallet
            if wallet["status"] == "FAILED":
                raise WalletFailed(wallet)
            if time.monotonic() > deadline:
                raise TimeoutError(f"wallet {wallet_id} still {wallet['status']}/{wallet['key_status']} after {timeout} s")
            time.sleep(poll_s)

    def create_account(self, wallet_id: str, chain: str) -> dict[str, Any]:
        return self.call("POST", f"wallets/{wallet_id}/accounts", {"chain": chain})

    def get_account(self, account_id: str) -> dict[str, Any]:
        return self.call("GET", f"accounts/{account_id}")

    def list_accounts(self, wallet_id: str, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        return self.call("GET", f"wallets/{wallet_id}/accounts", params={"limit": limit, "cursor": cursor})

    def add_asset(self, account_id: str, symbol: str) -> dict[str, Any]:
        return self.call("POST", f"accounts/{account_id}/assets", {"symbol": symbol})

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        return self.call("GET", f"assets/{asset_id}")

    def list_assets(self, account_id: str, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        return self.call("GET", f"accounts/{account_id}/assets", params={"limit": limit, "cursor": cursor})

    # --- transactions ---------------------------------------------------------------------------

    def create_transaction(self, from_address: str, to_address: str, chain: str, token_symbol: str,
                           amount: str | Decimal | int, idempotency_key: str) -> dict[str, Any]:
        """Submit a transfer (amount in token units as a decimal string). Safe to retry with the same
        key: the same body returns the same transaction; another body is 409 idempotency_conflict."""
        body = {"from_address": from_address, "to_address": to_address, "chain": chain,
                "token_symbol": token_symbol, "amount": _amount_text(amount)}
        return self.call("POST", "transactions", body, headers={"Idempotency-Key": idempotency_key})

    def get_transaction(self, transaction_id: str) -> dict[str, Any]:
        return self.call("GET", f"transactions/{transaction_id}")

    def list_transactions(self, status: str | None = None, chain: str | None = None, limit: int | None = None,
                          cursor: str | None = None) -> dict[str, Any]:
        """One page: {"data": [...], "next_cursor": str | None}, newest first."""
        return self.call("GET", "transactions", params={"status": status, "chain": chain, "limit": limit,
                                                        "cursor": cursor})

    def iter_transactions(self, status: str | None = None, chain: str | None = None,
                          limit: int = 100) -> Iterator[dict[str, Any]]:
        """Every transaction (matching the filters), page after page."""
        cursor: str | None = None
        while True:
            page = self.list_transactions(status, chain, limit, cursor)
            yield from page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def wait_transaction_final(self, transaction_id: str, timeout: float = 120, poll_s: float = 0.5) -> dict[str, Any]:
        """Poll until CONFIRMED or FAILED (returned either way); TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            tx = self.get_transaction(transaction_id)
            if tx["status"] in FINAL_STATUSES:
                return tx
            if time.monotonic() > deadline:
                raise TimeoutError(f"transaction {transaction_id} still {tx['status']}/{tx['sub_status']} after {timeout} s")
            time.sleep(poll_s)

    # --- chains, webhook, devnet, health --------------------------------------------------------

    def chains(self) -> list[dict[str, Any]]:
        return self.call("GET", "chains")["data"]

    def set_webhook(self, url: str, events: list[str] | None = None) -> dict[str, Any]:
        """{"url", "secret", "events"}: keep the secret, it is shown only here (to verify deliveries)."""
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        return self.call("PUT", "webhook", body)

    def get_webhook(self) -> dict[str, Any]:
        return self.call("GET", "webhook")

    def test_webhook(self) -> dict[str, Any]:
        """Queue a `ping` event: {"event_id"}."""
        return self.call("POST", "webhook/test")

    def faucet(self, chain: str, address: str, token_symbol: str, amount: str | Decimal | int) -> dict[str, Any]:
        """Devnet only (the sandbox): fund `address` on its devnet and credit it as a deposit."""
        return self.call("POST", "devnet/faucet", {"chain": chain, "address": address, "token_symbol": token_symbol,
                                                   "amount": _amount_text(amount)})

    def health(self) -> dict[str, Any]:
        return self.call("GET", "health")

    def ready(self) -> dict[str, Any]:
        """The readiness report, as answered with 200 (ready) or 503 (a component down)."""
        return self.request("GET", "ready").json()


def _api_error(response: httpx.Response) -> ParatroAPIError:
    retry_after = response.headers.get("Retry-After")
    try:
        wait = float(retry_after) if retry_after is not None else None
    except ValueError:
        wait = None
    try:
        error = response.json()["error"]
        return ParatroAPIError(response.status_code, str(error["code"]), str(error["message"]), error.get("field"),
                               wait)
    except (ValueError, KeyError, TypeError):
        return ParatroAPIError(response.status_code, "http_error", response.reason_phrase or "error", None, wait)


try:  # the webhook signature check, for receivers (pipeline.webhook_signing: stdlib only)
    from pipeline.webhook_signing import WebhookSignatureError, verify_webhook
except ImportError:  # pragma: no cover - a client vendored without the package
    class WebhookSignatureError(ParatroError):  # type: ignore[no-redef]
        """A webhook delivery whose signature or timestamp does not check out."""

    def verify_webhook(*_: Any, **__: Any) -> None:  # type: ignore[misc]
        raise NotImplementedError("verify_webhook needs pipeline.webhook_signing (install paratro-pipeline)")
