"""What the benchmark reads from outside the worker processes: their exporter's counters, Redis's
command statistics and their resident memory.

Why from outside: the numbers must be what the real worker processes did (the prefork children
count their own SQL statements and node requests; `workers.metrics` sums them at scrape time), not
what this process guesses. A `Sample` is taken before and after a phase; `Sample.minus` gives the
phase's cost.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SCRAPE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Sample:
    """Cumulative counters at one moment (or, after `minus`, over one phase)."""

    db_statements: float = 0.0
    rpc_requests: dict[str, float] = field(default_factory=dict)  # "chain method" -> requests
    step_seconds: dict[str, float] = field(default_factory=dict)  # step -> summed run time
    step_runs: dict[str, float] = field(default_factory=dict)  # step -> runs
    redis_commands: int = 0

    @property
    def rpc_total(self) -> float:
        return sum(self.rpc_requests.values())

    def minus(self, before: "Sample") -> "Sample":
        def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
            return {k: a.get(k, 0.0) - b.get(k, 0.0) for k in set(a) | set(b) if a.get(k, 0.0) != b.get(k, 0.0)}

        return Sample(self.db_statements - before.db_statements, diff(self.rpc_requests, before.rpc_requests),
                      diff(self.step_seconds, before.step_seconds), diff(self.step_runs, before.step_runs),
                      self.redis_commands - before.redis_commands)


def parse_exposition(text: str) -> Sample:
    """The counters the benchmark uses, from a Prometheus text exposition (the worker exporter's)."""
    from prometheus_client.parser import text_string_to_metric_families

    statements = 0.0
    rpc: dict[str, float] = defaultdict(float)
    seconds: dict[str, float] = defaultdict(float)
    runs: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "paratro_db_statements_total":
                statements += sample.value
            elif sample.name == "paratro_rpc_requests_total":
                rpc[f"{sample.labels.get('chain', '?')} {sample.labels.get('method', '?')}"] += sample.value
            elif sample.name == "paratro_step_duration_seconds_sum":
                seconds[sample.labels.get("step", "?")] += sample.value
            elif sample.name == "paratro_step_duration_seconds_count":
                runs[sample.labels.get("step", "?")] += sample.value
    return Sample(statements, dict(rpc), dict(seconds), dict(runs))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as response:
        return response.read().decode()


def redis_commands(broker_url: str) -> int:
    """Commands Redis has run since it started (INFO commandstats, all commands summed)."""
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=5)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(sum(entry.get("calls", 0) for entry in stats.values() if isinstance(entry, dict)))


def sample(metrics_port: int, broker_url: str) -> Sample:
    """The worker exporter's counters and Redis's command count, now."""
    counted = parse_exposition(scrape(metrics_port))
    return Sample(counted.db_statements, counted.rpc_requests, counted.step_seconds, counted.step_runs,
                  redis_commands(broker_url))


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime
    rss_kb: int


def processes(proc: Path = Path("/proc")) -> dict[int, ProcessInfo]:
    """Every live process: parent, CPU ticks used and resident memory (VmRSS; 0 for kernel threads)."""
    found: dict[int, ProcessInfo] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
            rss_kb = 0
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb = int(line.split()[1])
                    break
            found[int(entry.name)] = ProcessInfo(int(entry.name), int(fields[1]), int(fields[11]) + int(fields[12]), rss_kb)
        except (OSError, ValueError, IndexError):
            continue  # the process exited meanwhile
    return found


def tree(roots: Iterable[int], table: dict[int, ProcessInfo]) -> list[ProcessInfo]:
    """The roots and all their descendants (a `paratro worker`: its Celery child, the prefork pool
    processes and an embedded beat; PostgreSQL: the postmaster and its backends, which make
    themselves session leaders, so process groups would miss them)."""
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, ()))
    return [table[pid] for pid in seen]


def tree_rss_mb(roots: Iterable[int], proc: Path = Path("/proc")) -> float:
    """Resident memory of these processes and their descendants, in MiB."""
    return round(sum(info.rss_kb for info in tree(roots, processes(proc))) / 1024, 1)


def machine_cpu(proc: Path = Path("/proc")) -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine so far (/proc/stat's first line)."""
    values = [float(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values) - idle, sum(values)
