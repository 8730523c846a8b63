"""The engine the program talks to: `EngineMocks.new_resource` applies each registration by type.

The SDK resolves every Output input and every `depends_on` URN before it calls the monitor, and the
monitor returns the URN only once `new_resource` has returned: a resource is applied only after
all it depends on, so the declared order is the start order and the program's own gates (an
`apply` on a one-shot's `exit_code`) run on real values. A resource type without an applier, and
an input not in its applier's table, are errors naming them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import docker
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks

from rehearsal import tokens
from rehearsal.appliers import Deployment, Result, swarm
from rehearsal.appliers import docker as single_host
from rehearsal.engine import RehearsalError, Schema, refuse_unhandled
from rehearsal.runner import Registration, current_registration, reveal
from rehearsal.state import AppliedResource
from rehearsal.tokens import CONTAINER, IMAGE, NETWORK, REMOTE_IMAGE, SECRET, SERVICE, VOLUME

Applier = Callable[[Deployment, Registration], Result]

# Per resource type, its applier and the inputs it handles: exactly what the program registers
# (tests/rehearsal/test_handled_inputs.py holds the two together).
APPLIERS: dict[str, tuple[Applier, Schema]] = {
    NETWORK: (single_host.apply_network, single_host.NETWORK_INPUTS),
    VOLUME: (single_host.apply_volume, single_host.VOLUME_INPUTS),
    REMOTE_IMAGE: (single_host.apply_remote_image, single_host.REMOTE_IMAGE_INPUTS),
    IMAGE: (single_host.apply_image, single_host.IMAGE_INPUTS),
    CONTAINER: (single_host.apply_container, single_host.CONTAINER_INPUTS),
    SERVICE: (swarm.apply_service, swarm.SERVICE_INPUTS),
    SECRET: (swarm.apply_secret, swarm.SECRET_INPUTS),
}
HANDLED_INPUTS = {resource_type: schema for resource_type, (_, schema) in APPLIERS.items()}


class EngineMocks(Mocks):
    """`pulumi.runtime.Mocks` whose `new_resource` applies the registration to the Docker engine;
    `node_labels`: what the swarm's nodes must carry (`swarm.ensure_swarm`)."""

    def __init__(self, deployment: Deployment, node_labels: dict[str, str] | None = None) -> None:
        self.deployment = deployment
        self.node_labels = dict(node_labels or {})
        self.registered: list[str] = []
        self._lock = threading.Lock()
        self._swarm_ready = False

    def _stack_reference(self, args: MockResourceArgs, urn: str) -> Result:
        """A read of a stack's outputs. Only the stack itself is known here: its non-secret outputs
        of the last successful `up` (what the engine's StackReference returns for it)."""
        name = str(args.inputs.get("name") or args.resource_id or "")
        if name.rsplit("/", 1)[-1] != self.deployment.stack:
            raise RehearsalError(f"{urn}: only a reference to the stack itself is rehearsed")
        outputs = dict(self.deployment.state.stack_outputs)
        return name, {"name": name, "outputs": outputs, "secretOutputNames": []}

    def _use_swarm(self, resource: Registration) -> None:
        """Services, secrets and overlay networks need a swarm manager: the engine becomes one
        before the first of them, its node labelled as an operator labels a cluster's."""
        if resource.type not in (SERVICE, SECRET) and resource.plain.get("driver") != "overlay":
            return
        with self._lock:
            if not self._swarm_ready:
                swarm.ensure_swarm(self.deployment.state, self.node_labels, self.deployment.log)
                self._swarm_ready = True

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        raise RehearsalError(f"function {args.token} is not rehearsed")

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        resource = current_registration(args)
        with self._lock:
            self.registered.append(resource.urn)
        # Secret inputs arrive wrapped ({<sig>: ..., "value": ...}); the provider gets values.
        inputs = reveal(args.inputs)
        if args.typ == tokens.STACK_REFERENCE:  # a read (ReadResource), not a registration
            return self._stack_reference(args, resource.urn)
        if not args.custom:
            # A ComponentResource: nothing to apply, Pulumi records it only.
            return None, {}
        if args.typ not in APPLIERS:
            raise RehearsalError(f"{resource.urn}: resource type {args.typ} is not rehearsed")
        applier, handled = APPLIERS[args.typ]
        refuse_unhandled(resource.urn, inputs, handled)
        self._use_swarm(resource)
        resource_id, outputs = applier(self.deployment, resource)
        return resource_id, {**inputs, **outputs}


def delete_resource(
    client: docker.APIClient, resource: AppliedResource, *, keep_volumes: bool
) -> bool:
    """Delete one recorded resource as the provider's Delete does. False when it is kept."""
    if resource.type in (SERVICE, SECRET):
        delete = swarm.delete_service if resource.type == SERVICE else swarm.delete_secret
        delete(client, resource)
        return True
    return single_host.delete_docker_resource(client, resource, keep_volumes=keep_volumes)
