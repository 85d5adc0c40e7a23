"""The Celery application: broker, routing, acknowledgement and beat schedule in one place.

acks_late + reject_on_worker_lost: a task is acknowledged only after it ran, so a killed worker's
task is delivered again (every step is idempotent). Redis redelivers an unacknowledged task after
`visibility_timeout` (default 3600 s), which must stay above the longest step *and* above any
countdown/ETA, because a worker holding an ETA task past the timeout gets it redelivered: steps
last seconds, and every countdown is capped at `max_countdown_s` (default 60 s).
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from celery.signals import setup_logging

from pipeline.settings import get_settings
from pipeline.stages import STEPS
from workers.delivery import delivery_settings
from workers.logconfig import configure_logging

QUEUE_PREFIX = "paratro."
SWEEP_QUEUE = QUEUE_PREFIX + "sweeper"
KEYS_QUEUE = QUEUE_PREFIX + "keys"  # wallet key generation: slow, must not wait behind transfers
WEBHOOKS_QUEUE = QUEUE_PREFIX + "webhooks"  # deliveries: a slow receiver must not hold transfer steps
TRACKER_QUEUE = QUEUE_PREFIX + "tracker"  # confirmation ticks, one per chain: must not wait behind steps
MIN_STEP_LEASE_S = 30  # above the 10 s RPC timeout with margin; Bitcoin UTXO scans need the default 300
ALL_QUEUES = [QUEUE_PREFIX + step for step in STEPS] + [SWEEP_QUEUE, KEYS_QUEUE, WEBHOOKS_QUEUE, TRACKER_QUEUE]
WORKER_QUEUES_ENV = "PARATRO_WORKER_QUEUES"  # the queues this worker consumes (set by `paratro worker`)
TASK_MODULES = ["workers.tasks", "workers.key_tasks", "workers.webhook_tasks", "workers.tracker_tasks"]


def task_name(step: str) -> str:
    return QUEUE_PREFIX + step


def create_app() -> Celery:
    settings = get_settings()
    if settings.max_countdown_s * 10 > settings.visibility_timeout_s:
        raise ValueError("visibility_timeout_s must be at least 10x max_countdown_s (Redis redelivers held ETA tasks)")
    if settings.step_lease_s < MIN_STEP_LEASE_S:
        raise ValueError(f"step_lease_s must be at least {MIN_STEP_LEASE_S} s: longer than any single RPC a step makes")
    app = Celery("paratro", broker=settings.broker_url, include=TASK_MODULES)
    app.conf.update(
        **delivery_settings(settings.visibility_timeout_s),
        task_default_queue=SWEEP_QUEUE,
        task_routes={task_name(step): {"queue": QUEUE_PREFIX + step} for step in STEPS}
        | {task_name("sweep"): {"queue": SWEEP_QUEUE}, task_name("relay"): {"queue": SWEEP_QUEUE},
           task_name("generate_wallet_keys"): {"queue": KEYS_QUEUE}, task_name("wallet_keys_relay"): {"queue": SWEEP_QUEUE},
           task_name("deliver_webhook"): {"queue": WEBHOOKS_QUEUE}, task_name("webhook_relay"): {"queue": SWEEP_QUEUE},
           task_name("track"): {"queue": TRACKER_QUEUE}, task_name("track_chain"): {"queue": TRACKER_QUEUE}},
        beat_schedule={
            "sweep-stalled-transfers": {"task": task_name("sweep"), "schedule": timedelta(seconds=settings.sweep_interval_s)},
            "relay-outbox": {"task": task_name("relay"), "schedule": timedelta(seconds=settings.relay_interval_s),
                             "options": {"expires": settings.relay_interval_s * 5}},
            "relay-wallet-keys": {"task": task_name("wallet_keys_relay"),
                                  "schedule": timedelta(seconds=settings.relay_interval_s),
                                  "options": {"expires": settings.relay_interval_s * 5}},
            "track-confirmations": {"task": task_name("track"),
                                    "schedule": timedelta(seconds=settings.tracker_interval_s),
                                    "options": {"expires": settings.tracker_interval_s * 5}},
            "relay-webhooks": {"task": task_name("webhook_relay"),
                               "schedule": timedelta(seconds=settings.webhook_relay_interval_s),
                               "options": {"expires": settings.webhook_relay_interval_s * 5}},
        },
    )
    return app


app = create_app()


def apply_settings() -> None:
    """Point the existing app at the current settings' broker (settings changed in this process)."""
    settings = get_settings()
    if app.conf.broker_url != settings.broker_url:
        app.conf.broker_url = settings.broker_url
        app.conf.broker_transport_options = {"visibility_timeout": settings.visibility_timeout_s}
        # Forget pooled connections to the old broker; the next producer connects to the new one.
        app._pool = None
        app.amqp._producer_pool = None


@setup_logging.connect
def _configure_worker_logging(**_: object) -> None:
    """Celery calls this instead of installing its own root handlers."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
