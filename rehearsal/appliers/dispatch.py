"""The engine the program talks to: `EngineMocks.new_resource` applies each registration by type.

It receives each registration with its inputs already resolved (the Python SDK awaits every
Output input, and every `depends_on` URN, before it calls the monitor; the monitor returns the URN
only once `new_resource` has returned). So a resource is applied only after everything it depends
on has been applied: the order the program declares is the order things start, and its own gates
(an `apply` on a one-shot's `exit_code`) run on real values. A resource type without an applier,
and an input not in its applier's table, are errors naming them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks

from rehearsal.appliers import Change, swarm
from rehearsal.appliers.docker import (
    CONTAINER_INPUTS,
    IMAGE_INPUTS,
    NETWORK_INPUTS,
    REMOTE_IMAGE_INPUTS,
    VOLUME_INPUTS,
    DockerAppliers,
    delete_docker_resource,
)
from rehearsal.engine import RehearsalError, Schema, refuse_unhandled
from rehearsal.runner import RegistrationOptions, current_registration, reveal
from rehearsal.state import AppliedResource, StackState
from rehearsal.swarm_node import ensure_swarm
from rehearsal.tokens import (
    CONTAINER,
    IMAGE,
    NETWORK,
    REMOTE_IMAGE,
    SECRET,
    SERVICE,
    STACK_REFERENCE,
    VOLUME,
)

Applier = Callable[[MockResourceArgs, RegistrationOptions], tuple[str, dict[str, Any]]]

# Per resource type, the inputs its applier handles: exactly what the program registers
# (tests/rehearsal/test_handled_inputs.py holds the two together).
HANDLED_INPUTS: dict[str, Schema] = {
    NETWORK: NETWORK_INPUTS,
    VOLUME: VOLUME_INPUTS,
    REMOTE_IMAGE: REMOTE_IMAGE_INPUTS,
    IMAGE: IMAGE_INPUTS,
    CONTAINER: CONTAINER_INPUTS,
    SERVICE: swarm.SERVICE_INPUTS,
    SECRET: swarm.SECRET_INPUTS,
}


@dataclass
class AppliedEvent:
    urn: str
    started: float
    finished: float


class EngineMocks(Mocks):
    """`pulumi.runtime.Mocks` whose `new_resource` applies the registration to the Docker engine.

    `node_labels`: what the swarm's nodes must carry, put on the engine's node (unless some node
    already has each) when the program registers its first Swarm object (`swarm_node.py`).
    """

    def __init__(
        self,
        stack: str,
        state: StackState,
        *,
        log: Callable[[str], None] = print,
        node_labels: dict[str, str] | None = None,
    ) -> None:
        self.stack = stack
        self.state = state
        self.log = log
        self.node_labels = dict(node_labels or {})
        self.registered: list[str] = []
        self.events: list[AppliedEvent] = []
        # Replaced create-before-delete (secrets, services, containers the program lets be):
        # deleted once the program has run, as Pulumi deletes replaced resources at the end of a
        # deployment.
        self.superseded: list[AppliedResource] = []
        self.changes: list[Change] = []
        self._lock = threading.Lock()
        self._swarm_ready = False
        single_host = DockerAppliers(self)
        self.appliers: dict[str, Applier] = {
            NETWORK: single_host.network,
            VOLUME: single_host.volume,
            REMOTE_IMAGE: single_host.remote_image,
            IMAGE: single_host.image,
            CONTAINER: single_host.container,
            SERVICE: lambda a, o: swarm.apply_service(
                self, a.name, a.inputs, o.urn, delete_first=bool(o.delete_before_replace)
            ),
            SECRET: lambda a, o: swarm.apply_secret(self, a.name, a.inputs, o.urn),
        }

    def _stack_reference(
        self, args: MockResourceArgs, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        """A read of a stack's outputs. Only the stack itself is known here: its non-secret outputs
        of the last successful `up` (what the engine's StackReference returns for it)."""
        name = str(args.inputs.get("name") or args.resource_id or "")
        if name.rsplit("/", 1)[-1] != self.stack:
            raise RehearsalError(
                f"{options.urn}: only a reference to the stack itself is rehearsed"
            )
        return name, {
            "name": name,
            "outputs": dict(self.state.stack_outputs),
            "secretOutputNames": [],
        }

    def _use_swarm(self, args: MockResourceArgs) -> None:
        """Services, secrets and overlay networks need a swarm manager: the engine becomes one
        before the first of them, its node labelled as an operator labels a cluster's."""
        if args.typ not in (SERVICE, SECRET) and args.inputs.get("driver") != "overlay":
            return
        with self._lock:
            if not self._swarm_ready:
                ensure_swarm(
                    self.stack, self.node_labels, log=self.log, state_dir=self.state.path.parent
                )
                self._swarm_ready = True

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        raise RehearsalError(f"function {args.token} is not rehearsed")

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        options = current_registration(args)
        with self._lock:
            self.registered.append(options.urn)
        # Secret inputs arrive wrapped ({<sig>: ..., "value": ...}); the provider gets values.
        args.inputs = reveal(args.inputs)
        if args.typ == STACK_REFERENCE:  # a read (ReadResource), not a registration
            return self._stack_reference(args, options)
        if not args.custom:
            # A ComponentResource: nothing to apply, Pulumi records it only.
            return None, {}
        applier = self.appliers.get(args.typ)
        if applier is None:
            raise RehearsalError(f"{options.urn}: resource type {args.typ} is not rehearsed")
        refuse_unhandled(options.urn, args.inputs, HANDLED_INPUTS[args.typ])
        self._use_swarm(args)
        started = time.monotonic()
        resource_id, outputs = applier(args, options)
        with self._lock:
            self.events.append(AppliedEvent(options.urn, started, time.monotonic()))
        return resource_id, outputs


def delete_resource(
    client: docker.APIClient, resource: AppliedResource, *, keep_volumes: bool
) -> bool:
    """Delete one recorded resource as the provider's Delete does. Returns False when it is kept."""
    if resource.type == SERVICE:
        swarm.delete_service(client, resource)
        return True
    if resource.type == SECRET:
        swarm.delete_secret(client, resource)
        return True
    return delete_docker_resource(client, resource, keep_volumes=keep_volumes)
