"""Signing webhook deliveries, and verifying them on the receiving side.

Standard library only: the dispatcher signs with it, and a client's receiver (the shipped client,
the demo's receiver, the README example) verifies with the very same code.

    X-Paratro-Event-Id:  ev_…                (stable across retries and resends: dedupe on it)
    X-Paratro-Timestamp: 1767225600          (unix seconds of this attempt)
    X-Paratro-Signature: v1=<hex>            lowercase hex HMAC-SHA256(webhook_secret,
                                             timestamp + "." + raw_body)

The timestamp is signed with the body, so a captured delivery cannot be replayed outside the
receiver's tolerance. A signature header may carry several `v1=` values separated by commas
(e.g. while a secret is rotated); one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

EVENT_ID_HEADER = "X-Paratro-Event-Id"
TIMESTAMP_HEADER = "X-Paratro-Timestamp"
SIGNATURE_HEADER = "X-Paratro-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
# ASCII digits only: str.isdigit() also takes '²' or '１２' (int() then raises ValueError or
# accepts them), and a receiver catching WebhookSignatureError must never see anything else.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


class WebhookSignatureError(ValueError):
    """The delivery is not authentic or not fresh: refuse it (answer 400/401, do not process)."""


def compute_signature(secret: str, timestamp: str | int, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256(secret, timestamp + "." + body)."""
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError("body must be the raw bytes received (not parsed JSON)")
    message = str(timestamp).encode("ascii") + b"." + bytes(body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_headers(secret: str, event_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three headers of one delivery attempt of `body`, signed at `now` (default: the clock)."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        EVENT_ID_HEADER: event_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: f"{SCHEME}={compute_signature(secret, timestamp, body)}",
    }


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, tolerance_s: float = DEFAULT_TOLERANCE_S,
                   now: float | None = None) -> None:
    """Return if `body` was signed with `secret` within `tolerance_s` of `now`; else raise
    WebhookSignatureError saying which check failed (never echoing the secret or a signature).

    `headers` is looked up case-insensitively (any Mapping: a dict, Starlette's or http.server's
    headers). Pass the raw body bytes exactly as received: re-serialised JSON does not verify.
    """
    timestamp_text = _header(headers, TIMESTAMP_HEADER)
    signature_text = _header(headers, SIGNATURE_HEADER)
    if not _UNIX_SECONDS.fullmatch(timestamp_text):
        raise WebhookSignatureError(f"{TIMESTAMP_HEADER} must be unix seconds")
    current = time.time() if now is None else now
    if abs(current - int(timestamp_text)) > tolerance_s:
        raise WebhookSignatureError(f"{TIMESTAMP_HEADER} is more than {tolerance_s:g} s from the receiver's clock")
    candidates = _v1_values(signature_text)
    if not candidates:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} has no {SCHEME}= value")
    expected = compute_signature(secret, timestamp_text, body).encode()
    # Compare against every candidate (no early exit), each in constant time. "replace": a header
    # value may hold anything, lone surrogates included; it just does not match.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate.encode("utf-8", "replace"), expected)
    if not matched:
        raise WebhookSignatureError("signature does not match the body and timestamp")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == wanted), None)
    if value is None or not str(value).strip():
        raise WebhookSignatureError(f"missing {name} header")
    return str(value).strip()


def _v1_values(text: str) -> list[str]:
    values = []
    for part in text.split(","):
        scheme, sep, value = part.strip().partition("=")
        if sep and scheme == SCHEME and value:
            values.append(value.strip())
    return values
