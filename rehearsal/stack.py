"""`up` and `down` for a rehearsed stack.

`up` runs the Pulumi program through `rehearsal.runner.run_program` (as the Python language host
does) with the stack's config and `EngineMocks` as the engine, then removes what the program no
longer declares. `down` deletes everything recorded for the stack in reverse creation order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from rehearsal.appliers import Change
from rehearsal.appliers.dispatch import AppliedEvent, EngineMocks, delete_resource
from rehearsal.appliers.docker import delete_container, remove_network
from rehearsal.appliers.swarm import delete_secret, delete_service
from rehearsal.engine import SEQUENCE_LABEL, STACK_LABEL, api_client
from rehearsal.runner import run_program
from rehearsal.stack_config import StackConfig
from rehearsal.state import AppliedResource, StackState
from rehearsal.swarm_node import release_swarm, swarm_state
from rehearsal.tokens import CONTAINER, NETWORK, SECRET, SERVICE, VOLUME


@dataclass
class UpResult:
    outputs: dict[str, Any]
    secret_outputs: set[str]
    events: list[AppliedEvent] = field(default_factory=list)
    # What the engine did: creates, updates, replacements (from the diff against the read-back
    # state) and deletes. A second `up` with nothing changed has none.
    changes: list[Change] = field(default_factory=list)


def remove_leftovers(
    stack: str, state: StackState, log: Callable[[str], None] = print
) -> list[str]:
    """Services, containers, secrets and networks labelled for this stack that the state does not
    know (an interrupted earlier run): removed before anything is applied, services and
    containers first, newest first."""
    client = api_client()
    known = {resource.id for resource in state.resources()}
    selector = {"label": f"{STACK_LABEL}={stack}"}
    removed: list[str] = []
    swarm = swarm_state(client)
    manager = swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))
    if manager:
        services = [s for s in client.services(filters=selector) if s["ID"] not in known]
        for service in sorted(services, key=_spec_sequence, reverse=True):
            delete_service(client, _leftover(SERVICE, service))
            removed.append(service["Spec"]["Name"])
    containers = [
        c
        for c in client.containers(all=True, filters=selector)
        # A service's task containers belong to Swarm: they go with their service.
        if c["Id"] not in known and SWARM_TASK_LABEL not in (c.get("Labels") or {})
    ]
    for container in sorted(containers, key=_sequence, reverse=True):
        delete_container(client, container["Id"], grace_seconds=0, attach=False)
        removed.append(container["Names"][0].lstrip("/"))
    for secret in client.secrets(filters=selector) if manager else []:
        if secret["ID"] not in known:
            delete_secret(client, _leftover(SECRET, secret))
            removed.append(secret["Spec"]["Name"])
    networks = [n for n in client.networks(filters=selector) if n["Id"] not in known]
    for network in sorted(networks, key=_sequence, reverse=True):
        with contextlib.suppress(docker.errors.NotFound):
            remove_network(client, network["Id"])
        removed.append(network["Name"])
    for name in removed:
        log(f"  removed leftover {name}")
    # Volumes are never leftovers: a named volume of the stack is adopted with its data by the next
    # up.
    return removed


SWARM_TASK_LABEL = "com.docker.swarm.task.id"


def _sequence(listed: dict[str, Any]) -> int:
    return int((listed.get("Labels") or {}).get(SEQUENCE_LABEL, "0"))


def _spec_sequence(listed: dict[str, Any]) -> int:
    return int((listed["Spec"].get("Labels") or {}).get(SEQUENCE_LABEL, "0"))


def _leftover(kind: str, listed: dict[str, Any]) -> AppliedResource:
    spec = listed["Spec"]
    grace = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("StopGracePeriod")
    return AppliedResource(
        urn="",
        type=kind,
        id=str(listed["ID"]),
        physical_name=str(spec["Name"]),
        digest="",
        sequence=0,
        delete={"stopGracePeriod": f"{int(grace) // 1_000_000_000}s" if grace else None},
    )


# Deletion order: what uses others first (services and containers use secrets, networks, volumes),
# each kind newest first. Creation order alone is not enough: a secret replaced after a service was
# updated in place to use it is newer than that service, and the engine refuses to delete a secret
# in use (Pulumi deletes by dependency, dependants first).
_DELETE_FIRST = {SERVICE: 0, CONTAINER: 0, SECRET: 1}


def deletion_order(resources: list[AppliedResource]) -> list[AppliedResource]:
    """`resources` (in creation order) in the order they can be deleted."""
    return sorted(reversed(resources), key=lambda r: _DELETE_FIRST.get(r.type, 2))


def up(
    stack: str,
    config: StackConfig,
    *,
    log: Callable[[str], None] = print,
    state: StackState | None = None,
    node_labels: dict[str, str] | None = None,
) -> UpResult:
    """`node_labels`: what the swarm's nodes must carry (default: `config.node_labels()`)."""
    state = state or StackState(stack)
    remove_leftovers(stack, state, log)
    labels = config.node_labels() if node_labels is None else node_labels
    mocks = EngineMocks(stack, state, log=log, node_labels=labels)
    try:
        run = run_program(
            config.values,
            stack=stack,
            mocks=mocks,
            secret_keys=config.secret_keys,
            project=config.project,
            program_dir=config.program_dir,
        )
    finally:
        # Resources replaced create-before-delete go once the program has run (or failed), as
        # Pulumi deletes them at the end of the deployment.
        for superseded in mocks.superseded:
            log(f"  deleting replaced {superseded.physical_name}")
            delete_resource(api_client(), superseded, keep_volumes=True)
    _delete_undeclared(state, mocks, log)
    # The stack's outputs, as a StackReference to it reads them: recorded only when the program
    # succeeded (a failed `pulumi up` registers no new stack outputs). Secret ones are left out.
    state.record_stack_outputs(
        {k: v for k, v in run.exports.items() if k not in run.secret_outputs}
    )
    return UpResult(run.exports, run.secret_outputs, mocks.events, mocks.changes)


def _delete_undeclared(state: StackState, mocks: EngineMocks, log: Callable[[str], None]) -> None:
    """Like `pulumi up`: what the program no longer declares is deleted once the rest has been
    applied."""
    client = api_client()
    for resource in deletion_order(state.resources()):
        if resource.urn not in mocks.registered:
            log(f"  deleting {resource.urn} (no longer declared)")
            delete_resource(
                client, resource, keep_volumes=bool(resource.delete.get("retainOnDelete"))
            )
            state.forget(resource.urn)
            mocks.changes.append(Change("delete", resource.urn, []))


def down(
    stack: str,
    *,
    volumes: bool = False,
    log: Callable[[str], None] = print,
    state: StackState | None = None,
) -> list[str]:
    """Delete the stack in reverse creation order; named volumes stay unless `volumes`."""
    state = state or StackState(stack)
    remove_leftovers(stack, state, log)
    client = api_client()
    deleted = []
    for resource in deletion_order(state.resources()):
        if delete_resource(client, resource, keep_volumes=not volumes):
            if resource.type in (CONTAINER, NETWORK, VOLUME, SERVICE, SECRET):
                log(f"  deleted {resource.physical_name}")
            state.forget(resource.urn)
            deleted.append(resource.urn)
        else:
            log(f"  kept volume {resource.physical_name} (down --volumes deletes it)")
    # Volumes of services were created by the engine for the tasks: the stack's labels (the
    # program's volume labels) find them.
    if volumes:
        for volume in (client.volumes(filters={"label": f"{STACK_LABEL}={stack}"}) or {}).get(
            "Volumes"
        ) or []:
            client.remove_volume(volume["Name"])
            log(f"  deleted volume {volume['Name']}")
    release_swarm(stack, log=log, state_dir=state.path.parent)
    return deleted
