"""`paratro webhooks list` and `paratro webhooks resend`: the operator's view of webhook events.

Imports nothing heavy at module level (no Celery, no SQLAlchemy session): `paratro.cli` registers
this sub-app at import time. Errors end as one line through `paratro`'s own handler (bad input
exits 2, configuration or database trouble 1).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook events: list them, resend them.")

COLUMNS = (("event_id", "event"), ("type", "type"), ("resource_id", "resource"), ("sequence", "seq"),
           ("status", "status"), ("attempts", "attempts"), ("last_status_code", "last code"),
           ("next_attempt_at", "next attempt"))


def _database() -> Any:
    from pipeline.db import get_database
    from pipeline.settings import get_settings

    return get_database(get_settings().database_url)


@webhooks_app.command("list")
def list_cmd(
    failed: Annotated[bool, typer.Option("--failed", help="only events that gave up (FAILED)")] = False,
    client_id: Annotated[Optional[str], typer.Option("--client", help="cli_… id: one client's events")] = None,
    limit: Annotated[int, typer.Option("--limit", help="at most this many, newest first (1-1000)")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List webhook events, newest first (id, type, resource, sequence, status, attempts, last code, next attempt)."""
    from pipeline.webhook_outbox import list_events

    with _database().unit_of_work() as session:
        rows = list_events(session, failed_only=failed, client_id=client_id, limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=180)  # a pipe or a log: whole ids on one line
    table = Table(title=f"webhook events ({len(rows)})")
    for key, title in COLUMNS:
        table.add_column(title, overflow="fold" if key in ("event_id", "resource_id") else "ellipsis")
    for row in rows:
        table.add_row(*("" if row[key] is None else str(row[key]) for key, _ in COLUMNS))
    console.print(table)


@webhooks_app.command("resend")
def resend_cmd(
    event_ids: Annotated[Optional[list[str]], typer.Option("--event", help="ev_… id (repeatable)")] = None,
    transaction_id: Annotated[Optional[str], typer.Option("--transaction", help="tx_… id: its events")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="created at or after (ISO-8601, UTC if no offset)")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="created before (ISO-8601, UTC if no offset)")] = None,
    client_id: Annotated[Optional[str], typer.Option("--client", help="cli_… id: only this client's events")] = None,
) -> None:
    """Deliver the selected events again: same event id and body, whatever their status; filters combine."""
    from pipeline.models import utcnow
    from pipeline.webhook_outbox import EventSelection, parse_moment, resend_events

    selection = EventSelection(
        event_ids=tuple(event_ids or ()), transaction_id=transaction_id, client_id=client_id,
        since=parse_moment(since, "--since") if since is not None else None,
        until=parse_moment(until, "--until") if until is not None else None,
    ).check()  # refuse before touching the database
    with _database().unit_of_work() as session:
        count = resend_events(session, selection, utcnow())
    typer.echo(f"{count} webhook event{'' if count == 1 else 's'} queued for delivery again")
