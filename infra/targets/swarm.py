"""Render a `StackDescription` as services on a Docker Swarm (pulumi_docker 5.x `Service`).

The same description as the docker target, rendered for a cluster: encrypted attachable overlay
networks, credentials as Swarm secrets mounted in the app's secrets directory, PostgreSQL and Redis
pinned to labelled nodes, replicated app services with rolling updates that roll back on failure.

Provider behaviour this file relies on was read from kreuzwerker/terraform-provider-docker v4
(`internal/provider/resource_docker_service_funcs.go`, `resource_docker_network_funcs.go`), the
code pulumi-docker 5.x bridges (the secrets' own: infra/targets/swarm_secrets.py):

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
- A service's `env` and `hostname` take Swarm's Go templates (`{{.Task.Slot}}`): how a copy learns
  its number (`Service.replica_env`).
- `docker.Network`: Read writes back every driver option Docker reports (the overlay driver adds
  its own, such as the VXLAN id), and `options` forces a new network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import pulumi
import pulumi_docker as docker

from infra.spec import (
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_STACK,
    ClusterSettings,
    HealthCheck,
    SecretKey,
    Service,
    StackDescription,
    Volume,
    VolumeKey,
)
from infra.targets import core
from infra.targets.swarm_secrets import Secrets, SecretsArgs, check_secret_names
from infra.targets.swarm_values import go_duration, node_constraints, short_duration, tmpfs_options

TYPE_PREFIX = "taskstack:swarm"
MIGRATED_MARKER = "/tmp/taskstack-migrated"  # noqa: S108 - on the migration's private tmpfs
# Convergence polling starts after this; the provider polls every 5 s at least.
CONVERGE_DELAY = "5s"
# A copy's number on Swarm: the task slot, through the service template (`replica_env`).
TASK_SLOT = "{{.Task.Slot}}"

# Docker's restart policies for containers, as Swarm's restart conditions.
_RESTART_CONDITION: Mapping[str, str] = {
    "no": "none",
    "on-failure": "on-failure",
    "always": "any",
    "unless-stopped": "any",
}


def _healthcheck(
    check: HealthCheck | None,
) -> docker.ServiceTaskSpecContainerSpecHealthcheckArgs | None:
    if check is None:
        return None
    return docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
        tests=list(check.test),
        # The description's durations are containers' (Go's long form): shortened for services.
        interval=short_duration(check.interval),
        timeout=short_duration(check.timeout),
        retries=check.retries,
        start_period=short_duration(check.start_period),
    )


@dataclass(frozen=True)
class ServiceArgs:
    """A role's Swarm service: `role`, what every target renders from, and the swarm target's own.

    `secrets`: the Swarm secrets the role's `file_secrets` name. `volumes`: every named volume of
    the stack by key (the node that runs a task creates the ones it mounts).
    """

    role: core.RoleArgs
    secrets: Mapping[SecretKey, docker.Secret]
    volumes: Mapping[VolumeKey, Volume]
    cluster: ClusterSettings


def _resources(
    service: Service, cluster: ClusterSettings
) -> docker.ServiceTaskSpecResourcesArgs | None:
    if service.limits is None:
        return None
    memory = service.limits.memory_mb * 1024 * 1024
    nano_cpus = int(Decimal(service.limits.cpus) * 1_000_000_000)
    fraction = Decimal(cluster.reservation_percent) / 100
    return docker.ServiceTaskSpecResourcesArgs(
        limits=docker.ServiceTaskSpecResourcesLimitsArgs(memory_bytes=memory, nano_cpus=nano_cpus),
        reservation=docker.ServiceTaskSpecResourcesReservationArgs(
            memory_bytes=int(memory * fraction), nano_cpus=int(nano_cpus * fraction)
        )
        if fraction
        else None,
    )


def _mounts(args: ServiceArgs) -> list[docker.ServiceTaskSpecContainerSpecMountArgs]:
    service = args.role.service
    mounts = [
        # The engine creates the named volume on the node that runs the task; the placement
        # constraints keep PostgreSQL and Redis on the node that has theirs.
        docker.ServiceTaskSpecContainerSpecMountArgs(
            type="volume",
            source=args.volumes[m.volume].name,
            target=m.target,
            volume_options=docker.ServiceTaskSpecContainerSpecMountVolumeOptionsArgs(
                labels=core.label_args(
                    docker.ServiceTaskSpecContainerSpecMountVolumeOptionsLabelArgs,
                    args.volumes[m.volume].labels,
                )
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
            type="tmpfs", target=target, tmpfs_options=tmpfs_options(options)
        )
        for target, options in sorted(service.tmpfs.items())
    ]
    return mounts


def _secret_mounts(args: ServiceArgs) -> list[docker.ServiceTaskSpecContainerSpecSecretArgs]:
    uid, _, gid = args.role.service.user.partition(":")
    return [
        docker.ServiceTaskSpecContainerSpecSecretArgs(
            secret_id=args.secrets[key].id,
            secret_name=args.secrets[key].name,
            file_name=file_name,  # relative: mounted as SECRETS_DIR/<file_name>
            # Readable by the service's own user only (Swarm's default is root-owned 0444).
            file_uid=uid,
            file_gid=gid or uid,
            file_mode=0o400,
        )
        for file_name, key in sorted(args.role.service.file_secrets.files.items())
    ]


def migration_args(command: Sequence[str]) -> list[str]:
    """Run a one-shot, then stay up, healthy, only if it succeeded.

    The provider counts running tasks only (module docstring): a one-shot that exits 0 never
    converges. This task converges once the command has passed; a failed one exits, is not
    restarted (the one-shot's restart policy is `no`), and the service never converges, so the
    deployment stops before any dependant.
    """
    migrate = " ".join(command)
    return ["sh", "-c", f"{migrate} && touch {MIGRATED_MARKER} && exec sleep infinity"]


def _command_and_check(args: ServiceArgs) -> tuple[list[str], HealthCheck | None]:
    """What the task runs and how Swarm tells it is healthy: credentials read from files, and a
    one-shot run as "once, then stay up healthy" (`migration_args`)."""
    service = args.role.service
    files = service.file_secrets
    command = files.command or service.command
    check = files.healthcheck or service.healthcheck
    if service.one_shot:
        return migration_args(command), HealthCheck(
            test=("CMD", "test", "-f", MIGRATED_MARKER),
            interval="5s",
            timeout="3s",
            retries=3,
            # The one-shot may take this long before its first passing check.
            start_period=go_duration(args.role.wait_timeout_seconds),
        )
    # Convergence means "healthy" for a service with a healthcheck, "running" for the few whose
    # image has nothing to run one with (the exporters: scratch or shell-less images).
    return list(command), check


def _literal(env: Mapping[str, str]) -> dict[str, str]:
    """Plain values as they are: Swarm expands Go templates in a service's environment (the
    worker's `{{.Task.Slot}}` is one), so the `{{` of a value that is not one (Prometheus's alert
    rules: `{{ $value }}`) is written as a template that outputs it."""
    return {name: value.replace("{{", '{{"{{"}}') for name, value in env.items()}


def _container_spec(args: ServiceArgs) -> docker.ServiceTaskSpecContainerSpecArgs:
    service = args.role.service
    command, check = _command_and_check(args)
    per_copy = {k: core.fill_replica(v, TASK_SLOT) for k, v in service.replica_env.items()}
    hardening = service.hardening
    return docker.ServiceTaskSpecContainerSpecArgs(
        image=args.role.image,
        # `args` is the container's CMD, as `command` is for a container: the image's
        # entrypoint (postgres, redis) still runs.
        args=command or None,
        # `commands` is the image's entrypoint, replaced only when the role says so.
        commands=list(service.entrypoint) or None,
        # Plain settings only: every credential arrives as a file (`secrets`).
        env={**_literal(service.env), **service.file_secrets.env, **per_copy} or None,
        user=service.user,
        init=True,
        labels=core.label_args(docker.ServiceTaskSpecContainerSpecLabelArgs, service.labels),
        healthcheck=_healthcheck(check),
        mounts=_mounts(args) or None,
        secrets=_secret_mounts(args) or None,
        read_only=hardening.read_only_rootfs,
        cap_drops=list(hardening.cap_drop) or None,
        stop_signal=service.stop_signal,
        # How long a stopping task (update, scale-down, removal) gets before SIGKILL.
        stop_grace_period=go_duration(service.stop_grace_seconds),
    )


def _task_spec(args: ServiceArgs) -> docker.ServiceTaskSpecArgs:
    service = args.role.service
    return docker.ServiceTaskSpecArgs(
        container_spec=_container_spec(args),
        networks_advanceds=[
            # By id: the provider reads the attachment back as the network's id, so a name would
            # be a diff on every `up` (the argument's own documentation).
            docker.ServiceTaskSpecNetworksAdvancedArgs(
                id=args.role.networks[attachment.network].id,
                aliases=list(attachment.aliases) or None,
            )
            for attachment in service.networks
        ],
        placement=docker.ServiceTaskSpecPlacementArgs(
            constraints=node_constraints(service.node_labels)
        )
        if service.node_labels
        else None,
        resources=_resources(service, args.cluster),
        restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(
            condition=_RESTART_CONDITION[service.restart],
            delay=go_duration(args.cluster.restart_delay_seconds),
        ),
        log_driver=docker.ServiceTaskSpecLogDriverArgs(
            name=args.role.logging.driver, options=dict(args.role.logging.options)
        ),
    )


def _endpoint_spec(args: ServiceArgs) -> docker.ServiceEndpointSpecArgs:
    cluster = args.cluster
    ports = [
        # Swarm publishes on every address of the node (no host IP): publishAddress does not
        # apply, and a port meant for this machine only is not published (docs/swarm.md).
        docker.ServiceEndpointSpecPortArgs(
            target_port=p.internal,
            published_port=p.external,
            protocol="tcp",
            publish_mode=cluster.publish_mode,
        )
        for p in args.role.service.ports
        if not p.local_only
    ]
    return docker.ServiceEndpointSpecArgs(mode=cluster.endpoint_mode, ports=ports or None)


# A rolling update's and its rollback's settings: the same fields, two Args types.
Rollout = TypeVar("Rollout", docker.ServiceUpdateConfigArgs, docker.ServiceRollbackConfigArgs)


def _rollout(kind: type[Rollout], args: ServiceArgs, failure_action: str) -> Rollout:
    service, cluster = args.role.service, args.cluster
    return kind(
        # The API's tasks are replaced one at a time whatever `updateParallelism` says: the others
        # keep answering behind the proxy.
        parallelism=1 if service.one_at_a_time else cluster.update_parallelism,
        delay=go_duration(cluster.update_delay_seconds),
        monitor=go_duration(cluster.update_monitor_seconds),
        order="start-first" if service.start_first else "stop-first",
        failure_action=failure_action,
    )


def _swarm_service(
    resource_name: str, args: ServiceArgs, opts: pulumi.ResourceOptions
) -> docker.Service:
    service = args.role.service
    return docker.Service(
        resource_name,
        docker.ServiceArgs(
            name=args.role.name,
            labels=core.label_args(docker.ServiceLabelArgs, service.labels),
            mode=docker.ServiceModeArgs(
                replicated=docker.ServiceModeReplicatedArgs(replicas=service.replicas)
            ),
            task_spec=_task_spec(args),
            # A failed rollout (a task that does not become healthy within `monitor`) goes back
            # to the previous spec; the provider then fails the update (module docstring).
            update_config=_rollout(docker.ServiceUpdateConfigArgs, args, "rollback"),
            rollback_config=_rollout(docker.ServiceRollbackConfigArgs, args, "pause"),
            endpoint_spec=_endpoint_spec(args),
            # Wait until every replica is healthy (create) or the rollout completed (update).
            converge_config=docker.ServiceConvergeConfigArgs(
                delay=CONVERGE_DELAY, timeout=go_duration(args.role.wait_timeout_seconds)
            ),
        ),
        opts=opts,
    )


class SwarmService(core.RoleComponent):
    """One role as one Swarm service, named like the component."""

    def __init__(self, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_PREFIX, args.role.service, opts)
        self.service = _swarm_service(args.role.service.role, args, self.child_options())
        self.ready.append(self.service)
        self.names.append(self.service.name)
        self.register_outputs({"serviceName": self.service.name})


def _networks(description: StackDescription) -> core.NetworksArgs:
    return core.NetworksArgs(
        description.networks,
        driver="overlay",
        # Attachable: a one-off container (psql, a debugging shell, the rehearsal's probes) can
        # join the network next to the services.
        attachable=True,
        # IPsec between nodes for the overlay's traffic (`docker network create --opt encrypted`):
        # credentials and job payloads cross the hosts' network. A kernel without IPsec (ESP)
        # drops it between nodes: `overlayEncryption` off.
        options={"encrypted": ""} if description.cluster.overlay_encryption else None,
        # Read writes back the options the overlay driver adds (module docstring), and `options`
        # forces a new network: without this every `up` would replace it.
        ignore_changes=["options"],
    )


def render(description: StackDescription) -> core.Rendered:
    """Declare the whole stack as Swarm services, one component per role, in dependency order.

    A role is registered only once the roles it depends on converged (healthy; a one-shot: passed):
    a dependency that fails stops the program before its dependants are sent.
    """
    prefix = f"{description.project}-{description.stack}"
    check_secret_names(prefix, description.stack, description.secrets.keys())
    labels = {LABEL_STACK: description.stack, LABEL_ROLE: "secret", LABEL_MANAGED_BY: "pulumi"}
    secrets = Secrets(
        "secrets", SecretsArgs(description.secrets, prefix, labels), type_prefix=TYPE_PREFIX
    )
    volumes = {v.key: v for v in description.volumes}

    def declare(
        role: core.RoleArgs, _upstream: Sequence[SwarmService], opts: pulumi.ResourceOptions
    ) -> SwarmService:
        # The built image by id, so a rebuild rolls the services; each node of a multi-host swarm
        # needs it (docs/swarm.md). Pulled images by their pinned reference: every node pulls it.
        args = ServiceArgs(role, secrets.by_key, volumes, description.cluster)
        return SwarmService(args, opts)

    app_image, roles = core.render_roles(description, TYPE_PREFIX, _networks(description), declare)
    return core.rendered(app_image, roles)
