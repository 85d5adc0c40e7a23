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
failure throttle (Redis, see below) -> key known -> signature (constant-time) -> nonce unused
(Redis SET NX EX) -> rate limit (Redis, fixed one-minute windows per client). Every refusal is the
same 401 `unauthorized` to the caller; the reason is logged at INFO (key id and reason, never a
secret or a signature).

The API secret is kept sealed (pipeline.credentials) and opened per request, not cached, so a
rotated secret stops working at once. Redis is the broker's; when it cannot be reached, requests
are refused with 503 `unavailable` (failing closed: without the nonce store a replay would pass).

Failed checks are throttled before they cost anything. A wrong signature under a known key id
costs a database lookup and an AES-GCM open; without a limit anyone could buy those at line rate.
Every refusal from the lookup on (unknown key, no sealed secret, wrong signature, nonce reused)
adds one to two fixed one-minute Redis counters: per client address (the ASGI peer) and per key
id. Before the lookup, a request whose address has `api_auth_failures_per_ip_per_min` (60)
failures in the current minute, or whose key id has `api_auth_failures_per_key_per_min` (600), is
answered 429 `rate_limited` with Retry-After (the end of the minute), whatever its signature:
checking it is the very cost being saved. Cheap refusals (malformed headers, a timestamp out of
the window) are not counted; they cost no lookup, and without a key id or a fresh timestamp they
cost no Redis call either.
The trade-off: the key id is no secret (it travels in clear in every request), so a per-key
counter lets whoever knows it deny its owner service. That is why the per-key threshold is ten
times the per-address one: one source address stops at its own limit, and locking a key out takes
failures from at least ten addresses, sustained every minute (it lifts at the next minute once
they stop). A correctly signing client never fails a check (a wrong clock fails cheaply,
uncounted); one that keeps signing with a rotated-out secret throttles itself and, on a shared
address (NAT), its neighbours, until the next minute. The address is the TCP peer (api.server runs
uvicorn without proxy headers): behind a reverse proxy every caller shares the proxy's address,
which makes the per-address limit global, so there raise api_auth_failures_per_ip_per_min (the
per-key limit still bounds the cost per key) or serve with proxy headers trusted from the proxy
only. Without an address (a Unix socket) only the per-key counter applies.

What the signature does not cover. The v1 string to sign is fixed by the spec and followed
exactly: timestamp, nonce, method, request target and body, and no header, so NOT the
`Idempotency-Key` of POST /transactions. Once a request has reached us its nonce is spent and the
same signed bytes are refused under any Idempotency-Key. But a party that captured a signed POST
/transactions that never reached us (dropped on the way) can send it within the signature window
with an Idempotency-Key of its choosing; it is accepted once, as the client's. It cannot change
the body (amount, destination) and only one of the captured copies gets through (one nonce), but
if the client meanwhile retried with its own key (a fresh signature, as it should), that is a
second transfer of the same body. Capturing needs a broken transport: run the API behind TLS only.
The shipped client (api.client) signs every send anew with a nonce it never reuses and keeps one
Idempotency-Key across the retries of a call, so it never puts the same signed bytes on the wire
twice, under any key. A later version of the string to sign should cover the Idempotency-Key.
"""

from __future__ import annotations

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
from api.signing import sign_request
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
FAILURES_PER_IP_PER_MIN = 60  # defaults of settings.api_auth_failures_per_{ip,key}_per_min
FAILURES_PER_KEY_PER_MIN = 600
REDIS_TIMEOUT_S = 2.0


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
    """The checks of one API process: signature window, failed-check throttle, nonce store and rate
    limit (the last three on Redis, shared by every API process).

    The Redis client is created on first use inside the server's event loop and closed by
    `aclose()` when the app shuts down.
    """

    def __init__(self, broker_url: str, window_s: int, rate_per_min: int, lookup: KeyLookup,
                 clock: Callable[[], float] = time.time, *, failures_per_ip: int = FAILURES_PER_IP_PER_MIN,
                 failures_per_key: int = FAILURES_PER_KEY_PER_MIN) -> None:
        self._broker_url = broker_url
        self.window_s = window_s
        self.rate_per_min = rate_per_min
        self.failures_per_ip = failures_per_ip
        self.failures_per_key = failures_per_key
        self._lookup = lookup
        self._clock = clock
        self._redis: Any = None

    def __repr__(self) -> str:
        return (f"Guard(window_s={self.window_s}, rate_per_min={self.rate_per_min}, "
                f"failures_per_ip={self.failures_per_ip}, failures_per_key={self.failures_per_key})")

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
        address = client_address(scope)
        try:
            api_key, timestamp, nonce, sent = _well_formed(headers)
            now = self._clock()
            if abs(now - int(timestamp)) > self.window_s:
                raise Refused("timestamp outside the window")
            counters = _failure_counters(api_key, address, now)
            await self._not_throttled(counters, api_key, address, now)
            try:
                caller = await run_in_threadpool(self._lookup, api_key)
                if caller is None:
                    raise Refused("unknown key")
                if caller.secret is None:
                    raise Refused("the client has no sealed API secret (rotate it)")
                expected = sign_request(caller.secret, timestamp, nonce, scope["method"], path_as_sent(scope), body)
                if not hmac.compare_digest(expected, sent):
                    raise Refused("signature mismatch")
                await self._record_nonce(api_key, nonce)
            except Refused:
                await self._count_failure(counters)
                raise
        except Refused as refused:
            log.info("api.unauthorized", reason=refused.reason, api_key=_shown_key(headers.get(KEY_HEADER.lower())),
                     method=scope.get("method"), path=scope.get("path"))
            raise unauthorized() from None
        await self._within_rate(caller.client_id, now)
        return caller.client_id

    async def _not_throttled(self, counters: "_Counters", api_key: str, address: str | None, now: float) -> None:
        """429 when this key id or this address failed too often in the current minute (before
        the lookup: refusing costs one Redis round trip, no database, no decryption)."""
        from redis.exceptions import RedisError

        try:
            found = await self._client().mget(counters.keys())
        except RedisError as exc:
            log.warning("api.redis_unavailable", during="failure_throttle", error=type(exc).__name__)
            raise unavailable("the rate limiter (Redis) is unavailable; retry later") from None
        by_key = int(found[0] or 0)
        by_address = int(found[1] or 0) if counters.by_address is not None else 0
        if by_key < self.failures_per_key and by_address < self.failures_per_ip:
            return
        retry_after = max(1, math.ceil((counters.window + 1) * RATE_WINDOW_S - now))
        log.info("api.auth_throttled", api_key=api_key, address=address, key_failures=by_key,
                 address_failures=by_address, by="key" if by_key >= self.failures_per_key else "address")
        raise ApiError(429, "rate_limited",
                       f"too many failed signature checks in a minute; retry after {retry_after} s",
                       headers={"Retry-After": str(retry_after)})

    async def _count_failure(self, counters: "_Counters") -> None:
        """One more failure for the key id and the address. Redis trouble only costs the count:
        the caller is refused anyway."""
        from redis.exceptions import RedisError

        try:
            pipe = self._client().pipeline(transaction=False)
            for key in counters.keys():
                pipe.incr(key)
                pipe.expire(key, 2 * RATE_WINDOW_S)
            await pipe.execute()
        except RedisError as exc:
            log.warning("api.redis_unavailable", during="failure_count", error=type(exc).__name__)

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


@dataclass(frozen=True)
class _Counters:
    """The Redis counters of failed checks for one request's key id and address, this minute."""

    window: int
    by_key: str
    by_address: str | None  # None: no address in the scope, the key's counter alone applies

    def keys(self) -> list[str]:
        return [self.by_key] + ([self.by_address] if self.by_address is not None else [])


def _failure_counters(api_key: str, address: str | None, now: float) -> _Counters:
    window = int(now // RATE_WINDOW_S)
    return _Counters(window, f"paratro:authfail:key:{api_key}:{window}",
                     None if address is None else f"paratro:authfail:ip:{address}:{window}")


def client_address(scope: Mapping[str, Any]) -> str | None:
    """The peer's address from the ASGI scope (the TCP peer: a proxy's, behind one), or None."""
    client = scope.get("client")
    if isinstance(client, (tuple, list)) and client and isinstance(client[0], str) and client[0]:
        return client[0][:64]
    return None


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
