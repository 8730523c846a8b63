"""The docker target's credentials: files in SECRETS_DIR, as on a swarm, never environment
variables (which `docker inspect` shows). What each role gets is its `Service.file_secrets`.

The provider's `uploads` cannot write them into the role's own container: Create sends each upload
as an archive extracted at "/" (kreuzwerker/terraform-provider-docker v4.5.0,
resource_docker_container_funcs.go resourceDockerContainerCreate, `CopyToContainer(ctx, id, "/",
...)`), and the engine refuses any archive at "/" into a container with a read-only root
filesystem ("container rootfs is marked read-only"), whatever volume holds the file's own path.
So each copy has a secrets container (`<copy>-secrets`): created and never started (no process
ever runs in it), its root filesystem writable, with an anonymous volume at SECRETS_DIR that the
uploads land in. The copy mounts that volume read-only (`volumes_from`, `<id>:ro`) and keeps its
own read-only root filesystem.

- Read writes back neither `upload` nor `volumes` (resourceDockerContainerRead: "upload can't be
  imported", no `volumes`), so a second `up` finds no change; it writes `must_run=false` for a
  container that is not running, which the secrets container already says.
- Both are ForceNew: a changed credential is a new secrets container, so a new id in the copy's
  `volumes`, so a new copy that reads it.
- Delete removes the anonymous volume with its container (`remove_volumes`, default true); the
  copy that mounts it depends on the secrets container, so it is deleted first.
- The engine extracts an upload as the container's root (the provider does not ask it to keep the
  archive's owners): the files are root-owned, and the role's user reads them through the mode's
  bits for others (UPLOAD_MODE). World-readable, in a volume that only that copy mounts.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_docker as docker

from infra.spec import LABEL_ROLE, SECRETS_DIR, HealthCheck, SecretKey, Service
from infra.targets import core

# A secrets container's role label: `<role>-secrets`, so that a role's own containers are still
# exactly those labelled with its name.
SECRETS_ROLE_SUFFIX = "-secrets"
UPLOAD_MODE = "0444"


def container_env(service: Service, replica: int) -> list[str]:
    """Plain settings only: every credential is a file."""
    own = {k: core.fill_replica(v, str(replica)) for k, v in service.replica_env.items()}
    merged = {**service.env, **service.file_secrets.env, **own}
    return [f"{k}={v}" for k, v in sorted(merged.items())]


def container_command(service: Service) -> list[str]:
    """What the container runs: the role's own command, or the one that reads its secret files."""
    return list(service.file_secrets.command or service.command)


def container_check(service: Service) -> HealthCheck | None:
    return service.file_secrets.healthcheck or service.healthcheck


def secret_files(
    service: Service, secrets: Mapping[SecretKey, pulumi.Output[str]]
) -> list[tuple[str, pulumi.Output[str]]]:
    """(path in the container, content) of each of the role's secret files, by name."""
    return [
        (f"{SECRETS_DIR}/{name}", secrets[key])
        for name, key in sorted(service.file_secrets.files.items())
    ]


def secrets_container(
    service: Service,
    secrets: Mapping[SecretKey, pulumi.Output[str]],
    image: pulumi.Input[str],
    resource_name: str,
    opts: pulumi.ResourceOptions,
) -> docker.Container | None:
    """A copy's secret files, in the anonymous volume of a container that never starts; None for a
    role without credentials."""
    files = secret_files(service, secrets)
    if not files:
        return None
    labels = {**service.labels, LABEL_ROLE: f"{service.role}{SECRETS_ROLE_SUFFIX}"}
    return docker.Container(
        resource_name,
        docker.ContainerArgs(
            # Nothing runs: any image would do, and the role's own is on the engine already.
            image=image,
            start=False,
            # What Read writes for a container that is not running: no diff on the next `up`.
            must_run=False,
            labels=core.label_args(docker.ContainerLabelArgs, labels),
            volumes=[docker.ContainerVolumeArgs(container_path=SECRETS_DIR)],
            uploads=[
                docker.ContainerUploadArgs(
                    file=path, content=pulumi.Output.secret(content), permissions=UPLOAD_MODE
                )
                for path, content in files
            ],
        ),
        # Auto-named and created before the one it replaces is deleted: a new copy mounts the new
        # volume while the old copy keeps the old one until it is deleted itself.
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(delete_before_replace=False)
        ),
    )


def mounted(container: docker.Container | None) -> list[docker.ContainerVolumeArgs] | None:
    """A copy's `volumes`: its secrets container's volume at SECRETS_DIR, read-only."""
    if container is None:
        return None
    read_only = container.id.apply(lambda container_id: f"{container_id}:ro")
    return [docker.ContainerVolumeArgs(from_container=read_only)]
