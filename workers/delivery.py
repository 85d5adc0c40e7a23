"""How every Celery task of ours is delivered and acknowledged, in one place: the pipeline's app
and the benchmark's floor (`bench.floor_app`) must run on exactly these settings for the floor to
be the floor. Why each: see `workers.app`."""

from __future__ import annotations

from typing import Any


def delivery_settings(visibility_timeout_s: int) -> dict[str, Any]:
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "broker_transport_options": {"visibility_timeout": visibility_timeout_s},
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": False,
    }
