"""Render a `StackDescription` as containers on one Docker host (pulumi_docker 5.x).

Provider behaviour this file relies on comes from the team's provider notes (pulumi-docker.md, read
from kreuzwerker/terraform-provider-docker v4 and pulumi-docker's source; summarised in
docs/infra.md). The comments below cite the point each choice depends on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import pulumi
import pulumi_docker as docker

from infra.spec import (
    AppImage as AppImageSpec,
)
from infra.spec import (
    ImageKind,
    Network,
    NetworkKey,
    Role,
    Service,
    StackDescription,
    Volume,
    VolumeKey,
)

TYPE_PREFIX = "taskstack:docker"
MIGRATION_GATE_LABEL = "com.taskstack.migration"


class MigrationFailedError(pulumi.RunError):
    """The one-shot migration exited non-zero: nothing that needs the schema is deployed."""


def _container_options(
    parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]
) -> pulumi.ResourceOptions:
    # The provider ignores changes to healthcheck, tmpfs and init (kreuzwerker#988, fixed after the
    # release 5.x bridges): force a replacement instead. Containers carry fixed names and published
    # ports, so the old one must go before the new one starts.
    return pulumi.ResourceOptions(
        parent=parent,
        depends_on=list(depends_on),
        replace_on_changes=["healthcheck", "tmpfs", "init"],
        delete_before_replace=True,
    )


@dataclass(frozen=True)
class _Context:
    description: StackDescription
    networks: Mapping[NetworkKey, docker.Network]
    volumes: Mapping[VolumeKey, docker.Volume]
    images: Mapping[ImageKind, pulumi.Output[str]]


def _env(service: Service) -> list[pulumi.Input[str]]:
    plain: list[pulumi.Input[str]] = [f"{k}={v}" for k, v in sorted(service.env.items())]
    secret: list[pulumi.Input[str]] = [
        pulumi.Output.secret(f"{k}={v.get_secret_value()}")
        for k, v in sorted(service.secret_env.items())
    ]
    return plain + secret


def _container(
    ctx: _Context,
    service: Service,
    resource_name: str,
    container_name: str,
    *,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource],
    gate: pulumi.Output[str] | None = None,
) -> docker.Container:
    description = ctx.description
    labels = [
        docker.ContainerLabelArgs(label=key, value=value)
        for key, value in sorted(service.labels.items())
    ]
    if gate is not None:
        # The migration gate's result is an input: a container that needs the schema cannot be
        # registered until the migration has exited 0 (a failed gate raises instead).
        labels.append(docker.ContainerLabelArgs(label=MIGRATION_GATE_LABEL, value=gate))
    health = service.healthcheck
    hardening = service.hardening
    return docker.Container(
        resource_name,
        docker.ContainerArgs(
            name=container_name,
            image=ctx.images[service.image],
            command=list(service.command) or None,
            envs=_env(service),
            user=service.user,
            init=True,
            restart=service.restart,
            labels=labels,
            log_driver=description.logging.driver,
            log_opts=dict(description.logging.options),
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=ctx.networks[attachment.network].name,  # the Output: see Network below
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
            mounts=[
                docker.ContainerMountArgs(
                    type="volume", source=ctx.volumes[m.volume].name, target=m.target
                )
                for m in service.volumes
            ]
            + [
                docker.ContainerMountArgs(
                    type="bind", source=str(b.source), target=b.target, read_only=b.read_only
                )
                for b in service.binds
            ]
            or None,
            tmpfs=dict(service.tmpfs) or None,
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=list(health.test),
                interval=health.interval,
                timeout=health.timeout,
                retries=health.retries,
                start_period=health.start_period,
            )
            if health is not None
            else None,
            # wait=True polls until `healthy` and fails after wait_timeout; it errors outright for a
            # container without a healthcheck, so only services that declare one ask for it.
            wait=service.wait_healthy,
            wait_timeout=description.wait_timeout_seconds if service.wait_healthy else None,
            # One-shot: must_run=False, or every `up` restarts it (Read records a stopped container
            # as must_run=false); attach+logs make the provider wait for the exit and keep the
            # output, but attach ignores the exit code, hence the gate in `Migration`.
            must_run=False if service.one_shot else None,
            attach=True if service.one_shot else None,
            logs=True if service.one_shot else None,
            read_only=hardening.read_only_rootfs,
            security_opts=["no-new-privileges:true"] if hardening.no_new_privileges else None,
            capabilities=docker.ContainerCapabilitiesArgs(
                drops=list(hardening.cap_drop), adds=list(hardening.cap_add) or None
            )
            if hardening.cap_drop
            else None,
            memory=service.limits.memory_mb if service.limits else None,
            cpus=service.limits.cpus if service.limits else None,
            stop_signal=service.stop_signal,
            stop_timeout=service.stop_grace_seconds,
            # Pulumi's delete/replace stops with this timeout; unset it kills at once, cutting off a
            # Celery task, a PostgreSQL checkpoint or a Redis AOF rewrite.
            destroy_grace_seconds=service.stop_grace_seconds,
        ),
        opts=_container_options(parent, depends_on),
    )


class Networks(pulumi.ComponentResource):
    """The app's bridge network, and the data network of PostgreSQL and Redis (internal in prod)."""

    def __init__(
        self, name: str, networks: Sequence[Network], opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__(f"{TYPE_PREFIX}:Network", name, None, opts)
        # Containers take `network.name` (an Output), not the literal, so Pulumi deletes them before
        # the network ("has active endpoints" otherwise).
        self.by_key: dict[NetworkKey, docker.Network] = {
            network.key: docker.Network(
                f"{network.key}-network",
                docker.NetworkArgs(
                    name=network.name,
                    driver="bridge",
                    internal=network.internal,
                    labels=[
                        docker.NetworkLabelArgs(label=k, value=v)
                        for k, v in sorted(network.labels.items())
                    ],
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for network in networks
        }
        self.register_outputs({key: net.name for key, net in self.by_key.items()})


def _volume(volume: Volume, parent: pulumi.Resource) -> docker.Volume:
    # retain_on_delete in prod: `pulumi destroy` (or a replace) drops the volume from the state and
    # leaves the data on the host; docs/infra.md says how to really delete it.
    return docker.Volume(
        f"{volume.key}-data",
        docker.VolumeArgs(
            name=volume.name,
            labels=[
                docker.VolumeLabelArgs(label=k, value=v) for k, v in sorted(volume.labels.items())
            ],
        ),
        opts=pulumi.ResourceOptions(parent=parent, retain_on_delete=volume.retain_on_delete),
    )


def _remote_image(name: str, resource_name: str, parent: pulumi.Resource) -> docker.RemoteImage:
    # keep_locally: destroy would otherwise `docker rmi` a base other stacks share. A local image of
    # that name is used as is; pin by digest in config to get a new one (pull_triggers won't).
    return docker.RemoteImage(
        resource_name,
        docker.RemoteImageArgs(name=name, keep_locally=True),
        opts=pulumi.ResourceOptions(parent=parent),
    )


class AppImage(pulumi.ComponentResource):
    """The app image, built from the repository's Dockerfile by the engine (never pushed)."""

    def __init__(
        self,
        name: str,
        image: AppImageSpec,
        opts: pulumi.ResourceOptions,
        type_prefix: str = TYPE_PREFIX,
    ) -> None:
        super().__init__(f"{type_prefix}:AppImage", name, None, opts)
        self.image = docker.Image(
            "app-image",
            docker.ImageArgs(
                image_name=image.name,
                build=docker.DockerBuildArgs(
                    # Absolute paths from the description (resolved from this file's location):
                    # Pulumi runs the program with infra/ as its working directory.
                    context=str(image.context),
                    dockerfile=str(image.dockerfile),
                    # Explicit, or a host of another architecture sees a diff on every preview.
                    platform=image.platform,
                ),
                skip_push=True,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # With skip_push the repo digest is the local image id: containers use it, not the tag, so a
        # rebuilt image replaces them.
        self.image_id: pulumi.Output[str] = self.image.repo_digest
        self.register_outputs({"imageName": self.image.image_name, "imageId": self.image_id})


@dataclass(frozen=True)
class _Shared:
    """What every service component needs from the ones declared before it."""

    description: StackDescription
    networks: Mapping[NetworkKey, docker.Network]
    app_image: pulumi.Output[str]


class _DataService(pulumi.ComponentResource):
    """A stateful backing service: its pinned image (kept locally), data volume and container."""

    def __init__(
        self,
        type_name: str,
        name: str,
        shared: _Shared,
        role: Role,
        image_name: str,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__(f"{TYPE_PREFIX}:{type_name}", name, None, opts)
        description = shared.description
        service = description.service(role)
        self.image = _remote_image(image_name, f"{role}-image", self)
        volumes = {
            v.key: _volume(v, self)
            for v in description.volumes
            if v.key in {m.volume for m in service.volumes}
        }
        ctx = _Context(description, shared.networks, volumes, {service.image: self.image.image_id})
        self.container = _container(
            ctx, service, role, description.container_name(role), parent=self, depends_on=[]
        )
        self.register_outputs({"containerName": self.container.name})


class Database(_DataService):
    """PostgreSQL: healthy (pg_isready) before anything that needs it is created."""

    def __init__(self, name: str, shared: _Shared, opts: pulumi.ResourceOptions) -> None:
        super().__init__(
            "Database", name, shared, "postgres", shared.description.postgres_image, opts
        )


class Cache(_DataService):
    """Redis, the Celery broker and result backend: append-only, authenticated in prod."""

    def __init__(self, name: str, shared: _Shared, opts: pulumi.ResourceOptions) -> None:
        super().__init__("Cache", name, shared, "redis", shared.description.redis_image, opts)


class Migration(pulumi.ComponentResource):
    """`alembic upgrade head`, once per image, and the gate that stops the deployment on failure."""

    def __init__(
        self, name: str, shared: _Shared, database: Database, opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__(f"{TYPE_PREFIX}:Migration", name, None, opts)
        description = shared.description
        ctx = _Context(description, shared.networks, {}, {"app": shared.app_image})
        self.container = _container(
            ctx,
            description.service("migrate"),
            "migrate",
            description.container_name("migrate"),
            parent=self,
            depends_on=[database.container],
        )
        # attach=True waits for the exit but ignores its code (provider note "Container"): read it.
        # In a preview the code is unknown and the apply does not run; the API's readiness check on
        # the schema head stays the second line of defence.
        self.gate: pulumi.Output[str] = pulumi.Output.all(
            self.container.exit_code, self.container.container_logs
        ).apply(lambda result: _require_success(int(result[0]), result[1]))
        self.register_outputs({"containerName": self.container.name, "gate": self.gate})


def _require_success(exit_code: int, logs: str | None) -> str:
    if exit_code != 0:
        raise MigrationFailedError(
            f"the migration (alembic upgrade head) exited with code {exit_code}; nothing that "
            f"needs the schema was deployed. Its output:\n{logs or '(no output)'}"
        )
    return "passed"


class _AppService(pulumi.ComponentResource):
    """A role of the app image that needs PostgreSQL, Redis and a migrated schema.

    Each subclass names its component type (`taskstack:docker:<TYPE_NAME>`) and its role.
    """

    TYPE_NAME: ClassVar[str]
    ROLE: ClassVar[Role]

    def __init__(
        self,
        name: str,
        shared: _Shared,
        after: Sequence[pulumi.Resource],
        gate: pulumi.Output[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__(f"{TYPE_PREFIX}:{self.TYPE_NAME}", name, None, opts)
        role = self.ROLE
        description = shared.description
        service = description.service(role)
        volumes = {
            v.key: _volume(v, self)
            for v in description.volumes
            if v.key in {m.volume for m in service.volumes}
        }
        ctx = _Context(description, shared.networks, volumes, {"app": shared.app_image})
        single = service.replicas == 1 and role != "worker"
        self.containers = [
            _container(
                ctx,
                service,
                role if single else f"{role}-{index}",
                description.container_name(role, None if single else index),
                parent=self,
                depends_on=after,
                gate=gate,
            )
            for index in range(1, service.replicas + 1)
        ]
        self.register_outputs({"containerNames": [c.name for c in self.containers]})


class Api(_AppService):
    TYPE_NAME, ROLE = "Api", "api"


class Workers(_AppService):
    TYPE_NAME, ROLE = "Workers", "worker"


class Beat(_AppService):
    TYPE_NAME, ROLE = "Beat", "beat"


class Flower(_AppService):
    TYPE_NAME, ROLE = "Flower", "flower"


@dataclass(frozen=True)
class RenderedStack:
    """What the program exports, by role."""

    app_image: AppImage
    containers: Mapping[Role, Sequence[docker.Container]]


def render(description: StackDescription) -> RenderedStack:
    """Declare the whole stack as containers, each component parented to the stack."""
    opts = pulumi.ResourceOptions()
    networks = Networks("networks", description.networks, opts)
    app_image = AppImage("app", description.app_image, opts)
    shared = _Shared(description, networks.by_key, app_image.image_id)
    database = Database("database", shared, opts)
    cache = Cache("cache", shared, opts)
    migration = Migration("migration", shared, database, opts)
    # Explicit ordering on the containers themselves: a depends_on on a component would expand to
    # its children anyway, and the mocks tests assert on exactly these edges.
    after = [database.container, cache.container, migration.container]
    api = Api("api", shared, after, migration.gate, opts)
    workers = Workers("workers", shared, after, migration.gate, opts)
    beat = Beat("beat", shared, after, migration.gate, opts)
    flower = Flower("flower", shared, after, migration.gate, opts)
    return RenderedStack(
        app_image=app_image,
        containers={
            "postgres": [database.container],
            "redis": [cache.container],
            "migrate": [migration.container],
            "api": api.containers,
            "worker": workers.containers,
            "beat": beat.containers,
            "flower": flower.containers,
        },
    )
