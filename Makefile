# The two entry points of the README: `make run` and `make test`. Everything they need is installed here.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: run test lint install bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/liver-node serve --config config.toml

# The whole suite: lint and type checks first (fast), then every test against the real peers.
test: lint
	bash scripts/install-test-tools.sh
	$(VENV)/bin/python -m pytest

# Lint and type checks (configured in pyproject.toml; .ci/run runs them before the tests).
lint: $(STAMP)
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy

bench: $(STAMP)
	bash scripts/install-test-tools.sh
	$(VENV)/bin/python -m bench.ingest
	$(VENV)/bin/python -m bench.perfusion
	$(VENV)/bin/python -m bench.gsa
