# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install browser demo test nbtest pytest lint sync-check readme readme-check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade uv
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -e '.[dev]'
	$(BIN)/python -m compileall -q -j0 mlnb
	touch $(STAMP)

install: $(STAMP)  ## create .venv with mlnb (editable) and the dev tools, compiled to bytecode (a fast cold start)

demo: install  ## write the churn project into a fresh ./mlnb-demo and run it
	$(BIN)/mlnb demo

browser:  ## Debian's Chromium for the browser tests (installed with apt when missing)
	@bash .ci/ensure-chromium

test: install browser nbtest pytest  ## the notebooks' examples, then the pytest suite

nbtest: install
	$(BIN)/nbdev-test --n-workers 2

pytest: install
	$(BIN)/pytest -q -ra

lint: install
	$(BIN)/ruff check mlnb tests bench

sync-check: install  ## notebooks and library agree; notebooks are clean (as nbdev's own CI)
	@test -z "$$(git status --porcelain)" || { echo "the tree has uncommitted changes:"; git status --porcelain; exit 1; }
	$(BIN)/nbdev-clean
	@test -z "$$(git status --porcelain)" || { echo "notebooks are not clean: run nbdev-clean"; git status --porcelain; git --no-pager diff --stat; exit 1; }
	$(BIN)/nbdev-export
	@test -z "$$(git status --porcelain)" || { echo "notebooks and library are not in sync: run nbdev-export"; git status --porcelain; git --no-pager diff | head -60; exit 1; }

readme: install  ## README.md is built from nbs/index.ipynb
	$(BIN)/jupyter nbconvert --log-level=ERROR --to markdown --stdout nbs/index.ipynb > README.md

readme-check: readme
	@git diff --exit-code README.md >/dev/null || { echo "README.md is not built from nbs/index.ipynb: run make readme"; exit 1; }

bench: install
	$(BIN)/python bench/run_overhead.py
	$(BIN)/python bench/sweep_throughput.py
	$(BIN)/python bench/pipeline_cache.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
