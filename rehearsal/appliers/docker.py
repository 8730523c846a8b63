"""The single-host resources (networks, volumes, images, containers), applied to the Docker engine
as pulumi-docker 5.x would. `rehearsal.appliers.dispatch` hands each registration here by type,
once its inputs passed the tables below: exactly the inputs the program sets, no more.

Provider sources cited below (pulumi-docker 5.1/5.2 bridges kreuzwerker/terraform-provider-docker
v4.5.0, commit 5074970c; `docker.Image` is pulumi-docker's own `provider/image.go`):
  [funcs] internal/provider/resource_docker_container_funcs.go
  [image-funcs] internal/provider/resource_docker_image_funcs.go
  [image.go] pulumi-docker provider/image.go (v5.1.0)
  [resources.go] pulumi-docker provider/resources.go (v5.1.0)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
import docker.types
from pulumi.runtime.mocks import MockResourceArgs

from rehearsal.appliers import ApplyContext, Change
from rehearsal.engine import (
    DOCKER_CLI,
    LABELS,
    RehearsalError,
    api_client,
    autoname,
    exists,
    fields,
    go_duration_nanoseconds,
    label_list_to_dict,
    rehearsal_labels,
)
from rehearsal.nodes import distribute_image
from rehearsal.readback import (
    Observed,
    changed_properties,
    cpus_nanoseconds,
    property_digests,
    read_back,
)
from rehearsal.runner import RegistrationOptions
from rehearsal.state import AppliedResource, inputs_digest
from rehearsal.tokens import CONTAINER, NETWORK, VOLUME

# The inputs applied, per resource type (wire names; docs/rehearsal.md). Container: create ([funcs]
# L43-456), networks ([funcs] L461-503), start, then `wait` ([funcs] L590-628) or `attach`/`logs`
# ([funcs] L631-671); `mustRun` ([funcs] L813-824) and `destroyGraceSeconds` ([funcs] L1085-1096)
# act on later `up`s and on delete.
CONTAINER_INPUTS = fields(
    "attach command cpuShares cpus destroyGraceSeconds envs image init logDriver logOpts logs "
    "memory mustRun name readOnly restart securityOpts stopSignal stopTimeout tmpfs user wait "
    "waitTimeout",
    capabilities=fields("drops"),
    healthcheck=fields("interval retries startPeriod tests timeout"),
    labels=LABELS,
    mounts=fields("readOnly source target type"),
    networksAdvanced=fields("aliases name"),
    ports=fields("external internal ip protocol"),
    ulimits=fields("hard name soft"),
)
NETWORK_INPUTS = fields("attachable driver internal name options", labels=LABELS)
VOLUME_INPUTS = fields("name", labels=LABELS)
REMOTE_IMAGE_INPUTS = fields("keepLocally name")
# buildOnPreview only matters to a preview, which the rehearsal never runs.
IMAGE_INPUTS = fields(
    "buildOnPreview imageName skipPush", build=fields("context dockerfile platform")
)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class DockerAppliers:
    """The single-host resources (networks, volumes, images, containers), each applied as the
    provider's Create/Read/Update would, recorded in the stack's state."""

    def __init__(self, context: ApplyContext) -> None:
        self.stack = context.stack
        self.state = context.state
        self.log = context.log
        self.changes = context.changes
        self.superseded = context.superseded

    def _labels(self, inputs: Mapping[str, Any], urn: str, sequence: int) -> dict[str, str]:
        own = label_list_to_dict(inputs.get("labels"))
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
        digest = inputs_digest(inputs)
        client = api_client()
        unchanged = self._unchanged(options.urn, digest)
        if unchanged is not None and exists(client.inspect_network, unchanged.id):
            return unchanged.id, {**inputs, **unchanged.outputs}
        self._note_change(options.urn)
        self._replace_recorded(options.urn)
        name = inputs.get("name") or autoname(args.name)
        sequence = self.state.take_sequence()
        created = client.create_network(
            name,
            driver=inputs.get("driver") or "bridge",
            options=inputs.get("options"),
            internal=bool(inputs.get("internal", False)),
            labels=self._labels(inputs, options.urn, sequence),
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
            name=name, driver="local", labels=self._labels(inputs, options.urn, sequence)
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
        name = str(inputs["name"])
        if not inputs.get("keepLocally", False):
            # [image-funcs] removeImage L187-220: without keep_locally, destroy runs `docker rmi`.
            # Here that would delete a base image nothing can pull back, so the rehearsal refuses
            # it.
            raise RehearsalError(
                f"{options.urn}: keepLocally is not set, so destroy would remove {name} "
                "from the engine"
            )
        # [image-funcs] findImage L343-377: a local image of that name is used as is; only a missing
        # one is pulled, which cannot work here.
        try:
            found = api_client().inspect_image(name)
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
        sequence = self.state.take_sequence()
        digest = inputs_digest(inputs)
        self.state.record(
            AppliedResource(options.urn, args.typ, resource_id, name, digest, sequence, outputs)
        )
        return resource_id, {**inputs, **outputs}

    def image(
        self, args: MockResourceArgs, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        inputs = args.inputs
        if not inputs.get("skipPush", False):
            raise RehearsalError(
                f"{options.urn}: skipPush is not set and there is no registry to push to"
            )
        image_name = str(inputs["imageName"])
        build = dict(inputs.get("build") or {})
        image_id = self._build(options.urn, image_name, build)
        previous = self.state.get(options.urn)
        if previous is None or previous.outputs.get("repoDigest") != image_id:
            # The provider builds only when the context's hash changed; the rehearsal always
            # builds and counts a change when the image id is new.
            op = "create" if previous is None else "update"
            self.changes.append(Change(op, options.urn, ["repoDigest"]))
        # A multi-node rehearsal: the other nodes get the image as a registry would serve it.
        distribute_image(image_name, image_id, log=self.log)
        # [image.go] L287-299: with skipPush, repoDigest is the local image id; the resource id is
        # the name.
        context = str(build.get("context") or ".")
        outputs = {
            "imageName": image_name,
            "baseImageName": image_name,
            "repoDigest": image_id,
            "dockerfile": os.path.relpath(_dockerfile(build), context),
            "context": context,
            "platform": build.get("platform"),
            "registryServer": None,
        }
        sequence = self.state.take_sequence()
        digest = inputs_digest(inputs)
        self.state.record(
            AppliedResource(
                options.urn,
                args.typ,
                image_name,
                image_name,
                digest,
                sequence,
                {"repoDigest": image_id},
            )
        )
        return image_name, {**inputs, **outputs}

    def _build(self, urn: str, image_name: str, build: Mapping[str, Any]) -> str:
        """`docker build` as the provider builds (BuildKit: the program sets no builderVersion,
        [image.go] L218-236); the new image's id."""
        # [image.go] marshalBuildAndApplyDefaults L535-562: context defaults to ".", the Dockerfile
        # to <context>/Dockerfile, both relative to the working directory.
        context = str(build.get("context") or ".")
        command = [DOCKER_CLI, "build", "--progress=plain", "--tag", image_name]
        command += ["--file", _dockerfile(build)]
        if build.get("platform"):
            command += ["--platform", str(build["platform"])]
        self.log(f"  building {image_name} from {_dockerfile(build)}")
        started = time.monotonic()
        completed = subprocess.run(
            [*command, context],
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-60:])
            raise RehearsalError(f"{urn}: docker build failed:\n{tail}")
        image_id = str(api_client().inspect_image(image_name)["Id"])
        self.log(f"  built {image_name} ({image_id[:19]}) in {time.monotonic() - started:.0f}s")
        return image_id

    # -- containers
    # -----------------------------------------------------------------------------------

    def container(
        self, args: MockResourceArgs, options: RegistrationOptions
    ) -> tuple[str, dict[str, Any]]:
        inputs, urn = args.inputs, options.urn
        if any(part == "" for part in inputs.get("command") or []):
            raise RehearsalError(f"{urn}: values for command may not be empty")  # [funcs] L82-89
        client = api_client()
        recorded = self.state.get(urn)
        present = (
            recorded is not None
            and not recorded.tainted
            and exists(client.inspect_container, recorded.id)
        )
        if recorded is not None and present:
            kept = self._keep_container(client, recorded, inputs, urn)
            if kept is not None:
                return kept
        elif recorded is None:
            self.changes.append(Change("create", urn, []))
        else:
            self.changes.append(Change("replace", urn, ["(tainted or gone)"]))
        # pulumi-docker marks containers delete-before-replace ([resources.go]); the program's own
        # delete_before_replace option, when set, overrides that in the engine's step generator.
        # A container already gone leaves nothing to keep running.
        self._replace_recorded(
            urn, delete_first=options.delete_before_replace is not False or not present
        )
        return self._create_container(client, args, urn)

    def _keep_container(
        self,
        client: docker.APIClient,
        recorded: AppliedResource,
        inputs: Mapping[str, Any],
        urn: str,
    ) -> tuple[str, dict[str, Any]] | None:
        """The recorded container, started again if it stopped, when the engine's diff (the new
        inputs against what Read wrote back, readback.py) replaces nothing; else None, the
        replacement noted."""
        changed = changed_properties(CONTAINER, inputs, recorded.readback)
        running = client.inspect_container(recorded.id)["State"]["Running"]
        if changed == ["mustRun"] or (not changed and inputs.get("mustRun", True) and not running):
            # [funcs] L813-824 Read sets must_run=false for a stopped container, the diff triggers
            # Update, which starts it again (L997-1010). Same container, same id. (A container
            # stopped since the last Read is seen as `pulumi up --refresh` sees it.)
            self.log(f"  starting stopped container {recorded.physical_name} (mustRun)")
            self.changes.append(Change("update", urn, ["mustRun"]))
            client.start(recorded.id)
            recorded.readback = _read_back(client, recorded.id, inputs)
            self.state.record(recorded)
        elif changed:
            self.changes.append(Change("replace", urn, changed))
            return None
        return recorded.id, {**inputs, **recorded.outputs}

    def _create_container(
        self, client: docker.APIClient, args: MockResourceArgs, urn: str
    ) -> tuple[str, dict[str, Any]]:
        inputs = args.inputs
        name = inputs.get("name") or autoname(args.name)
        image = str(inputs["image"])
        try:
            client.inspect_image(image)
        except docker.errors.ImageNotFound as missing:
            raise RehearsalError(
                f"{urn}: Unable to create container with image {image}: not on the engine "
                "and nothing can be pulled here"
            ) from missing
        sequence = self.state.take_sequence()
        container_id = str(
            client.create_container(
                image,
                name=name,
                labels=self._labels(inputs, urn, sequence),
                host_config=client.create_host_config(**host_config(inputs)),
                use_config_proxy=False,
                **container_config(inputs),
            )["Id"]
        )
        delete = {
            "destroyGraceSeconds": _optional_int(inputs.get("destroyGraceSeconds")),
            "attach": bool(inputs.get("attach", False)),
        }
        digest = inputs_digest(inputs)
        # Recorded as tainted until the create finishes, so a failure half way is replaced next
        # time.
        record = AppliedResource(urn, args.typ, container_id, name, digest, sequence, {}, delete)
        record.tainted = True
        self.state.record(record)
        record.outputs = self._run_container(client, urn, container_id, name, inputs)
        record.readback = _read_back(client, container_id, inputs)
        record.tainted = False
        self.state.record(record)
        return container_id, {**inputs, **record.outputs}

    def _run_container(
        self,
        client: docker.APIClient,
        urn: str,
        container_id: str,
        name: str,
        inputs: Mapping[str, Any],
    ) -> dict[str, Any]:
        if inputs.get("networksAdvanced"):
            # [funcs] L461-503: with networks_advanced the default bridge is disconnected, then each
            # network is connected with its aliases.
            client.disconnect_container_from_network(container_id, "bridge")
            for network in inputs["networksAdvanced"]:
                aliases = list(network.get("aliases") or []) or None
                client.connect_container_to_network(container_id, network["name"], aliases=aliases)
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
                logs = client.logs(container_id, stdout=True, stderr=True)
                outputs["containerLogs"] = logs.decode(errors="replace")
        return {**outputs, **_read_container(client, container_id, inputs)}


def _dockerfile(build: Mapping[str, Any]) -> str:
    context = str(build.get("context") or ".")
    return str(build.get("dockerfile") or os.path.join(context, "Dockerfile"))


def _read_back(
    client: docker.APIClient, container_id: str, inputs: Mapping[str, Any]
) -> dict[str, str]:
    """The digests of what Read writes back for the container ([funcs] resourceDockerContainerRead),
    from what the engine reports of it."""
    inspected = client.inspect_container(container_id)
    state = inspected["State"]
    observed = Observed(
        running=bool(state["Running"]),
        exit_code=None if state["Running"] else int(state["ExitCode"]),
        image_id=str(inspected["Image"]),
    )
    return property_digests(read_back(CONTAINER, inputs, observed))


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


def container_config(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The container's config in the create call the provider makes ([funcs] L43-160)."""
    check = inputs.get("healthcheck")
    healthcheck = None
    if check:
        # [funcs] L140-160: durations through time.ParseDuration.
        healthcheck = {
            "test": list(check["tests"]),
            "interval": go_duration_nanoseconds(check.get("interval", "0")),
            "timeout": go_duration_nanoseconds(check.get("timeout", "0")),
            "start_period": go_duration_nanoseconds(check.get("startPeriod", "0")),
            "retries": int(check.get("retries", 0)),
        }
    ports = [
        (int(port["internal"]), port.get("protocol", "tcp")) for port in inputs.get("ports") or []
    ]
    return {
        "command": inputs.get("command"),
        "environment": list(inputs.get("envs") or []) or None,
        "user": inputs.get("user") or None,
        "stop_signal": inputs.get("stopSignal") or None,
        # Numbers arrive as floats (protobuf Struct); the Engine API wants integers.
        "stop_timeout": _optional_int(inputs.get("stopTimeout")),
        "healthcheck": healthcheck,
        "ports": ports or None,
    }


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
            target=item["target"],
            source=item.get("source"),
            type=item["type"],
            read_only=bool(item.get("readOnly", False)),
        )
        for item in inputs.get("mounts") or []
    ]
    ulimits = [
        docker.types.Ulimit(name=u["name"], soft=int(u["soft"]), hard=int(u["hard"]))
        for u in inputs.get("ulimits") or []
    ]
    memory = inputs.get("memory")
    cpus = inputs.get("cpus")
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
    }


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
    client: docker.APIClient, container_id: str, *, grace_seconds: int | None, attach: bool
) -> None:
    # [funcs] L1085-1096: unless attach, stop with destroy_grace_seconds as the timeout; unset means
    # 0, so the container is killed at once. Then a forced remove with its anonymous volumes
    # (remove_volumes, default true: the program leaves it unset; [funcs] L1100-1110).
    try:
        if not attach:
            client.stop(container_id, timeout=int(grace_seconds or 0))
        client.remove_container(container_id, v=True, force=True)
    except docker.errors.NotFound:
        pass
