"""The description's vocabulary: roles, and the plain data a target renders (`StackDescription`).

Nothing here is specific to a target or declares a resource: the only Pulumi values are the
credentials, which stay secret `Output`s throughout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pulumi

from infra.config import Target

Role = Literal[
    "postgres",
    "redis",
    "migrate",
    "api",
    "worker",
    "beat",
    "flower",
    "proxy",
    "prometheus",
    "alertmanager",
    "postgres-exporter",
    "redis-exporter",
    "backup",
    "repository",
]
ImageKind = Literal[
    "app",
    "postgres",
    # PostgreSQL with pgBackRest, built by the program on top of `postgresImage` (infra/postgres/).
    "postgres-backup",
    "redis",
    "proxy",
    "prometheus",
    "alertmanager",
    "postgres-exporter",
    "redis-exporter",
]
# The roles of `monitoring`, each running the image of its own name.
MonitoringRole = Literal["prometheus", "alertmanager", "postgres-exporter", "redis-exporter"]
NetworkKey = Literal["app", "data"]
VolumeKey = Literal[
    "postgres", "postgres-run", "backup", "redis", "beat", "prometheus", "alertmanager"
]
SecretKey = Literal[
    "postgres_password",
    "database_password",
    "console_password",
    "monitoring_web_config",
    "alert_webhook_url",
    "redis_exporter_passwords",
    "redis_password",
    "flower_basic_auth",
    "database_url",
    "admin_database_url",
    "redis_url",
    "tls_pem",
    "initial_api_key",
    "tls_ca",
    "postgres_tls_crt",
    "postgres_tls_key",
    "backup_tls_crt",
    "backup_tls_key",
    "repository_tls_crt",
    "repository_tls_key",
]

ROLES: tuple[Role, ...] = (
    "postgres",
    "redis",
    "migrate",
    "api",
    "worker",
    "beat",
    "flower",
    "proxy",
)
# The role of `backup` (docs/backup.md): absent when it is off; `repository` as well unless
# `backupRepository` is repository-host.
BACKUP_ROLES: tuple[Role, ...] = ("backup",)
REPOSITORY_ROLES: tuple[Role, ...] = ("repository",)
APP_ROLES: tuple[Role, ...] = ("migrate", "api", "worker", "beat", "flower")
# The roles of `monitoring` (docs/observability.md): absent when it is off.
MONITORING_ROLES: tuple[Role, ...] = (
    "postgres-exporter",
    "redis-exporter",
    "prometheus",
    "alertmanager",
)

# In `Service.replica_env` values: the copy's number (1, 2, ...), filled in by the target.
REPLICA = "{replica}"


@dataclass(frozen=True)
class HealthCheck:
    """Durations are canonical Go strings ("10s", "1m0s"): the provider reads them back that way."""

    test: tuple[str, ...]
    interval: str
    timeout: str
    retries: int
    start_period: str


@dataclass(frozen=True)
class PublishedPort:
    """A port reachable from outside. `local_only`: meant for this machine only (a developer's
    database client); a target that cannot bind one address leaves it unpublished."""

    internal: int
    external: int
    host_ip: str
    local_only: bool = False


@dataclass(frozen=True)
class VolumeMount:
    volume: VolumeKey
    target: str


@dataclass(frozen=True)
class BindMount:
    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class NetworkAttachment:
    network: NetworkKey
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hardening:
    read_only_rootfs: bool
    no_new_privileges: bool
    cap_drop: tuple[str, ...]


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpus: str


@dataclass(frozen=True)
class FileSecrets:
    """The service's credentials as files in SECRETS_DIR instead of environment variables.

    `files` maps a file name to the stack secret it holds; `env`, `command` and `healthcheck` are
    what the service needs instead of its own to read them (None: unchanged).
    """

    files: Mapping[str, SecretKey]
    env: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None
    healthcheck: HealthCheck | None = None


@dataclass(frozen=True)
class Service:
    """One role.

    `replicas` copies; `replica_env` is set per copy, `REPLICA` in a value standing for the copy's
    number. A `one_shot` runs to completion and gates its dependants. `depends_on`: the roles that
    must be up (healthy, or for a one-shot: succeeded) before this one is created. `start_first`: a
    new copy may start before the old one stops on an update (a target gives such copies names
    and ports that cannot collide). `one_at_a_time`: new copies start one after the other, each
    healthy before the next. `node_labels`: on a several-node target, the node labels (key=value)
    the role is pinned to (its volume lives there).
    """

    role: Role
    image: ImageKind
    command: tuple[str, ...]
    env: Mapping[str, str]
    user: str
    networks: tuple[NetworkAttachment, ...]
    hardening: Hardening
    restart: str
    labels: Mapping[str, str]
    healthcheck: HealthCheck | None = None
    wait_healthy: bool = False
    ports: tuple[PublishedPort, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    binds: tuple[BindMount, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    limits: Limits | None = None
    # The role's CPU weight against the others when the host's CPUs are all busy (Docker's
    # cpu-shares; None: the engine's 1024). Limits cap a role; this only orders who waits.
    cpu_shares: int | None = None
    replicas: int = 1
    replica_env: Mapping[str, str] = field(default_factory=dict)
    depends_on: tuple[Role, ...] = ()
    one_shot: bool = False
    start_first: bool = False
    one_at_a_time: bool = False
    node_labels: tuple[str, ...] = ()
    stop_signal: str = "SIGTERM"
    stop_grace_seconds: int = 10
    # The most processes and threads the role's user may have (a target without a per-container
    # pids limit renders it as RLIMIT_NPROC: see APP_MAX_PROCESSES).
    max_processes: int | None = None
    file_secrets: FileSecrets = field(default_factory=lambda: FileSecrets(files={}))
    # Replaces the image's entrypoint when set (an image whose entrypoint is its server, such as
    # Prometheus's, started through a shell that writes its configuration first).
    entrypoint: tuple[str, ...] = ()
    # How long the target waits for the role to be healthy, when not the stack's own bound (a
    # restore replays WAL for as long as it must).
    wait_timeout_seconds: int | None = None


@dataclass(frozen=True)
class Network:
    key: NetworkKey
    name: str
    internal: bool
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Volume:
    key: VolumeKey
    name: str
    retain_on_delete: bool
    labels: Mapping[str, str]


@dataclass(frozen=True)
class AppImage:
    """An image the program builds (never pushed): the app's, or PostgreSQL's with pgBackRest."""

    name: str  # repository:tag
    context: Path
    dockerfile: Path
    platform: str
    build_args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoints:
    api_url: str
    docs_url: str
    flower_url: str
    prometheus_url: str | None = None
    alertmanager_url: str | None = None


@dataclass(frozen=True)
class LogSettings:
    driver: str
    options: Mapping[str, str]


@dataclass(frozen=True)
class ClusterSettings:
    """How a target that spreads copies over several nodes routes to them and rolls them out."""

    endpoint_mode: str
    publish_mode: str
    update_parallelism: int
    update_delay_seconds: int
    update_monitor_seconds: int
    overlay_encryption: bool
    restart_delay_seconds: int
    reservation_percent: int


@dataclass(frozen=True)
class StackDescription:
    project: str
    stack: str
    environment: str
    target: Target
    networks: tuple[Network, ...]
    volumes: tuple[Volume, ...]
    app_image: AppImage
    images: Mapping[ImageKind, str]  # pinned references of the pulled images (not "app")
    # PostgreSQL with pgBackRest when `backup` is on: what "postgres-backup" roles run.
    database_image: AppImage | None
    services: tuple[Service, ...]  # in dependency order: each after the roles it depends on
    logging: LogSettings
    wait_timeout_seconds: int
    endpoints: Endpoints
    database_url: pulumi.Output[str]
    redis_url: pulumi.Output[str]
    secrets: Mapping[SecretKey, pulumi.Output[str]]
    cluster: ClusterSettings

    def service(self, role: Role) -> Service:
        return next(s for s in self.services if s.role == role)

    def container_name(self, role: Role, replica: int | None = None) -> str:
        base = f"{self.project}-{self.stack}-{role}"
        return base if replica is None else f"{base}-{replica}"


def in_dependency_order(services: tuple[Service, ...]) -> tuple[Service, ...]:
    """`services`, each after every role it depends on; a cycle or an unknown role is an error."""
    by_role = {s.role: s for s in services}
    ordered: list[Service] = []
    visiting: set[Role] = set()

    def visit(service: Service) -> None:
        if service in ordered:
            return
        if service.role in visiting:
            raise ValueError(f"dependency cycle through {service.role}")
        visiting.add(service.role)
        for role in service.depends_on:
            if role not in by_role:
                raise ValueError(f"{service.role} depends on {role}, which is not described")
            visit(by_role[role])
        ordered.append(service)

    for service in services:
        visit(service)
    return tuple(ordered)
