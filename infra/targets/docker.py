"""Render a `StackDescription` as containers on one Docker host (pulumi_docker 5.x).

Provider behaviour this file relies on was read from kreuzwerker/terraform-provider-docker v4 and
pulumi-docker's source (summarised in docs/infra.md, "Provider behaviour the program relies on");
the comments below cite the point each choice depends on.

One component per role, in the order the description's `depends_on` gives: each role's containers
depend on the containers of the roles it depends on, and on the gate of a one-shot among them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pulumi
import pulumi_docker as docker

from infra.spec import (
    LogSettings,
    Network,
    NetworkKey,
    Role,
    Service,
    StackDescription,
    Volume,
    VolumeKey,
)
from infra.targets.components import (
    AppImage,
    AppImageArgs,
    Component,
    fill_replica,
    renamed,
)

TYPE_PREFIX = "taskstack:docker"
MIGRATION_GATE_LABEL = "com.taskstack.migration"
# The migration container's run label, `<key>:<token>` (docs/infra.md, "A failed migration"), and
# the stack output that remembers the one that passed.
MIGRATION_RUN_LABEL = "com.taskstack.migration.run"
MIGRATION_RUN_OUTPUT = "migrationRun"


class MigrationFailedError(pulumi.RunError):
    """The one-shot migration exited non-zero: nothing that needs the schema is deployed."""


@dataclass(frozen=True)
class NetworksArgs:
    networks: Sequence[Network]


class Networks(Component):
    """The app's bridge network, and the data network of PostgreSQL and Redis (internal in prod).

    Children: `<key>-<name>` (`app-network`, `data-network`).
    """

    def __init__(
        self, name: str, args: NetworksArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"{TYPE_PREFIX}:Network", name, opts)
        # Containers take `network.name` (an Output), not the literal, so Pulumi deletes them before
        # the network ("has active endpoints" otherwise).
        self.by_key: dict[NetworkKey, docker.Network] = {
            network.key: docker.Network(
                f"{network.key}-{name}",
                docker.NetworkArgs(
                    name=network.name,
                    driver="bridge",
                    internal=network.internal,
                    labels=[
                        docker.NetworkLabelArgs(label=k, value=v)
                        for k, v in sorted(network.labels.items())
                    ],
                ),
                opts=self.child_options(),
            )
            for network in args.networks
        }
        self.register_outputs({key: net.name for key, net in self.by_key.items()})


@dataclass(frozen=True)
class RoleArgs:
    """What a role's containers are made of.

    `image`: the image id the containers run or, with `pull`, a pinned reference the component
    pulls (and keeps locally) first. `networks`: network names by key (Outputs, so that containers
    are deleted before their networks). `volumes`: the named volumes the role owns. `gate`: an
    input that resolves only once the migration passed (None: not gated).
    """

    service: Service
    container_name: str
    image: pulumi.Input[str]
    networks: Mapping[NetworkKey, pulumi.Input[str]]
    logging: LogSettings
    wait_timeout_seconds: int
    volumes: Sequence[Volume] = ()
    pull: bool = False
    gate: pulumi.Input[str] | None = None
    # One-shot: the run label (`migration_run_label`); a new value replaces the container, i.e.
    # runs it again.
    run_label: pulumi.Input[str] | None = None


class _Role(Component):
    """One role: its pulled image and volumes if any, and its containers.

    Children: `<name>-image`, `<name>-data`, and the containers `<name>` (one copy) or
    `<name>-1` ... `<name>-N` (several, or copies told apart by `replica_env`). A role that
    publishes a port runs one container: a host port is bound once.

    A `start_first` role without a published port (the API, the workers) is replaced
    create-before-delete: its containers are auto-named (`<resource name>-<random>`, a new name for
    each replacement), so the new container starts and becomes healthy next to the old one, which
    Pulumi deletes at the end of the deployment. Every other container keeps its fixed name and
    is deleted before its replacement is created (the provider's own default).
    """

    TYPE_NAME: ClassVar[str]

    def __init__(
        self, name: str, args: RoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"{TYPE_PREFIX}:{self.TYPE_NAME}", name, opts)
        image = args.image
        if args.pull:
            self.image: docker.RemoteImage | None = _remote_image(args.image, f"{name}-image", self)
            image = self.image.image_id
        volumes = {
            v.key: _volume(v, f"{name}-data" if len(args.volumes) == 1 else f"{name}-{v.key}", self)
            for v in args.volumes
        }
        service = args.service
        copies = 1 if service.ports else service.replicas
        numbered = copies > 1 or bool(service.replica_env)
        side_by_side = starts_first(service)
        self.containers: list[docker.Container] = []
        for n in range(1, copies + 1):
            opts = self.child_options()
            if service.one_at_a_time and self.containers:
                # Each new copy healthy before the next one starts.
                opts = pulumi.ResourceOptions.merge(
                    opts, pulumi.ResourceOptions(depends_on=[self.containers[-1]])
                )
            fixed_name = f"{args.container_name}-{n}" if numbered else args.container_name
            self.containers.append(
                _container(
                    args,
                    image,
                    volumes,
                    f"{name}-{n}" if numbered else name,
                    None if side_by_side else fixed_name,
                    replica=n,
                    opts=opts,
                )
            )
        self.gate: pulumi.Output[str] | None = None

    def _done(self) -> None:
        self.register_outputs({"containerNames": [c.name for c in self.containers]})


class Database(_Role):
    """PostgreSQL: healthy (pg_isready) before anything that needs it is created."""

    TYPE_NAME = "Database"

    def __init__(
        self, name: str, args: RoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, args, opts)
        self._done()


class Cache(_Role):
    """Redis, the Celery broker and result backend: append-only, authenticated in prod."""

    TYPE_NAME = "Cache"

    def __init__(
        self, name: str, args: RoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, args, opts)
        self._done()


class Migration(_Role):
    """`alembic upgrade head`, once per image, and the gate that stops the deployment on failure."""

    TYPE_NAME = "Migration"

    def __init__(
        self, name: str, args: RoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, args, opts)
        (container,) = self.containers
        # attach=True waits for the exit but ignores its code (docs/infra.md): read it. In a preview
        # the code is unknown and the apply does not run; the API's readiness check on the schema
        # head stays the second line of defence.
        self.gate = pulumi.Output.all(container.exit_code, container.container_logs).apply(
            lambda result: _require_success(int(result[0]), result[1])
        )
        # The run label of a migration that passed: resolves only once the gate did, so a failed
        # `up` never records it (docs/infra.md, "A failed migration").
        self.passed_run: pulumi.Output[str] | None = None
        if args.run_label is not None:
            self.passed_run = pulumi.Output.all(self.gate, args.run_label).apply(
                lambda result: str(result[1])
            )
        self._done()


class Api(_Role):
    TYPE_NAME = "Api"

    def __init__(
        self, name: str, args: RoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, args, opts)
        self._done()


class Workers(_Role):
    TYPE_NAME = "Workers"

    def __init__(
        self, name: str, args: RoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, args, opts)
        self._done()


class Beat(_Role):
    TYPE_NAME = "Beat"

    def __init__(
        self, name: str, args: RoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, args, opts)
        self._done()


class Flower(_Role):
    TYPE_NAME = "Flower"

    def __init__(
        self, name: str, args: RoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, args, opts)
        self._done()


class Proxy(_Role):
    """HAProxy in front of the API copies: the one container that publishes the API port
    (infra/proxy.py). It finds the copies by their alias on the app network."""

    TYPE_NAME = "Proxy"

    def __init__(
        self, name: str, args: RoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, args, opts)
        self._done()


def starts_first(service: Service) -> bool:
    """Whether a role's containers are replaced create-before-delete: the role asks for it and
    publishes no port (a host port can be bound by one container only)."""
    return service.start_first and not service.ports


def _require_success(exit_code: int, logs: str | None) -> str:
    if exit_code != 0:
        raise MigrationFailedError(
            f"the migration (alembic upgrade head) exited with code {exit_code}; nothing that "
            f"needs the schema was deployed. Its output:\n{logs or '(no output)'}"
        )
    return "passed"


def migration_run_label(
    image: pulumi.Input[str],
    service: Service,
    previous: pulumi.Input[Any],
    token: str,
) -> pulumi.Output[str]:
    """`<key>:<token>`: `key` digests what the migration runs (image, command, environment);
    `previous` is the label of the last migration that passed (this stack's own `migrationRun`
    output). Same key: that label again, so an `up` after a successful one changes nothing. Another
    key (a new image or setting, or a run that failed since, which never records its label): a new
    token, so the container is replaced and the migration runs again, with no `--replace`."""
    key = pulumi.Output.unsecret(
        pulumi.Output.all(image, *_env(service, 1)).apply(
            lambda values: hashlib.sha256(
                json.dumps([list(service.command), [str(v) for v in values]]).encode()
            ).hexdigest()[:16]
        )
    )
    return pulumi.Output.all(key, previous).apply(
        lambda pair: (
            pair[1]
            if isinstance(pair[1], str) and pair[1].split(":", 1)[0] == pair[0]
            else f"{pair[0]}:{token}"
        )
    )


def own_previous_outputs() -> pulumi.StackReference:
    """This stack's outputs as the last `up` that finished left them (the engine reads the
    stack's checkpoint; a failed `up` registers no output that depends on a failed gate)."""
    name = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    return pulumi.StackReference("previous-outputs", name)


def _env(service: Service, replica: int) -> list[pulumi.Input[str]]:
    own = {k: fill_replica(v, str(replica)) for k, v in service.replica_env.items()}
    plain: list[pulumi.Input[str]] = [f"{k}={v}" for k, v in sorted({**service.env, **own}.items())]
    secret: list[pulumi.Input[str]] = [
        pulumi.Output.secret(pulumi.Output.concat(f"{k}=", v))
        for k, v in sorted(service.secret_env.items())
    ]
    return plain + secret


def _labels(args: RoleArgs) -> list[docker.ContainerLabelArgs]:
    labels = [
        docker.ContainerLabelArgs(label=key, value=value)
        for key, value in sorted(args.service.labels.items())
    ]
    if args.gate is not None:
        # The migration gate's result is an input: a container that needs the schema cannot be
        # registered until the migration has exited 0 (a failed gate raises instead).
        labels.append(docker.ContainerLabelArgs(label=MIGRATION_GATE_LABEL, value=args.gate))
    if args.run_label is not None:
        labels.append(docker.ContainerLabelArgs(label=MIGRATION_RUN_LABEL, value=args.run_label))
    return labels


def _mounts(
    service: Service, volumes: Mapping[VolumeKey, docker.Volume]
) -> list[docker.ContainerMountArgs] | None:
    mounts = [
        docker.ContainerMountArgs(type="volume", source=volumes[m.volume].name, target=m.target)
        for m in service.volumes
    ]
    mounts += [
        docker.ContainerMountArgs(
            type="bind", source=str(b.source), target=b.target, read_only=b.read_only
        )
        for b in service.binds
    ]
    return mounts or None


def _healthcheck(service: Service) -> docker.ContainerHealthcheckArgs | None:
    health = service.healthcheck
    if health is None:
        return None
    return docker.ContainerHealthcheckArgs(
        tests=list(health.test),
        interval=health.interval,
        timeout=health.timeout,
        retries=health.retries,
        start_period=health.start_period,
    )


def _container(
    args: RoleArgs,
    image: pulumi.Input[str],
    volumes: Mapping[VolumeKey, docker.Volume],
    resource_name: str,
    container_name: str | None,
    *,
    replica: int,
    opts: pulumi.ResourceOptions,
) -> docker.Container:
    service = args.service
    hardening = service.hardening
    one_shot = service.one_shot
    return docker.Container(
        resource_name,
        docker.ContainerArgs(
            name=container_name,
            image=image,
            command=list(service.command) or None,
            envs=_env(service, replica),
            user=service.user,
            init=True,
            restart=service.restart,
            labels=_labels(args),
            log_driver=args.logging.driver,
            log_opts=dict(args.logging.options),
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=args.networks[attachment.network],  # the Output: see Networks
                    aliases=list(attachment.aliases) or None,
                )
                for attachment in service.networks
            ],
            ports=[
                docker.ContainerPortArgs(
                    internal=p.internal, external=p.external, ip=p.host_ip, protocol="tcp"
                )
                for p in service.ports
            ]
            or None,
            mounts=_mounts(service, volumes),
            tmpfs=dict(service.tmpfs) or None,
            healthcheck=_healthcheck(service),
            # wait=True polls until `healthy` and fails after wait_timeout; it errors outright for a
            # container without a healthcheck, so only services that declare one ask for it.
            wait=service.wait_healthy,
            wait_timeout=args.wait_timeout_seconds if service.wait_healthy else None,
            # One-shot: must_run=False, or every `up` restarts it (Read records a stopped container
            # as must_run=false); attach+logs make the provider wait for the exit and keep the
            # output, but attach ignores the exit code, hence the gate in `Migration`.
            must_run=False if one_shot else None,
            attach=True if one_shot else None,
            logs=True if one_shot else None,
            read_only=hardening.read_only_rootfs,
            security_opts=["no-new-privileges:true"] if hardening.no_new_privileges else None,
            capabilities=docker.ContainerCapabilitiesArgs(drops=list(hardening.cap_drop))
            if hardening.cap_drop
            else None,
            # The provider has no pids_limit: the process bound as RLIMIT_NPROC (infra/spec.py).
            ulimits=[
                docker.ContainerUlimitArgs(
                    name="nproc", soft=service.max_processes, hard=service.max_processes
                )
            ]
            if service.max_processes
            else None,
            memory=service.limits.memory_mb if service.limits else None,
            cpus=service.limits.cpus if service.limits else None,
            cpu_shares=service.cpu_shares,
            stop_signal=service.stop_signal,
            stop_timeout=service.stop_grace_seconds,
            # Pulumi's delete/replace stops with this timeout; unset it kills at once, cutting off a
            # Celery task, a PostgreSQL checkpoint or a Redis AOF rewrite.
            destroy_grace_seconds=service.stop_grace_seconds,
        ),
        # The provider ignores changes to healthcheck, tmpfs and init (kreuzwerker#988, fixed after
        # the release 5.x bridges): force a replacement instead. pulumi-docker marks containers
        # delete-before-replace (provider/resources.go); an explicit option overrides that in the
        # engine's step generator. Auto-named containers without a published port cannot collide
        # with their replacement, so it is created first (no gap); the others keep the default.
        opts=pulumi.ResourceOptions.merge(
            opts,
            pulumi.ResourceOptions(
                replace_on_changes=["healthcheck", "tmpfs", "init"],
                delete_before_replace=container_name is not None,
            ),
        ),
    )


def _volume(volume: Volume, resource_name: str, parent: Component) -> docker.Volume:
    # retain_on_delete in prod: `pulumi destroy` (or a replace) drops the volume from the state and
    # leaves the data on the host; docs/infra.md says how to really delete it.
    return docker.Volume(
        resource_name,
        docker.VolumeArgs(
            name=volume.name,
            labels=[
                docker.VolumeLabelArgs(label=k, value=v) for k, v in sorted(volume.labels.items())
            ],
        ),
        opts=parent.child_options(pulumi.ResourceOptions(retain_on_delete=volume.retain_on_delete)),
    )


def _remote_image(
    reference: pulumi.Input[str], resource_name: str, parent: Component
) -> docker.RemoteImage:
    # keep_locally: destroy would otherwise `docker rmi` a base other stacks share. A local image of
    # that name is used as is; pin by digest in config to get a new one (pull_triggers won't).
    return docker.RemoteImage(
        resource_name,
        docker.RemoteImageArgs(name=reference, keep_locally=True),
        opts=parent.child_options(),
    )


# The component type of each role, and the name it had before components were named by role
# (the alias that keeps an existing stack's component, and so its children, in place).
_COMPONENTS: Mapping[Role, type[_Role]] = {
    "postgres": Database,
    "redis": Cache,
    "migrate": Migration,
    "api": Api,
    "worker": Workers,
    "beat": Beat,
    "flower": Flower,
    "proxy": Proxy,
}
PREVIOUS_NAMES: Mapping[str, str] = {
    "network": "networks",
    "postgres": "database",
    "redis": "cache",
    "migrate": "migration",
    "worker": "workers",
}


@dataclass(frozen=True)
class RenderedStack:
    """What the program exports, by role."""

    app_image: AppImage
    containers: Mapping[Role, Sequence[docker.Container]]
    # The run label of the migration that passed (exported as MIGRATION_RUN_OUTPUT).
    migration_run: pulumi.Output[str] | None = None


def render(description: StackDescription) -> RenderedStack:
    """Declare the whole stack as containers, one component per role, in dependency order."""
    networks = Networks(
        "network", NetworksArgs(description.networks), renamed(PREVIOUS_NAMES["network"])
    )
    image = description.app_image
    app_image = AppImage(
        "app",
        AppImageArgs(image.name, str(image.context), str(image.dockerfile), image.platform),
        type_prefix=TYPE_PREFIX,
    )
    network_names = {key: network.name for key, network in networks.by_key.items()}
    previous = own_previous_outputs().get_output(MIGRATION_RUN_OUTPUT)
    token = secrets.token_hex(4)
    roles: dict[Role, _Role] = {}
    for service in description.services:  # dependency order
        upstream = [roles[role] for role in service.depends_on]
        gates = [r.gate for r in upstream if r.gate is not None]
        pulled = description.images.get(service.image)
        image_input = pulled or app_image.image_id
        args = RoleArgs(
            service=service,
            container_name=description.container_name(service.role),
            image=image_input,
            pull=pulled is not None,
            networks=network_names,
            volumes=[
                v for v in description.volumes if v.key in {m.volume for m in service.volumes}
            ],
            logging=description.logging,
            wait_timeout_seconds=description.wait_timeout_seconds,
            gate=gates[0]
            if len(gates) == 1
            else (pulumi.Output.all(*gates).apply(",".join) if gates else None),
            run_label=migration_run_label(image_input, service, previous, token)
            if service.one_shot
            else None,
        )
        # Ordering on the containers themselves (the options reach the component's children).
        after = pulumi.ResourceOptions(depends_on=[c for r in upstream for c in r.containers])
        opts = pulumi.ResourceOptions.merge(after, renamed(PREVIOUS_NAMES.get(service.role)))
        roles[service.role] = _COMPONENTS[service.role](service.role, args, opts)
    passed = [r.passed_run for r in roles.values() if isinstance(r, Migration) and r.passed_run]
    return RenderedStack(
        app_image=app_image,
        containers={role: component.containers for role, component in roles.items()},
        migration_run=passed[0] if passed else None,
    )
