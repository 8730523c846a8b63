"""The single-host resources (networks, volumes, images, containers), applied as pulumi-docker 5.x
does; the tables below hold exactly the inputs the program sets. Sources cited (pulumi-docker
5.1/5.2, and kreuzwerker/terraform-provider-docker v4.5.0, commit 5074970c, which it bridges):
  [funcs] internal/provider/resource_docker_container_funcs.go
  [structures] internal/provider/resource_docker_container_structures.go
  [image-funcs] internal/provider/resource_docker_image_funcs.go
  [image.go], [resources.go] pulumi-docker provider/image.go, provider/resources.go (v5.1.0)
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.errors
import docker.types

from rehearsal.appliers import Deployment, Result
from rehearsal.engine import (
    DOCKER_CLI,
    LABELS,
    RehearsalError,
    api_client,
    autoname,
    exists,
    fields,
    healthcheck,
    retry_while_refused,
)
from rehearsal.nodes import distribute_image
from rehearsal.readback import (
    Observed,
    changed_properties,
    cpus_nanoseconds,
    property_digests,
    read_back,
)
from rehearsal.runner import Registration
from rehearsal.state import AppliedResource
from rehearsal.tokens import CONTAINER, NETWORK, VOLUME

# The inputs applied (wire names). Container: create ([funcs] L43-456), networks ([funcs]
# L461-503), uploads ([funcs] L505-582), `start` ([funcs] L584), then `wait` ([funcs] L590-628) or
# `attach`/`logs` ([funcs] L631-671); `mustRun` ([funcs] L813-824) and `destroyGraceSeconds`
# ([funcs] L1085-1096) act on later `up`s and delete.
CONTAINER_INPUTS = fields(
    "attach command cpuShares cpus destroyGraceSeconds entrypoints envs image init logDriver "
    "logOpts logs "
    "memory mustRun name readOnly restart securityOpts start stopSignal stopTimeout tmpfs user "
    "wait waitTimeout",
    capabilities=fields("drops"),
    healthcheck=fields("interval retries startPeriod tests timeout"),
    labels=LABELS,
    mounts=fields("readOnly source target type"),
    networksAdvanced=fields("aliases name"),
    ports=fields("external internal ip protocol"),
    ulimits=fields("hard name soft"),
    uploads=fields("content file permissions"),
    volumes=fields("containerPath fromContainer"),
)
NETWORK_INPUTS = fields("attachable driver internal name options", labels=LABELS)
VOLUME_INPUTS = fields("name", labels=LABELS)
REMOTE_IMAGE_INPUTS = fields("keepLocally name")
# buildOnPreview only matters to a preview, which the rehearsal never runs.
IMAGE_INPUTS = fields(
    "buildOnPreview imageName skipPush", build=fields("args context dockerfile platform")
)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _delete(resource: AppliedResource) -> None:
    delete_docker_resource(api_client(), resource, keep_volumes=False)


def _apply_created(
    deployment: Deployment,
    resource: Registration,
    inspect: str,
    create: Callable[[docker.APIClient, str, dict[str, str]], str],
    **extra: Any,
) -> Result:
    """A network or a volume: kept while its inputs are unchanged, else created anew (every input
    is ForceNew)."""
    client, urn = api_client(), resource.urn
    unchanged = deployment.unchanged(resource, getattr(client, inspect))
    if unchanged is not None:
        return unchanged.id, unchanged.outputs
    recorded = deployment.state.get(urn)
    deployment.note("replace" if recorded else "create", urn)
    name = str(resource.plain.get("name") or autoname(resource.name))
    # The engine creates the replacement first and deletes the old one at the end of the
    # deployment, after what uses it was replaced (a volume of a new name: PostgreSQL's next
    # generation, docs/backup.md). Under the same name the two would be one engine object: the
    # old one goes first, as the provider's create would otherwise adopt it.
    deployment.make_way(
        urn, _delete, delete_first=recorded is None or recorded.physical_name == name
    )
    sequence = deployment.state.take_sequence()
    resource_id = create(client, name, deployment.labels(resource, sequence))
    deployment.record(resource, resource_id, name, sequence, outputs={"name": name}, **extra)
    deployment.log(f"  created {resource.type.rsplit(':', 1)[-1].lower()} {name}")
    return resource_id, {"name": name}


def apply_network(deployment: Deployment, resource: Registration) -> Result:
    inputs = resource.plain

    def create(client: docker.APIClient, name: str, labels: dict[str, str]) -> str:
        driver, options = inputs.get("driver") or "bridge", inputs.get("options")
        internal, attachable = bool(inputs.get("internal")), inputs.get("attachable")
        created = client.create_network(
            name, driver, options, internal=internal, labels=labels, attachable=attachable
        )
        return str(created["Id"])

    return _apply_created(deployment, resource, "inspect_network", create)


def apply_volume(deployment: Deployment, resource: Registration) -> Result:
    # VolumeCreate of an existing name returns that volume: a volume kept by an earlier `down` (or
    # `retain_on_delete`) is adopted with its data, as the engine does for the provider.
    def create(client: docker.APIClient, name: str, labels: dict[str, str]) -> str:
        return str(client.create_volume(name=name, driver="local", labels=labels)["Name"])

    delete = {"retainOnDelete": resource.retain_on_delete}
    return _apply_created(deployment, resource, "inspect_volume", create, delete=delete)


def apply_remote_image(deployment: Deployment, resource: Registration) -> Result:
    name = str(resource.plain["name"])
    if not resource.plain.get("keepLocally", False):
        # [image-funcs] removeImage L187-220: without keep_locally, destroy runs `docker rmi`. Here
        # that would delete a base image nothing can pull back, so the rehearsal refuses it.
        raise RehearsalError(
            f"{resource.urn}: keepLocally is not set, so destroy would remove {name} from the "
            "engine"
        )
    # [image-funcs] findImage L343-377: a local image of that name is used as is; only a missing
    # one is pulled, which cannot work here.
    try:
        image_id = str(api_client().inspect_image(name)["Id"])
    except docker.errors.ImageNotFound as missing:
        raise RehearsalError(
            f"{resource.urn}: image {name} is not on the engine and nothing can be pulled here "
            "(bash ../shared/offline-docker/images builds the stand-ins)"
        ) from missing
    resource_id = image_id + name  # [image-funcs] L54: d.SetId(apiImage.ID + name)
    sequence = deployment.state.take_sequence()
    deployment.record(resource, resource_id, name, sequence, outputs={"imageId": image_id})
    return resource_id, {"imageId": image_id}


def apply_image(deployment: Deployment, resource: Registration) -> Result:
    inputs, urn = resource.plain, resource.urn
    if not inputs.get("skipPush", False):
        raise RehearsalError(f"{urn}: skipPush is not set and there is no registry to push to")
    name = str(inputs["imageName"])
    image_id = _build(deployment, urn, name, inputs.get("build") or {})
    previous = deployment.state.get(urn)
    if previous is None or previous.outputs.get("repoDigest") != image_id:
        # The provider builds only when the context's hash changed; the rehearsal always builds
        # and counts a change when the image id is new.
        deployment.note("create" if previous is None else "update", urn, ["repoDigest"])
    # A multi-node rehearsal: the other nodes get the image as a registry would serve it.
    distribute_image(name, image_id, log=deployment.log)
    # [image.go] L287-299: with skipPush, repoDigest is the local image id; the id is the name.
    outputs = {"repoDigest": image_id}
    deployment.record(resource, name, name, deployment.state.take_sequence(), outputs=outputs)
    return name, outputs


def _build(deployment: Deployment, urn: str, name: str, build: Mapping[str, Any]) -> str:
    """`docker build` as the provider builds (BuildKit: the program sets no builderVersion,
    [image.go] L218-236); the new image's id."""
    # [image.go] marshalBuildAndApplyDefaults L535-562: context defaults to ".", the Dockerfile to
    # <context>/Dockerfile, both relative to the working directory.
    context = str(build.get("context") or ".")
    dockerfile = str(build.get("dockerfile") or os.path.join(context, "Dockerfile"))
    command = [DOCKER_CLI, "build", "--progress=plain", "--tag", name, "--file", dockerfile]
    if build.get("platform"):
        command += ["--platform", str(build["platform"])]
    for key, value in sorted((build.get("args") or {}).items()):
        command += ["--build-arg", f"{key}={value}"]
    deployment.log(f"  building {name} from {dockerfile}")
    started = time.monotonic()
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    built = subprocess.run(
        [*command, context], env=env, capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        tail = "\n".join((built.stdout + built.stderr).splitlines()[-60:])
        raise RehearsalError(f"{urn}: docker build failed:\n{tail}")
    image_id = str(api_client().inspect_image(name)["Id"])
    deployment.log(f"  built {name} ({image_id[:19]}) in {time.monotonic() - started:.0f}s")
    return image_id


def apply_container(deployment: Deployment, resource: Registration) -> Result:
    urn, client, inputs = resource.urn, api_client(), resource.plain
    if any(part == "" for part in inputs.get("command") or []):
        raise RehearsalError(f"{urn}: values for command may not be empty")  # [funcs] L82-89
    recorded = deployment.state.get(urn)
    present = bool(
        recorded and not recorded.tainted and exists(client.inspect_container, recorded.id)
    )
    if recorded is None:
        deployment.note("create", urn)
    elif not present:
        deployment.note("replace", urn, ["(tainted or gone)"])
    else:
        # The engine's diff: the new inputs against what Read wrote back (readback.py).
        changed = changed_properties(CONTAINER, inputs, recorded.readback)
        running = client.inspect_container(recorded.id)["State"]["Running"]
        if changed == ["mustRun"] or (not changed and inputs.get("mustRun", True) and not running):
            # [funcs] L813-824 Read sets must_run=false for a stopped container, the diff triggers
            # Update, which starts it again (L997-1010). Same container, same id. (A container
            # stopped since the last Read is seen as `pulumi up --refresh` sees it.)
            deployment.log(f"  starting stopped container {recorded.physical_name} (mustRun)")
            deployment.note("update", urn, ["mustRun"])
            client.start(recorded.id)
            recorded.readback = _read(client, recorded.id, inputs)[1]
            deployment.state.record(recorded)
        if changed in ([], ["mustRun"]):
            return recorded.id, recorded.outputs
        deployment.note("replace", urn, changed)
    # pulumi-docker marks containers delete-before-replace ([resources.go]); the program's own
    # delete_before_replace option, when set, overrides that in the engine's step generator. A
    # container already gone leaves nothing to keep running.
    delete_first = resource.delete_first is not False or not present
    deployment.make_way(urn, _delete, delete_first=delete_first)
    return _create_container(deployment, client, resource)


def _create_container(
    deployment: Deployment, client: docker.APIClient, resource: Registration
) -> Result:
    inputs, urn = resource.plain, resource.urn
    name, image = str(inputs.get("name") or autoname(resource.name)), str(inputs["image"])
    try:
        client.inspect_image(image)
    except docker.errors.ImageNotFound as missing:
        raise RehearsalError(
            f"{urn}: Unable to create container with image {image}: not on the engine and nothing "
            "can be pulled here"
        ) from missing
    sequence = deployment.state.take_sequence()
    container_id = client.create_container(
        image,
        name=name,
        labels=deployment.labels(resource, sequence),
        host_config=client.create_host_config(**host_config(inputs)),
        use_config_proxy=False,
        **container_config(inputs),
    )["Id"]
    grace = _optional_int(inputs.get("destroyGraceSeconds"))
    delete = {"destroyGraceSeconds": grace, "attach": bool(inputs.get("attach"))}
    # Recorded as tainted until the create finishes, so a failure half way is replaced next time.
    record = deployment.record(resource, container_id, name, sequence, delete=delete, tainted=True)
    if inputs.get("networksAdvanced"):
        # [funcs] L461-503: with networks_advanced the default bridge is disconnected, then each
        # network is connected with its aliases.
        client.disconnect_container_from_network(container_id, "bridge")
        for network in inputs["networksAdvanced"]:
            aliases = list(network.get("aliases") or []) or None
            client.connect_container_to_network(container_id, network["name"], aliases=aliases)
    for upload in inputs.get("uploads") or []:
        _upload(client, urn, container_id, upload)
    if inputs.get("start", True):  # [funcs] L584
        client.start(container_id)
        deployment.log(f"  started {name}")
    else:
        deployment.log(f"  created {name} (not started)")
    record.outputs = {"name": name, **_finish(deployment, client, record, inputs)}
    read, record.readback = _read(client, container_id, inputs)
    record.outputs.update(read)
    record.tainted = False
    deployment.state.record(record)
    return container_id, record.outputs


def _upload(
    client: docker.APIClient, urn: str, container_id: str, upload: Mapping[str, Any]
) -> None:
    """One upload as [funcs] L505-582 sends it: a tar of one entry named by `file` (the full
    path), mode `permissions` (octal) or 0644 (0744 if `executable`), extracted at "/" before the
    container starts. The engine refuses that archive for a read-only root filesystem, whatever
    volume holds the file's path ("container rootfs is marked read-only"), as it refuses the
    provider's."""
    content = str(upload.get("content") or "").encode()
    permissions = upload.get("permissions")
    mode = int(str(permissions), 8) if permissions else 0o744 if upload.get("executable") else 0o644
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        entry = tarfile.TarInfo(str(upload["file"]))
        entry.size, entry.mode, entry.mtime = len(content), mode, int(time.time())
        tar.addfile(entry, io.BytesIO(content))
    try:
        client.put_archive(container_id, "/", archive.getvalue())
    except docker.errors.APIError as refused:
        raise RehearsalError(f"{urn}: Unable to upload volume content: {refused}") from refused


def _finish(
    deployment: Deployment,
    client: docker.APIClient,
    container: AppliedResource,
    inputs: Mapping[str, Any],
) -> dict[str, Any]:
    """`wait` or `attach` once started; `containerLogs` with `logs`."""
    container_id = container.id
    if inputs.get("wait", False):
        _await_healthy(client, container.urn, container_id, int(inputs.get("waitTimeout", 60)))
        deployment.log(f"  {container.physical_name} is healthy")
    if not inputs.get("attach", False):
        return {}
    # [funcs] L631-671: wait until the container is not running; the exit code is NOT checked.
    client.wait(container_id, timeout=None, condition="not-running")
    if not inputs.get("logs", False):
        return {}
    logs = client.logs(container_id, stdout=True, stderr=True)
    return {"containerLogs": logs.decode(errors="replace")}


def _read(
    client: docker.APIClient, container_id: str, inputs: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """What the provider's Read writes ([funcs] resourceDockerContainerRead L750-830): the outputs
    it computes, and the digests of what it writes back for the inputs (readback.py)."""
    inspected = client.inspect_container(container_id)
    running, exit_code = bool(inspected["State"]["Running"]), int(inspected["State"]["ExitCode"])
    observed = Observed(running, None if running else exit_code, str(inspected["Image"]))
    outputs = {} if running else {"exitCode": exit_code}
    if not running and inputs.get("mustRun", True):
        outputs["mustRun"] = False
    return outputs, property_digests(read_back(CONTAINER, inputs, observed))


def _await_healthy(client: docker.APIClient, urn: str, container_id: str, timeout: int) -> None:
    # [funcs] L590-628: poll inspect once a second until Health.Status is healthy. No health state
    # at all is an error at once; "unhealthy" is NOT: it keeps polling until wait_timeout, then
    # fails with "container failed to be in healthy state". The container stays (and is replaced on
    # the next up).
    deadline = time.monotonic() + timeout
    while True:
        state = client.inspect_container(container_id)["State"]
        health = state.get("Health")
        if health is None:
            raise RehearsalError(
                f"{urn}: you have supplied a 'wait' argument, but the container does not have a "
                "healthcheck defined. Please remove the 'wait' argument or add a 'healthcheck' "
                "attribute"
            )
        if health.get("Status") == "healthy":
            return
        if time.monotonic() >= deadline:
            probes = health.get("Log") or []
            last = probes[-1].get("Output", "").strip() if probes else "(no probe ran)"
            logs = client.logs(container_id, stdout=True, stderr=True, tail=30)
            raise RehearsalError(
                f"{urn}: container failed to be in healthy state within {timeout}s "
                f"(status {health.get('Status')}, container {state.get('Status')}; "
                f"last probe: {last})\n--- last container logs ---\n{logs.decode(errors='replace')}"
            )
        time.sleep(1)


def container_config(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The container's config in the create call the provider makes ([funcs] L43-160)."""
    ports = [
        (int(port["internal"]), port.get("protocol", "tcp")) for port in inputs.get("ports") or []
    ]
    return {
        "command": inputs.get("command"),
        "entrypoint": inputs.get("entrypoints"),
        "environment": list(inputs.get("envs") or []) or None,
        "user": inputs.get("user") or None,
        "stop_signal": inputs.get("stopSignal") or None,
        # Numbers arrive as floats (protobuf Struct); the Engine API wants integers.
        "stop_timeout": _optional_int(inputs.get("stopTimeout")),
        "healthcheck": healthcheck(inputs.get("healthcheck")),
        "ports": ports or None,
        # [structures] volumeSetToDockerVolumes: a path alone is an anonymous volume.
        "volumes": [v["containerPath"] for v in _volumes(inputs) if v.get("containerPath")] or None,
    }


def _volumes(inputs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(inputs.get("volumes") or [])


def host_config(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The container's host config in the create call the provider makes ([funcs] L165-456);
    `create_host_config` leaves out what is None."""
    bindings = {
        f"{int(port['internal'])}/{port.get('protocol', 'tcp')}": (
            port.get("ip", "0.0.0.0"),
            *([int(port["external"])] if port.get("external") is not None else []),
        )
        for port in inputs.get("ports") or []
    }
    mounts = [
        docker.types.Mount(
            item["target"], item.get("source"), item["type"], bool(item.get("readOnly", False))
        )
        for item in inputs.get("mounts") or []
    ]
    ulimits = [
        docker.types.Ulimit(name=u["name"], soft=int(u["soft"]), hard=int(u["hard"]))
        for u in inputs.get("ulimits") or []
    ]
    memory, cpus = inputs.get("memory"), inputs.get("cpus")
    return {
        "restart_policy": {"Name": inputs.get("restart", "no"), "MaximumRetryCount": 0},
        "read_only": bool(inputs.get("readOnly", False)),
        "init": bool(inputs.get("init", False)),  # always sent ([funcs] L446-447)
        "log_config": docker.types.LogConfig(
            type=inputs.get("logDriver", "json-file"), config=dict(inputs.get("logOpts") or {})
        ),
        "port_bindings": bindings or None,
        "tmpfs": dict(inputs.get("tmpfs") or {}) or None,
        "mounts": mounts or None,
        "cap_drop": list((inputs.get("capabilities") or {}).get("drops") or []) or None,
        "security_opt": list(inputs.get("securityOpts") or []) or None,
        "cpu_shares": _optional_int(inputs.get("cpuShares")),
        "mem_limit": int(memory) * 1024 * 1024 if memory else None,  # MB
        "nano_cpus": cpus_nanoseconds(str(cpus)) if cpus else None,  # [funcs] L363-378
        "ulimits": ulimits or None,
        # [structures] volumeSetToDockerVolumes: `from_container` as given (`<id>:ro` included).
        "volumes_from": [v["fromContainer"] for v in _volumes(inputs) if v.get("fromContainer")]
        or None,
    }


def delete_docker_resource(
    client: docker.APIClient, resource: AppliedResource, *, keep_volumes: bool
) -> bool:
    """Delete one recorded single-host resource as the provider's Delete does (docker.Image: a
    no-op, the tag stays, [image.go]; RemoteImage, keepLocally: no rmi). False: a kept volume."""
    if resource.type == CONTAINER:
        grace, attach = resource.delete.get("destroyGraceSeconds"), resource.delete.get("attach")
        delete_container(client, resource.id, grace_seconds=grace, attach=bool(attach))
    elif resource.type == NETWORK:
        remove_network(client, resource.id)
    elif resource.type == VOLUME:
        if keep_volumes:
            return False
        with contextlib.suppress(docker.errors.NotFound):
            client.remove_volume(resource.id)
    return True


def remove_network(client: docker.APIClient, network_id: str) -> None:
    # An overlay keeps "active endpoints" until the containers of the services just removed are
    # gone.
    retry_while_refused(lambda: client.remove_network(network_id), "active endpoints")


def delete_container(
    client: docker.APIClient, container_id: str, *, grace_seconds: int | None, attach: bool
) -> None:
    # [funcs] L1085-1096: unless attach, stop with destroy_grace_seconds as the timeout; unset means
    # 0, so the container is killed at once. Then a forced remove with its anonymous volumes
    # (remove_volumes, default true: the program leaves it unset; [funcs] L1100-1110).
    with contextlib.suppress(docker.errors.NotFound):
        if not attach:
            client.stop(container_id, timeout=int(grace_seconds or 0))
        client.remove_container(container_id, v=True, force=True)
