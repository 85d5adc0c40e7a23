"""The chaos harness (`make chaos N=200 [DB=sqlite]`, `python -m tests.chaos --transfers N`).

Real redis-server, PostgreSQL (or SQLite), the four devnet families and several worker
processes; N transfers from a few shared sources while workers are SIGKILLed, redis-server is
restarted, database backends are terminated, drivers storm and fault proxies delay, drop, time
out and (Solana, TRON) lag RPC calls. The verdict comes from the devnets themselves: every
transfer final, value moved at most once, ledger equal to the chains, nothing locked, every stage
change recorded. Its last line:

    chaos: N transfers, K faults, L lost, D doubled, ledger ok, locked 0, pending 0

One module per job: proxy (the fault proxy), lag (the lagging view of Solana and TRON nodes),
cluster (the processes), faults (the schedule and tally), workload (plan, funding, submission),
checks (the verdict), report (what is printed), run (the whole run).
"""
