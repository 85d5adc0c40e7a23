# Two commands for a newcomer: `make demo` and `make test`. Both create .venv and install first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo sandbox test test-unit chaos bench bench-scale bench-tick spike clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing paratro-pipeline and its pinned dependencies into $(VENV) ..." >&2
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 \
	  | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
	@$(BIN)/python -m pip check >&2
	@touch $(STAMP)

demo: install
	$(BIN)/python -m devnet.ensure redis anvil
	$(BIN)/paratro demo

# The local Sandbox: devnets, a worker, the API and the faucet; one JSON line when ready; Ctrl-C stops it.
# Progress goes to stderr, so stdout holds only that line (`make sandbox > sandbox.json`).
sandbox: install
	@$(BIN)/python -m devnet.ensure redis anvil
	@$(BIN)/paratro sandbox

# The integration suite runs once per database: the SQLite half here, the PostgreSQL half alongside
# (each has its own stack; both mostly wait on blocks and workers), and the unit tests alongside
# too, niced; every part's output is shown and all must pass.
test: install
	$(BIN)/python -m devnet.ensure redis postgres anvil
	@mkdir -p var
	@nice -n 10 $(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration" > var/test-unit.log 2>&1 & unit=$$!; \
	  $(BIN)/python -m pytest -q -p no:cacheprovider -m integration -k postgresql > var/test-postgresql.log 2>&1 & pg=$$!; \
	  $(BIN)/python -m pytest -q -p no:cacheprovider -m integration -k "not postgresql"; integration=$$?; \
	  wait $$pg; pg=$$?; wait $$unit; unit=$$?; \
	  echo "--- integration on PostgreSQL (ran alongside; var/test-postgresql.log) ---"; tail -n 25 var/test-postgresql.log; \
	  echo "--- unit tests (ran alongside; var/test-unit.log) ---"; tail -n 25 var/test-unit.log; \
	  echo "make test: integration exit $$integration, postgresql exit $$pg, unit exit $$unit"; \
	  test $$integration -eq 0 -a $$pg -eq 0 -a $$unit -eq 0

# The chaos harness (tests/chaos): N transfers under worker kills, redis restarts, database
# backend terminations, a driver storm and faulty/lagging RPC; DB=postgresql (default) or sqlite.
N  ?= 200
DB ?= postgresql
chaos: install
	$(BIN)/python -m devnet.ensure redis postgres anvil
	$(BIN)/python -m tests.chaos --transfers $(N) --db $(DB)

# The benchmark (bench/): bare 6-task Celery chains (the floor), the pipeline per chain family from
# several accounts and from one, each devnet node alone, creation -> broadcast at half the burst
# rate, DB/Redis/RPC cost per transfer and worker memory; a table, then one JSON line. ARGS: e.g.
# `make bench ARGS="--families ethereum --transfers 100"` (python -m bench --help).
bench: install
	$(BIN)/python -m devnet.ensure redis anvil
	$(BIN)/python -m bench $(ARGS)

# Horizontal scale on PostgreSQL (bench/scale.py): the EVM burst with 1, 2 and 4 worker processes
# and split queue groups, 1,000 concurrent transfers from one asset; `ARGS="--soak 10000"` for memory.
bench-scale: install
	$(BIN)/python -m devnet.ensure redis postgres anvil
	$(BIN)/python -m bench.scale $(ARGS)

# One confirmation-tracker tick per chain at 1,000 / 10,000 / 100,000 pending transfers (bench/tracker_tick.py):
# wall time, DB statements, RPC requests, Celery tasks. ARGS: `--db postgresql`, `--sizes 1000,5000`.
bench-tick: install
	$(BIN)/python -m devnet.ensure anvil $(if $(findstring postgresql,$(ARGS)),postgres)
	$(BIN)/python -m bench.tracker_tick $(ARGS)

# Nothing stuck (bench/spike.py): 200 ETH + 50 BTC transfers through a 5x base-fee spike and a
# fee-rate spike, the primary RPC endpoint of each chain killed midway; run with fee bumping, then
# without (PARATRO_FEE_BUMPING=0); a table, then one JSON line (stuck, bumped, p95 inclusion with and
# without bumping, overpaid fee %). ARGS: e.g. `make spike ARGS="--spike-s 30"` (python -m bench.spike --help).
spike: install
	$(BIN)/python -m devnet.ensure redis anvil
	$(BIN)/python -m bench.spike $(ARGS)

test-unit: install
	$(BIN)/python -m pytest -q -m "not integration"

clean:
	rm -rf $(VENV) .devnet var build *.egg-info
