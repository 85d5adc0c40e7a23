"""Wiring: builds the StepContext (DB, registry, adapters, signer) once per worker process.

The one bootstrap place. Chain SDKs are imported lazily by `chains.get_adapter`, so a worker
serving only EVM queues never imports tronpy or bitcoinlib.
"""

from __future__ import annotations

import os
import threading
from typing import NoReturn

from chains import get_adapter
from chains.base import ChainAdapter
from chains.registry import Registry, load_registry
from pipeline.db import Database, get_database
from pipeline.settings import Settings, get_settings
from pipeline.steps import StepContext
from signer.base import Signer, SignerUnavailable
from signer.local import LocalKeySigner

_lock = threading.Lock()
_contexts: dict[int, StepContext] = {}


def registry_from(settings: Settings) -> Registry:
    return load_registry(settings.chain_registry).with_rpc_urls(settings.rpc_urls)


class MissingSigner:
    """Stands in when no master key is configured (read-only CLI use). Any signing need is a
    transient SignerUnavailable, so a misconfigured worker delays transfers, never fails them."""

    def _unavailable(self, *_: object) -> NoReturn:
        raise SignerUnavailable("PARATRO_SIGNER_MASTER_KEY is not set; generate one with `paratro signer new-master-key`")

    create_key = public_key = request_signature = fetch_signature = _unavailable


def signer_from(settings: Settings, database: Database) -> Signer:
    if settings.signer_master_key is None:
        return MissingSigner()  # type: ignore[return-value]
    return LocalKeySigner(database.engine, settings.signer_master_key.get_secret_value())


def build_context(settings: Settings) -> StepContext:
    database = get_database(settings.database_url)
    registry = registry_from(settings)

    def adapter_for(chain: str) -> ChainAdapter:
        return get_adapter(registry.chain(chain))

    return StepContext(
        db=database,
        registry=registry,
        adapter_for=adapter_for,
        signer=signer_from(settings, database),
        max_countdown_s=settings.max_countdown_s,  # seconds (durations, not money)
        confirm_timeout_s=settings.confirm_timeout_s,
        signature_timeout_s=settings.signature_timeout_s,
        step_lease_s=settings.step_lease_s,
        stall_after_s=settings.stall_after_s,
        fee_bumping=settings.fee_bumping,
    )


def context() -> StepContext:
    """This process's context (a forked Celery child builds its own)."""
    pid = os.getpid()
    with _lock:
        ctx = _contexts.get(pid)
        if ctx is None:
            ctx = _contexts[pid] = build_context(get_settings())
        return ctx


def reset() -> None:
    """Forget contexts built from older settings (tests and the demo switch settings)."""
    with _lock:
        _contexts.clear()
