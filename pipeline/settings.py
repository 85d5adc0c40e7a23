"""Run-time configuration, read once from `PARATRO_*` environment variables (or a `.env` file).

One settings object feeds the worker, the CLI, the demo and docker-compose, so every component
reads the same names. Secrets are `SecretStr` so that they never print in a repr or a log line.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARATRO_", env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///var/paratro.db", description="SQLAlchemy URL of the source of truth")
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker (Redis)")
    chain_registry: str = Field("mainnet", description="bundled registry name (mainnet, devnet) or a TOML path")
    rpc_urls: dict[str, str] = Field(default_factory=dict, description='per-chain RPC override, JSON: {"ethereum": "http://..."}')
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
    confirm_timeout_s: int = Field(1800, description="stop polling a broadcast transfer after this long (replayable)")
    signature_timeout_s: int = Field(600, description="stop waiting for the signer after this long (replayable)")
    log_level: str = Field("INFO")
    log_json: bool = Field(False, description="JSON log lines instead of key=value console lines")
    beat_schedule_path: str = Field("var/celerybeat-schedule", description="where beat keeps its last-run times")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
