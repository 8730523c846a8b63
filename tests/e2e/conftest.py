"""The stacks under test, each brought up once per module by the deployer DEPLOYER names (deploy/)
and torn down (volumes too) at its end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy import deployer
from deploy.stack import ARTIFACTS, DeployedStack


def _deployed(base: str) -> Iterator[DeployedStack]:
    stack = DeployedStack(deployer(base))
    ARTIFACTS.mkdir(exist_ok=True)
    # From nothing: a fresh volume proves first-start initialisation too.
    stack.down(volumes=True)
    try:
        stack.up()
        yield stack
    finally:
        stack.down(volumes=True)


@pytest.fixture(scope="module")
def dev_stack() -> Iterator[DeployedStack]:
    yield from _deployed("dev")


@pytest.fixture(scope="module")
def prod_stack() -> Iterator[DeployedStack]:
    yield from _deployed("prod")
