"""`up` and `down` for a rehearsed stack: `up` runs the program with `EngineMocks` as the engine,
then deletes what it no longer declares; `down` deletes what was recorded, dependants first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from rehearsal.appliers import Change, Deployment
from rehearsal.appliers.dispatch import EngineMocks, delete_resource
from rehearsal.appliers.swarm import release_swarm, swarm_state
from rehearsal.engine import SEQUENCE_LABEL, STACK_LABEL, api_client
from rehearsal.runner import run_program
from rehearsal.stack_config import StackConfig
from rehearsal.state import AppliedResource, StackState
from rehearsal.tokens import CONTAINER, NETWORK, SECRET, SERVICE, VOLUME


class UpResult(NamedTuple):
    outputs: dict[str, Any]
    secret_outputs: set[str]
    # What the engine did: creates, updates, replacements (from the diff against the read-back
    # state) and deletes. A second `up` with nothing changed has none.
    changes: list[Change]


SWARM_TASK_LABEL = "com.docker.swarm.task.id"


def remove_leftovers(stack: str, state: StackState, log: Callable[[str], None] = print) -> None:
    """What is labelled for this stack but unknown to its state (an interrupted earlier run) goes
    first, in deletion order. Volumes are never leftovers: the next `up` adopts them, data and all.
    A service's task containers go with their service."""
    client, known = api_client(), {resource.id for resource in state.resources()}
    selector = {"label": f"{STACK_LABEL}={stack}"}
    listed = [
        (CONTAINER, c["Id"], c["Names"][0][1:], c.get("Labels"))
        for c in client.containers(all=True, filters=selector)
    ]
    listed += [
        (NETWORK, n["Id"], n["Name"], n.get("Labels")) for n in client.networks(filters=selector)
    ]
    swarm = swarm_state(client)
    if swarm.get("LocalNodeState") == "active" and swarm.get("ControlAvailable"):
        for kind, items in ((SERVICE, client.services), (SECRET, client.secrets)):
            listed += [
                (kind, i["ID"], i["Spec"]["Name"], i["Spec"].get("Labels"))
                for i in items(filters=selector)
            ]
    leftovers = [
        AppliedResource("", kind, object_id, name, "", int((labels or {}).get(SEQUENCE_LABEL, 0)))
        for kind, object_id, name, labels in listed
        if object_id not in known and SWARM_TASK_LABEL not in (labels or {})
    ]
    for leftover in deletion_order(leftovers):
        delete_resource(client, leftover, keep_volumes=True)
        log(f"  removed leftover {leftover.physical_name}")


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
    mocks, client = EngineMocks(Deployment(stack, state, log), node_labels=labels), api_client()
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
        for superseded in mocks.deployment.superseded:
            log(f"  deleting replaced {superseded.physical_name}")
            delete_resource(client, superseded, keep_volumes=True)
    # Like `pulumi up`: what the program no longer declares goes once the rest has been applied.
    for resource in deletion_order(state.resources()):
        if resource.urn not in mocks.registered:
            log(f"  deleting {resource.urn} (no longer declared)")
            retained = bool(resource.delete.get("retainOnDelete"))
            delete_resource(client, resource, keep_volumes=retained)
            state.forget(resource.urn)
            mocks.deployment.note("delete", resource.urn)
    # The stack's outputs, as a StackReference to it reads them: recorded only when the program
    # succeeded (a failed `pulumi up` registers no new stack outputs). Secret ones are left out.
    state.save(stack_outputs={k: v for k, v in run.exports.items() if k not in run.secret_outputs})
    return UpResult(run.exports, run.secret_outputs, mocks.deployment.changes)


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
        if not delete_resource(client, resource, keep_volumes=not volumes):
            log(f"  kept volume {resource.physical_name} (down --volumes deletes it)")
            continue
        if resource.type in (CONTAINER, NETWORK, VOLUME, SERVICE, SECRET):
            log(f"  deleted {resource.physical_name}")
        state.forget(resource.urn)
        deleted.append(resource.urn)
    # Volumes of services were created by the engine for the tasks: the stack's labels (the
    # program's volume labels) find them.
    selector = {"label": f"{STACK_LABEL}={stack}"}
    for volume in (client.volumes(filters=selector) or {}).get("Volumes") or [] if volumes else []:
        client.remove_volume(volume["Name"])
        log(f"  deleted volume {volume['Name']}")
    release_swarm(state, log)
    return deleted
