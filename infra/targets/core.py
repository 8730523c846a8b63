"""The renderer core both targets share: components, naming, ordering and the render loop.

A target (docker.py: containers on one host, swarm.py: services on a swarm) supplies only what is
its own: the resources one role becomes, and how its networks are made. Everything else is here:
the networks and the app image, one component per role (`<prefix>:<Type>`, named after the role),
the role's Docker name, the image it runs, and the order (each role after the resources of the
roles it depends on, as the description's `depends_on` says).

Each component takes a small frozen Args dataclass of what it uses (Inputs, or plain description
values) and an optional `opts`. Its own identity (parent, aliases, URN, import) stays its own; the
rest of `opts` (depends_on, protect, retain_on_delete, custom timeouts, ...) is merged into every
child it declares, and each child's name is derived from the component's name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pulumi
import pulumi_docker as docker

from infra.spec import (
    REPLICA,
    LogSettings,
    Network,
    NetworkKey,
    Role,
    Service,
    StackDescription,
    VolumeKey,
)

# What names the component itself: never handed down to a child. Transformations and transforms
# are inherited from the parent by Pulumi already; handing them down would apply them twice.
_OWN = ("parent", "aliases", "urn", "id", "import_", "transformations", "transforms")

# The component type of each role: its token is `<target prefix>:<type>`.
ROLE_TYPES: Mapping[Role, str] = {
    "postgres": "Database",
    "redis": "Cache",
    "migrate": "Migration",
    "api": "Api",
    "worker": "Workers",
    "beat": "Beat",
    "flower": "Flower",
    "proxy": "Proxy",
    "prometheus": "Prometheus",
    "alertmanager": "Alertmanager",
    "postgres-exporter": "DatabaseExporter",
    "redis-exporter": "CacheExporter",
    "backup": "Backup",
    "repository": "BackupRepository",
}

LabelArgs = TypeVar("LabelArgs")


def label_args(args: Callable[..., LabelArgs], labels: Mapping[str, str]) -> list[LabelArgs]:
    """`labels` as a resource's label Args (`docker.ContainerLabelArgs`, ...), sorted by key."""
    return [args(label=key, value=value) for key, value in sorted(labels.items())]


def volume_owners(description: StackDescription) -> dict[VolumeKey, Role]:
    """The role that declares each named volume: the first, in dependency order, to mount it (the
    others mount it by name, after it)."""
    owners: dict[VolumeKey, Role] = {}
    for service in description.services:
        for mount in service.volumes:
            owners.setdefault(mount.volume, service.role)
    return owners


def fill_replica(value: str, replica: str) -> str:
    """A `replica_env` value for one copy: `replica` is its number, or a target's template."""
    return value.replace(REPLICA, replica)


class Component(pulumi.ComponentResource):
    """A ComponentResource whose caller's options reach its children (`child_options`)."""

    def __init__(self, type_: str, name: str, opts: pulumi.ResourceOptions | None) -> None:
        super().__init__(type_, name, None, opts)
        inherited = copy.copy(opts) if opts is not None else pulumi.ResourceOptions()
        for attribute in _OWN:
            setattr(inherited, attribute, None)
        self._inherited = pulumi.ResourceOptions.merge(
            inherited, pulumi.ResourceOptions(parent=self)
        )

    def child_options(self, opts: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
        """The caller's options, parented to this component, then the child's own `opts`."""
        return pulumi.ResourceOptions.merge(self._inherited, opts)


@dataclass(frozen=True)
class AppImageArgs:
    image_name: pulumi.Input[str]  # repository:tag
    context: str  # absolute: Pulumi runs the program with infra/ as its working directory
    dockerfile: str
    platform: pulumi.Input[str]
    build_args: Mapping[str, str] | None = None


class AppImage(Component):
    """An image built by the engine (never pushed): the app's from the repository's Dockerfile
    (`<prefix>:AppImage`), or PostgreSQL's with pgBackRest (`type_name` DatabaseImage).

    Its child is `<name>-image`.
    """

    def __init__(
        self,
        name: str,
        args: AppImageArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        type_prefix: str,
        type_name: str = "AppImage",
    ) -> None:
        super().__init__(f"{type_prefix}:{type_name}", name, opts)
        self.image = docker.Image(
            f"{name}-image",
            docker.ImageArgs(
                image_name=args.image_name,
                build=docker.DockerBuildArgs(
                    context=args.context,
                    dockerfile=args.dockerfile,
                    args=dict(args.build_args) if args.build_args else None,
                    # Explicit, or a host of another architecture sees a diff on every preview.
                    platform=args.platform,
                ),
                skip_push=True,
            ),
            opts=self.child_options(),
        )
        # With skip_push the repo digest is the local image id: containers use it, not the tag, so a
        # rebuilt image replaces them.
        self.image_id: pulumi.Output[str] = self.image.repo_digest
        self.register_outputs({"imageName": self.image.image_name, "imageId": self.image_id})


@dataclass(frozen=True)
class NetworksArgs:
    """The description's networks, and how the target makes them (`driver` and its options)."""

    networks: Sequence[Network]
    driver: str
    attachable: bool | None = None
    options: Mapping[str, str] | None = None
    ignore_changes: Sequence[str] = ()


class Networks(Component):
    """The app network, and the data network of PostgreSQL and Redis (internal in prod).

    Children: `<key>-<name>` (`app-network`, `data-network`).
    """

    def __init__(
        self,
        name: str,
        args: NetworksArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        type_prefix: str,
    ) -> None:
        super().__init__(f"{type_prefix}:Network", name, opts)
        own = pulumi.ResourceOptions(ignore_changes=list(args.ignore_changes) or None)
        self.by_key: dict[NetworkKey, docker.Network] = {
            network.key: docker.Network(
                f"{network.key}-{name}",
                docker.NetworkArgs(
                    name=network.name,
                    driver=args.driver,
                    attachable=args.attachable,
                    internal=network.internal,
                    options=args.options,
                    labels=label_args(docker.NetworkLabelArgs, network.labels),
                ),
                opts=self.child_options(own),
            )
            for network in args.networks
        }
        self.register_outputs({key: net.name for key, net in self.by_key.items()})


@dataclass(frozen=True)
class RoleArgs:
    """What one role is rendered from, whichever the target.

    `name`: its Docker name (the container's, or the service's). `image`: the built app image's id
    or, with `pulled`, the pinned reference of a pulled image. `networks`: the stack's networks by
    key (a target attaches by their name or their id, Outputs either way, so that a role's
    resources are deleted before the networks).
    """

    service: Service
    name: str
    image: pulumi.Input[str]
    pulled: bool
    networks: Mapping[NetworkKey, docker.Network]
    logging: LogSettings
    wait_timeout_seconds: int


class RoleComponent(Component):
    """One role: a component `<prefix>:<Type>` (ROLE_TYPES) named after the role.

    A target's subclass declares the role's resources as its children, puts in `ready` those a
    dependant role waits for and in `names` their Docker names, then registers its outputs.
    """

    def __init__(
        self, type_prefix: str, service: Service, opts: pulumi.ResourceOptions | None
    ) -> None:
        super().__init__(f"{type_prefix}:{ROLE_TYPES[service.role]}", service.role, opts)
        self.ready: list[pulumi.CustomResource] = []
        self.names: list[pulumi.Output[str]] = []


RoleType = TypeVar("RoleType", bound=RoleComponent)


@dataclass(frozen=True)
class Rendered:
    """What a target hands back for the stack outputs: the app image and each role's names
    (containers on docker, services on swarm)."""

    image_name: pulumi.Output[str]
    image_id: pulumi.Output[str]
    names: Mapping[Role, Sequence[pulumi.Output[str]]]
    # docker: the run label of the migration that passed (docs/infra.md, "A failed migration").
    migration_run: pulumi.Output[str] | None = None


def render_roles(
    description: StackDescription,
    type_prefix: str,
    networks: NetworksArgs,
    declare: Callable[[RoleArgs, Sequence[RoleType], pulumi.ResourceOptions], RoleType],
) -> tuple[AppImage, dict[Role, RoleType]]:
    """The networks, the app image, and one component per role in dependency order: `declare`
    makes a role's component from its `RoleArgs`, its upstream roles' components, and the options
    that order it after them (they reach the component's children)."""
    stack_networks = Networks("network", networks, type_prefix=type_prefix)
    image = description.app_image
    app_image = AppImage(
        "app",
        AppImageArgs(image.name, str(image.context), str(image.dockerfile), image.platform),
        type_prefix=type_prefix,
    )
    built = {"app": app_image.image_id}
    if (database := description.database_image) is not None:
        built["postgres-backup"] = AppImage(
            "database",
            AppImageArgs(
                database.name,
                str(database.context),
                str(database.dockerfile),
                database.platform,
                database.build_args,
            ),
            type_prefix=type_prefix,
            type_name="DatabaseImage",
        ).image_id
    roles: dict[Role, RoleType] = {}
    for service in description.services:  # dependency order
        upstream = [roles[role] for role in service.depends_on]
        pulled = description.images.get(service.image)
        args = RoleArgs(
            service=service,
            name=description.container_name(service.role),
            image=pulled or built[service.image],
            pulled=pulled is not None,
            networks=stack_networks.by_key,
            logging=description.logging,
            wait_timeout_seconds=service.wait_timeout_seconds or description.wait_timeout_seconds,
        )
        after = pulumi.ResourceOptions(depends_on=[r for role in upstream for r in role.ready])
        roles[service.role] = declare(args, upstream, after)
    return app_image, roles


def rendered(
    app_image: AppImage,
    roles: Mapping[Role, RoleComponent],
    migration_run: pulumi.Output[str] | None = None,
) -> Rendered:
    return Rendered(
        image_name=app_image.image.image_name,
        image_id=app_image.image_id,
        names={role: component.names for role, component in roles.items()},
        migration_run=migration_run,
    )
