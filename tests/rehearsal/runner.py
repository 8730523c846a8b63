"""`up` and `down` for a rehearsed stack.

`up` runs the Pulumi program the way the Python language host does (`runpy.run_path` on the program
directory, with that directory as the working directory, inside the SDK's `run_pulumi_func`) with
the stack's config and `EngineMocks` as the engine, then removes what the program no longer
declares. `down` deletes everything recorded for the stack in reverse creation order.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import pulumi
import pulumi.runtime
from pulumi.runtime.settings import SETTINGS, get_root_resource, reset_options
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tests.rehearsal.applier import (
    CONTAINER,
    NETWORK,
    VOLUME,
    AppliedEvent,
    EngineMocks,
    RecordingMonitor,
    delete_container,
    delete_resource,
    remove_network,
)
from tests.rehearsal.engine import REPO_ROOT, SEQUENCE_LABEL, STACK_LABEL, api_client
from tests.rehearsal.stack_config import StackConfig
from tests.rehearsal.state import AppliedResource, StackState
from tests.rehearsal.swarm_applier import (
    SECRET,
    SERVICE,
    SERVICE_CONFIG,
    delete_blob,
    delete_service,
)
from tests.rehearsal.swarm_node import (
    ensure_swarm,
    node_labels_from_config,
    release_swarm,
    swarm_state,
)


@dataclass
class UpResult:
    outputs: dict[str, Any]
    secret_outputs: set[str]
    registered: list[str]
    events: list[AppliedEvent] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def remove_leftovers(
    stack: str, state: StackState, log: Callable[[str], None] = print
) -> list[str]:
    """Services, containers, secrets, configs and networks labelled for this stack that the state
    does not know (an interrupted earlier run): removed before anything is applied, services and
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
        delete_container(
            client, container["Id"], grace_seconds=0, attach=False, remove_volumes=True
        )
        removed.append(container["Names"][0].lstrip("/"))
    if manager:
        for kind, listed in (
            (SECRET, client.secrets(filters=selector)),
            (SERVICE_CONFIG, client.configs(filters=selector)),
        ):
            for blob in listed:
                if blob["ID"] not in known:
                    delete_blob(client, _leftover(kind, blob))
                    removed.append(blob["Spec"]["Name"])
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


def is_swarm_stack(config: StackConfig) -> bool:
    return config.values.get(f"{config.project}:target") == "swarm"


def up(
    stack: str,
    config: StackConfig,
    *,
    log: Callable[[str], None] = print,
    state: StackState | None = None,
) -> UpResult:
    state = state or StackState(stack)
    if is_swarm_stack(config):
        # The provider talks to a swarm manager; the nodes carry the labels PostgreSQL and Redis
        # are pinned to, as an operator sets them on a cluster (docs/swarm.md).
        ensure_swarm(
            stack,
            node_labels_from_config(config.values, config.project),
            log=log,
            state_dir=state.path.parent,
        )
    remove_leftovers(stack, state, log)
    mocks = EngineMocks(stack, state, log=log)
    try:
        outputs, secret_outputs = run_program(stack, config, mocks)
    finally:
        # Resources replaced create-before-delete go once the program has run (or failed), as
        # Pulumi deletes them at the end of the deployment.
        client = api_client()
        for superseded in mocks.superseded:
            log(f"  deleting replaced {superseded.physical_name}")
            delete_resource(client, superseded, keep_volumes=True)
    # Like `pulumi up`: what the program no longer declares is deleted once the rest has been
    # applied.
    removed = []
    for resource in reversed(state.resources()):
        if resource.urn not in mocks.registered:
            log(f"  deleting {resource.urn} (no longer declared)")
            delete_resource(
                client, resource, keep_volumes=bool(resource.delete.get("retainOnDelete"))
            )
            state.forget(resource.urn)
            removed.append(resource.urn)
    return UpResult(
        outputs=outputs,
        secret_outputs=secret_outputs,
        registered=list(mocks.registered),
        events=mocks.events,
        removed=removed,
    )


def run_program(
    stack: str, config: StackConfig, mocks: EngineMocks
) -> tuple[dict[str, Any], set[str]]:
    """Run the program under `mocks` as the language host would: its exports, and which are
    secret."""
    reset_options(project=config.project, stack=stack, root_directory=str(REPO_ROOT), preview=False)
    pulumi.runtime.set_all_config(config.values, config.secret_keys)
    pulumi.runtime.set_mocks(
        mocks,
        project=config.project,
        stack=stack,
        preview=False,
        monitor=RecordingMonitor(mocks),
    )
    # The language host passes the project root (where Pulumi.yaml is) to the program.
    SETTINGS.root_directory = str(REPO_ROOT)
    exports: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    def program() -> Any:  # the coroutine collecting the exports, awaited by run_pulumi_func
        runpy.run_path(str(config.program_dir), run_name="__main__")

        async def collect() -> None:
            root = get_root_resource()
            for key, value in dict(getattr(root, "outputs", {})).items():
                output = pulumi.Output.from_input(value)
                exports[key] = await output.future()
                if await output.is_secret():
                    secret_outputs.add(key)

        return collect()

    previous_directory = os.getcwd()
    previous_path = list(sys.path)
    os.chdir(config.program_dir)
    try:
        _sync_await(run_pulumi_func(program))
    finally:
        os.chdir(previous_directory)
        sys.path[:] = previous_path
    return exports, secret_outputs


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
    for resource in reversed(state.resources()):
        if delete_resource(client, resource, keep_volumes=not volumes):
            if resource.type in (CONTAINER, NETWORK, VOLUME, SERVICE, SECRET, SERVICE_CONFIG):
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
