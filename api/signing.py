"""The v1 request signature, one function for both sides: the shipped client signs with it and
the server's gate verifies with it, so the two can never drift apart. Standard library only, so
the client carries no server dependency.

    string_to_sign = timestamp + "\\n" + nonce + "\\n" + METHOD + "\\n" + path_with_query + "\\n"
                     + hex(sha256(body))
    X-Paratro-Signature = lowercase hex HMAC-SHA256(api_secret, string_to_sign)
"""

from __future__ import annotations

import hashlib
import hmac


def string_to_sign(timestamp: str, nonce: str, method: str, path_with_query: str, body: bytes) -> bytes:
    """The exact bytes both sides sign."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((timestamp, nonce, method.upper(), path_with_query, digest)).encode("utf-8")


def sign_request(api_secret: str, timestamp: str, nonce: str, method: str, path_with_query: str, body: bytes) -> str:
    """The X-Paratro-Signature value for one request."""
    message = string_to_sign(timestamp, nonce, method, path_with_query, body)
    return hmac.new(api_secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
