"""Benchmarks against a bare Celery chain on the same machine (`make bench`, `make bench-scale`).

`python -m bench` runs one embedded stack (redis-server, devnet nodes with 0.25 s blocks, SQLite,
one worker of 2 prefork processes) and measures, in one run: the floor (bare 6-task Celery chains
of no-op tasks with the pipeline's own Celery settings), the pipeline end to end per chain family
(a burst from several source accounts and from one), each devnet node alone, creation-to-broadcast
latency at half the saturating rate, and what a transfer costs in DB statements, Redis commands and
RPC requests (read from the worker's own exporter). `python -m bench.scale` runs the EVM burst on
PostgreSQL with 1, 2 and 4 worker processes and split queue groups, and 1,000 transfers from one
asset. Each prints a table and, last, one JSON line.
"""
