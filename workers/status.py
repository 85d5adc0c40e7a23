"""`paratro status`: what the pipeline is doing right now, for a human (a rich table) or a script
(`--json`, one object).

The numbers come from the database (`pipeline.stats.snapshot`) and from Redis (queue lengths).
The database is required: a problem there is the CLI's usual one-line error. The broker is not:
when Redis does not answer, queue depths are shown as unknown and one warning line says why, so
the command still helps when the broker is what is broken. Nor are the chains' nodes: every RPC
endpoint of the chains the deployment uses is probed now, in bounded time (`workers.rpc_status`),
and one that does not answer is a row marked unhealthy with the reason, never an error
(`--json`: key "rpc").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.models import utcnow
from pipeline.settings import Settings
from pipeline.stages import FINAL, Stage
from pipeline.stats import Snapshot, snapshot
from workers.metrics import queue_depths

UNKNOWN = "unknown"


@dataclass(frozen=True)
class StatusReport:
    """A snapshot, the queue depths (None when the broker could not be asked, with why) and the
    RPC endpoints' health (`workers.rpc_status` rows)."""

    snapshot: Snapshot
    queues: dict[str, int] | None
    broker_error: str | None
    rpc: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "taken_at": snap.to_dict()["taken_at"],
            "queues": self.queues,
            "broker": {"ok": self.broker_error is None, "error": self.broker_error},
            "transfers": snap.to_dict()["transfers"],
            "pending": snap.pending,
            "pending_by_stage": snap.pending_by_stage,
            "held": snap.held,
            "oldest_pending": snap.to_dict()["oldest_pending"],
            "failures": {"last_24h": snap.failures_24h, "total": snap.failures_total},
            "outbox": {"due": snap.outbox_due, "lag_s": snap.outbox_lag_s},
            "webhooks": {"pending": snap.webhooks_pending, "due": snap.webhooks_due,
                         "oldest_due_s": snap.webhooks_oldest_due_s, "failed": snap.webhooks_failed,
                         "attempts": snap.webhook_attempts},
            "rpc": self.rpc,
        }


def broker_shown(url: str) -> str:
    """The broker URL without its password, for the warning line."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def gather(settings: Settings) -> StatusReport:
    """Read the database (errors propagate: the CLI prints them in one line), the broker and the
    chains' RPC endpoints (never an error: `workers.rpc_status`)."""
    from pipeline.db import get_database
    from workers.app import ALL_QUEUES
    from workers.rpc_status import gather_rpc

    with get_database(settings.database_url).reading() as session:
        snap = snapshot(session, utcnow())
    rpc = gather_rpc(settings)
    try:
        return StatusReport(snap, queue_depths(settings.broker_url, ALL_QUEUES), None, rpc)
    except Exception as exc:  # noqa: BLE001 - redis raises several types; the status is still useful
        from workers.logconfig import redact

        reason = redact(" ".join(str(exc).split()))[:160]
        return StatusReport(snap, None, f"broker unreachable at {broker_shown(settings.broker_url)}: "
                                  f"{type(exc).__name__}: {reason}", rpc)


def render(status: StatusReport) -> Any:
    """The rich renderable: queues, pending by stage, transfers by chain, failures, webhooks,
    trackers, RPC endpoints."""
    from rich.console import Group
    from rich.table import Table

    from workers.display import age
    from workers.rpc_status import rpc_table

    snap = status.snapshot
    queues = Table("queue", "waiting", title="queues (Redis)")
    from workers.app import ALL_QUEUES

    for queue in ALL_QUEUES:
        queues.add_row(queue, UNKNOWN if status.queues is None else str(status.queues.get(queue, 0)))

    pending = Table("stage", "pending", title=f"pending transfers: {snap.pending} ({snap.held} held)")
    for stage in Stage:
        if stage not in FINAL:
            pending.add_row(stage.value, str(snap.pending_by_stage.get(stage.value, 0)))
    oldest = snap.oldest_pending
    pending.caption = ("oldest pending: none" if oldest is None else
                       f"oldest pending: {oldest.transaction_id} ({oldest.chain}, {oldest.stage}) for {age(oldest.age_s)}")

    statuses = ("PENDING", "CONFIRMED", "FAILED")
    chains = Table("chain", *statuses, title="transfers by chain and status")
    for chain in sorted({chain for chain, _ in snap.transfers}):
        chains.add_row(chain, *(str(snap.transfers.get((chain, s), 0)) for s in statuses))

    failures = Table("failure reason", "last 24 h", "total", title="failed transfers")
    for reason in sorted(set(snap.failures_total) | set(snap.failures_24h)):
        failures.add_row(reason, str(snap.failures_24h.get(reason, 0)), str(snap.failures_total.get(reason, 0)))

    backlog = Table("backlog", "count", "oldest", title="webhooks and outbox")
    backlog.add_row("webhook events pending", str(snap.webhooks_pending), "")
    backlog.add_row("webhook events due", str(snap.webhooks_due), age(snap.webhooks_oldest_due_s))
    backlog.add_row("webhook events failed", str(snap.webhooks_failed), "")
    attempts = ", ".join(f"{k} {v}" for k, v in sorted(snap.webhook_attempts.items())) or "none"
    backlog.add_row("webhook attempts", attempts, "")
    backlog.add_row("step messages overdue", str(snap.outbox_due), age(snap.outbox_lag_s))

    trackers = Table("chain", "tracked", "head", "last tick", title="confirmation trackers")
    for chain, state in sorted(snap.trackers.items()):
        trackers.add_row(chain, str(state.tracked), "" if state.head is None else str(state.head),
                         "never" if state.last_tick_age_s is None else f"{age(state.last_tick_age_s)} ago")
    return Group(queues, pending, chains, failures, backlog, trackers, rpc_table(status.rpc))


def run_status(settings: Settings, as_json: bool) -> None:
    """`paratro status [--json]`: print it; the broker warning (if any) goes to stderr in one line."""
    import json

    import typer

    status = gather(settings)
    if status.broker_error is not None:
        typer.echo(f"warning: queue depths unknown: {status.broker_error}", err=True)
    if as_json:
        typer.echo(json.dumps(status.to_dict()))
        return
    from workers.display import console

    console.print(render(status))
