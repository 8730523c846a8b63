"""Fixtures: the program run for the dev and the prod stack, as their stack files configure them."""

from __future__ import annotations

import pytest

from tests.infra.pulumi_mocks import ProgramRun
from tests.infra.stacks import run_stack


@pytest.fixture
def dev() -> ProgramRun:
    return run_stack("dev")


@pytest.fixture
def prod() -> ProgramRun:
    return run_stack("prod")
