"""The API's one error shape, its stable codes, and the translation of domain errors into them.

Every error answer is `{"error": {"code", "message", "field"}}` (`field` is null unless the error is
about one input). Codes are a contract with client code; messages are for people and may change.

    code                    status  when
    unauthorized            401     any signed-request check failed (one message for all)
    not_found               404     unknown route, unknown id, another client's id, malformed id in a path
    method_not_allowed      405     the route exists, not with this method
    payload_too_large       413     the body exceeds MAX_BODY_BYTES
    validation_error        422     the request does not match the schema (field = its dotted location)
    unknown_chain           422     chain not in the registry                      (field chain)
    unknown_symbol          422     token not configured on that chain             (field token_symbol / symbol)
    invalid_amount          422     not a positive decimal string within the token's decimals (field amount)
    invalid_address         422     not an address of that chain                   (field to_address / ...)
    invalid_webhook_url     422     refused webhook URL                            (field url)
    idempotency_conflict    409     the Idempotency-Key was used for another body
    limit_exceeded          409     max_wallets reached
    wallet_not_active       409     the wallet's key is not ready (or its generation failed)
    webhook_not_configured  409     POST /webhook/test without a webhook URL
    rate_limited            429     more than the client's requests per minute, or too many failed signature
                                    checks from the caller's address or key id (Retry-After says when)
    unavailable             503     the database, Redis or the signer cannot be reached; retry later
    internal_error          500     a bug; the message never carries the exception's text

A malformed id in a path is answered 404 `not_found`, exactly like an unknown one: it leaks
nothing and a client has one case to handle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chains.errors import InvalidAddress, UnknownChain, UnknownToken
from pipeline.errors import (
    ConfigurationError,
    IdempotencyConflict,
    InvalidAddressError,
    InvalidAmount,
    InvalidId,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PipelineError,
    TransientError,
    UnknownChainError,
    UnknownSymbol,
    WalletNotActive,
)

log = structlog.get_logger("paratro.api")

UNAUTHORIZED_MESSAGE = "the request is not signed with valid Paratro credentials"
NOT_FOUND_MESSAGE = "no such resource"
INTERNAL_MESSAGE = "internal error; the request may or may not have been applied, retry it with the same keys"
UNAVAILABLE_MESSAGE = "a backing service is unavailable; retry later"
RETRY_AFTER_UNAVAILABLE_S = 2

# Default fields of the codes that are about one input; a route names others (`pipeline_errors`).
DEFAULT_FIELDS = {"unknown_chain": "chain", "unknown_symbol": "token_symbol", "invalid_amount": "amount",
                  "invalid_webhook_url": "url"}


class ApiError(Exception):
    """An answer in the error shape; raise it anywhere in a route."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.field, self.headers)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status, headers=dict(headers or {}))


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", UNAUTHORIZED_MESSAGE)


def unavailable(message: str = UNAVAILABLE_MESSAGE) -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def translate(exc: BaseException, fields: Mapping[str, str] | None = None) -> ApiError | None:
    """The ApiError for a domain, chain or signer error; None for anything else (a bug: 500).

    `fields` maps a code to the request field it is about in this route (e.g. unknown_symbol ->
    "symbol" for `POST /accounts/{id}/assets`). Subclasses are tested before their bases.
    """
    named = {**DEFAULT_FIELDS, **(fields or {})}

    def invalid(code: str, message: str) -> ApiError:
        return ApiError(422, code, _one_line(message), named.get(code))

    from signer.base import SignerError

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, IdempotencyConflict):
        return ApiError(409, "idempotency_conflict", _one_line(exc))
    if isinstance(exc, InvalidId | NotFound):
        return ApiError(404, "not_found", NOT_FOUND_MESSAGE)
    if isinstance(exc, UnknownChainError | UnknownChain):
        return invalid("unknown_chain", str(exc))
    if isinstance(exc, UnknownSymbol | UnknownToken):
        return invalid("unknown_symbol", str(exc))
    if isinstance(exc, InvalidAmount):
        return invalid("invalid_amount", str(exc))
    if isinstance(exc, InvalidAddressError | InvalidAddress):
        return invalid("invalid_address", str(exc))
    if type(exc).__name__ == "InvalidWebhookUrl" and isinstance(exc, InvalidInput):  # pipeline.webhooks
        return invalid("invalid_webhook_url", str(exc))
    if type(exc).__name__ == "InvalidWebhookEvents" and isinstance(exc, InvalidInput):
        return ApiError(422, "validation_error", _one_line(exc), "events")
    if isinstance(exc, InvalidInput):
        return invalid("validation_error", str(exc))
    if isinstance(exc, LimitExceeded):
        return ApiError(409, "limit_exceeded", _one_line(exc))
    if isinstance(exc, WalletNotActive):
        return ApiError(409, "wallet_not_active", _one_line(exc))
    if isinstance(exc, TransientError | ConfigurationError | SignerError):
        # Database, broker or signer trouble (or a deployment mistake, logged for ops): the client
        # can only wait. The cause is logged, not answered.
        log.warning("api.unavailable", error=type(exc).__name__, detail=_one_line(exc, 200))
        return unavailable()
    if isinstance(exc, PipelineError):
        return None
    return None


@contextmanager
def pipeline_errors(**fields: str) -> Iterator[None]:
    """Translate domain errors raised inside into ApiErrors naming this route's fields."""
    try:
        yield
    except ApiError:
        raise
    except Exception as exc:
        mapped = translate(exc, fields)
        if mapped is None:
            raise
        raise mapped from None


def field_of(location: tuple[Any, ...] | list[Any]) -> str | None:
    """Pydantic's error location -> the request field: ("body", "amount") -> "amount",
    ("header", "Idempotency-Key") -> "Idempotency-Key", ("body",) -> null (the body as a whole)."""
    parts = [str(part) for part in location]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or None


def _validation_message(error: Mapping[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "the body is not valid JSON"
    field = field_of(error.get("loc", ()))
    message = str(error.get("msg", "invalid value"))
    return _one_line(f"{field}: {message}" if field else message)


async def _on_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    field = None if first.get("type") == "json_invalid" else field_of(first.get("loc", ()))
    return error_response(422, "validation_error", _validation_message(first), field)


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response(404, "not_found", NOT_FOUND_MESSAGE)
    if exc.status_code == 405:
        return error_response(405, "method_not_allowed", "this route does not accept this method",
                              headers=exc.headers)
    code = {400: "bad_request", 401: "unauthorized", 413: "payload_too_large"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, _one_line(exc.detail), headers=exc.headers)


async def _on_pipeline_error(_: Request, exc: Exception) -> JSONResponse:
    mapped = translate(exc)
    if mapped is None:
        log.error("api.internal_error", error=type(exc).__name__)
        return error_response(500, "internal_error", INTERNAL_MESSAGE)
    return mapped.response()


def install_error_handlers(app: FastAPI) -> None:
    """Every error FastAPI or a route raises leaves in the error shape (unexpected ones: see
    api.app's middleware, which answers 500 `internal_error`)."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for kind in (PipelineError, UnknownChain, UnknownToken, InvalidAddress):
        app.add_exception_handler(kind, _on_pipeline_error)
    from signer.base import SignerError

    app.add_exception_handler(SignerError, _on_pipeline_error)
