"""Signed requests: who is calling, is it really them, is it fresh, and are they within their rate.

Every authenticated request carries four headers:

    X-Paratro-Key        the API key id (`ak_…`)
    X-Paratro-Timestamp  unix seconds when it was signed
    X-Paratro-Nonce      8-64 characters of [A-Za-z0-9_-], never reused with that key
    X-Paratro-Signature  lowercase hex HMAC-SHA256(api_secret, string_to_sign)

    string_to_sign = timestamp + "\\n" + nonce + "\\n" + METHOD + "\\n" + path_with_query + "\\n"
                     + hex(sha256(body))

`path_with_query` is the request target exactly as sent (the raw path, then "?" and the raw query
string when there is one): no re-encoding on either side, so the client signs the bytes the server
reads. The checks run cheapest first and the nonce is recorded only once the signature is right,
so nobody can burn another client's nonces: headers well formed -> timestamp within the window ->
key known -> signature (constant-time) -> nonce unused (Redis SET NX EX) -> rate limit (Redis,
fixed one-minute windows per client). Every refusal is the same 401 `unauthorized` to the caller;
the reason is logged at INFO (key id and reason, never a secret or a signature).

The API secret is kept sealed (pipeline.credentials) and opened per request, not cached, so a
rotated secret stops working at once. Redis is the broker's; when it cannot be reached, requests
are refused with 503 `unavailable` (failing closed: without the nonce store a replay would pass).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from api.errors import ApiError, unauthorized, unavailable
from pipeline.settings import Settings
from pipeline.steps import StepContext

log = structlog.get_logger("paratro.api")

KEY_HEADER = "X-Paratro-Key"
TIMESTAMP_HEADER = "X-Paratro-Timestamp"
NONCE_HEADER = "X-Paratro-Nonce"
SIGNATURE_HEADER = "X-Paratro-Signature"
SIGNED_HEADERS = (KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)

_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_NONCE = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
RATE_WINDOW_S = 60
REDIS_TIMEOUT_S = 2.0


def string_to_sign(timestamp: str, nonce: str, method: str, path_with_query: str, body: bytes) -> bytes:
    """The exact bytes both sides sign (see the module docstring)."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((timestamp, nonce, method.upper(), path_with_query, digest)).encode("utf-8")


def signature(secret: str, timestamp: str, nonce: str, method: str, path_with_query: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the string to sign under the API secret."""
    message = string_to_sign(timestamp, nonce, method, path_with_query, body)
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def path_as_sent(scope: Mapping[str, Any]) -> str:
    """The request target as the client sent it: raw path + "?" + raw query (if any), as text.

    Bytes outside ASCII cannot be in a valid request target; they are decoded as latin-1 so a
    signature over them simply does not match rather than crashing.
    """
    raw = scope.get("raw_path") or scope.get("path", "/").encode("utf-8")
    query = scope.get("query_string") or b""
    target = raw + (b"?" + query if query else b"")
    return target.decode("latin-1")


# These only describe the four headers in /openapi.json (security schemes); the middleware checks them.
_DOCUMENTED = {
    header: APIKeyHeader(name=header, scheme_name=scheme, auto_error=False, description=text)
    for header, scheme, text in (
        (KEY_HEADER, "ParatroKey", "the API key id"),
        (TIMESTAMP_HEADER, "ParatroTimestamp", "unix seconds; at most api_signature_window_s (300) from the server's clock"),
        (NONCE_HEADER, "ParatroNonce", "8-64 characters of [A-Za-z0-9_-], never reused with the key"),
        (SIGNATURE_HEADER, "ParatroSignature", "lowercase hex HMAC-SHA256(api_secret, timestamp\\nnonce\\nMETHOD\\n"
                                               "path_with_query\\nhex(sha256(body)))"),
    )
}


def client_id_of(
    request: Request,
    _key: str | None = Security(_DOCUMENTED[KEY_HEADER]),
    _timestamp: str | None = Security(_DOCUMENTED[TIMESTAMP_HEADER]),
    _nonce: str | None = Security(_DOCUMENTED[NONCE_HEADER]),
    _signature: str | None = Security(_DOCUMENTED[SIGNATURE_HEADER]),
) -> str:
    """The authenticated client's id (set by the signed-request middleware); a dependency."""
    client_id = getattr(request.state, "client_id", None)
    if not isinstance(client_id, str):  # a route mounted outside the signed prefix: never answer it
        raise unauthorized()
    return client_id


@dataclass(frozen=True)
class Caller:
    """Who a key id belongs to, with the secret to check their signature (never logged)."""

    client_id: str
    secret: str | None  # None: a client from before sealed secrets, which cannot sign until it rotates

    def __repr__(self) -> str:
        return f"Caller({self.client_id!r}, secret=<hidden>)"


KeyLookup = Callable[[str], "Caller | None"]  # blocking (DB): run in a worker thread


def database_lookup(context: Callable[[], StepContext], settings: Settings) -> KeyLookup:
    """A KeyLookup over the pipeline's database: the client of a key id with its opened secret
    (None for a client whose secret predates sealing: it must rotate); None for an unknown key. Database
    trouble raises DatabaseUnavailable (-> 503), a missing or wrong PARATRO_SECRETS_KEY a
    ConfigurationError (-> 503, logged)."""
    from pipeline import credentials

    def lookup(api_key: str) -> Caller | None:
        box = credentials.secret_box(settings)
        with context().db.unit_of_work() as session:
            client = credentials.client_by_key(session, api_key)
            if client is None:
                return None
            secret = credentials.api_secret(box, client)
            return Caller(client.client_id, secret)

    return lookup


class Refused(Exception):
    """An authentication failure; `reason` is logged, never answered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Guard:
    """The checks of one API process: signature window, nonce store and rate limit on Redis.

    The Redis client is created on first use inside the server's event loop and closed by
    `aclose()` when the app shuts down.
    """

    def __init__(self, broker_url: str, window_s: int, rate_per_min: int, lookup: KeyLookup,
                 clock: Callable[[], float] = time.time) -> None:
        self._broker_url = broker_url
        self.window_s = window_s
        self.rate_per_min = rate_per_min
        self._lookup = lookup
        self._clock = clock
        self._redis: Any = None

    def __repr__(self) -> str:
        return f"Guard(window_s={self.window_s}, rate_per_min={self.rate_per_min})"

    def _client(self) -> Any:
        if self._redis is None:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(self._broker_url, socket_timeout=REDIS_TIMEOUT_S,
                                         socket_connect_timeout=REDIS_TIMEOUT_S, retry_on_timeout=False)
        return self._redis

    async def aclose(self) -> None:
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose()

    async def authenticate(self, scope: Mapping[str, Any], body: bytes) -> str:
        """The caller's client id, or ApiError 401 / 429 / 503."""
        from starlette.concurrency import run_in_threadpool

        headers = _headers(scope)
        try:
            api_key, timestamp, nonce, sent = _well_formed(headers)
            now = self._clock()
            if abs(now - int(timestamp)) > self.window_s:
                raise Refused("timestamp outside the window")
            caller = await run_in_threadpool(self._lookup, api_key)
            if caller is None:
                raise Refused("unknown key")
            if caller.secret is None:
                raise Refused("the client has no sealed API secret (rotate it)")
            expected = signature(caller.secret, timestamp, nonce, scope["method"], path_as_sent(scope), body)
            if not hmac.compare_digest(expected, sent):
                raise Refused("signature mismatch")
            await self._record_nonce(api_key, nonce)
        except Refused as refused:
            log.info("api.unauthorized", reason=refused.reason, api_key=_shown_key(headers.get(KEY_HEADER.lower())),
                     method=scope.get("method"), path=scope.get("path"))
            raise unauthorized() from None
        await self._within_rate(caller.client_id, now)
        return caller.client_id

    async def _record_nonce(self, api_key: str, nonce: str) -> None:
        """Refused if the nonce was seen with this key; remembered as long as a timestamp signed
        with it could still be accepted (twice the window: it may be dated up to a window ahead)."""
        from redis.exceptions import RedisError

        try:
            fresh = await self._client().set(f"paratro:nonce:{api_key}:{nonce}", b"1", nx=True,
                                             ex=2 * self.window_s)
        except RedisError as exc:
            log.warning("api.redis_unavailable", during="nonce", error=type(exc).__name__)
            raise unavailable("the nonce store (Redis) is unavailable; retry later") from None
        if not fresh:
            raise Refused("nonce already used")

    async def _within_rate(self, client_id: str, now: float) -> None:
        """Fixed one-minute windows per client: at most `rate_per_min` requests in each."""
        from redis.exceptions import RedisError

        window = int(now // RATE_WINDOW_S)
        key = f"paratro:rate:{client_id}:{window}"
        try:
            pipe = self._client().pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, 2 * RATE_WINDOW_S)
            count, _ = await pipe.execute()
        except RedisError as exc:
            log.warning("api.redis_unavailable", during="rate_limit", error=type(exc).__name__)
            raise unavailable("the rate limiter (Redis) is unavailable; retry later") from None
        if int(count) > self.rate_per_min:
            retry_after = max(1, math.ceil((window + 1) * RATE_WINDOW_S - now))
            log.info("api.rate_limited", client_id=client_id, count=int(count), limit=self.rate_per_min)
            raise ApiError(429, "rate_limited",
                           f"more than {self.rate_per_min} requests in a minute; retry after {retry_after} s",
                           headers={"Retry-After": str(retry_after)})


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """Lower-cased header names -> value (the first of repeated ones); undecodable ones dropped."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        try:
            found.setdefault(name.decode("latin-1").lower(), value.decode("ascii"))
        except UnicodeDecodeError:
            continue
    return found


def _well_formed(headers: Mapping[str, str]) -> tuple[str, str, str, str]:
    values = []
    for name, pattern in ((KEY_HEADER, _KEY), (TIMESTAMP_HEADER, _TIMESTAMP), (NONCE_HEADER, _NONCE),
                          (SIGNATURE_HEADER, _SIGNATURE)):
        value = headers.get(name.lower())
        if value is None:
            raise Refused(f"{name} missing")
        if not pattern.fullmatch(value):
            raise Refused(f"{name} malformed")
        values.append(value)
    return values[0], values[1], values[2], values[3]


def _shown_key(value: str | None) -> str | None:
    """The key id as logged: only a well-formed one, so a header cannot inject text into logs."""
    return value if value is not None and _KEY.fullmatch(value) else None
