# Two commands for a newcomer: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m pip check
	@touch $(STAMP)

demo: install
	$(BIN)/python -m devnet.ensure redis anvil
	$(BIN)/paratro demo

test: install
	$(BIN)/python -m devnet.ensure redis postgres anvil
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-unit: install
	$(BIN)/python -m pytest -q -m "not integration"

clean:
	rm -rf $(VENV) .devnet var build *.egg-info
