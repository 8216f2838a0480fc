# fractofl: `make run` sets everything up and runs the main job; `make test` runs all tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fractofl-installed

.PHONY: run setup nginx browser test lint bench clean

run: setup  ## synthetic set, federated simulation (runs/, registry/), then a local endpoint queried
	FLWR_TELEMETRY_ENABLED=0 $(BIN)/fractofl demo

setup: $(STAMP)  ## virtual environment with fractofl and its pinned dependencies; nginx where it can
	@bash scripts/install-nginx.sh --if-possible

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	bash scripts/install-python.sh $(VENV)
	touch $@

nginx:  ## Debian's nginx: the coordinator's front (`fractofl coordinator up`) and its tests
	bash scripts/install-nginx.sh

browser:  ## Debian's Chromium and a Japanese font, for the web page's browser tests
	bash scripts/install-browser.sh

# One worker more than cores: with one per core the real processes' start-ups and waits
# left the cores about 9 % idle (README, "make test"). A test file's tests stay on one
# worker (they share real processes).
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print((os.cpu_count() or 1) + 1)')

test: setup browser nginx  ## the whole test suite (what CI runs)
	FLWR_TELEMETRY_ENABLED=0 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy core client server strategies cli serving

bench: setup  ## every part of the benchmark (or PARTS=serving,front); results go to bench/RESULTS.md
	FLWR_TELEMETRY_ENABLED=0 $(BIN)/python bench/run.py $(if $(PARTS),--parts $(PARTS))

clean:
	rm -rf runs data bench/out
