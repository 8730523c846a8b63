"""The Swarm resources (services, secrets), applied as pulumi-docker 5.x does, and the swarm they
run on; the tables below hold exactly the inputs the program sets. Sources cited
(kreuzwerker/terraform-provider-docker v4.5.0, commit 5074970c, which pulumi-docker 5.1/5.2
bridges):
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
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.errors
import docker.types

from rehearsal.appliers import Deployment, Result
from rehearsal.engine import (
    LABELS,
    STACK_LABEL,
    RehearsalError,
    api_client,
    autoname,
    exists,
    fields,
    go_duration_nanoseconds,
    healthcheck,
    label_list_to_dict,
    retry_while_refused,
)
from rehearsal.readback import changed_properties, property_digests, read_back
from rehearsal.runner import Registration
from rehearsal.state import AppliedResource, StackState, inputs_digest
from rehearsal.tokens import SERVICE

# The inputs applied (wire names): the ServiceSpec of [svc-struct] createServiceSpec, and
# `convergeConfig`, the provider's wait for the tasks (create) or the rolling update (update).
UPDATE_CONFIG_INPUTS = fields("delay failureAction monitor order parallelism")
LIMIT_INPUTS = fields("memoryBytes nanoCpus")
CONTAINER_SPEC_INPUTS = fields(
    "args capDrops commands env image init readOnly stopGracePeriod stopSignal user",
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
    grace = spec.get("stopGracePeriod")
    secrets = [
        # [svc-struct] L929-950: File{Name, UID, GID, Mode}; a relative name lands under
        # /run/secrets. Schema defaults: uid/gid "0", mode 0444.
        docker.types.SecretReference(
            str(ref["secretId"]),
            str(ref.get("secretName") or ""),
            filename=str(ref.get("fileName") or ref.get("secretName") or ""),
            uid=str(ref.get("fileUid", "0")),
            gid=str(ref.get("fileGid", "0")),
            mode=int(ref.get("fileMode", 0o444)),
        )
        for ref in spec.get("secrets") or []
    ]
    return docker.types.ContainerSpec(
        str(spec["image"]),
        args=list(spec.get("args") or []) or None,
        command=list(spec.get("commands") or []) or None,
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
        healthcheck=healthcheck(spec.get("healthcheck")),
        # Sent when the client speaks API >= 1.37 ([svc-struct] L990-995).
        init=bool(spec["init"]) if "init" in spec else None,
        cap_drop=list(spec.get("capDrops") or []) or None,  # Engine API 1.41
    )


def _mount(item: Mapping[str, Any], stack: str) -> docker.types.Mount:
    volume_labels = label_list_to_dict((item.get("volumeOptions") or {}).get("labels"))
    size = (item.get("tmpfsOptions") or {}).get("sizeBytes")
    return docker.types.Mount(
        item["target"],
        item.get("source") or "",
        item["type"],
        bool(item.get("readOnly", False)),
        # The engine creates a missing named volume with these labels (plus the rehearsal's stack
        # label, so `down --volumes` finds it).
        labels={**volume_labels, STACK_LABEL: stack} if item["type"] == "volume" else None,
        tmpfs_size=None if size is None else int(size),
    )


def _task_template(
    task: Mapping[str, Any], container_spec: docker.types.ContainerSpec
) -> docker.types.TaskTemplate:
    limits = (task.get("resources") or {}).get("limits") or {}
    reserved = (task.get("resources") or {}).get("reservation") or {}
    policy, driver = task.get("restartPolicy") or {}, task.get("logDriver") or {}
    networks = [
        # [svc-struct] createServiceAdvancedNetworks: Target is the network's id.
        docker.types.NetworkAttachmentConfig(str(n["id"]), list(n.get("aliases") or []) or None)
        for n in task.get("networksAdvanceds") or []
    ]
    # Resources(cpu_limit, mem_limit, cpu_reservation, mem_reservation); 0 or unset: none.
    amounts = [
        block.get(key) for block in (limits, reserved) for key in ("nanoCpus", "memoryBytes")
    ]
    resources = docker.types.Resources(*[int(amount) if amount else None for amount in amounts])
    # [svc-schema]: a restart policy's condition defaults to "any".
    restart = docker.types.RestartPolicy(
        policy.get("condition", "any"), _nanoseconds(policy.get("delay"))
    )
    constraints = list((task.get("placement") or {}).get("constraints") or []) or None
    return docker.types.TaskTemplate(
        container_spec,
        resources=resources if task.get("resources") else None,
        restart_policy=restart if policy else None,
        placement=docker.types.Placement(constraints=constraints)
        if task.get("placement")
        else None,
        log_driver=docker.types.DriverConfig(driver["name"], dict(driver.get("options") or {}))
        if driver
        else None,
        networks=networks or None,
    )


def _update_config(block: Mapping[str, Any] | None) -> docker.types.UpdateConfig | None:
    # [svc-struct] createUpdateOrRollbackConfig; unset fields take the schema's defaults
    # ([svc-schema]: parallelism 1, delay 0s, failure_action pause, monitor 5s, max_failure_ratio
    # 0, order stop-first).
    if not block:
        return None
    return docker.types.UpdateConfig(
        int(block.get("parallelism", 1)),
        _nanoseconds(block.get("delay")),
        str(block.get("failureAction", "pause")),
        _nanoseconds(block.get("monitor"), "5s"),
        0.0,
        str(block.get("order", "stop-first")),
    )


def replacement_key(inputs: Mapping[str, Any]) -> str:
    """A digest of the ForceNew inputs ([svc-schema]), whose change replaces the service: the name,
    the mode block itself (not its replicas) and the networks_advanced ids and aliases."""
    networks = sorted(
        (str(n["id"]), sorted(n.get("aliases") or []))
        for n in (inputs.get("taskSpec") or {}).get("networksAdvanceds") or []
    )
    mode = sorted(k for k, v in (inputs.get("mode") or {}).items() if v)
    return inputs_digest({"name": inputs.get("name"), "mode": mode, "networks": networks})


def wait_until(converged: Callable[[], bool], *, timeout: float, delay: float) -> None:
    """[retry] StateChangeConf.WaitForStateContext, MinTimeout 5 s: sleep `delay`, refresh, then
    wait 5 s, then 10 s (doubling from 100 ms within [5 s, 10 s]); the timeout includes all."""
    deadline = time.monotonic() + timeout
    time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
    wait = 0.1
    while not converged():
        wait = min(max(wait * 2, POLL_MIN_SECONDS), POLL_MAX_SECONDS)
        if time.monotonic() + wait > deadline:
            raise TimeoutError("timeout while waiting for the service to converge")
        time.sleep(wait)


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
            existing_order = (
                TASK_STATE_ORDER[existing["DesiredState"]],
                TASK_STATE_ORDER[existing["Status"]["State"]],
            )
            if existing_order <= (desired, observed):
                continue
        if task.get("NodeID") and task["NodeID"] not in active_nodes:
            continue
        by_slot[slot] = task
    return by_slot


def _all_running(client: docker.APIClient, service_id: str) -> bool:
    """[svc-funcs] resourceDockerServiceCreateRefreshFunc, replicatedConsoleLogUpdater.update: each
    replica runs (a task with a healthcheck counts once healthy), desired state not terminal."""
    replicated = (client.inspect_service(service_id)["Spec"].get("Mode") or {}).get("Replicated")
    if not replicated or replicated.get("Replicas") is None:
        raise RehearsalError(f"service {service_id}: no replica count")
    tasks = client.tasks(filters={"service": service_id, "desired-state": "running"})
    # [svc-funcs] getActiveNodes: every node not `down`.
    active = {node["ID"] for node in client.nodes() if node["Status"]["State"] != "down"}
    running = [
        task
        for task in _tasks_by_slot(tasks, active).values()
        if TASK_STATE_ORDER[task["DesiredState"]] <= TASK_STATE_ORDER["running"]
        and task["Status"]["State"] == "running"
    ]
    return len(running) == int(replicated["Replicas"])


# [svc-funcs] resourceDockerServiceUpdateRefreshFunc: UpdateStatus states that fail the update.
_FAILED_UPDATE = {
    "rollback_completed": "service rollback completed",
    "paused": "service update paused",
    "rollback_paused": "service rollback paused",
}


def _updated(client: docker.APIClient, service_id: str) -> bool:
    # [svc-funcs] resourceDockerServiceUpdateRefreshFunc L405-476: UpdateStatus first (completed
    # wins; a rollback or a pause fails), then the running count as for create (a scale-only
    # change has no UpdateStatus).
    status = client.inspect_service(service_id).get("UpdateStatus") or {}
    state, message = status.get("State"), status.get("Message", "")
    if state in _FAILED_UPDATE:
        raise RehearsalError(f"{_FAILED_UPDATE[state]}: {message}")
    if state == "completed" or not _all_running(client, service_id):
        return state == "completed"
    if state == "rollback_started":
        raise RehearsalError(f"service rollback completed: {message}")
    return True


def task_diagnostics(client: docker.APIClient, service_id: str) -> str:
    """The service's latest tasks and the last log lines of their containers, for an error."""
    lines: list[str] = []
    tasks = client.tasks(filters={"service": service_id})
    for task in sorted(tasks, key=lambda t: str(t.get("UpdatedAt", "")), reverse=True)[:4]:
        status = task["Status"]
        error = status.get("Err") or status.get("Message", "")
        lines.append(f"  task {task['ID'][:12]}: {status.get('State')} ({error})")
        container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
        with contextlib.suppress(docker.errors.APIError):
            logs = (
                client.logs(container_id, stdout=True, stderr=True, tail=20)
                if container_id
                else b""
            )
            lines += [f"    | {line}" for line in logs.decode(errors="replace").splitlines()]
    return "\n".join(lines)


def apply_service(deployment: Deployment, resource: Registration) -> Result:
    inputs, urn, client = resource.plain, resource.urn, api_client()
    recorded = deployment.state.get(urn)
    if recorded is None:
        deployment.note("create", urn)
        return _create_service(deployment, client, resource)
    present = not recorded.tainted and exists(client.inspect_service, recorded.id)
    # The engine's diff: the new inputs against what Read wrote back (rehearsal/readback.py).
    changed = changed_properties(SERVICE, inputs, recorded.readback)
    if present and not changed:
        return recorded.id, recorded.outputs
    if present and recorded.replace_key == replacement_key(inputs):
        # [svc-funcs] resourceDockerServiceUpdate L169-225: ServiceUpdate with the whole new spec
        # at the current version; Swarm rolls the tasks per update_config.
        deployment.note("update", urn, changed)
        deployment.log(f"  updating service {recorded.physical_name} in place")
        labels = deployment.labels(resource, recorded.sequence)
        spec = service_spec(inputs, recorded.physical_name, labels)
        version = int(client.inspect_service(recorded.id)["Version"]["Index"])
        _send(urn, "update", lambda: client.update_service(recorded.id, version, **spec))
        _converge(deployment, client, recorded, inputs, _updated)
        recorded.digest = inputs_digest(inputs)
        recorded.readback = property_digests(read_back(SERVICE, inputs))
        deployment.state.record(recorded)
        return recorded.id, recorded.outputs
    deployment.note("replace", urn, changed)
    # pulumi-docker does not mark Service delete-before-replace ([resources.go]): unless the program
    # says so, the new service is created first, the old one deleted at the end of the deployment.
    # With the same name the engine refuses the create, as it would for `pulumi up`.
    delete_first = bool(resource.delete_first) or not present
    deployment.make_way(urn, lambda old: delete_service(client, old), delete_first=delete_first)
    return _create_service(deployment, client, resource)


def _create_service(
    deployment: Deployment, client: docker.APIClient, resource: Registration
) -> Result:
    inputs, urn = resource.plain, resource.urn
    name = str(inputs.get("name") or autoname(resource.name))
    sequence = deployment.state.take_sequence()
    spec = service_spec(inputs, name, deployment.labels(resource, sequence))
    created = _send(urn, "create", lambda: client.create_service(**spec))
    record = deployment.record(
        resource,
        str(created["ID"]),
        name,
        sequence,
        outputs={"name": name},
        delete={"stopGracePeriod": inputs["taskSpec"]["containerSpec"].get("stopGracePeriod")},
        replace_key=replacement_key(inputs),
        readback=property_digests(read_back(SERVICE, inputs)),
        tainted=True,
    )
    deployment.log(f"  created service {name}")
    try:
        _converge(deployment, client, record, inputs, _all_running)
    except RehearsalError:
        # [svc-funcs] L65-76: a service that does not converge is deleted, then the error.
        delete_service(client, record)
        deployment.state.forget(urn)
        raise
    record.tainted = False
    deployment.state.record(record)
    return record.id, record.outputs


def _send(urn: str, what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except docker.errors.APIError as error:
        raise RehearsalError(
            f"{urn}: service {what} failed: {error.explanation or error}"
        ) from error


def _converge(
    deployment: Deployment,
    client: docker.APIClient,
    service: AppliedResource,
    inputs: Mapping[str, Any],
    converged: Callable[[docker.APIClient, str], bool],
) -> None:
    """With `convergeConfig`, wait as the provider does for a created or updated service (its error,
    plus the tasks' errors and logs, when it does not converge); then the pause before its Read."""
    converge, creating = inputs.get("convergeConfig"), converged is _all_running
    if converge:
        timeout = _nanoseconds(converge.get("timeout"), "3m0s") / 1e9
        delay = _nanoseconds(converge.get("delay"), "7s") / 1e9
        delay = delay if creating else UPDATE_CONVERGE_DELAY_SECONDS
        try:
            wait_until(lambda: converged(client, service.id), timeout=timeout, delay=delay)
        except (TimeoutError, RehearsalError) as error:
            late = f"Service with ID ({service.id}) did not converge after {converge['timeout']}"
            reason = late if isinstance(error, TimeoutError) else str(error)
            reason += " (the service was deleted)" if creating else ""
            diagnostics = task_diagnostics(client, service.id)
            raise RehearsalError(f"{service.urn}: {reason}\n{diagnostics}") from error
        deployment.log(f"  {service.physical_name} {'converged' if creating else 'updated'}")
    time.sleep(READ_DELAY_SECONDS)


def apply_secret(deployment: Deployment, resource: Registration) -> Result:
    """Every input is ForceNew ([secret] schema): a change replaces the secret create-before-delete
    (auto-named: [resources.go]), the old one deleted once the services have moved on."""
    client, urn = api_client(), resource.urn
    unchanged = deployment.unchanged(resource, client.inspect_secret)
    if unchanged is not None:
        return unchanged.id, unchanged.outputs
    deployment.note("replace" if deployment.state.get(urn) else "create", urn)
    deployment.make_way(urn, lambda old: delete_secret(client, old), delete_first=False)
    name, sequence = autoname(resource.name), deployment.state.take_sequence()
    # [secret] resourceDockerSecretCreate: data is base64 (StdEncoding), decoded before create.
    data = base64.b64decode(str(resource.plain["data"]))
    created = client.create_secret(name, data, labels=deployment.labels(resource, sequence))
    deployment.record(resource, str(created["ID"]), name, sequence, outputs={"name": name})
    deployment.log(f"  created secret {name}")
    return str(created["ID"]), {"name": name}


# The engine the provider talks to (`docker:host`, else DOCKER_HOST, else this machine's) is made a
# single-node swarm before the program's first Swarm object, and left after `down` only when the
# rehearsal created it. What it did (`docker swarm init`, node labels added) is kept in the stack's
# state, so `down` undoes exactly that.

# One node: the control plane listens on loopback only, and advertises that address.
ADVERTISE_ADDRESS = "127.0.0.1"
LISTEN_ADDRESS = "127.0.0.1:2377"


def swarm_state(client: docker.APIClient) -> dict[str, Any]:
    return dict(client.info().get("Swarm") or {})


def ensure_swarm(
    state: StackState, labels: dict[str, str], log: Callable[[str], None] = print
) -> None:
    """Make the engine a swarm manager (unless it is one) and put on its node each of `labels`
    that no node of the swarm carries yet, as `docker node update --label-add` would."""
    client, record = api_client(), {"initialised": False, "added_labels": {}, **state.swarm}
    swarm = swarm_state(client)
    if swarm.get("LocalNodeState") != "active":
        client.init_swarm(advertise_addr=ADVERTISE_ADDRESS, listen_addr=LISTEN_ADDRESS)
        record["initialised"] = True
        log(f"  swarm initialised (advertise {ADVERTISE_ADDRESS})")
        swarm = swarm_state(client)
    elif not swarm.get("ControlAvailable"):
        raise RehearsalError(
            "this engine is a swarm worker: the provider must talk to a manager "
            "(docker swarm leave, or run the rehearsal on a manager)"
        )
    record["node_id"] = str(swarm["NodeID"])
    node = client.inspect_node(record["node_id"])
    current = dict(node["Spec"].get("Labels") or {})
    # A label some node already carries (an operator placed PostgreSQL or Redis on a node of a
    # multi-node swarm) is left where it is; only a label no node has goes on this one.
    carried = {
        item for other in client.nodes() for item in (other["Spec"].get("Labels") or {}).items()
    }
    missing = {k: v for k, v in labels.items() if current.get(k) != v and (k, v) not in carried}
    if missing:
        record["added_labels"].update({k: v for k, v in missing.items() if k not in current})
        node["Spec"]["Labels"] = {**current, **missing}
        client.update_node(record["node_id"], node["Version"]["Index"], node["Spec"])
        log(f"  node {node['Description']['Hostname']} labelled {sorted(missing)}")
    state.save(swarm=record)


def release_swarm(state: StackState, log: Callable[[str], None] = print) -> None:
    """Undo `ensure_swarm`: leave the swarm if the rehearsal created it and nothing else runs on
    it, else remove the node labels it added."""
    record = state.swarm
    if not record:
        return
    client = api_client()
    swarm = swarm_state(client)
    if swarm.get("LocalNodeState") == "active" and swarm.get("ControlAvailable"):
        others = [s["Spec"]["Name"] for s in client.services()]
        if record["initialised"] and not others:
            client.leave_swarm(force=True)
            log("  left the swarm (the rehearsal had initialised it)")
        else:
            if record["initialised"]:
                log(f"  swarm kept: other services run on it ({', '.join(sorted(others))})")
            with contextlib.suppress(docker.errors.NotFound):
                node = client.inspect_node(record["node_id"])
                labels = dict(node["Spec"].get("Labels") or {})
                added = record["added_labels"]
                node["Spec"]["Labels"] = {k: v for k, v in labels.items() if added.get(k) != v}
                client.update_node(record["node_id"], node["Version"]["Index"], node["Spec"])
    state.save(swarm={})


def delete_service(client: docker.APIClient, resource: AppliedResource) -> None:
    """[svc-funcs] deleteService L261-337: with a stop grace period, remove the service, wait up to
    that long for each of its tasks' containers to go, then force-remove it."""
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
    # The engine refuses while a service still uses the secret: the services that used it are going
    # away.
    retry_while_refused(lambda: client.remove_secret(resource.id), "in use")
