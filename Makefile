# The two commands: `make demo` (set up and run the whole loop) and `make test` (run every test).
# Everything runs in the project's own virtual environment, .venv (made by `make setup`), never
# in the system Python: `. .venv/bin/activate` puts `storeops` on PATH for a shell.
BASE_PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
export STOREOPS_STATE_DIR ?= $(CURDIR)/.storeops

.PHONY: setup demo demo-stop publish test lint unit harness bench bench-fleet clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(BASE_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

## The whole loop on this machine: control plane + Argo CD, storeops serve, one store until ready.
demo: setup harness
	$(PYTHON) -m harness.demo start

## Stop what `make demo` left running.
demo-stop:
	$(PYTHON) -m harness.demo stop

## The generator alone: validate the example stores, render them, publish to the local Git remote.
publish: setup
	$(VENV)/bin/storeops validate
	$(VENV)/bin/storeops render
	$(VENV)/bin/storeops check
	$(VENV)/bin/storeops publish
	@echo "local remote: $(STOREOPS_STATE_DIR)/remote.git"

## Lint, type-check and run every test, building the control plane first (cached after the first run).
test: setup harness lint
	$(PYTHON) -m pytest

lint: setup
	$(PYTHON) -m ruff check generator webhook harness tests bench
	$(PYTHON) -m mypy

unit: setup
	$(PYTHON) -m pytest tests/unit

harness:
	@if [ -f harness/build.sh ]; then bash harness/build.sh; fi

bench: setup harness
	$(PYTHON) bench/render.py
	$(PYTHON) bench/intake.py
	$(PYTHON) bench/status.py

## The whole loop for a fleet through Argo CD, against Helm per store (not in `make bench`: it takes long).
STORES ?= 100
bench-fleet: setup harness
	$(PYTHON) bench/fleet.py --stores $(STORES)

clean:
	rm -rf .storeops .venv .pytest_cache .mypy_cache .ruff_cache
