# The two commands: `make demo` (set up and run the whole loop) and `make test` (run every test).
PYTHON ?= python3
export STOREOPS_STATE_DIR ?= $(CURDIR)/.storeops

.PHONY: setup demo demo-stop publish test lint unit harness bench clean

setup:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'

## The whole loop on this machine: control plane + Argo CD, storeops serve, one store until ready.
demo: setup harness
	$(PYTHON) -m harness.demo start

## Stop what `make demo` left running.
demo-stop:
	$(PYTHON) -m harness.demo stop

## The generator alone: validate the example stores, render them, publish to the local Git remote.
publish: setup
	storeops validate
	storeops render
	storeops check
	storeops publish
	@echo "local remote: $(STOREOPS_STATE_DIR)/remote.git"

## Lint, type-check and run every test, building the control plane first (cached after the first run).
test: setup harness lint
	$(PYTHON) -m pytest

lint:
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

clean:
	rm -rf .storeops .pytest_cache .mypy_cache .ruff_cache
