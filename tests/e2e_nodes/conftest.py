"""The swarm stack on the Docker-in-Docker nodes that `scripts/e2e-swarm-nodes.sh` started
(DOCKER_HOST is their manager), brought up once for the module by the deployer DEPLOYER names
(deploy/) and torn down at its end."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from deploy import deployer
from deploy.stack import ARTIFACTS
from rehearsal.engine import STACK_LABEL
from rehearsal.nodes import node_containers
from tests.e2e_nodes.stack import NodesStack


@pytest.fixture(scope="module")
def nodes_stack() -> Iterator[NodesStack]:
    # Started by `make e2e-swarm NODES=3`: without its nodes this suite has nothing to run on.
    assert os.environ.get("DOCKER_HOST", "").startswith("tcp://"), (
        "DOCKER_HOST is not a swarm manager: run `make e2e-swarm NODES=3`"
    )
    assert len(node_containers()) >= 3, "REHEARSAL_IMAGE_NODES names no three nodes"
    stack = NodesStack(deployer("swarm3"))
    ARTIFACTS.mkdir(exist_ok=True)
    stack.down(volumes=True)
    try:
        stack.up()
        yield stack
    finally:
        stack.down(volumes=True)
        manager = stack.manager()
        selector = {"label": f"{STACK_LABEL}={stack.name}"}
        assert manager.services.list(filters=selector) == []
        assert manager.networks.list(filters=selector) == []
