"""Request and response models: what /openapi.json promises, and what FastAPI checks.

Requests forbid unknown fields (a misspelt field is a 422 naming it, not silently ignored) and
take strings strictly (an amount sent as a JSON number is refused: floats lose money). Responses
are the renderings of `pipeline.views`; these models only describe them.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr

T = TypeVar("T")

TransactionStatus = Literal["PENDING", "CONFIRMED", "FAILED"]
WebhookOptIn = Literal["transaction.stage"]
ADDRESS_PATTERN = r"^[\x21-\x7e]+$"  # printable ASCII, no spaces: what every chain's address text is


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class WalletCreate(_Request):
    wallet_name: StrictStr = Field(min_length=1, max_length=200, description="1-200 printable characters")


class AccountCreate(_Request):
    chain: StrictStr = Field(min_length=1, max_length=32, description="a chain of GET /chains, e.g. ethereum")


class AssetCreate(_Request):
    symbol: StrictStr = Field(min_length=1, max_length=16, description="a token of the account's chain, e.g. USDT")


class TransactionCreate(_Request):
    from_address: StrictStr = Field(min_length=1, max_length=128, pattern=ADDRESS_PATTERN,
                                    description="an address of one of your accounts")
    to_address: StrictStr = Field(min_length=1, max_length=256, pattern=ADDRESS_PATTERN,
                                  description="the destination on the same chain (its format is checked by the "
                                              "pipeline: a wrong one ends FAILED invalid_destination)")
    chain: StrictStr = Field(min_length=1, max_length=32)
    token_symbol: StrictStr = Field(min_length=1, max_length=16)
    amount: StrictStr = Field(min_length=1, max_length=200, examples=["1.25"],
                              description="a positive decimal STRING in token units, at most the token's decimals")


class WebhookPut(_Request):
    url: StrictStr = Field(min_length=1, max_length=500, description="https URL (http and loopback only on devnet)")
    events: list[WebhookOptIn] | None = Field(None, max_length=10,
                                              description='opt-in events besides the default ones: ["transaction.stage"]')


class Wallet(BaseModel):
    wallet_id: str = Field(examples=["w_01J9Z3XK6Q4Y8W2R1V5N7T0M3C"])
    wallet_name: str
    status: str = Field(description="PROGRESSING -> ACTIVE, or FAILED (key generation gave up; see failure_reason)")
    key_status: str = Field(description="GENERATING -> ACTIVE, or FAILED")
    failure_reason: str | None
    created_at: str
    updated_at: str


class Account(BaseModel):
    account_id: str
    wallet_id: str
    chain: str
    address: str
    network: str
    status: str
    created_at: str


class Asset(BaseModel):
    asset_id: str
    account_id: str
    chain: str
    symbol: str
    asset_type: str
    contract_address: str | None
    decimals: int
    balance: str = Field(description="decimal string in token units")
    locked_balance: str = Field(description="decimal string in token units")


class Transaction(BaseModel):
    transaction_id: str
    status: TransactionStatus
    sub_status: str = Field(description="the pipeline stage (RECEIVED ... CONFIRMED)")
    stuck_reason: str | None = Field(description="while PENDING and not moving on its own, what is being done or "
                                     "awaited: bumping, waiting_for_funds (top up the native coin: a fee bump needs "
                                     "more reserve), at_fee_cap, change_below_dust, nonce_released; null otherwise")
    kind: str = Field(description="TRANSFER, or NOOP: a zero-value self-transfer the pipeline sent to fill a nonce "
                      "that a failed transfer of this account left empty (its fee is debited like any other)")
    failure_reason: str | None
    from_address: str
    to_address: str
    chain: str
    network: str | None
    token_symbol: str
    amount: str | None = Field(description="decimal string in token units")
    tx_hash: str | None
    confirmations: int
    created_at: str
    updated_at: str


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class Token(BaseModel):
    symbol: str
    asset_type: str
    contract_address: str | None
    decimals: int


class Chain(BaseModel):
    chain: str
    network: str
    family: str
    native_symbol: str
    tokens: list[Token]
    confirmations: int


class ChainList(BaseModel):
    data: list[Chain]


class WebhookConfig(BaseModel):
    url: str | None
    events: list[str]


class WebhookWithSecret(BaseModel):
    url: str
    secret: str = Field(description="the signing secret: returned in full only here")
    events: list[str]


class WebhookTest(BaseModel):
    event_id: str


class Health(BaseModel):
    status: Literal["ok"]


class Component(BaseModel):
    status: Literal["ok", "down", "skipped", "pending"] = Field(
        description="`pending`: not probed yet (a first probe is running); results may be a few seconds old")
    latency_ms: int | None = None
    error: str | None = Field(None, description="the kind of failure (never an address or a credential)")


class Ready(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Component
    redis: Component
    chains: dict[str, Component]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses` entries of the error shape, for a route's documented failures."""
    described = {400: "bad request", 401: "unauthorized: a signed-request check failed", 404: "not found",
                 409: "conflict", 413: "payload too large", 422: "validation error", 429: "rate limited",
                 503: "a backing service is unavailable"}
    return {status: {"model": ErrorBody, "description": described.get(status, "error")} for status in statuses}
