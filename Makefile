# One target for each thing a person does. `make run` and `make test` set up
# everything they need on a fresh machine (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export VIDSCAN_TOOLS ?= $(HOME)/.cache/vidscan/bin

.PHONY: help venv proto deps triton models gateway run test test-fast lint fmt bench lock clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	PYTHON=$(PY) ./scripts/proto.sh
	# Once more now that gen/python/vidscan exists, so the editable install maps it.
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP) ## create .venv with runtime and dev dependencies

proto: venv ## generate Python stubs from protos/ into gen/python
	./scripts/proto.sh

deps: ## install PostgreSQL, Redis and MinIO if missing (for tests and benchmarks)
	./scripts/install-deps.sh

triton: venv ## install tritonserver (from the nvidia-pytriton wheel) if missing
	PYTHON=$(PY) ./scripts/install-triton.sh

models: venv ## build the reference ONNX models into models/
	$(PY) models/build_reference_models.py

gateway: proto ## build the grpc-gateway REST proxy (needs Go)
	./scripts/build-gateway.sh

run: proto ## run vidscan on the embedded default (SQLite, local files, in-memory sessions) with Triton and the gateway
	./scripts/run.sh

test: proto deps triton models gateway ## set up everything, then the whole suite against real services
	$(VENV)/bin/ruff check server clients tests bench
	$(VENV)/bin/mypy
	cd gateway && go vet ./... && go test ./...
	./scripts/test.sh

test-fast: proto ## run the suite without the set-up steps
	./scripts/test.sh -x -q

lint: proto ## ruff, mypy --strict (server, client, tests, bench), buf lint and buf breaking
	$(VENV)/bin/ruff check server clients tests bench
	$(VENV)/bin/ruff format --check server clients tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/buf lint
	./scripts/buf-breaking.sh

fmt: venv
	$(VENV)/bin/ruff check --fix server clients tests bench
	$(VENV)/bin/ruff format server clients tests bench

bench: proto deps ## run the benchmarks; results land in bench/results/
	$(PY) -m bench

lock: venv ## refresh constraints.txt from the current environment
	(echo "# Versions the suite was last run green with; 'make lock' rewrites this file."; \
	 $(PY) -m pip freeze --exclude-editable) > constraints.txt

clean:
	rm -rf gen .build var .pytest_cache .mypy_cache .ruff_cache
