# gputopo — the two commands the README starts with:
#   make demo   the agent's discovery on a mocked DGX H100, then the scheduler on a sample cluster
#   make test   lint, type-check and the whole suite (builds the control plane on first use)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint tools bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/gputopo-agent discover --mock dgx-h100 --output text
	@echo
	$(BIN)/gputopo-scheduler simulate --cluster scheduler/samples/cluster.yaml --output text
	@echo
	@echo "The four pods not placed are refused on purpose: the sample shows kube-scheduler-style reasons (SLA taints, anti-affinity, capacity, a scheduling gate)."

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Real components for the integration tests: kube-apiserver, etcd, kube-scheduler and kwok built
# from pinned Go modules into the user cache (reused across clones), and a Prometheus server.
tools: $(VENV)/.installed
	$(BIN)/python -m hack.testenv ensure

test: lint tools
	$(BIN)/python -m pytest

bench: $(VENV)/.installed tools
	$(BIN)/python -m hack.testenv ensure --bench
	$(BIN)/python -m pytest tests/bench -p no:randomly --benchmark-only -o addopts="" $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache
