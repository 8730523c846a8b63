"""The swarm stack, brought up once for the module on a single-node swarm by the deployer DEPLOYER
names (deploy/) and torn down at its end (volumes too; the swarm is left if the rehearsal created
it)."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from deploy import deployer
from deploy.stack import ARTIFACTS, SwarmStack
from rehearsal.engine import STACK_LABEL


@pytest.fixture(scope="module")
def swarm_stack() -> Iterator[SwarmStack]:
    stack = SwarmStack(deployer("swarm"))
    ARTIFACTS.mkdir(exist_ok=True)
    stack.down(volumes=True)
    try:
        stack.up()
        yield stack
    finally:
        stack.down(volumes=True)
        # Nothing of the stack is left on the engine.
        client = docker.from_env()
        selector = {"label": f"{STACK_LABEL}={stack.name}"}
        assert client.containers.list(all=True, filters=selector) == []
        assert client.networks.list(filters=selector) == []
        assert client.volumes.list(filters=selector) == []
