"""Render a `StackDescription` as services on a Docker Swarm (pulumi_docker 5.x `Service`).

The same description as the docker target, rendered for a cluster: encrypted attachable overlay
networks, credentials as Swarm secrets mounted under /run/secrets, PostgreSQL and Redis pinned to
labelled nodes, replicated app services with rolling updates that roll back on failure.

Provider behaviour this file relies on was read from kreuzwerker/terraform-provider-docker v4
(`internal/provider/resource_docker_service_funcs.go`, `resource_docker_secret.go`,
`resource_docker_network_funcs.go`), the code pulumi-docker 5.x bridges:

- Create with `converge_config`: after `ServiceCreate` the provider polls (every 5 s at least,
  after `delay`) the service's tasks whose desired state is `running` and returns once as many of
  them are in state `running` as the service has replicas (`replicatedConsoleLogUpdater.update`).
  Swarm reports a task with a healthcheck as `running` only once it is healthy, so convergence
  means "every replica healthy". On timeout the provider DELETES the service and fails
  (`DidNotConvergeError`).
- Update with `converge_config`: polls `UpdateStatus` until `completed`; `rollback_completed`,
  `paused` and `rollback_paused` fail the update. Without `converge_config` create and update
  return at once, whatever the tasks do.
- A task that exits is never counted: a finished one-shot (state `complete`, desired state
  `shutdown`) does not converge, it times out. Hence the migration below runs the migration, then
  stays up (healthy) only if it succeeded.
- `docker.Secret`: `data` is base64 (decoded with StdEncoding) and, like `name`, forces a new
  secret; Docker refuses to delete a secret a service still uses. The name is left to Pulumi's
  auto-naming (pulumi-docker's `provider/resources.go`: `SetAutonaming`), which gives a
  replacement a fresh name, so the default create-before-replace works: new secret, services
  updated to it, old secret deleted. A name derived from the value would put a digest of a
  credential in plain state.
- `docker.Network`: Read writes back every driver option Docker reports (the overlay driver adds
  its own, such as the VXLAN id), and `options` forces a new network.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pulumi
import pulumi_docker as docker

from infra.spec import (
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_STACK,
    HealthCheck,
    Network,
    NetworkKey,
    Role,
    SecretKey,
    Service,
    StackDescription,
)
from infra.targets.docker import AppImage

TYPE_PREFIX = "taskstack:swarm"
MIGRATED_MARKER = "/tmp/taskstack-migrated"  # noqa: S108 - on the migration's private tmpfs
# Convergence polling starts after this; the provider polls every 5 s at least.
CONVERGE_DELAY = "5s"
# Reservations are this fraction of the limits: enough to spread replicas over nodes with room,
# small enough that a node is not refused for memory it will never use.
RESERVATION_FRACTION = Decimal("0.25")

# Docker's restart policies for containers, as Swarm's restart conditions.
_RESTART_CONDITION: Mapping[str, str] = {
    "no": "none",
    "on-failure": "on-failure",
    "always": "any",
    "unless-stopped": "any",
}
# Roles whose new task may start before the old one stops. The data services own a volume, beat
# must never run twice, Flower and the migration are single and cheap to restart.
_START_FIRST: frozenset[Role] = frozenset({"worker"})


def go_duration(seconds: int) -> str:
    """Seconds as Go prints a Duration ("0s", "45s", "2m0s", "1h0m0s"), as Docker reads it back."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def node_constraints(labels: Sequence[str]) -> list[str]:
    """`key=value` node labels as Swarm placement constraints."""
    pairs = (label.partition("=") for label in labels)
    return [f"node.labels.{key}=={value}" for key, _, value in pairs]


def _tmpfs_options(options: str) -> docker.ServiceTaskSpecContainerSpecMountTmpfsOptionsArgs:
    # Swarm's tmpfs mounts take a size and a mode only (no noexec/nosuid before API 1.46).
    size_bytes: int | None = None
    mode: int | None = None
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key == "size":
            size_bytes = int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)
        elif key == "mode":
            mode = int(value, 8)
    return docker.ServiceTaskSpecContainerSpecMountTmpfsOptionsArgs(
        size_bytes=size_bytes, mode=mode
    )


def _healthcheck(check: HealthCheck) -> docker.ServiceTaskSpecContainerSpecHealthcheckArgs:
    return docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
        tests=list(check.test),
        interval=check.interval,
        timeout=check.timeout,
        retries=check.retries,
        start_period=check.start_period,
    )


class Networks(pulumi.ComponentResource):
    """The app and data networks as encrypted, attachable overlays spanning the swarm."""

    def __init__(
        self, name: str, networks: Sequence[Network], opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__(f"{TYPE_PREFIX}:Network", name, None, opts)
        self.by_key: dict[NetworkKey, docker.Network] = {
            network.key: docker.Network(
                f"{network.key}-network",
                docker.NetworkArgs(
                    name=network.name,
                    driver="overlay",
                    # Attachable: a one-off container (psql, a debugging shell, the rehearsal's
                    # probes) can join the network next to the services.
                    attachable=True,
                    internal=network.internal,
                    # IPsec between nodes for the overlay's traffic (`docker network create --opt
                    # encrypted`): credentials and job payloads cross the hosts' network.
                    options={"encrypted": ""},
                    labels=[
                        docker.NetworkLabelArgs(label=k, value=v)
                        for k, v in sorted(network.labels.items())
                    ],
                ),
                # Read writes back the options the overlay driver adds (module docstring), and
                # `options` forces a new network: without this every `up` would replace it.
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["options"]),
            )
            for network in networks
        }
        self.register_outputs({key: net.name for key, net in self.by_key.items()})


class Secrets(pulumi.ComponentResource):
    """Every credential of the stack as a Swarm secret; its value only ever a Pulumi secret."""

    def __init__(
        self, name: str, description: StackDescription, opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__(f"{TYPE_PREFIX}:Secrets", name, None, opts)
        prefix = f"{description.project}-{description.stack}"
        self.by_key: dict[SecretKey, docker.Secret] = {}
        for key, value in sorted(description.secrets.items()):
            secret = pulumi.Output.secret(value.get_secret_value())
            self.by_key[key] = docker.Secret(
                # No `name`: Pulumi auto-names it from this plus a random suffix, and a replacement
                # (a new value) gets a new suffix, so the new secret exists next to the old one
                # while the services move over (module docstring).
                f"{prefix}-{key.replace('_', '-')}",
                docker.SecretArgs(
                    data=secret.apply(lambda v: base64.b64encode(v.encode()).decode()),
                    labels=[
                        docker.SecretLabelArgs(label=k, value=v)
                        for k, v in sorted(_labels(description, "secret").items())
                    ],
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({key: s.id for key, s in self.by_key.items()})


def _labels(description: StackDescription, role: str) -> dict[str, str]:
    return {LABEL_STACK: description.stack, LABEL_ROLE: role, LABEL_MANAGED_BY: "pulumi"}


@dataclass(frozen=True)
class _Shared:
    """What every service component needs from the ones declared before it."""

    description: StackDescription
    networks: Mapping[NetworkKey, docker.Network]
    secrets: Mapping[SecretKey, docker.Secret]
    images: Mapping[str, pulumi.Input[str]]


def _resources(service: Service) -> docker.ServiceTaskSpecResourcesArgs | None:
    if service.limits is None:
        return None
    memory = service.limits.memory_mb * 1024 * 1024
    nano_cpus = int(Decimal(service.limits.cpus) * 1_000_000_000)
    return docker.ServiceTaskSpecResourcesArgs(
        limits=docker.ServiceTaskSpecResourcesLimitsArgs(memory_bytes=memory, nano_cpus=nano_cpus),
        reservation=docker.ServiceTaskSpecResourcesReservationArgs(
            memory_bytes=int(memory * RESERVATION_FRACTION),
            nano_cpus=int(nano_cpus * RESERVATION_FRACTION),
        ),
    )


def _mounts(
    description: StackDescription, service: Service
) -> list[docker.ServiceTaskSpecContainerSpecMountArgs]:
    volumes = {v.key: v for v in description.volumes}
    mounts = [
        # The engine creates the named volume on the node that runs the task; the placement
        # constraints keep PostgreSQL and Redis on the node that has theirs.
        docker.ServiceTaskSpecContainerSpecMountArgs(
            type="volume",
            source=volumes[m.volume].name,
            target=m.target,
            volume_options=docker.ServiceTaskSpecContainerSpecMountVolumeOptionsArgs(
                labels=[
                    docker.ServiceTaskSpecContainerSpecMountVolumeOptionsLabelArgs(label=k, value=v)
                    for k, v in sorted(volumes[m.volume].labels.items())
                ]
            ),
        )
        for m in service.volumes
    ]
    mounts += [
        # A path on the node that runs the task: dev on a single-node swarm (docs/swarm.md).
        docker.ServiceTaskSpecContainerSpecMountArgs(
            type="bind", source=str(b.source), target=b.target, read_only=b.read_only
        )
        for b in service.binds
    ]
    mounts += [
        docker.ServiceTaskSpecContainerSpecMountArgs(
            type="tmpfs", target=target, tmpfs_options=_tmpfs_options(options)
        )
        for target, options in sorted(service.tmpfs.items())
    ]
    return mounts


def _secret_mounts(
    shared: _Shared, service: Service
) -> list[docker.ServiceTaskSpecContainerSpecSecretArgs]:
    uid, _, gid = service.user.partition(":")
    return [
        docker.ServiceTaskSpecContainerSpecSecretArgs(
            secret_id=shared.secrets[key].id,
            secret_name=shared.secrets[key].name,
            file_name=file_name,  # relative: mounted as SECRETS_DIR/<file_name>
            # Readable by the service's own user only (Swarm's default is root-owned 0444).
            file_uid=uid,
            file_gid=gid or uid,
            file_mode=0o400,
        )
        for file_name, key in sorted(service.file_secrets.files.items())
    ]


def _update_order(description: StackDescription, role: Role) -> str:
    if role == "api":
        return description.swarm.api_update_order
    return "start-first" if role in _START_FIRST else "stop-first"


def _service(
    shared: _Shared,
    role: Role,
    *,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource],
    replicas: int | None = None,
    args: Sequence[str] | None = None,
    healthcheck: HealthCheck | None = None,
    restart_condition: str | None = None,
) -> docker.Service:
    description = shared.description
    swarm = description.swarm
    service = description.service(role)
    files = service.file_secrets
    check = healthcheck or files.healthcheck or service.healthcheck
    if check is None:  # every service is health-checked: convergence means "healthy"
        raise ValueError(f"the {role} service has no healthcheck")
    command = args if args is not None else (files.command or service.command)
    hardening = service.hardening
    labels = _labels(description, role)
    order = _update_order(description, role)
    delay = go_duration(swarm.update_delay_seconds)
    monitor = go_duration(swarm.update_monitor_seconds)
    return docker.Service(
        role,
        docker.ServiceArgs(
            name=description.container_name(role),
            labels=[docker.ServiceLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            mode=docker.ServiceModeArgs(
                replicated=docker.ServiceModeReplicatedArgs(
                    replicas=replicas if replicas is not None else service.replicas
                )
            ),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=shared.images[service.image],
                    # `args` is the container's CMD, as `command` is for a container: the image's
                    # entrypoint (postgres, redis) still runs.
                    args=list(command) or None,
                    # Plain settings only: every credential arrives as a file (`secrets`).
                    env={**service.env, **files.env} or None,
                    user=service.user,
                    init=True,
                    labels=[
                        docker.ServiceTaskSpecContainerSpecLabelArgs(label=k, value=v)
                        for k, v in sorted(labels.items())
                    ],
                    healthcheck=_healthcheck(check),
                    mounts=_mounts(description, service) or None,
                    secrets=_secret_mounts(shared, service) or None,
                    read_only=hardening.read_only_rootfs,
                    cap_drops=list(hardening.cap_drop) or None,
                    cap_adds=list(hardening.cap_add) or None,
                    stop_signal=service.stop_signal,
                    # How long a stopping task (update, scale-down, removal) gets before SIGKILL.
                    stop_grace_period=go_duration(service.stop_grace_seconds),
                ),
                networks_advanceds=[
                    # By id: the provider reads the attachment back as the network's id, so a
                    # name would be a diff on every `up` (the argument's own documentation).
                    docker.ServiceTaskSpecNetworksAdvancedArgs(
                        id=shared.networks[attachment.network].id,
                        aliases=list(attachment.aliases) or None,
                    )
                    for attachment in service.networks
                ],
                placement=docker.ServiceTaskSpecPlacementArgs(
                    constraints=node_constraints(swarm.placement[role])
                )
                if role in swarm.placement
                else None,
                resources=_resources(service),
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(
                    condition=restart_condition or _RESTART_CONDITION[service.restart],
                    delay="5s",
                ),
                log_driver=docker.ServiceTaskSpecLogDriverArgs(
                    name=description.logging.driver, options=dict(description.logging.options)
                ),
            ),
            # A failed rollout (a task that does not become healthy within `monitor`) goes back
            # to the previous spec; the provider then fails the update (module docstring).
            update_config=docker.ServiceUpdateConfigArgs(
                parallelism=swarm.update_parallelism,
                delay=delay,
                monitor=monitor,
                order=order,
                failure_action="rollback",
            ),
            rollback_config=docker.ServiceRollbackConfigArgs(
                parallelism=swarm.update_parallelism,
                delay=delay,
                monitor=monitor,
                order=order,
                failure_action="pause",
            ),
            endpoint_spec=docker.ServiceEndpointSpecArgs(
                mode=swarm.endpoint_mode,
                ports=[
                    # Swarm publishes on every address of the node (no host IP): publishAddress
                    # does not apply (docs/swarm.md).
                    docker.ServiceEndpointSpecPortArgs(
                        target_port=p.internal,
                        published_port=p.external,
                        protocol="tcp",
                        publish_mode=swarm.publish_mode,
                    )
                    for p in service.ports
                ]
                or None,
            )
            if service.role in ("api", "flower")
            else docker.ServiceEndpointSpecArgs(mode=swarm.endpoint_mode),
            # Wait until every replica is healthy (create) or the rollout completed (update).
            converge_config=docker.ServiceConvergeConfigArgs(
                delay=CONVERGE_DELAY, timeout=go_duration(description.wait_timeout_seconds)
            ),
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
    )


class _Role(pulumi.ComponentResource):
    """One role as one Swarm service."""

    service: docker.Service

    def __init__(self, type_name: str, name: str, opts: pulumi.ResourceOptions) -> None:
        super().__init__(f"{TYPE_PREFIX}:{type_name}", name, None, opts)

    def _done(self) -> None:
        self.register_outputs({"serviceName": self.service.name})


class Database(_Role):
    """PostgreSQL: one replica on the node labelled for it; converged (pg_isready) first."""

    def __init__(self, name: str, shared: _Shared, opts: pulumi.ResourceOptions) -> None:
        super().__init__("Database", name, opts)
        self.service = _service(shared, "postgres", parent=self, depends_on=[], replicas=1)
        self._done()


class Cache(_Role):
    """Redis: one replica on the node labelled for it, authenticated from a secret file."""

    def __init__(self, name: str, shared: _Shared, opts: pulumi.ResourceOptions) -> None:
        super().__init__("Cache", name, opts)
        self.service = _service(shared, "redis", parent=self, depends_on=[], replicas=1)
        self._done()


def migration_args(command: Sequence[str]) -> list[str]:
    """Run the migration, then stay up, healthy, only if it succeeded.

    The provider counts running tasks only (module docstring): a one-shot that exits 0 never
    converges. This task converges once the migration has passed; a failed one exits, is not
    restarted, and the service never converges, so the deployment stops before any dependant.
    """
    migrate = " ".join(command)
    return ["sh", "-c", f"{migrate} && touch {MIGRATED_MARKER} && exec sleep infinity"]


class Migration(_Role):
    """`alembic upgrade head`, once per spec change, gating every service that needs the schema."""

    def __init__(
        self, name: str, shared: _Shared, database: Database, opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__("Migration", name, opts)
        description = shared.description
        self.service = _service(
            shared,
            "migrate",
            parent=self,
            depends_on=[database.service],
            replicas=1,
            args=migration_args(description.service("migrate").command),
            healthcheck=HealthCheck(
                test=("CMD", "test", "-f", MIGRATED_MARKER),
                interval="5s",
                timeout="3s",
                retries=3,
                # The migration may take this long before its first passing check.
                start_period=go_duration(description.wait_timeout_seconds),
            ),
            # Once: a failed migration is not retried behind the deployment's back (the advisory
            # lock makes a retry safe, but the failure must stop the rollout and be seen).
            restart_condition="none",
        )
        self._done()


class AppRole(_Role):
    """A role of the app image that needs PostgreSQL, Redis and a migrated schema."""

    def __init__(
        self,
        type_name: str,
        name: str,
        shared: _Shared,
        role: Role,
        after: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions,
        replicas: int | None = None,
    ) -> None:
        super().__init__(type_name, name, opts)
        self.service = _service(shared, role, parent=self, depends_on=after, replicas=replicas)
        self._done()


@dataclass(frozen=True)
class RenderedStack:
    """What the program exports, by role."""

    app_image: AppImage
    services: Mapping[Role, docker.Service]
    secrets: Mapping[SecretKey, docker.Secret]


def render(description: StackDescription) -> RenderedStack:
    """Declare the whole stack as Swarm services, each component parented to the stack."""
    opts = pulumi.ResourceOptions()
    networks = Networks("networks", description.networks, opts)
    app_image = AppImage("app", description.app_image, opts, type_prefix=TYPE_PREFIX)
    secrets = Secrets("secrets", description, opts)
    shared = _Shared(
        description,
        networks.by_key,
        secrets.by_key,
        {
            # The built image by id, so a rebuild rolls the services; each node of a multi-host
            # swarm needs it (docs/swarm.md). PostgreSQL and Redis by their pinned reference:
            # every node pulls it.
            "app": app_image.image_id,
            "postgres": description.postgres_image,
            "redis": description.redis_image,
        },
    )
    database = Database("database", shared, opts)
    cache = Cache("cache", shared, opts)
    migration = Migration("migration", shared, database, opts)
    # Registered only once PostgreSQL and Redis are healthy and the migration has passed: a
    # dependency that fails (did not converge) stops the program before these are sent.
    after = [database.service, cache.service, migration.service]
    api = AppRole("Api", "api", shared, "api", after, opts, replicas=description.swarm.api_replicas)
    workers = AppRole("Workers", "workers", shared, "worker", after, opts)
    beat = AppRole("Beat", "beat", shared, "beat", after, opts, replicas=1)
    flower = AppRole("Flower", "flower", shared, "flower", after, opts, replicas=1)
    return RenderedStack(
        app_image=app_image,
        services={
            "postgres": database.service,
            "redis": cache.service,
            "migrate": migration.service,
            "api": api.service,
            "worker": workers.service,
            "beat": beat.service,
            "flower": flower.service,
        },
        secrets=secrets.by_key,
    )
