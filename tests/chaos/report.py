"""What a chaos run prints: progress lines, the fault tally, step-run statistics from the
workers' JSON logs, and the last line (exactly one format, for CI and for people)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.checks import Verdict

# Every run of a step task ends with exactly one "step.*" line (workers/tasks.py): step.done with
# its outcome (advanced, noop = the work was already done, wait, final, ...), step.dropped (a
# message of a superseded driver), step.retry, step.exhausted, step.held, ...
RUN_PREFIX = "step."


@dataclass
class StepStats:
    runs: int = 0
    noop: int = 0
    dropped: int = 0
    outcomes: Counter[str] | None = None

    def line(self) -> str:
        return f"steps: {self.runs} runs, {self.noop} duplicate (noop), {self.dropped} dropped (stale)"


def json_objects(line: str) -> list[dict]:
    """The JSON objects of one log line: pool processes share the file, and two of them can write
    into the same line ('{...}{...}'), so a line is decoded object after object."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while True:
        at = line.find("{", at)
        if at < 0:
            return found
        try:
            obj, end = decoder.raw_decode(line, at)
        except ValueError:
            at += 1
            continue
        if isinstance(obj, dict):
            found.append(obj)
        at = end


def step_stats(log_paths: list[Path]) -> StepStats:
    stats = StepStats(outcomes=Counter())
    for path in log_paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                entries = (entry for line in fh if '"event"' in line for entry in json_objects(line))
                for entry in entries:
                    event = entry.get("event")
                    if not isinstance(event, str) or not event.startswith(RUN_PREFIX):
                        continue
                    stats.runs += 1
                    if event == "step.done":
                        stats.outcomes[str(entry.get("outcome"))] += 1  # type: ignore[index]
                        if entry.get("outcome") == "noop":
                            stats.noop += 1
                    else:
                        stats.outcomes[event] += 1  # type: ignore[index]
                        if event == "step.dropped":
                            stats.dropped += 1
        except OSError:
            continue
    return stats


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stamp(self) -> str:
        return f"[{self.elapsed():6.1f}s]"


def say(clock: Clock, message: str) -> None:
    print(f"{clock.stamp()} {message}", flush=True)


def stage_summary(stages: dict[str, int]) -> str:
    order = ["RECEIVED", "SOURCE_RESOLVED", "DESTINATION_VALID", "FUNDS_LOCKED", "SIGNATURE_REQUESTED", "SIGNED",
             "BROADCAST", "CONFIRMING"]
    return " ".join(f"{s.lower()} {stages[s]}" for s in order if stages.get(s))


def fault_breakdown(faults: Counter[str]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(faults.items()) if count)


def last_line(verdict: Verdict, faults: int) -> str:
    ledger = "ok" if verdict.ledger_ok else "MISMATCH"
    return (f"chaos: {verdict.transfers} transfers, {faults} faults, {verdict.lost} lost, {verdict.doubled} doubled, "
            f"ledger {ledger}, locked {verdict.locked}, pending {verdict.pending}")
