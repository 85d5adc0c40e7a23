"""Run-time configuration, read once from `PARATRO_*` environment variables (or a `.env` file).

One settings object feeds the worker, the CLI, the demo and docker-compose, so every component
reads the same names. Secrets are `SecretStr` so that they never print in a repr or a log line.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from pipeline.errors import ConfigurationError

RPC_SCHEMES = ("http://", "https://", "ws://", "wss://")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Seconds to wait after webhook attempt n (1-based) before attempt n+1; past the end: FAILED (~24 h in all).
WEBHOOK_RETRY_SCHEDULE_S = (10.0, 30.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0)
MAX_WEBHOOK_RETRIES = 20


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARATRO_", env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///var/paratro.db", description="SQLAlchemy URL of the source of truth")
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker (Redis)")
    chain_registry: str = Field("mainnet", description="bundled registry name (mainnet, devnet) or a TOML path")
    rpc_urls: dict[str, str | list[str]] = Field(
        default_factory=dict, description='per-chain RPC override, JSON: {"ethereum": "http://..."}, or several '
        'endpoints, primary first (failover): {"ethereum": ["http://a", "http://b"]}')
    signer_master_key: SecretStr | None = Field(
        None, description="Fernet key that encrypts wallet keys at rest (local signer); required to sign"
    )
    visibility_timeout_s: int = Field(3600, description="Redis redelivers an unacked task after this long")
    max_countdown_s: int = Field(60, description="upper bound of any retry/poll countdown; << visibility timeout")
    sweep_interval_s: int = Field(30, description="how often beat runs the sweeper")
    stall_after_s: int = Field(120, description="grace of a queued message before the relay publishes it again; "
                               "park time of a transfer whose step gave up")
    step_lease_s: int = Field(300, description="a running step's lease; the sweeper re-drives only after it expires "
                              "(must exceed any single RPC: Bitcoin UTXO scans take up to 120 s)")
    relay_interval_s: int = Field(2, description="how often beat publishes outbox messages that are due")
    tracker_interval_s: float = Field(1.0, gt=0, le=60, description="how often beat runs each chain's "
                                      "confirmation tracker tick")
    tracker_recheck_s: float = Field(15.0, gt=0, description="a tracked transfer without news this long after its "
                                     "last send goes to the per-transfer confirm step (rebroadcast, expiry)")
    fee_bumping: bool = Field(True, description="replace a sent transaction that waits past its chain's replacement "
                              "policy (registry bump_after_blocks / rbf_after_s) by one paying more; false: it waits "
                              "(the benchmark's baseline)")
    confirm_timeout_s: int = Field(1800, description="stop polling a broadcast transfer after this long (replayable)")
    signature_timeout_s: int = Field(600, description="stop waiting for the signer after this long (replayable)")
    secrets_key: SecretStr | None = Field(
        None, description="AES-256 key (base64url of 32 bytes) sealing API and webhook secrets; required by the API "
        "and `paratro client`")
    api_rate_limit_per_min: int = Field(600, ge=1, description="API requests per client per minute (429 beyond)")
    api_signature_window_s: int = Field(300, ge=30, description="allowed clock difference of a signed request; "
                                        "nonces are remembered this long")
    api_auth_failures_per_ip_per_min: int = Field(60, ge=1, description="failed signature checks per client "
                                                  "address a minute; beyond, 429 before any lookup (api.auth)")
    api_auth_failures_per_key_per_min: int = Field(600, ge=1, description="failed signature checks per API key "
                                                   "id a minute, all addresses together; beyond, 429 (api.auth)")
    webhook_timeout_s: float = Field(10.0, gt=0, le=60, description="one webhook POST's total deadline (connect, "
                                     "send, the answer's status and headers)")
    webhook_relay_interval_s: float = Field(1.0, gt=0, description="how often beat hands due webhook events to "
                                            "the dispatcher")
    webhook_retry_schedule_s: Annotated[tuple[float, ...], NoDecode] = Field(
        WEBHOOK_RETRY_SCHEDULE_S, description="seconds between webhook attempts, comma list (e.g. 1,1,2 for tests); "
        "an event still undelivered after the last one is FAILED")
    wallet_key_attempts: int = Field(5, ge=1, description="key generation runs before a wallet is FAILED")
    metrics_port: int = Field(0, ge=0, le=65535, description="worker Prometheus exporter port (0: off)")
    log_level: str = Field("INFO")
    log_json: bool = Field(False, description="JSON log lines instead of key=value console lines")
    beat_schedule_path: str = Field("var/celerybeat-schedule", description="where beat keeps its last-run times")


    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("webhook_retry_schedule_s", mode="before")
    @classmethod
    def _retry_schedule(cls, value: Any) -> Any:
        """`1,1,2.5` from the environment; positive finite seconds, 1 to 20 of them."""
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",")]
            try:
                value = tuple(float(part) for part in parts)
            except ValueError:
                raise ValueError("must be a comma-separated list of seconds, e.g. 10,30,120") from None
        if not isinstance(value, (tuple, list)) or not 1 <= len(value) <= MAX_WEBHOOK_RETRIES:
            raise ValueError(f"must list 1 to {MAX_WEBHOOK_RETRIES} delays")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                   for v in value):
            raise ValueError("every delay must be a positive number of seconds")
        return tuple(float(v) for v in value)

    @field_validator("rpc_urls", mode="before")
    @classmethod
    def _rpc_urls_are_urls(cls, value: Any) -> Any:
        """An object of chain -> URL or non-empty list of URLs; a problem names the chain, never a URL."""
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object of chain -> URL or list of URLs, e.g. {"ethereum": "http://..."}')
        for chain, urls in value.items():
            listed = [urls] if isinstance(urls, str) else urls
            if not isinstance(listed, list) or not listed or not all(isinstance(url, str) for url in listed):
                raise ValueError(f"the endpoint of {chain!r} must be a URL or a non-empty list of URLs")
            if not all(url.startswith(RPC_SCHEMES) for url in listed):
                raise ValueError(f"every URL for {chain!r} must start with http://, https://, ws:// or wss://")
        return value

    def rpc_url_list(self) -> list[str]:
        """Every configured override URL, of every chain (for redaction)."""
        return [url for urls in self.rpc_urls.values() for url in ([urls] if isinstance(urls, str) else urls)]


def env_name(field: str) -> str:
    return f"PARATRO_{field.upper()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings. A wrong value raises ConfigurationError naming the variable and the problem,
    never the value (an RPC URL or a database URL may carry credentials)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{env_name(str(error['loc'][0])) if error['loc'] else 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False, include_context=False)
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
    except SettingsError as exc:
        found = re.search(r'field "(\w+)"', str(exc))
        name = env_name(found.group(1)) if found else "a PARATRO_* variable"
        raise ConfigurationError(f"invalid settings: {name} could not be parsed (JSON expected; value not shown)") from None
