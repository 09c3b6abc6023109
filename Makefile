# tablesync — run `make help` for the targets. The two a newcomer needs: `make demo`, `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
PYTEST      := $(VENV)/bin/pytest
CLUSTER_DIR ?= .cluster
export PATH := $(CURDIR)/$(VENV)/bin:/usr/local/go/bin:$(PATH)
export GOTOOLCHAIN ?= auto
LOCALCLUSTER := PYTHONPATH=tests/e2e/cluster $(PY) -m localcluster

.PHONY: help
help: ## Show this help (generated from the target comments)
	@awk 'BEGIN {FS = ":.*## "; printf "Targets:\n"} /^[a-zA-Z0-9_-]+:.*## / \
	  {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- setup ---------------------------------------------------------------------------------

.PHONY: system-deps
system-deps: ## Install missing system packages (PostgreSQL, python3-venv, Go) via apt
	@bash hack/install-system-deps.sh

$(VENV)/.installed: job-image/pyproject.toml operator/pyproject.toml requirements/dev.txt requirements/constraints.txt
	@echo "[venv] creating $(VENV) with pinned dependencies (first time: a few minutes)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -c requirements/constraints.txt -e job-image -e operator -r requirements/dev.txt
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the Python virtualenv (.venv) with pinned dependencies

.PHONY: cluster-binaries
cluster-binaries: ## Build etcd, kube-apiserver, kube-controller-manager, MinIO, helm (cached)
	@bash tests/e2e/cluster/install-binaries.sh >/dev/null

# --- the two commands ------------------------------------------------------------------------

.PHONY: demo
demo: system-deps venv cluster-binaries ## Run the whole lane on embedded defaults: cluster, 1M rows, operator, drift
	@$(PY) -m demo

.PHONY: demo-down
demo-down: venv ## Stop everything `make demo` left running
	@$(PY) -m demo down

.PHONY: test
test: system-deps venv cluster-binaries lint ## Lint, type-check, then unit, integration and e2e tests
	$(PYTEST) tests -q -p no:cacheprovider

# --- pieces ----------------------------------------------------------------------------------

.PHONY: lint
lint: venv ## ruff and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

.PHONY: unit
unit: venv ## Unit tests only (no servers)
	$(PYTEST) tests/unit -q

.PHONY: integration
integration: system-deps venv cluster-binaries ## Integration tests (real Postgres and MinIO)
	$(PYTEST) tests/integration -q

.PHONY: e2e
e2e: system-deps venv cluster-binaries ## e2e tests against the local control plane
	$(PYTEST) tests/e2e -q

.PHONY: e2e-kind
e2e-kind: venv ## The e2e suite on a kind cluster (needs Docker; not part of `make test`)
	bash tests/e2e/kind/run.sh

.PHONY: bench
bench: system-deps venv cluster-binaries ## Benchmarks: dump, diff, apply, whole run, with baselines
	$(PY) -m bench

.PHONY: cluster-up
cluster-up: system-deps venv cluster-binaries ## Start the local control plane, MinIO and pod runner
	$(LOCALCLUSTER) --state $(CLUSTER_DIR) up

.PHONY: cluster-down
cluster-down: venv ## Stop everything cluster-up started
	$(LOCALCLUSTER) --state $(CLUSTER_DIR) down

.PHONY: chart
chart: venv cluster-binaries ## Sync the CRD into the chart, then helm lint --strict
	cp crds/*.yaml charts/tablesync/files/crds/
	$$(bash tests/e2e/cluster/install-binaries.sh 2>/dev/null | tail -1)/helm lint --strict charts/tablesync

.PHONY: images
images: ## Build the operator and job images (needs Docker)
	docker build -t tablesync/operator:0.1.0 -f Dockerfile .
	docker build -t tablesync/job:0.1.0 -f job-image/Dockerfile .
