"""The single-host resources (networks, volumes, images, containers), applied to the Docker engine
as pulumi-docker 5.x would. `rehearsal.appliers.dispatch` hands each registration here by type.

Provider sources cited below (pulumi-docker 5.1/5.2 bridges kreuzwerker/terraform-provider-docker
v4.5.0, commit 5074970c; `docker.Image` is pulumi-docker's own `provider/image.go`):
  [funcs] internal/provider/resource_docker_container_funcs.go
  [image-funcs] internal/provider/resource_docker_image_funcs.go
  [image.go] pulumi-docker provider/image.go (v5.1.0)
  [resources.go] pulumi-docker provider/resources.go (v5.1.0)
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Collection, Mapping
from typing import Any

import docker
import docker.errors
import docker.types
from pulumi.runtime.mocks import MockResourceArgs

from rehearsal.appliers import ApplyContext, Change
from rehearsal.engine import (
    DOCKER_CLI,
    RehearsalError,
    api_client,
    autoname,
    exists,
    go_duration_nanoseconds,
    label_list_to_dict,
    refuse_unknown,
    rehearsal_labels,
)
from rehearsal.nodes import distribute_image
from rehearsal.readback import Observed, property_digests, read_back, recorded_changes
from rehearsal.runner import RegistrationOptions
from rehearsal.state import AppliedResource, inputs_digest
from rehearsal.tokens import CONTAINER, NETWORK, VOLUME

# Every Container input the rehearsal applies (wire names). Anything else the program sets is
# refused with an error naming it, so a healthcheck or a read-only flag cannot vanish from the
# rehearsal unnoticed.
CONTAINER_INPUTS: dict[str, str] = {
    "name": "container name; unset: `<resource>-<7 hex>` ([resources.go] SetAutonaming)",
    "image": "image id or name, found locally ([funcs] L49-53 findImage; no pull here)",
    "command": "Cmd ([funcs] L82-89; an empty element is an error)",
    "entrypoints": "Entrypoint",
    "envs": "Env",
    "user": "User",
    "workingDir": "WorkingDir",
    "hostname": "Hostname",
    "domainname": "Domainname",
    "labels": "Labels (plus the rehearsal's own)",
    "healthcheck": "Healthcheck ([funcs] L140-160)",
    "stopSignal": "StopSignal (used by `docker stop`)",
    "stopTimeout": "StopTimeout (used by `docker stop`)",
    "ports": "ExposedPorts + PortBindings",
    "publishAllPorts": "PublishAllPorts",
    "networksAdvanced": "bridge disconnected, then NetworkConnect with aliases ([funcs] L461-503)",
    "networkMode": "NetworkMode",
    "mounts": "Mounts: bind, volume, tmpfs ([funcs] L165-246)",
    "volumes": "Binds / named volumes / VolumesFrom",
    "tmpfs": "Tmpfs",
    "readOnly": "ReadonlyRootfs",
    "capabilities": "CapAdd / CapDrop",
    "securityOpts": "SecurityOpt",
    "privileged": "Privileged",
    "init": "Init (always sent, [funcs] L446-447)",
    "restart": "RestartPolicy.Name (default 'no')",
    "maxRetryCount": "RestartPolicy.MaximumRetryCount",
    "logDriver": "LogConfig.Type",
    "logOpts": "LogConfig.Config",
    "memory": "Memory, MB",
    "memorySwap": "MemorySwap, MB (-1 unlimited)",
    "memoryReservation": "MemoryReservation, MB",
    "cpus": "NanoCPUs ([funcs] L363-378)",
    "cpuShares": "CPUShares",
    "cpuSet": "CpusetCpus",
    "shmSize": "ShmSize, MB",
    "ulimits": "Ulimits",
    "sysctls": "Sysctls",
    "groupAdds": "GroupAdd",
    "hosts": "ExtraHosts",
    "dns": "DNS",
    "dnsOpts": "DNSOptions",
    "dnsSearches": "DNSSearch",
    "pidMode": "PidMode",
    "ipcMode": "IpcMode",
    "usernsMode": "UsernsMode",
    "tty": "Tty",
    "stdinOpen": "OpenStdin",
    "rm": "AutoRemove",
    "uploads": "CopyToContainer before start ([funcs] L505-582)",
    "start": "start after create (default true, [funcs] L584)",
    "wait": "poll once a second until healthy, fail at waitTimeout ([funcs] L590-628)",
    "waitTimeout": "seconds, default 60",
    "attach": "wait until not running, exit code ignored ([funcs] L631-671)",
    "logs": "with attach: containerLogs output ([funcs] L634-668)",
    "mustRun": "default true; a stopped container is started on the next up ([funcs] L813-824)",
    "destroyGraceSeconds": "stop timeout on delete; unset = kill at once ([funcs] L1085-1096)",
    "removeVolumes": "remove anonymous volumes on delete (default true)",
    "containerReadRefreshTimeoutMilliseconds": "provider read knob, no effect on what runs",
    "platform": "create platform",
}
HEALTHCHECK_INPUTS = {"tests", "interval", "timeout", "startPeriod", "retries"}
PORT_INPUTS = {"internal", "external", "ip", "protocol"}
NETWORK_ATTACHMENT_INPUTS = {"name", "aliases", "ipv4Address", "ipv6Address"}
MOUNT_INPUTS = {
    "target",
    "type",
    "source",
    "readOnly",
    "bindOptions",
    "volumeOptions",
    "tmpfsOptions",
}
VOLUME_BINDING_INPUTS = {"containerPath", "hostPath", "volumeName", "readOnly", "fromContainer"}
CAPABILITIES_INPUTS = {"adds", "drops"}
UPLOAD_INPUTS = {"file", "content", "contentBase64", "source", "executable", "permissions"}
ULIMIT_INPUTS = {"name", "soft", "hard"}
HOST_INPUTS = {"host", "ip"}

NETWORK_INPUTS = {
    "name",
    "driver",
    "internal",
    "attachable",
    "ipv6",
    "labels",
    "options",
    "ipamConfigs",
}
IPAM_CONFIG_INPUTS = {"subnet", "gateway", "ipRange", "auxAddress"}
VOLUME_INPUTS = {"name", "driver", "driverOpts", "labels"}
REMOTE_IMAGE_INPUTS = {"name", "keepLocally", "platform", "forceRemove"}
# buildOnPreview only matters to a preview, which the rehearsal never runs.
IMAGE_INPUTS = {"imageName", "build", "skipPush", "buildOnPreview"}
IMAGE_BUILD_INPUTS = {"context", "dockerfile", "args", "target", "platform", "builderVersion"}


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _megabytes(value: Any) -> int:
    return int(value) * 1024 * 1024


class DockerAppliers:
    """The single-host resources (networks, volumes, images, containers), each applied as the
    provider's Create/Read/Update would, recorded in the stack's state."""

    def __init__(self, context: ApplyContext) -> None:
        self.stack = context.stack
        self.state = context.state
        self.log = context.log
        self.changes = context.changes
        self.superseded = context.superseded

    # -- shared
    # ---------------------------------------------------------------------------------------

    def _labels(self, own: Mapping[str, str], urn: str, sequence: int) -> dict[str, str]:
        return rehearsal_labels(own, self.stack, urn, sequence)

    def _unchanged(self, urn: str, digest: str) -> AppliedResource | None:
        """The recorded resource when its inputs did not change (a no-op update), else None."""
        recorded = self.state.get(urn)
        if recorded is None or recorded.digest != digest or recorded.tainted:
            return None
        return recorded

    def _note_change(self, urn: str) -> None:
        op = "create" if self.state.get(urn) is None else "replace"
        self.changes.append(Change(op, urn, []))

    def _replace_recorded(self, urn: str, *, delete_first: bool = True) -> None:
        """Make way for a new resource at `urn`, in the order Pulumi's engine replaces it.

        Delete before replace: the old resource goes now, then the new one is created. Otherwise
        (create before delete) the new one is created first and the old one is deleted once the
        whole deployment has been applied (`stack.up` deletes `superseded` at the end, as the
        engine's step generator schedules replaced resources' deletes last).
        """
        recorded = self.state.get(urn)
        if recorded is None:
            return
        if delete_first or recorded.tainted:
            self.log(f"  replacing {urn} (delete before create)")
            delete_docker_resource(api_client(), recorded, keep_volumes=False)
        else:
            self.log(f"  replacing {urn} (create before delete)")
            self.superseded.append(recorded)
        self.state.forget(urn)

    # -- networks and volumes
    # -------------------------------------------------------------------------

    def network(
        self, args: MockResourceArgs, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        inputs = args.inputs
        refuse_unknown(options.urn, inputs, NETWORK_INPUTS)
        for ipam in inputs.get("ipamConfigs") or []:
            refuse_unknown(f"{options.urn} ipamConfigs", ipam, IPAM_CONFIG_INPUTS)
        digest = inputs_digest(inputs)
        client = api_client()
        unchanged = self._unchanged(options.urn, digest)
        if unchanged is not None and exists(client.inspect_network, unchanged.id):
            return unchanged.id, {**inputs, **unchanged.outputs}
        self._note_change(options.urn)
        self._replace_recorded(options.urn)
        name = inputs.get("name") or autoname(args.name)
        ipam = None
        if inputs.get("ipamConfigs"):
            ipam = docker.types.IPAMConfig(
                pool_configs=[
                    docker.types.IPAMPool(
                        subnet=pool.get("subnet"),
                        gateway=pool.get("gateway"),
                        iprange=pool.get("ipRange"),
                        aux_addresses=pool.get("auxAddress"),
                    )
                    for pool in inputs["ipamConfigs"]
                ]
            )
        sequence = self.state.take_sequence()
        created = client.create_network(
            name,
            driver=inputs.get("driver") or "bridge",
            options=inputs.get("options"),
            ipam=ipam,
            internal=bool(inputs.get("internal", False)),
            labels=self._labels(label_list_to_dict(inputs.get("labels")), options.urn, sequence),
            enable_ipv6=bool(inputs.get("ipv6", False)),
            attachable=inputs.get("attachable"),
        )
        network_id = str(created["Id"])
        inspected = client.inspect_network(network_id)
        outputs = {"name": name, "driver": inspected["Driver"], "scope": inspected["Scope"]}
        self.state.record(
            AppliedResource(options.urn, args.typ, network_id, name, digest, sequence, outputs)
        )
        self.log(f"  created network {name}")
        return network_id, {**inputs, **outputs}

    def volume(
        self, args: MockResourceArgs, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        inputs = args.inputs
        refuse_unknown(options.urn, inputs, VOLUME_INPUTS)
        digest = inputs_digest(inputs)
        client = api_client()
        unchanged = self._unchanged(options.urn, digest)
        if unchanged is not None and exists(client.inspect_volume, unchanged.id):
            return unchanged.id, {**inputs, **unchanged.outputs}
        recorded = self.state.get(options.urn)
        if recorded is not None and (options.protect or recorded.delete.get("protect")):
            raise RehearsalError(
                f"{options.urn}: inputs changed, which replaces the volume, but it is protected"
            )
        self._note_change(options.urn)
        self._replace_recorded(options.urn)
        name = inputs.get("name") or autoname(args.name)
        sequence = self.state.take_sequence()
        # VolumeCreate of an existing name returns that volume: a volume kept by an earlier `down`
        # (or `retain_on_delete`) is adopted with its data, as the engine does for the provider.
        created = client.create_volume(
            name=name,
            driver=inputs.get("driver") or "local",
            driver_opts=inputs.get("driverOpts"),
            labels=self._labels(label_list_to_dict(inputs.get("labels")), options.urn, sequence),
        )
        outputs = {"name": name, "driver": created["Driver"], "mountpoint": created["Mountpoint"]}
        delete = {"protect": options.protect, "retainOnDelete": options.retain_on_delete}
        self.state.record(
            AppliedResource(options.urn, args.typ, name, name, digest, sequence, outputs, delete)
        )
        self.log(f"  volume {name} ready")
        return name, {**inputs, **outputs}

    # -- images
    # ---------------------------------------------------------------------------------------

    def remote_image(
        self, args: MockResourceArgs, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        inputs = args.inputs
        refuse_unknown(options.urn, inputs, REMOTE_IMAGE_INPUTS)
        name = str(inputs["name"])
        if not inputs.get("keepLocally", False):
            # [image-funcs] removeImage L187-220: without keep_locally, destroy runs `docker rmi`.
            # Here that would delete a base image nothing can pull back, so the rehearsal refuses
            # it.
            raise RehearsalError(
                f"{options.urn}: keepLocally is not set, so destroy would remove {name} "
                "from the engine"
            )
        client = api_client()
        # [image-funcs] findImage L343-377: a local image of that name is used as is; only a missing
        # one is pulled, which cannot work here.
        try:
            found = client.inspect_image(name)
        except docker.errors.ImageNotFound as missing:
            raise RehearsalError(
                f"{options.urn}: image {name} is not on the engine and nothing can be pulled here "
                "(bash ../shared/offline-docker/images builds the stand-ins)"
            ) from missing
        image_id = str(found["Id"])
        repo_digest = next(
            (d for d in found.get("RepoDigests") or [] if d.split("@")[0] == name.split(":")[0]), ""
        )
        outputs = {"name": name, "imageId": image_id, "repoDigest": repo_digest}
        resource_id = image_id + name  # [image-funcs] L54: d.SetId(apiImage.ID + name)
        self.state.record(
            AppliedResource(
                options.urn,
                args.typ,
                resource_id,
                name,
                inputs_digest(inputs),
                self.state.take_sequence(),
                outputs,
            )
        )
        return resource_id, {**inputs, **outputs}

    def image(
        self, args: MockResourceArgs, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        inputs = args.inputs
        refuse_unknown(options.urn, inputs, IMAGE_INPUTS)
        if not inputs.get("skipPush", False):
            raise RehearsalError(
                f"{options.urn}: skipPush is not set and there is no registry to push to"
            )
        build = dict(inputs.get("build") or {})
        refuse_unknown(f"{options.urn} build", build, IMAGE_BUILD_INPUTS)
        image_name = str(inputs["imageName"])
        # [image.go] marshalBuildAndApplyDefaults L535-562: context defaults to ".", the Dockerfile
        # to <context>/Dockerfile, both relative to the working directory.
        context = str(build.get("context") or ".")
        dockerfile = str(build.get("dockerfile") or os.path.join(context, "Dockerfile"))
        command = [
            DOCKER_CLI,
            "build",
            "--progress=plain",
            "--tag",
            image_name,
            "--file",
            dockerfile,
        ]
        for key, value in sorted((build.get("args") or {}).items()):
            command += ["--build-arg", f"{key}={value}"]
        if build.get("target"):
            command += ["--target", str(build["target"])]
        if build.get("platform"):
            command += ["--platform", str(build["platform"])]
        command.append(context)
        # [image.go] L218-236: BuildKit unless builderVersion is BuilderV1.
        buildkit = "0" if build.get("builderVersion") == "BuilderV1" else "1"
        self.log(f"  building {image_name} from {dockerfile}")
        started = time.monotonic()
        completed = subprocess.run(
            command,
            env={**os.environ, "DOCKER_BUILDKIT": buildkit},
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-60:])
            raise RehearsalError(f"{options.urn}: docker build failed:\n{tail}")
        image_id = str(api_client().inspect_image(image_name)["Id"])
        previous = self.state.get(options.urn)
        if previous is None or previous.outputs.get("repoDigest") != image_id:
            # The provider builds only when the context's hash changed; the rehearsal always
            # builds and counts a change when the image id is new.
            self.changes.append(
                Change("create" if previous is None else "update", options.urn, ["repoDigest"])
            )
        self.log(f"  built {image_name} ({image_id[:19]}) in {time.monotonic() - started:.0f}s")
        # A multi-node rehearsal: the other nodes get the image as a registry would serve it.
        distribute_image(image_name, image_id, log=self.log)
        # [image.go] L287-299: with skipPush, repoDigest is the local image id; the resource id is
        # the name.
        outputs = {
            "imageName": image_name,
            "baseImageName": image_name,
            "repoDigest": image_id,
            "dockerfile": os.path.relpath(dockerfile, context),
            "context": context,
            "platform": build.get("platform"),
            "registryServer": None,
        }
        self.state.record(
            AppliedResource(
                options.urn,
                args.typ,
                image_name,
                image_name,
                inputs_digest(inputs),
                self.state.take_sequence(),
                {"repoDigest": image_id},
            )
        )
        return image_name, {**inputs, **outputs}

    # -- containers
    # -----------------------------------------------------------------------------------

    def container(
        self, args: MockResourceArgs, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        inputs = args.inputs
        validate_container_inputs(options.urn, inputs)
        client = api_client()
        recorded = self.state.get(options.urn)
        if (
            recorded is not None
            and not recorded.tainted
            and exists(client.inspect_container, recorded.id)
        ):
            # The engine's diff: the new inputs against what Read wrote back (readback.py).
            legacy = recorded_changes(
                CONTAINER, inputs, recorded.readback, recorded.digest, inputs_digest(inputs)
            )
            if legacy is None:  # a state from before the read-back model: record it now
                recorded.readback = property_digests(
                    read_back(CONTAINER, inputs, _observe(client, recorded.id))
                )
                self.state.record(recorded)
            changed = legacy or []
            running = client.inspect_container(recorded.id)["State"]["Running"]
            if changed == ["mustRun"] or (
                not changed and inputs.get("mustRun", True) and not running
            ):
                # [funcs] L813-824 Read sets must_run=false for a stopped container, the diff
                # triggers Update, which starts it again (L997-1010). Same container, same id. (A
                # container stopped since the last Read is seen as `pulumi up --refresh` sees it.)
                self.log(f"  starting stopped container {recorded.physical_name} (mustRun)")
                self.changes.append(Change("update", options.urn, ["mustRun"]))
                client.start(recorded.id)
                recorded.readback = property_digests(
                    read_back(CONTAINER, inputs, _observe(client, recorded.id))
                )
                self.state.record(recorded)
                return recorded.id, {**inputs, **recorded.outputs}
            if not changed:
                return recorded.id, {**inputs, **recorded.outputs}
            self.changes.append(Change("replace", options.urn, changed))
        elif recorded is None:
            self.changes.append(Change("create", options.urn, []))
        else:
            self.changes.append(Change("replace", options.urn, ["(tainted or gone)"]))
        digest = inputs_digest(inputs)
        # pulumi-docker marks containers delete-before-replace ([resources.go]); the program's own
        # delete_before_replace option, when set, overrides that in the engine's step generator.
        delete_first = options.delete_before_replace
        if delete_first is None or recorded is None:
            delete_first = True
        elif not exists(client.inspect_container, recorded.id):
            delete_first = True  # gone already: nothing to keep running
        self._replace_recorded(options.urn, delete_first=delete_first)
        name = inputs.get("name") or autoname(args.name)
        sequence = self.state.take_sequence()
        create, host_config, attachments = container_create_spec(inputs)
        image = str(inputs["image"])
        try:
            client.inspect_image(image)
        except docker.errors.ImageNotFound as missing:
            raise RehearsalError(
                f"{options.urn}: Unable to create container with image {image}: not on the engine "
                "and nothing can be pulled here"
            ) from missing
        container_id = str(
            client.create_container(
                image,
                name=name,
                labels=self._labels(
                    label_list_to_dict(inputs.get("labels")), options.urn, sequence
                ),
                host_config=client.create_host_config(**host_config),
                use_config_proxy=False,
                **create,
            )["Id"]
        )
        delete = {
            "destroyGraceSeconds": _optional_int(inputs.get("destroyGraceSeconds")),
            "attach": bool(inputs.get("attach", False)),
            "removeVolumes": bool(inputs.get("removeVolumes", True)),
        }
        record = AppliedResource(
            options.urn, args.typ, container_id, name, digest, sequence, {}, delete
        )
        # Recorded as tainted until the create finishes, so a failure half way is replaced next
        # time.
        record.tainted = True
        self.state.record(record)
        outputs = self._run_container(client, options.urn, container_id, name, inputs, attachments)
        record.outputs = outputs
        record.readback = property_digests(
            read_back(CONTAINER, inputs, _observe(client, container_id))
        )
        record.tainted = False
        self.state.record(record)
        return container_id, {**inputs, **outputs}

    def _run_container(
        self,
        client: docker.APIClient,
        urn: str,
        container_id: str,
        name: str,
        inputs: Mapping[str, Any],
        attachments: list[dict[str, Any]],
    ) -> dict[str, Any]:
        if attachments:
            # [funcs] L461-503: with networks_advanced the default bridge is disconnected, then each
            # network is connected with its aliases.
            client.disconnect_container_from_network(container_id, "bridge")
            for attachment in attachments:
                client.connect_container_to_network(container_id, **attachment)
        for upload in inputs.get("uploads") or []:
            client.put_archive(container_id, "/", _upload_archive(upload))
        if inputs.get("start", True):
            client.start(container_id)
            self.log(f"  started {name}")
            if inputs.get("wait", False):
                _wait_until_healthy(client, urn, container_id, int(inputs.get("waitTimeout", 60)))
                self.log(f"  {name} is healthy")
        outputs: dict[str, Any] = {"name": name}
        if inputs.get("attach", False):
            # [funcs] L631-671: wait until the container is not running; the exit code is NOT
            # checked.
            client.wait(container_id, timeout=None, condition="not-running")
            if inputs.get("logs", False):
                outputs["containerLogs"] = client.logs(
                    container_id, stdout=True, stderr=True
                ).decode(errors="replace")
        return {**outputs, **_read_container(client, container_id, inputs)}


def _observe(client: docker.APIClient, container_id: str) -> Observed:
    """What Read sees of the container ([funcs] resourceDockerContainerRead)."""
    inspected = client.inspect_container(container_id)
    state = inspected["State"]
    return Observed(
        running=bool(state["Running"]),
        exit_code=None if state["Running"] else int(state["ExitCode"]),
        image_id=str(inspected["Image"]),
    )


def _read_container(
    client: docker.APIClient, container_id: str, inputs: Mapping[str, Any]
) -> dict[str, Any]:
    """What the provider's Read puts in state after create ([funcs] L750-830)."""
    inspected = client.inspect_container(container_id)
    outputs: dict[str, Any] = {"name": inspected["Name"].lstrip("/")}
    settings = inspected.get("NetworkSettings") or {}
    outputs["bridge"] = settings.get("Bridge", "")
    outputs["networkDatas"] = [
        {
            "networkName": network_name,
            "ipAddress": network.get("IPAddress", ""),
            "ipPrefixLength": network.get("IPPrefixLen", 0),
            "gateway": network.get("Gateway", ""),
            "macAddress": network.get("MacAddress", ""),
            "globalIpv6Address": network.get("GlobalIPv6Address", ""),
            "globalIpv6PrefixLength": network.get("GlobalIPv6PrefixLen", 0),
            "ipv6Gateway": network.get("IPv6Gateway", ""),
        }
        for network_name, network in sorted((settings.get("Networks") or {}).items())
    ]
    if not inspected["State"]["Running"]:
        outputs["exitCode"] = inspected["State"]["ExitCode"]
        if inputs.get("mustRun", True):
            outputs["mustRun"] = False
    return outputs


def _wait_until_healthy(
    client: docker.APIClient, urn: str, container_id: str, timeout: int
) -> None:
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
            logs = client.logs(container_id, stdout=True, stderr=True, tail=30).decode(
                errors="replace"
            )
            raise RehearsalError(
                f"{urn}: container failed to be in healthy state within {timeout}s "
                f"(status {health.get('Status')}, container {state.get('Status')}; "
                f"last probe: {last})\n--- last container logs ---\n{logs}"
            )
        time.sleep(1)


def validate_container_inputs(urn: str, inputs: Mapping[str, Any]) -> None:
    refuse_unknown(urn, inputs, CONTAINER_INPUTS)
    nested: list[tuple[str, Collection[str]]] = [
        ("ports", PORT_INPUTS),
        ("networksAdvanced", NETWORK_ATTACHMENT_INPUTS),
        ("mounts", MOUNT_INPUTS),
        ("volumes", VOLUME_BINDING_INPUTS),
        ("uploads", UPLOAD_INPUTS),
        ("ulimits", ULIMIT_INPUTS),
        ("hosts", HOST_INPUTS),
    ]
    for key, handled in nested:
        for index, item in enumerate(inputs.get(key) or []):
            refuse_unknown(f"{urn} {key}[{index}]", item, handled)
    if inputs.get("healthcheck"):
        refuse_unknown(f"{urn} healthcheck", inputs["healthcheck"], HEALTHCHECK_INPUTS)
    if inputs.get("capabilities"):
        refuse_unknown(f"{urn} capabilities", inputs["capabilities"], CAPABILITIES_INPUTS)
    for index, item in enumerate(inputs.get("mounts") or []):
        refuse_unknown(
            f"{urn} mounts[{index}].bindOptions", item.get("bindOptions") or {}, {"propagation"}
        )
        refuse_unknown(
            f"{urn} mounts[{index}].volumeOptions",
            item.get("volumeOptions") or {},
            {"noCopy", "labels", "driverName", "driverOptions"},
        )
        refuse_unknown(
            f"{urn} mounts[{index}].tmpfsOptions",
            item.get("tmpfsOptions") or {},
            {"sizeBytes", "mode"},
        )
    if any(part == "" for part in inputs.get("command") or []):
        raise RehearsalError(f"{urn}: values for command may not be empty")  # [funcs] L82-89


def container_create_spec(
    inputs: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The Engine API create call the provider makes ([funcs] L43-456): config, host, networks."""
    create: dict[str, Any] = {
        "command": inputs.get("command"),
        "entrypoint": inputs.get("entrypoints"),
        "environment": list(inputs.get("envs") or []) or None,
        "user": inputs.get("user") or None,
        "working_dir": inputs.get("workingDir") or None,
        "hostname": inputs.get("hostname") or None,
        "domainname": inputs.get("domainname") or None,
        "stop_signal": inputs.get("stopSignal") or None,
        # Numbers arrive as floats (protobuf Struct); the Engine API wants integers.
        "stop_timeout": _optional_int(inputs.get("stopTimeout")),
        "tty": bool(inputs.get("tty", False)),
        "stdin_open": bool(inputs.get("stdinOpen", False)),
        "platform": inputs.get("platform") or None,
    }
    healthcheck = inputs.get("healthcheck")
    if healthcheck:
        create["healthcheck"] = {
            "test": list(healthcheck["tests"]),
            "interval": go_duration_nanoseconds(healthcheck.get("interval", "0")),
            "timeout": go_duration_nanoseconds(healthcheck.get("timeout", "0")),
            "start_period": go_duration_nanoseconds(healthcheck.get("startPeriod", "0")),
            "retries": int(healthcheck.get("retries", 0)),
        }
    host: dict[str, Any] = {
        "privileged": bool(inputs.get("privileged", False)),
        "publish_all_ports": bool(inputs.get("publishAllPorts", False)),
        "restart_policy": {
            "Name": inputs.get("restart", "no"),
            "MaximumRetryCount": int(inputs.get("maxRetryCount", 0)),
        },
        "auto_remove": bool(inputs.get("rm", False)),
        "read_only": bool(inputs.get("readOnly", False)),
        "init": bool(inputs.get("init", False)),
        "log_config": docker.types.LogConfig(
            type=inputs.get("logDriver", "json-file"), config=dict(inputs.get("logOpts") or {})
        ),
    }
    exposed: list[tuple[int, str]] = []
    bindings: dict[str, Any] = {}
    for port in inputs.get("ports") or []:
        protocol = port.get("protocol", "tcp")
        key = f"{int(port['internal'])}/{protocol}"
        exposed.append((int(port["internal"]), protocol))
        if port.get("external") is not None:
            bindings[key] = (port.get("ip", "0.0.0.0"), int(port["external"]))
        else:
            bindings[key] = (port.get("ip", "0.0.0.0"),)
    if exposed:
        create["ports"] = exposed
        host["port_bindings"] = bindings
    if inputs.get("networkMode"):
        host["network_mode"] = inputs["networkMode"]
    if inputs.get("tmpfs"):
        host["tmpfs"] = dict(inputs["tmpfs"])
    if inputs.get("mounts"):
        host["mounts"] = [_mount(item) for item in inputs["mounts"]]
    binds: dict[str, dict[str, str]] = {}
    volumes_from: list[str] = []
    for volume in inputs.get("volumes") or []:
        mode = "ro" if volume.get("readOnly") else "rw"
        if volume.get("fromContainer"):
            volumes_from.append(str(volume["fromContainer"]))
            continue
        source = volume.get("hostPath") or volume.get("volumeName")
        if not source:
            raise RehearsalError(
                "volumes: an anonymous volume (no hostPath or volumeName) is not rehearsed"
            )
        binds[str(source)] = {"bind": str(volume["containerPath"]), "mode": mode}
    if binds:
        host["binds"] = binds
        create["volumes"] = [spec["bind"] for spec in binds.values()]
    if volumes_from:
        host["volumes_from"] = volumes_from
    capabilities = inputs.get("capabilities") or {}
    if capabilities.get("adds"):
        host["cap_add"] = list(capabilities["adds"])
    if capabilities.get("drops"):
        host["cap_drop"] = list(capabilities["drops"])
    simple_host_settings = {
        "securityOpts": "security_opt",
        "groupAdds": "group_add",
        "dns": "dns",
        "dnsOpts": "dns_opt",
        "dnsSearches": "dns_search",
        "pidMode": "pid_mode",
        "ipcMode": "ipc_mode",
        "usernsMode": "userns_mode",
        "cpuSet": "cpuset_cpus",
        "sysctls": "sysctls",
    }
    for key, setting in simple_host_settings.items():
        if inputs.get(key):
            value = inputs[key]
            host[setting] = list(value) if isinstance(value, list | tuple) else value
    if inputs.get("cpuShares"):
        host["cpu_shares"] = int(inputs["cpuShares"])
    if inputs.get("memory"):
        host["mem_limit"] = _megabytes(inputs["memory"])
    if inputs.get("memoryReservation"):
        host["mem_reservation"] = _megabytes(inputs["memoryReservation"])
    if inputs.get("memorySwap"):
        swap = int(inputs["memorySwap"])
        host["memswap_limit"] = _megabytes(swap) if swap > 0 else swap
    if inputs.get("shmSize"):
        host["shm_size"] = _megabytes(inputs["shmSize"])
    if inputs.get("cpus"):
        host["nano_cpus"] = int(float(inputs["cpus"]) * 1_000_000_000)
    if inputs.get("ulimits"):
        host["ulimits"] = [
            docker.types.Ulimit(name=u["name"], soft=int(u["soft"]), hard=int(u["hard"]))
            for u in inputs["ulimits"]
        ]
    if inputs.get("hosts"):
        host["extra_hosts"] = {h["host"]: h["ip"] for h in inputs["hosts"]}
    attachments = [
        {
            "net_id": network["name"],
            "aliases": list(network.get("aliases") or []) or None,
            "ipv4_address": network.get("ipv4Address") or None,
            "ipv6_address": network.get("ipv6Address") or None,
        }
        for network in inputs.get("networksAdvanced") or []
    ]
    return create, host, attachments


def _mount(item: Mapping[str, Any]) -> docker.types.Mount:
    volume_options = item.get("volumeOptions") or {}
    tmpfs_options = item.get("tmpfsOptions") or {}
    driver = None
    if volume_options.get("driverName") or volume_options.get("driverOptions"):
        driver = docker.types.DriverConfig(
            volume_options.get("driverName", ""), volume_options.get("driverOptions")
        )
    return docker.types.Mount(
        target=item["target"],
        source=item.get("source"),
        type=item["type"],
        read_only=bool(item.get("readOnly", False)),
        propagation=(item.get("bindOptions") or {}).get("propagation"),
        no_copy=bool(volume_options.get("noCopy", False)),
        labels=label_list_to_dict(volume_options.get("labels")) or None,
        driver_config=driver,
        tmpfs_size=_optional_int(tmpfs_options.get("sizeBytes")),
        tmpfs_mode=_optional_int(tmpfs_options.get("mode")),
    )


def _upload_archive(upload: Mapping[str, Any]) -> bytes:
    # [funcs] L505-582: exactly one of content, contentBase64, source; mode from permissions
    # (octal), else 0744 when executable, else 0644; extracted at "/".
    given = [key for key in ("content", "contentBase64", "source") if upload.get(key)]
    if len(given) != 1:
        raise RehearsalError("uploads: exactly one of content, contentBase64, source must be set")
    if upload.get("content"):
        payload = str(upload["content"]).encode()
    elif upload.get("contentBase64"):
        payload = base64.b64decode(str(upload["contentBase64"]))
    else:
        with open(str(upload["source"]), "rb") as source:
            payload = source.read()
    if upload.get("permissions"):
        mode = int(str(upload["permissions"]), 8)
    else:
        mode = 0o744 if upload.get("executable") else 0o644
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name=str(upload["file"]).lstrip("/"))
        info.size = len(payload)
        info.mode = mode
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def delete_docker_resource(
    client: docker.APIClient, resource: AppliedResource, *, keep_volumes: bool
) -> bool:
    """Delete one recorded single-host resource as the provider's Delete does. Returns False when
    it is kept."""
    if resource.type == CONTAINER:
        delete_container(
            client,
            resource.id,
            grace_seconds=resource.delete.get("destroyGraceSeconds"),
            attach=bool(resource.delete.get("attach", False)),
            remove_volumes=bool(resource.delete.get("removeVolumes", True)),
        )
        return True
    if resource.type == NETWORK:
        remove_network(client, resource.id)
        return True
    if resource.type == VOLUME:
        if keep_volumes:
            return False
        with contextlib.suppress(docker.errors.NotFound):
            client.remove_volume(resource.id)
        return True
    # docker.Image: Delete is a no-op, the tag stays ([image.go]); RemoteImage, keepLocally: no rmi.
    return True


def remove_network(client: docker.APIClient, network_id: str, *, within: float = 60) -> None:
    """Remove a network; an overlay keeps "active endpoints" until the containers of the services
    just removed are gone, so that refusal is retried for a while."""
    deadline = time.monotonic() + within
    while True:
        try:
            client.remove_network(network_id)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as error:
            if "active endpoints" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def delete_container(
    client: docker.APIClient,
    container_id: str,
    *,
    grace_seconds: int | None,
    attach: bool,
    remove_volumes: bool,
) -> None:
    # [funcs] L1085-1096: unless attach, stop with destroy_grace_seconds as the timeout; unset means
    # 0, so the container is killed at once. Then a forced remove ([funcs] L1100-1110).
    try:
        if not attach:
            client.stop(container_id, timeout=int(grace_seconds or 0))
        client.remove_container(container_id, v=remove_volumes, force=True)
    except docker.errors.NotFound:
        pass
