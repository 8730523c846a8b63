"""Render a `StackDescription` as containers on one Docker host (pulumi_docker 5.x).

Provider behaviour this file relies on was read from kreuzwerker/terraform-provider-docker v4 and
pulumi-docker's source (summarised in docs/infra.md, "Provider behaviour the program relies on");
the comments below cite the point each choice depends on.

What is the docker target's own: a role is its containers (one per copy), with its pulled image
and its volumes; the migration is a one-shot container whose exit code gates every role after it.

Credentials are files in SECRETS_DIR, uploaded into a secrets container per copy whose volume
the copy mounts (infra/targets/docker_secrets.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from infra.spec import (
    SecretKey,
    Service,
    StackDescription,
    Volume,
    VolumeKey,
)
from infra.targets import core, docker_secrets
from infra.targets.docker_migration import (
    MIGRATION_GATE_LABEL,
    MIGRATION_RUN_LABEL,
    MIGRATION_RUN_OUTPUT,
    migration_run_label,
    own_previous_outputs,
    require_success,
)
from infra.targets.docker_secrets import container_check, container_command, container_env

TYPE_PREFIX = "taskstack:docker"


@dataclass(frozen=True)
class ContainersArgs:
    """A role's containers: `role`, what every target renders from, and the docker target's own.

    `volumes`: the named volumes the role declares (`core.volume_owners`); `borrowed_volumes`:
    the Docker names of those it mounts that an earlier role declares. `gate`: resolves only once
    the migration passed (None: not gated). `run_label`: a one-shot's run label
    (`migration_run_label`); a new value replaces the container, i.e. runs it again. `secrets`:
    the stack's credentials by key, of which the role's `file_secrets` name its files.
    """

    role: core.RoleArgs
    secrets: Mapping[SecretKey, pulumi.Output[str]] = field(default_factory=dict)
    volumes: Sequence[Volume] = ()
    borrowed_volumes: Mapping[VolumeKey, str] = field(default_factory=dict)
    gate: pulumi.Input[str] | None = None
    run_label: pulumi.Input[str] | None = None


class Containers(core.RoleComponent):
    """One role: its pulled image and volumes if any, and its containers.

    Children: `<name>-image`, `<name>-data`, and the containers `<name>` (one copy) or
    `<name>-1` ... `<name>-N` (several, or copies told apart by `replica_env`), each with its
    secrets container `<container>-secrets` when the role has credentials (module docstring). A
    role that publishes a port runs one container: a host port is bound once.

    A `start_first` role without a published port (the API, the workers) is replaced
    create-before-delete: its containers are auto-named (`<resource name>-<random>`, a new name for
    each replacement), so the new container starts and becomes healthy next to the old one, which
    Pulumi deletes at the end of the deployment. Every other container keeps its fixed name and
    is deleted before its replacement is created (the provider's own default).

    A one-shot (the migration) also has a `gate`, which resolves once it exited 0 and raises
    `MigrationFailedError` otherwise, and `passed_run`, its run label once the gate passed.
    """

    def __init__(self, args: ContainersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        service, name = args.role.service, args.role.service.role
        super().__init__(TYPE_PREFIX, service, opts)
        image = args.role.image
        if args.role.pulled:
            image = _remote_image(args.role.image, f"{name}-image", self).image_id
        # A role's own data volume is `<name>-data`; any other it owns, `<name>-<key>`.
        declared = {
            v.key: _volume(v, f"{name}-data" if v.key == name else f"{name}-{v.key}", self)
            for v in args.volumes
        }
        volumes: dict[VolumeKey, pulumi.Input[str]] = {
            **args.borrowed_volumes,
            **{key: volume.name for key, volume in declared.items()},
        }
        copies = 1 if service.ports else service.replicas
        numbered = copies > 1 or bool(service.replica_env)
        for n in range(1, copies + 1):
            opts = self.child_options()
            if service.one_at_a_time and self.ready:
                # Each new copy healthy before the next one starts.
                opts = pulumi.ResourceOptions.merge(
                    opts, pulumi.ResourceOptions(depends_on=[self.ready[-1]])
                )
            fixed_name = f"{args.role.name}-{n}" if numbered else args.role.name
            resource_name = f"{name}-{n}" if numbered else name
            secrets = docker_secrets.secrets_container(
                service, args.secrets, image, f"{resource_name}-secrets", opts
            )
            container = _container(
                args,
                image,
                volumes,
                resource_name,
                None if starts_first(service) else fixed_name,
                replica=n,
                secrets=secrets,
                opts=opts,
            )
            self.ready.append(container)
            self.names.append(container.name)
        self.gate: pulumi.Output[str] | None = None
        self.passed_run: pulumi.Output[str] | None = None
        if service.one_shot:
            self._gate(container, args.run_label)
        self.register_outputs({"containerNames": self.names})

    def _gate(self, container: docker.Container, run_label: pulumi.Input[str] | None) -> None:
        # attach=True waits for the exit but ignores its code (docs/infra.md): read it. In a preview
        # the code is unknown and the apply does not run; the API's readiness check on the schema
        # head stays the second line of defence.
        self.gate = pulumi.Output.all(container.exit_code, container.container_logs).apply(
            lambda result: require_success(int(result[0]), result[1])
        )
        # The run label of a migration that passed: resolves only once the gate did, so a failed
        # `up` never records it (docs/infra.md, "A failed migration").
        if run_label is not None:
            self.passed_run = pulumi.Output.all(self.gate, run_label).apply(
                lambda result: str(result[1])
            )


def starts_first(service: Service) -> bool:
    """Whether a role's containers are replaced create-before-delete: the role asks for it and
    publishes no port (a host port can be bound by one container only)."""
    return service.start_first and not service.ports


def _labels(args: ContainersArgs) -> list[docker.ContainerLabelArgs]:
    labels = core.label_args(docker.ContainerLabelArgs, args.role.service.labels)
    if args.gate is not None:
        # The migration gate's result is an input: a container that needs the schema cannot be
        # registered until the migration has exited 0 (a failed gate raises instead).
        labels.append(docker.ContainerLabelArgs(label=MIGRATION_GATE_LABEL, value=args.gate))
    if args.run_label is not None:
        labels.append(docker.ContainerLabelArgs(label=MIGRATION_RUN_LABEL, value=args.run_label))
    return labels


def _mounts(
    service: Service, volumes: Mapping[VolumeKey, pulumi.Input[str]]
) -> list[docker.ContainerMountArgs] | None:
    mounts = [
        docker.ContainerMountArgs(type="volume", source=volumes[m.volume], target=m.target)
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
    health = container_check(service)
    if health is None:
        return None
    return docker.ContainerHealthcheckArgs(
        tests=list(health.test),
        interval=health.interval,
        timeout=health.timeout,
        retries=health.retries,
        start_period=health.start_period,
    )


def _networks(args: core.RoleArgs) -> list[docker.ContainerNetworksAdvancedArgs]:
    # By the network's name, an Output: Pulumi then deletes the containers before the network
    # ("has active endpoints" otherwise).
    return [
        docker.ContainerNetworksAdvancedArgs(
            name=args.networks[attachment.network].name,
            aliases=list(attachment.aliases) or None,
        )
        for attachment in args.service.networks
    ]


def _ports(service: Service) -> list[docker.ContainerPortArgs] | None:
    ports = [
        docker.ContainerPortArgs(
            internal=p.internal, external=p.external, ip=p.host_ip, protocol="tcp"
        )
        for p in service.ports
    ]
    return ports or None


def _ulimits(service: Service) -> list[docker.ContainerUlimitArgs] | None:
    # The provider has no pids_limit: the process bound as RLIMIT_NPROC (infra/spec/shared.py).
    bound = service.max_processes
    return [docker.ContainerUlimitArgs(name="nproc", soft=bound, hard=bound)] if bound else None


def _container_args(
    args: ContainersArgs,
    image: pulumi.Input[str],
    volumes: Mapping[VolumeKey, pulumi.Input[str]],
    container_name: str | None,
    replica: int,
    secrets: docker.Container | None,
) -> docker.ContainerArgs:
    service = args.role.service
    hardening, wait = service.hardening, service.wait_healthy
    # A one-shot: must_run=False, or every `up` restarts it (Read records a stopped container as
    # must_run=false); attach+logs make the provider wait for the exit and keep the output, but
    # attach ignores the exit code, hence the gate.
    one_shot = True if service.one_shot else None
    return docker.ContainerArgs(
        name=container_name,
        image=image,
        entrypoints=list(service.entrypoint) or None,
        command=container_command(service) or None,
        envs=container_env(service, replica),
        user=service.user,
        init=True,
        restart=service.restart,
        labels=_labels(args),
        log_driver=args.role.logging.driver,
        log_opts=dict(args.role.logging.options),
        networks_advanced=_networks(args.role),
        ports=_ports(service),
        mounts=_mounts(service, volumes),
        volumes=docker_secrets.mounted(secrets),
        tmpfs=dict(service.tmpfs) or None,
        healthcheck=_healthcheck(service),
        # wait=True polls until `healthy` and fails after wait_timeout; it errors outright for a
        # container without a healthcheck, so only services that declare one ask for it.
        wait=wait,
        wait_timeout=args.role.wait_timeout_seconds if wait else None,
        must_run=False if one_shot else None,
        attach=one_shot,
        logs=one_shot,
        read_only=hardening.read_only_rootfs,
        security_opts=["no-new-privileges:true"] if hardening.no_new_privileges else None,
        capabilities=docker.ContainerCapabilitiesArgs(drops=list(hardening.cap_drop))
        if hardening.cap_drop
        else None,
        ulimits=_ulimits(service),
        memory=service.limits.memory_mb if service.limits else None,
        cpus=service.limits.cpus if service.limits else None,
        cpu_shares=service.cpu_shares,
        stop_signal=service.stop_signal,
        stop_timeout=service.stop_grace_seconds,
        # Pulumi's delete/replace stops with this timeout; unset it kills at once, cutting off a
        # Celery task, a PostgreSQL checkpoint or a Redis AOF rewrite.
        destroy_grace_seconds=service.stop_grace_seconds,
    )


def _container(
    args: ContainersArgs,
    image: pulumi.Input[str],
    volumes: Mapping[VolumeKey, pulumi.Input[str]],
    resource_name: str,
    container_name: str | None,
    *,
    replica: int,
    secrets: docker.Container | None,
    opts: pulumi.ResourceOptions,
) -> docker.Container:
    return docker.Container(
        resource_name,
        _container_args(args, image, volumes, container_name, replica, secrets),
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


def _volume(volume: Volume, resource_name: str, parent: core.Component) -> docker.Volume:
    # retain_on_delete in prod: `pulumi destroy` (or a replace) drops the volume from the state and
    # leaves the data on the host; docs/infra.md says how to really delete it.
    return docker.Volume(
        resource_name,
        docker.VolumeArgs(
            name=volume.name, labels=core.label_args(docker.VolumeLabelArgs, volume.labels)
        ),
        opts=parent.child_options(pulumi.ResourceOptions(retain_on_delete=volume.retain_on_delete)),
    )


def _remote_image(
    reference: pulumi.Input[str], resource_name: str, parent: core.Component
) -> docker.RemoteImage:
    # keep_locally: destroy would otherwise `docker rmi` a base other stacks share. A local image of
    # that name is used as is; pin by digest in config to get a new one (pull_triggers won't).
    return docker.RemoteImage(
        resource_name,
        docker.RemoteImageArgs(name=reference, keep_locally=True),
        opts=parent.child_options(),
    )


def _gate(upstream: Sequence[Containers]) -> pulumi.Output[str] | None:
    """What resolves once every one-shot among `upstream` passed (None: there is none)."""
    gates = [role.gate for role in upstream if role.gate is not None]
    if len(gates) > 1:
        return pulumi.Output.all(*gates).apply(",".join)
    return gates[0] if gates else None


def render(description: StackDescription) -> core.Rendered:
    """Declare the whole stack as containers, one component per role, in dependency order."""
    previous = own_previous_outputs().get_output(MIGRATION_RUN_OUTPUT)
    token = secrets.token_hex(4)
    owners = core.volume_owners(description)

    def declare(
        role: core.RoleArgs, upstream: Sequence[Containers], opts: pulumi.ResourceOptions
    ) -> Containers:
        service = role.service
        mounted = {m.volume for m in service.volumes}
        args = ContainersArgs(
            role=role,
            secrets=description.secrets,
            volumes=[v for v in description.volumes if owners[v.key] == service.role],
            borrowed_volumes={
                v.key: v.name
                for v in description.volumes
                if v.key in mounted and owners[v.key] != service.role
            },
            gate=_gate(upstream),
            run_label=migration_run_label(role.image, service, description.secrets, previous, token)
            if service.one_shot
            else None,
        )
        return Containers(args, opts)

    app_image, roles = core.render_roles(
        description, TYPE_PREFIX, core.NetworksArgs(description.networks, driver="bridge"), declare
    )
    passed = [role.passed_run for role in roles.values() if role.passed_run is not None]
    return core.rendered(app_image, roles, passed[0] if passed else None)
