# Two commands matter (README): `make up` provisions the dev stack, `make test` runs every check.
# `make` or `make help` lists every target with its description (the `## ` comment on its line).
SHELL := /bin/bash
.DEFAULT_GOAL := help
STACK ?= dev
# Who brings the suites' and the bench's stacks up (deploy/, docs/rehearsal.md "The deployers"):
# the rehearsal, or DEPLOYER=pulumi for Pulumi's Automation API (needs the Pulumi CLI).
DEPLOYER ?= rehearsal
export DEPLOYER
# `uv` from PATH, else the pinned copy `make uv` installs under .tools/ (scripts/bootstrap.py).
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/uv/bin/uv)

.PHONY: help uv sync services lint scan test faults e2e up down rehearse rehearse-down \
	rehearse-check bench

help:  ## list the targets and what each does
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-15s %s\n", $$1, $$2 }' \
		$(MAKEFILE_LIST)

uv:  ## install uv (pinned, under .tools/, never into the system Python) when missing
	@python3 scripts/bootstrap.py uv >/dev/null

sync: uv  ## install the locked dependencies (uv sync --frozen)
	$(UV) sync --frozen

services:  ## make sure the machine's PostgreSQL and Redis answer (the app tests use them)
	bash scripts/ensure-services.sh

lint: sync  ## ruff, ruff format, mypy --strict, hadolint, checkov
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run hadolint Dockerfile
	$(MAKE) --no-print-directory scan

scan: uv  ## checkov on the Dockerfile, in an environment of its own (its pins conflict with the app's)
	$(UV) run --isolated --only-group scan checkov -f Dockerfile --framework dockerfile \
		--quiet --compact --skip-download

test: sync services lint  ## lint, types, then the app and mocks tests (tests/app, tests/infra)
	$(UV) run pytest tests/app tests/infra tests/bootstrap

# up and down install what they need under .tools/ (uv, the pinned Pulumi CLI, the docker plugin)
# and only the runtime dependencies; docs/infra.md "From clone to a running stack".
up:  ## provision STACK (dev) with Pulumi on the local Docker engine, installing what it needs
	@python3 scripts/bootstrap.py up $(STACK)

down:  ## pulumi destroy STACK (dev), with the same set-up as up
	@python3 scripts/bootstrap.py down $(STACK)

# The rehearsal (docs/rehearsal.md): the Pulumi program applied to this machine's Docker engine.
# Each target that needs the engine first says what this machine lacks (and the command that
# provides it), before any test runs.
e2e: sync  ## fault injection, the rehearsal's own tests, end-to-end tests (DEPLOYER=pulumi: real `pulumi up`)
	$(UV) run python -m rehearsal check --chromium
	$(MAKE) --no-print-directory faults
	$(UV) run pytest --durations=15 tests/rehearsal tests/e2e

faults: sync services  ## RELIABILITY.md: faults injected into private servers and real processes
	$(UV) run pytest tests/faults

rehearse-check: sync  ## what the rehearsal needs and this machine lacks (engine, base images, Chromium)
	$(UV) run python -m rehearsal check --chromium

rehearse: sync  ## bring STACK (dev|prod|swarm) up on the local Docker engine and leave it running
	$(UV) run python -m rehearsal check
	$(UV) run python -m rehearsal up --stack $(STACK)

rehearse-down: sync  ## tear STACK down; VOLUMES=1 deletes its named volumes too
	$(UV) run python -m rehearsal down --stack $(STACK) $(if $(VOLUMES),--volumes)

# Never part of the tests (docs/bench.md): the tutorial's stack and ours (dev, prod), side by side.
bench: sync  ## ours against the tutorial's stack, same sitting (needs Docker + base images, wrk, ../shared)
	$(UV) run python -m rehearsal check
	$(UV) run --group bench python -m bench.run

# Without NODES: a single-node swarm on this engine. NODES=3: three Docker-in-Docker nodes from
# ../shared/offline-docker/swarm-nodes, created for the run and removed after it.
.PHONY: e2e-swarm
e2e-swarm: sync  ## the swarm rehearsal (docs/swarm.md): single-node swarm; NODES=3: on 3 nodes, removed after
	$(UV) run python -m rehearsal check
ifeq ($(NODES),)
	$(UV) run pytest --durations=10 tests/e2e_swarm
else
	UV="$(UV)" bash scripts/e2e-swarm-nodes.sh $(NODES)
endif
