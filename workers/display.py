"""Terminal rendering for the CLI and the demo (rich); nothing here decides anything."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.stages import Stage

console = Console()
if not console.is_terminal:
    console = Console(width=132)  # a log file or CI: wide enough that ids and reasons are not cut


def print_transfer(data: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in ("transaction_id", "status", "stage", "failure_reason", "failure_detail", "last_error", "chain",
                "network", "token_symbol", "amount", "from_address", "to_address", "idempotency_key", "nonce",
                "tx_hash", "block_number", "block_hash", "confirmations", "fee_reserved", "fee_paid",
                "broadcast_count", "created_at", "finalized_at"):
        if data.get(key) is not None:
            table.add_row(f"[bold]{key}[/]", str(data[key]))
    console.print(table)
    events = Table("at", "from", "to", "reason", "detail", title="events")
    for event in data["events"]:
        events.add_row(event["at"], event["from"] or "", event["to"], event["reason"] or "", (event["detail"] or "")[:80])
    console.print(events)


def stage_progress(total: int) -> Progress:
    return Progress(TextColumn("[bold]transfers final"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def stage_table(stages: Counter[str]) -> Table:
    table = Table("stage", "transfers", "", title="transfers by stage (live, from the database)")
    total = max(1, sum(stages.values()))
    for stage in Stage:
        count = stages.get(stage.value, 0)
        colour = "green" if stage is Stage.CONFIRMED else "red" if stage is Stage.FAILED else "yellow"
        table.add_row(stage.value, str(count), f"[{colour}]" + "█" * round(30 * count / total) + "[/]")
    return table


def live_view(progress: Progress, stages: Counter[str]) -> Group:
    return Group(stage_table(stages), progress)
