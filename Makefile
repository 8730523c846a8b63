# Two commands matter (README): `make up` provisions the dev stack, `make test` runs every check.
SHELL := /bin/bash
STACK ?= dev
UV_VERSION := 0.9.5
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: uv sync services lint test e2e up down rehearse rehearse-down bench

uv:  ## install uv (pinned) when missing
	@command -v uv >/dev/null || python3 -m pip install --quiet "uv==$(UV_VERSION)"

sync: uv
	uv sync --frozen

services:  ## make sure the machine's PostgreSQL and Redis answer (the app tests use them)
	bash scripts/ensure-services.sh

lint: sync
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy
	uv run hadolint Dockerfile

test: sync services lint
	uv run pytest tests/app tests/infra

up: sync  ## provision the dev stack with Pulumi (needs the Pulumi CLI and a Docker engine)
	bash scripts/pulumi-up.sh $(STACK)

down: sync
	bash scripts/pulumi-down.sh $(STACK)

# The rehearsal (docs/rehearsal.md): the Pulumi program applied to this machine's Docker engine.
e2e: sync  ## the rehearsal's own tests, then end-to-end tests on rehearsed dev and prod stacks
	uv run pytest tests/rehearsal tests/e2e

rehearse: sync  ## bring STACK (dev|prod) up on the local Docker engine and leave it running
	uv run python -m tests.rehearsal up --stack $(STACK)

rehearse-down: sync  ## tear STACK down; VOLUMES=1 deletes its named volumes too
	uv run python -m tests.rehearsal down --stack $(STACK) $(if $(VOLUMES),--volumes)
