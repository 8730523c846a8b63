"""Apply the swarm registrations (Service, Secret) as pulumi-docker 5.x does.

Same discipline as `docker.py` beside it: the tables below hold exactly the inputs the program
sets. Provider sources cited (kreuzwerker/terraform-provider-docker v4.5.0, commit 5074970c, which
pulumi-docker 5.1/5.2 bridges; pulumi-docker `provider/resources.go` v5.1.0; terraform-plugin-sdk v2
`helper/retry/state.go` for the waiting loop):
  [svc-funcs] internal/provider/resource_docker_service_funcs.go
  [svc-struct] internal/provider/resource_docker_service_structures.go
  [svc-schema] internal/provider/resource_docker_service.go
  [secret] internal/provider/resource_docker_secret.go
  [resources.go] pulumi-docker provider/resources.go
  [retry] terraform-plugin-sdk/v2 helper/retry/state.go (StateChangeConf.WaitForStateContext)
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import docker
import docker.errors
import docker.types

from rehearsal.appliers import ApplyContext, Change
from rehearsal.engine import (
    LABELS,
    STACK_LABEL,
    RehearsalError,
    api_client,
    autoname,
    exists,
    fields,
    go_duration_nanoseconds,
    label_list_to_dict,
    rehearsal_labels,
)
from rehearsal.readback import changed_properties, property_digests, read_back
from rehearsal.state import AppliedResource, inputs_digest
from rehearsal.tokens import SECRET, SERVICE

# The inputs applied (wire names): the ServiceSpec of [svc-struct] createServiceSpec, and
# `convergeConfig`, the provider's wait for the tasks (create) or the rolling update (update).
UPDATE_CONFIG_INPUTS = fields("delay failureAction monitor order parallelism")
LIMIT_INPUTS = fields("memoryBytes nanoCpus")
CONTAINER_SPEC_INPUTS = fields(
    "args capDrops env image init readOnly stopGracePeriod stopSignal user",
    healthcheck=fields("interval retries startPeriod tests timeout"),
    labels=LABELS,
    mounts=fields(
        "readOnly source target type",
        tmpfsOptions=fields("sizeBytes"),
        volumeOptions=fields(labels=LABELS),
    ),
    secrets=fields("fileGid fileMode fileName fileUid secretId secretName"),
)
SERVICE_INPUTS = fields(
    "name",
    convergeConfig=fields("delay timeout"),
    endpointSpec=fields("mode", ports=fields("protocol publishMode publishedPort targetPort")),
    labels=LABELS,
    mode=fields(replicated=fields("replicas")),
    rollbackConfig=UPDATE_CONFIG_INPUTS,
    updateConfig=UPDATE_CONFIG_INPUTS,
    taskSpec=fields(
        containerSpec=CONTAINER_SPEC_INPUTS,
        logDriver=fields("name options"),
        networksAdvanceds=fields("aliases id"),
        placement=fields("constraints"),
        resources=fields(limits=LIMIT_INPUTS, reservation=LIMIT_INPUTS),
        restartPolicy=fields("condition delay"),
    ),
)
SECRET_INPUTS = fields("data", labels=LABELS)

# [svc-funcs] L668-687: task states in order (1 first); a state beyond `running` is terminal.
TASK_STATES = (
    "new allocated pending assigned accepted preparing ready starting running complete shutdown "
    "failed rejected remove orphaned"
)
TASK_STATE_ORDER = {state: order for order, state in enumerate(TASK_STATES.split(), start=1)}
# [svc-funcs] L210 (update) and [retry]: the fixed delay before the first poll of an update, the
# minimum wait between polls, and the bound the backoff doubles up to.
UPDATE_CONVERGE_DELAY_SECONDS = 7.0
POLL_MIN_SECONDS = 5.0
POLL_MAX_SECONDS = 10.0
# [svc-funcs] L91-98: Read after create/update waits this long before it reads the service back.
READ_DELAY_SECONDS = 2.0


def _nanoseconds(value: Any, default: str = "0s") -> int:
    return go_duration_nanoseconds(str(value) if value else default)


def _int_or_none(value: Any) -> int | None:
    return int(value) if value else None


# -- the ServiceSpec sent
# -------------------------------------------------------------------------------------


def service_spec(inputs: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The ServiceSpec the provider sends ([svc-struct] createServiceSpec), as docker-py keywords
    for `create_service` / `update_service`."""
    task = inputs.get("taskSpec") or {}
    endpoint = inputs.get("endpointSpec") or {}
    # [svc-schema]: replicas defaults to 1.
    replicas = int(((inputs.get("mode") or {}).get("replicated") or {}).get("replicas", 1))
    ports = [
        # [svc-struct] portSetToServicePorts; schema defaults: protocol tcp, publish_mode ingress.
        {
            "Protocol": port.get("protocol", "tcp"),
            "TargetPort": int(port["targetPort"]),
            "PublishMode": port.get("publishMode", "ingress"),
        }
        | ({"PublishedPort": int(port["publishedPort"])} if port.get("publishedPort") else {})
        for port in endpoint.get("ports") or []
    ]
    return {
        "task_template": _task_template(task, _container_spec(task["containerSpec"], labels)),
        "name": name,
        "labels": {**label_list_to_dict(inputs.get("labels")), **labels},
        "mode": docker.types.ServiceMode("replicated", replicas=replicas),
        "update_config": _update_config(inputs.get("updateConfig")),
        "rollback_config": _update_config(inputs.get("rollbackConfig")),
        # [svc-schema]: endpoint mode defaults to vip.
        "endpoint_spec": docker.types.EndpointSpec(
            mode=endpoint.get("mode") or "vip", ports=ports or None
        ),
    }


def _container_spec(
    spec: Mapping[str, Any], labels: Mapping[str, str]
) -> docker.types.ContainerSpec:
    check = spec.get("healthcheck")
    healthcheck = None
    if check:
        # [svc-struct] L884-906: Go durations parsed.
        healthcheck = docker.types.Healthcheck(
            test=list(check["tests"]),
            interval=_nanoseconds(check.get("interval")),
            timeout=_nanoseconds(check.get("timeout")),
            start_period=_nanoseconds(check.get("startPeriod")),
            retries=int(check.get("retries", 0)),
        )
    secrets = [
        # [svc-struct] L929-950: File{Name, UID, GID, Mode}; a relative name lands under
        # /run/secrets. Schema defaults: uid/gid "0", mode 0444.
        docker.types.SecretReference(
            secret_id=str(ref["secretId"]),
            secret_name=str(ref.get("secretName") or ""),
            filename=str(ref.get("fileName") or ref.get("secretName") or ""),
            uid=str(ref.get("fileUid", "0")),
            gid=str(ref.get("fileGid", "0")),
            mode=int(ref.get("fileMode", 0o444)),
        )
        for ref in spec.get("secrets") or []
    ]
    grace = spec.get("stopGracePeriod")
    return docker.types.ContainerSpec(
        image=str(spec["image"]),
        args=list(spec.get("args") or []) or None,
        # The provider renders the env map in Go's map order, which varies from one run to the
        # next, so a real in-place update can reorder Env and roll every task even when only the
        # replicas changed (docs/swarm.md). Sorted here: the rehearsal rolls only on a real change.
        env=dict(sorted(spec["env"].items())) if spec.get("env") else None,
        user=spec.get("user") or None,
        labels={**label_list_to_dict(spec.get("labels")), **labels},
        mounts=[_mount(item, labels[STACK_LABEL]) for item in spec.get("mounts") or []] or None,
        stop_grace_period=_nanoseconds(grace) if grace else None,
        stop_signal=spec.get("stopSignal") or None,
        secrets=secrets or None,
        read_only=bool(spec.get("readOnly", False)),
        healthcheck=healthcheck,
        # Sent when the client speaks API >= 1.37 ([svc-struct] L990-995).
        init=bool(spec["init"]) if "init" in spec else None,
        cap_drop=list(spec.get("capDrops") or []) or None,  # Engine API 1.41
    )


def _mount(item: Mapping[str, Any], stack: str) -> docker.types.Mount:
    volume_labels = label_list_to_dict((item.get("volumeOptions") or {}).get("labels"))
    size = (item.get("tmpfsOptions") or {}).get("sizeBytes")
    return docker.types.Mount(
        target=item["target"],
        source=item.get("source") or "",
        type=item["type"],
        read_only=bool(item.get("readOnly", False)),
        # The engine creates a missing named volume with these labels (plus the rehearsal's stack
        # label, so `down --volumes` finds it).
        labels={**volume_labels, STACK_LABEL: stack} if item["type"] == "volume" else None,
        tmpfs_size=None if size is None else int(size),
    )


def _task_template(
    task: Mapping[str, Any], container_spec: docker.types.ContainerSpec
) -> docker.types.TaskTemplate:
    limits = (task.get("resources") or {}).get("limits") or {}
    reservation = (task.get("resources") or {}).get("reservation") or {}
    policy = task.get("restartPolicy")
    log_driver = task.get("logDriver")
    return docker.types.TaskTemplate(
        container_spec=container_spec,
        resources=docker.types.Resources(
            cpu_limit=_int_or_none(limits.get("nanoCpus")),
            mem_limit=_int_or_none(limits.get("memoryBytes")),
            cpu_reservation=_int_or_none(reservation.get("nanoCpus")),
            mem_reservation=_int_or_none(reservation.get("memoryBytes")),
        )
        if task.get("resources")
        else None,
        # [svc-schema]: condition defaults to "any".
        restart_policy=docker.types.RestartPolicy(
            condition=str(policy.get("condition", "any")), delay=_nanoseconds(policy.get("delay"))
        )
        if policy
        else None,
        placement=docker.types.Placement(
            constraints=list((task.get("placement") or {}).get("constraints") or []) or None
        )
        if task.get("placement")
        else None,
        log_driver=docker.types.DriverConfig(
            log_driver["name"], dict(log_driver.get("options") or {})
        )
        if log_driver
        else None,
        # [svc-struct] createServiceAdvancedNetworks: Target is the network's id.
        networks=[
            docker.types.NetworkAttachmentConfig(
                target=str(item["id"]), aliases=list(item.get("aliases") or []) or None
            )
            for item in task.get("networksAdvanceds") or []
        ]
        or None,
    )


def _update_config(block: Mapping[str, Any] | None) -> docker.types.UpdateConfig | None:
    # [svc-struct] createUpdateOrRollbackConfig; unset fields take the schema's defaults
    # ([svc-schema]: parallelism 1, delay 0s, failure_action pause, monitor 5s, max_failure_ratio
    # 0, order stop-first).
    if not block:
        return None
    return docker.types.UpdateConfig(
        parallelism=int(block.get("parallelism", 1)),
        delay=_nanoseconds(block.get("delay")),
        failure_action=str(block.get("failureAction", "pause")),
        monitor=_nanoseconds(block.get("monitor"), "5s"),
        max_failure_ratio=0.0,
        order=str(block.get("order", "stop-first")),
    )


def replacement_key(inputs: Mapping[str, Any]) -> str:
    """A digest of the inputs whose change replaces the service instead of updating it in place
    ([svc-schema] ForceNew): the name, the mode block itself (its replicas are updated in place)
    and the networks_advanced ids and aliases."""
    networks = sorted(
        (str(n["id"]), sorted(n.get("aliases") or []))
        for n in (inputs.get("taskSpec") or {}).get("networksAdvanceds") or []
    )
    mode = sorted(k for k, v in (inputs.get("mode") or {}).items() if v)
    return inputs_digest({"name": inputs.get("name"), "mode": mode, "networks": networks})


# -- convergence
# --------------------------------------------------------------------------------------------


def wait_for_state(
    refresh: Callable[[], str],
    *,
    target: Collection[str],
    pending: Collection[str],
    timeout: float,
    delay: float,
) -> str:
    """[retry] StateChangeConf.WaitForStateContext with MinTimeout 5 s: sleep `delay`, refresh at
    once, then wait 5 s, then 10 s between refreshes (the wait doubles from 100 ms, bounded to
    [MinTimeout, 10 s]). The timeout counts from the start, delay included. A state outside
    `pending` and `target` is an error; `refresh` raising is an error too."""
    deadline = time.monotonic() + timeout
    time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
    wait = 0.1
    while True:
        state = refresh()
        if state in target:
            return state
        if state not in pending:
            raise RehearsalError(f"unexpected state {state!r}, wanted target {sorted(target)}")
        wait = min(max(wait * 2, POLL_MIN_SECONDS), POLL_MAX_SECONDS)
        if time.monotonic() + wait > deadline:
            raise TimeoutError(f"timeout while waiting for state to become {sorted(target)}")
        time.sleep(wait)


def _active_nodes(client: docker.APIClient) -> set[str]:
    # [svc-funcs] getActiveNodes: every node not `down`.
    return {node["ID"] for node in client.nodes() if node["Status"]["State"] != "down"}


def _tasks_by_slot(
    tasks: list[dict[str, Any]], active_nodes: set[str]
) -> dict[int, dict[str, Any]]:
    # [svc-funcs] tasksBySlot: per slot, the task with the lowest desired state, ties broken by the
    # lowest observed state (start-first updates), on active nodes only.
    by_slot: dict[int, dict[str, Any]] = {}
    for task in tasks:
        desired = TASK_STATE_ORDER.get(task.get("DesiredState", ""), 0)
        observed = TASK_STATE_ORDER.get(task["Status"].get("State", ""), 0)
        if desired == 0 or observed == 0:
            continue
        slot = int(task.get("Slot", 0))
        existing = by_slot.get(slot)
        if existing is not None:
            existing_desired = TASK_STATE_ORDER[existing["DesiredState"]]
            if existing_desired < desired:
                continue
            if (
                existing_desired == desired
                and TASK_STATE_ORDER[existing["Status"]["State"]] <= observed
            ):
                continue
        if task.get("NodeID") and task["NodeID"] not in active_nodes:
            continue
        by_slot[slot] = task
    return by_slot


def running_replicas(client: docker.APIClient, service_id: str) -> tuple[int, int]:
    """[svc-funcs] replicatedConsoleLogUpdater.update: (running, wanted). A task counts when its
    desired state is not terminal and its observed state is `running`; Swarm reports a task with a
    healthcheck as running only once the container is healthy."""
    service = client.inspect_service(service_id)
    replicated = (service["Spec"].get("Mode") or {}).get("Replicated")
    if not replicated or replicated.get("Replicas") is None:
        raise RehearsalError(f"service {service_id}: no replica count")
    tasks = client.tasks(filters={"service": service_id, "desired-state": "running"})
    running = sum(
        1
        for task in _tasks_by_slot(tasks, _active_nodes(client)).values()
        if TASK_STATE_ORDER[task["DesiredState"]] <= TASK_STATE_ORDER["running"]
        and task["Status"]["State"] == "running"
    )
    return running, int(replicated["Replicas"])


def _create_refresh(client: docker.APIClient, service_id: str) -> Callable[[], str]:
    # [svc-funcs] resourceDockerServiceCreateRefreshFunc: "running" once every replica runs.
    def refresh() -> str:
        running, wanted = running_replicas(client, service_id)
        return "running" if running == wanted else "creating"

    return refresh


# [svc-funcs] resourceDockerServiceUpdateRefreshFunc: UpdateStatus states that fail the update.
_FAILED_UPDATE = {
    "rollback_completed": "service rollback completed",
    "paused": "service update paused",
    "rollback_paused": "service rollback paused",
}


def _update_refresh(client: docker.APIClient, service_id: str) -> Callable[[], str]:
    # [svc-funcs] resourceDockerServiceUpdateRefreshFunc L405-476: UpdateStatus first (completed
    # wins; a rollback or a pause fails), then the running count as for create (a scale-only
    # change has no UpdateStatus).
    def refresh() -> str:
        status = client.inspect_service(service_id).get("UpdateStatus") or {}
        state, message = status.get("State"), status.get("Message", "")
        if state == "completed":
            return "completed"
        if state in _FAILED_UPDATE:
            raise RehearsalError(f"{_FAILED_UPDATE[state]}: {message}")
        running, wanted = running_replicas(client, service_id)
        if running != wanted:
            return "updating"
        if state == "rollback_started":
            raise RehearsalError(f"service rollback completed: {message}")
        return "completed"

    return refresh


def task_diagnostics(client: docker.APIClient, service_id: str, *, tail: int = 20) -> str:
    """The service's latest tasks and the last log lines of their containers, for an error."""
    lines: list[str] = []
    tasks = sorted(
        client.tasks(filters={"service": service_id}),
        key=lambda t: str(t.get("UpdatedAt", "")),
        reverse=True,
    )[:4]
    for task in tasks:
        status = task["Status"]
        lines.append(
            f"  task {task['ID'][:12]} slot {task.get('Slot')}: {status.get('State')} "
            f"(desired {task.get('DesiredState')}) {status.get('Err') or status.get('Message', '')}"
        )
        container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
        if container_id:
            with contextlib.suppress(docker.errors.APIError):
                logs = client.logs(container_id, stdout=True, stderr=True, tail=tail)
                lines += [f"    | {line}" for line in logs.decode(errors="replace").splitlines()]
    return "\n".join(lines)


# -- the appliers
# -------------------------------------------------------------------------------------------


def apply_service(
    context: ApplyContext,
    resource_name: str,
    inputs: Mapping[str, Any],
    urn: str,
    *,
    delete_first: bool = False,
) -> tuple[str, dict[str, Any]]:
    """`delete_first`: the program's delete_before_replace (the provider's default for a service is
    create before delete)."""
    client = api_client()
    recorded = context.state.get(urn)
    if recorded is None:
        context.changes.append(Change("create", urn, []))
        return _create_service(context, client, resource_name, inputs, urn)
    present = not recorded.tainted and exists(client.inspect_service, recorded.id)
    # The engine's diff: the new inputs against what Read wrote back (rehearsal/readback.py).
    changed = changed_properties(SERVICE, inputs, recorded.readback)
    if present and not changed:
        return recorded.id, {**inputs, **recorded.outputs}
    if present and recorded.replace_key == replacement_key(inputs):
        context.changes.append(Change("update", urn, changed))
        _update_service(context, client, recorded, inputs, urn)
        recorded.digest = inputs_digest(dict(inputs))
        recorded.readback = property_digests(read_back(SERVICE, inputs))
        context.state.record(recorded)
        return recorded.id, {**inputs, **recorded.outputs}
    context.changes.append(Change("replace", urn, changed))
    if present and not delete_first:
        # pulumi-docker does not mark Service delete-before-replace ([resources.go]): the new
        # service is created first, the old one deleted at the end of the deployment. With the
        # same name the engine refuses the create, as it would for `pulumi up`.
        context.log(f"  replacing {urn} (create before delete)")
        context.superseded.append(recorded)
    else:
        delete_service(client, recorded)
    context.state.forget(urn)
    return _create_service(context, client, resource_name, inputs, urn)


def _create_service(
    context: ApplyContext,
    client: docker.APIClient,
    resource_name: str,
    inputs: Mapping[str, Any],
    urn: str,
) -> tuple[str, dict[str, Any]]:
    name = str(inputs.get("name") or autoname(resource_name))
    sequence = context.state.take_sequence()
    labels = rehearsal_labels({}, context.stack, urn, sequence)
    try:
        created = client.create_service(**service_spec(inputs, name, labels))
    except docker.errors.APIError as error:
        raise RehearsalError(
            f"{urn}: service create failed: {error.explanation or error}"
        ) from error
    grace = inputs["taskSpec"]["containerSpec"].get("stopGracePeriod")
    record = AppliedResource(
        urn,
        SERVICE,
        str(created["ID"]),
        name,
        inputs_digest(dict(inputs)),
        sequence,
        {"name": name},
        {"stopGracePeriod": grace},
        tainted=True,
        replace_key=replacement_key(inputs),
        readback=property_digests(read_back(SERVICE, inputs)),
    )
    context.state.record(record)
    context.log(f"  created service {name}")
    if inputs.get("convergeConfig"):
        _converge_created(context, client, record, inputs["convergeConfig"])
    time.sleep(READ_DELAY_SECONDS)
    record.tainted = False
    context.state.record(record)
    return record.id, {**inputs, **record.outputs}


def _converge_created(
    context: ApplyContext,
    client: docker.APIClient,
    record: AppliedResource,
    converge: Mapping[str, Any],
) -> None:
    timeout = _nanoseconds(converge.get("timeout"), "3m0s") / 1e9
    try:
        wait_for_state(
            _create_refresh(client, record.id),
            target={"running", "complete"},
            pending={"creating"},
            timeout=timeout,
            delay=_nanoseconds(converge.get("delay"), "7s") / 1e9,
        )
    except (TimeoutError, RehearsalError) as error:
        # [svc-funcs] L65-76: a service that does not converge is deleted, then the error.
        diagnostics = task_diagnostics(client, record.id)
        delete_service(client, record)
        context.state.forget(record.urn)
        reason = (
            f"Service with ID ({record.id}) did not converge after {converge.get('timeout')}"
            if isinstance(error, TimeoutError)
            else str(error)
        )
        raise RehearsalError(
            f"{record.urn}: {reason} (the service was deleted)\n{diagnostics}"
        ) from error
    context.log(f"  {record.physical_name} converged")


def _update_service(
    context: ApplyContext,
    client: docker.APIClient,
    recorded: AppliedResource,
    inputs: Mapping[str, Any],
    urn: str,
) -> None:
    # [svc-funcs] resourceDockerServiceUpdate L169-225: ServiceUpdate with the whole new spec at the
    # current version; Swarm rolls the tasks per update_config.
    name = recorded.physical_name
    version = int(client.inspect_service(recorded.id)["Version"]["Index"])
    labels = rehearsal_labels({}, context.stack, urn, recorded.sequence)
    context.log(f"  updating service {name} in place")
    try:
        client.update_service(recorded.id, version, **service_spec(inputs, name, labels))
    except docker.errors.APIError as error:
        raise RehearsalError(
            f"{urn}: service update failed: {error.explanation or error}"
        ) from error
    converge = inputs.get("convergeConfig")
    if converge:
        try:
            wait_for_state(
                _update_refresh(client, recorded.id),
                target={"completed"},
                pending={"creating", "updating"},
                timeout=_nanoseconds(converge.get("timeout"), "3m0s") / 1e9,
                delay=UPDATE_CONVERGE_DELAY_SECONDS,
            )
        except (TimeoutError, RehearsalError) as error:
            reason = (
                f"Service with ID ({recorded.id}) did not converge after {converge.get('timeout')}"
                if isinstance(error, TimeoutError)
                else str(error)
            )
            raise RehearsalError(
                f"{urn}: {reason}\n{task_diagnostics(client, recorded.id)}"
            ) from error
        context.log(f"  {name} updated")
    time.sleep(READ_DELAY_SECONDS)


def apply_secret(
    context: ApplyContext, resource_name: str, inputs: Mapping[str, Any], urn: str
) -> tuple[str, dict[str, Any]]:
    """Every input is ForceNew ([secret] schema): a change replaces the secret create-before-delete
    (auto-named, so the new one gets a new name: [resources.go]); the old one is deleted once the
    deployment is done (services have moved to the new one by then)."""
    digest = inputs_digest(dict(inputs))
    client = api_client()
    recorded = context.state.get(urn)
    if (
        recorded is not None
        and recorded.digest == digest
        and exists(client.inspect_secret, recorded.id)
    ):
        return recorded.id, {**inputs, **recorded.outputs}
    context.changes.append(Change("create" if recorded is None else "replace", urn, []))
    if recorded is not None:
        context.superseded.append(recorded)
        context.state.forget(urn)
    name = autoname(resource_name)
    sequence = context.state.take_sequence()
    labels = rehearsal_labels(
        label_list_to_dict(inputs.get("labels")), context.stack, urn, sequence
    )
    # [secret] resourceDockerSecretCreate: data is base64 (StdEncoding), decoded before create.
    created = client.create_secret(name, base64.b64decode(str(inputs["data"])), labels=labels)
    context.state.record(
        AppliedResource(urn, SECRET, str(created["ID"]), name, digest, sequence, {"name": name})
    )
    context.log(f"  created secret {name}")
    return str(created["ID"]), {**inputs, "name": name}


# -- delete
# -------------------------------------------------------------------------------------------------


def delete_service(client: docker.APIClient, resource: AppliedResource) -> None:
    """[svc-funcs] deleteService L261-337: with a stop grace period, note the tasks' containers,
    remove the service, wait up to the grace period for each container to be removed, then force
    remove it."""
    grace = resource.delete.get("stopGracePeriod")
    grace_seconds = go_duration_nanoseconds(str(grace)) / 1e9 if grace else 0.0
    containers: list[str] = []
    if grace_seconds > 0:
        for task in client.tasks(filters={"service": resource.id}):
            container_id = (task["Status"].get("ContainerStatus") or {}).get("ContainerID", "")
            if container_id.strip() and task["Status"].get("State") != "shutdown":
                containers.append(container_id)
    try:
        client.remove_service(resource.id)
    except docker.errors.NotFound:
        return
    for container_id in containers:
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            try:
                client.inspect_container(container_id)
            except docker.errors.NotFound:
                break
            time.sleep(0.5)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.remove_container(container_id, v=True, force=True)


def delete_secret(client: docker.APIClient, resource: AppliedResource) -> None:
    """The engine refuses while a service still uses the secret, so retry while the services that
    used it are going away."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client.remove_secret(resource.id)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as error:
            if "in use" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1)
