# antrian: `make run` starts everything on this machine, `make test` proves it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
#: Test processes in parallel (each with its own database and vhost); tests marked `restarts` run alone after.
TEST_PROCESSES ?= 3
SERVICES := -e shared -e services/sync-api -e services/mailer -e services/booking-expiry

.DEFAULT_GOAL := help
.PHONY: help install services run check test test-fast test-cluster images test-images bench soak clean cluster-up cluster-down

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: shared/pyproject.toml services/*/pyproject.toml requirements-dev.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt $(SERVICES)
	touch $@

install: $(VENV)/.installed ## Install every service and the test tools into .venv

services: ## Start PostgreSQL and RabbitMQ here when they are down
	@scripts/ensure-services.sh

run: install services ## Migrate, then run every service in the foreground (Ctrl-C stops them all)
	$(BIN)/python dev/run.py

cluster-up: ## Start a 3-node RabbitMQ cluster here (q1-q3@localhost, AMQP 5681-5683) and print its BROKER_URL
	@scripts/rabbitmq-cluster.sh start

cluster-down: ## Stop the 3-node RabbitMQ cluster and remove its data
	@scripts/rabbitmq-cluster.sh stop

check: install ## Lint, the import contracts (.importlinter) and the type checker (mypy.ini: strict on shared/)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test-fast: check ## The fast tier while editing (under a minute): the checks, then the tests that start nothing
	$(BIN)/pytest -m fast -p no:xdist

test: check services ## Install what the tests need and run them all: the checks, every test, then the restarts
	@scripts/ensure-chromium.sh
	@scripts/ensure-promtool.sh
	@scripts/ensure-alertmanager.sh
	$(BIN)/pytest -n $(TEST_PROCESSES) -m "not restarts and not cluster and not images"
	$(BIN)/pytest -m restarts

test-cluster: check services ## The cluster tier: tests on 3-node RabbitMQ clusters of their own (tests/cluster/)
	$(BIN)/pytest -n $(TEST_PROCESSES) -m cluster

images: ## Build the images antrian-sync-api, -mailer, -booking-expiry (PYTHON_IMAGE picks the base; no registry: one made here)
	@scripts/build-images.sh

test-images: install services images ## The image tier: each image run in a container, and compose, against this machine's servers (tests/images/)
	@scripts/ensure-docker.sh --compose
	$(BIN)/pytest -n $(TEST_PROCESSES) -m images

bench: install services ## Run the benchmarks under bench/ and print their figures
	@scripts/ensure-load-tools.sh
	$(BIN)/python -m bench

profile: install services ## Where CPU goes, per path (sweep, sync, booking, email): py-spy flame graphs and top frames in bench/results/profile-*
	@scripts/ensure-load-tools.sh
	$(BIN)/python -m bench.profile $(if $(PROFILE),--only $(PROFILE))

soak: install services ## make run's stack under mixed load for SOAK_MINUTES (30), then every invariant checked
	$(BIN)/python -m bench.soak

clean: ## Remove .venv and generated files
	rm -rf $(VENV) var .pytest_cache .mypy_cache .import_linter_cache
