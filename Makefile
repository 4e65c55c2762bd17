# The two commands of the README: `make demo` and `make test`. Both create .venv if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow stress typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, pinned to the CPU wheel on local disk; an open range would pull a CUDA build.
# deepinv without its dependencies (its torchvision would replace the CPU torch), then its runtime
# dependencies but torchvision, for which geninv.integrations puts a stand-in when it cannot load.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[data,plots,dask,dev]'
	$(BIN)/pip install -q --no-deps deepinv==0.5.0 torchmetrics==1.9.0
	$(BIN)/pip install -q einops requests h5py natsort 'lightning-utilities>=0.15.3' packaging
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/geninv demo

test: $(STAMP)
	$(BIN)/ruff check src tests conftest.py $(wildcard benchmarks)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow
	$(BIN)/python scripts/check_readme_numbers.py

# 1,000 random generators x every method, no NaN allowed (about an hour on 2 cores).
stress: $(STAMP)
	$(BIN)/python scripts/stress_generators.py --json results/stress.json

typecheck: $(STAMP)
	$(BIN)/mypy src/geninv

bench: $(STAMP)
	$(BIN)/geninv bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
