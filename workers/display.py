"""Terminal rendering for the CLI and the demo (rich); nothing here decides anything."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.stages import Stage

if TYPE_CHECKING:
    from workers.stuck import StuckReport

console = Console()
if not console.is_terminal:
    console = Console(width=132)  # a log file or CI: wide enough that ids and reasons are not cut


def print_transfer(data: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in ("transaction_id", "kind", "status", "stage", "stuck_reason", "failure_reason", "failure_detail",
                "last_error", "chain", "network", "token_symbol", "amount", "from_address", "to_address",
                "idempotency_key", "nonce", "tx_hash", "block_number", "block_hash", "confirmations", "fee_reserved",
                "fee_paid", "broadcast_count", "replacement_count", "created_at", "finalized_at"):
        if data.get(key) is not None:
            table.add_row(f"[bold]{key}[/]", str(data[key]))
    console.print(table)
    events = Table("at", "from", "to", "reason", "detail", title="events")
    for event in data["events"]:
        events.add_row(event["at"], event["from"] or "", event["to"], event["reason"] or "", (event["detail"] or "")[:80])
    console.print(events)
    print_attempts(data.get("attempts") or [])


def _when(moment: str | None) -> str:
    """`2026-12-01T02:52:37.558113Z` -> `2026-12-01 02:52:37` (the JSON keeps the full time)."""
    return "" if moment is None else moment[:19].replace("T", " ")


def print_attempts(attempts: list[dict[str, Any]]) -> None:
    """Every signed transaction of the transfer, oldest first. Cells are stacked (two or three
    lines per attempt) so that the whole hash and every fee field fit in 132 columns, uncut."""
    if not attempts:
        return
    table = Table("attempt / tx_hash", "fee", "signed / sent", title="attempts", box=box.SIMPLE_HEAD, show_lines=True)
    table.columns[0].no_wrap = True
    for a in attempts:
        nonce = "" if a["nonce"] is None else f" nonce {a['nonce']}"
        fees = [f"{key}={value}" for key, value in a["fee"].items()] + [f"max fee {a['max_fee'] or '-'}"]
        table.add_row(f"#{a['number']} {a['kind']} {a['state']}{nonce}\n{a['tx_hash']}", "\n".join(fees),
                      f"{_when(a['signed_at'])}\n{_when(a['sent_at']) or 'not sent'}")
    console.print(table)


def age(seconds: float | None) -> str:
    """A duration as people read it: `95s`, `12m05s`, `3h07m`; `-` for none (also `paratro status`)."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def print_stuck(report: StuckReport) -> None:
    """`paratro stuck`: one row per transfer (oldest wait first; two-line cells keep it within 132
    columns), then the one-line summary."""
    from workers.stuck import waited_s

    if report.transfers:
        table = Table("transaction_id / kind", "chain", "stage / stuck_reason", "attempts", "last fee", "waiting",
                      "last event", box=box.SIMPLE_HEAD, show_lines=True,
                      title=f"stuck: waiting with a reason, gap fills, sent over {report.older_than_s}s ago")
        for column in table.columns:
            column.no_wrap = True
        for t in report.transfers:
            nonce = "" if t.nonce is None else f" nonce {t.nonce}"
            fee = "\n".join(f"{key}\n{value}" for key, value in (t.last_fee or {}).items())
            table.add_row(f"{t.transaction_id}\n{t.kind}{nonce}", t.chain, f"{t.stage}\n{t.stuck_reason or '-'}",
                          str(t.attempts), fee, age(waited_s(t.waiting_since, report.taken_at)), t.last_event or "")
        console.print(table)
    console.print(report.summary(), highlight=False)


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
