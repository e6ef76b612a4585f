# ductape-operator. `make run` and `make test` are the two commands a newcomer needs;
# everything else here is what they are made of.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
CACHE_DIR ?= $(HOME)/.cache/ductape-operator
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export UV_CACHE_DIR := $(CACHE_DIR)/uv
export PIP_CACHE_DIR := $(CACHE_DIR)/pip
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

.PHONY: venv
venv: $(BIN)/.installed ## create .venv from the lock file

.PHONY: lock
lock: ## re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile -q --extra dev --python-version 3.11 --custom-compile-command "make lock" pyproject.toml -o requirements.lock

.PHONY: lint
lint: venv ## ruff, mypy (strict) and the import-layer contracts
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: fmt
fmt: venv ## format the code
	$(BIN)/ruff format operator tests benchmarks
	$(BIN)/ruff check --fix operator tests benchmarks

.PHONY: crds
crds: venv ## regenerate crds/ from the pydantic models
	$(BIN)/python -m ductape_operator.crdgen --write

.PHONY: crds-check
crds-check: venv ## fail when crds/ is stale
	$(BIN)/python -m ductape_operator.crdgen --check

.PHONY: deploy-render
deploy-render: ## re-render deploy/ from its sources (chart CRD copy, kustomize base, argocd-cm)
	hack/render-deploy.sh

.PHONY: deploy-check
deploy-check: ## fail when anything rendered under deploy/ is stale
	hack/render-deploy.sh --check

.PHONY: testenv-up
testenv-up: ## start the local stack (idempotent); writes .testenv/env
	hack/testenv-up.sh

.PHONY: testenv-down
testenv-down: ## stop what testenv-up started
	hack/testenv-down.sh

.PHONY: test-unit
test-unit: venv ## unit tests only (no stack)
	$(BIN)/pytest -m "not stack and not e2e" $(PYTEST_ARGS)

.PHONY: coverage-core
coverage-core: venv ## unit tests only, with the statement coverage of the reconcile core
	$(BIN)/python -m coverage run --source=ductape_operator -m pytest -q -m "not stack and not e2e" tests/unit
	$(BIN)/python -m coverage report --include="*/ductape_operator/core.py,*/ductape_operator/reconcile.py"

.PHONY: test
test: venv lint crds-check deploy-check ## everything: lint, stack up, all tests, stack down
	@hack/testenv-up.sh || { hack/testenv-down.sh; exit 1; }; \
	status=0; \
	( . .testenv/env && $(BIN)/pytest $(PYTEST_ARGS) ) || status=$$?; \
	hack/testenv-down.sh; \
	exit $$status

.PHONY: run
run: venv ## run the operator (starts the local stack when no cluster is reachable)
	hack/run.sh

.PHONY: bench
bench: venv ## benchmarks: print figures (starts the local stack)
	hack/testenv-up.sh
	. .testenv/env && $(BIN)/python -m benchmarks

N ?= 1000
PROVIDER ?= REDIS
BENCH_SCALE_ARGS ?=

.PHONY: bench-scale
bench-scale: venv ## N resources at once (N=1000 PROVIDER=REDIS|RABBITMQ|KAFKA): figures to .bench/
	hack/testenv-up.sh
	. .testenv/env && $(BIN)/python -m benchmarks.scale --count $(N) --provider $(PROVIDER) $(BENCH_SCALE_ARGS)

.PHONY: clean
clean: ## remove the venv and caches of this checkout (not ~/.cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
