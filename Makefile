SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PROTOS := $(shell find proto -name '*.proto' | sort)
STAMP := $(VENV)/.setup-stamp

.PHONY: help
help: ## Show this help.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

# System packages: redis-server (the real Redis of the stack and tests), docker-compose (validates the compose file).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml requirements-ml.txt
	@missing=""; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	  command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	  if [ -n "$$missing" ]; then $(SUDO) apt-get install -y -q $$missing || \
	    { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; }; fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-ml.txt
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

.PHONY: setup
setup: $(STAMP) ## Create the venv, install dependencies and redis-server.

.PHONY: run
run: setup ## Start the local stack (Redis, PostgreSQL, sandboxes, services) and open a chat.
	$(BIN)/agentmesh run

.PHONY: test
test: setup ## Run the test suite (unit, service and end-to-end tiers).
	$(PY) -m pytest -q -x --durations=15 tests

.PHONY: lint
lint: setup ## buf lint, buf format check, ruff and mypy.
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	$(BIN)/ruff check .
	$(BIN)/mypy mesh connectors planner executor memory gateway

.PHONY: gen
gen: ## Regenerate gen/ from proto/.
	rm -rf gen/agentmesh
	mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iproto --python_out=gen --grpc_python_out=gen \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	  --mypy_out=gen --mypy_grpc_out=gen $(PROTOS)
	find gen/agentmesh -type d -exec touch {}/__init__.py \;

.PHONY: checkgen
checkgen: setup ## Regenerate gen/ and fail if it differs from what is committed.
	$(MAKE) gen
	git diff --exit-code --stat -- gen
	test -z "$$(git status --porcelain -- gen)"
