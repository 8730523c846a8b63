"""Continuous archiving, scheduled backups and a declared restore, with pgBackRest (docs/backup.md).

When `backup` is on, PostgreSQL runs an image the program builds on top of `postgresImage` with
pgBackRest in it (infra/postgres/). The server archives each WAL segment to the repository
(`archive_timeout` bounds how long a commit waits for it); the `backup` role, the same image,
takes full and differential backups on a schedule, verifies each full one and records the
repository's state for /metrics. `restoreTarget` makes the server's first start on an empty volume
a restore from the repository.

pgBackRest reads every option from PGBACKREST_* variables: no configuration file to mount, and the
same variables in both containers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from infra.config import StackConfig
from infra.spec.connections import POSTGRES_ADMIN_USER
from infra.spec.model import BindMount, Limits, NetworkAttachment, Service, VolumeMount
from infra.spec.shared import DATA_MAX_PROCESSES, DATA_USER, PRIVATE_TMP, Shared

# The stanza: pgBackRest's name for this cluster in its repository.
STANZA = "taskstack"
PGDATA = "/var/lib/postgresql/data"
SOCKET_DIR = "/var/run/postgresql"
REPOSITORY_DIR = "/var/lib/pgbackrest"
# The image's build context, beside this package.
IMAGE_CONTEXT = Path(__file__).resolve().parent.parent / "postgres"
BACKUP_LIMITS = Limits(256, "0.5")


@dataclass(frozen=True)
class BackupSettings:
    """What the backup configuration sets (docs/backup.md lists the keys)."""

    repository_path: str  # empty: the stack's `backup` volume
    archive_timeout_seconds: int
    full_interval_hours: int
    diff_interval_hours: int
    retention_full: int
    check_seconds: int
    restore_target: str
    restore_timeline: str
    restore_timeout_seconds: int

    @classmethod
    def of(cls, config: StackConfig) -> BackupSettings:
        host_path = config.backup_repository == "host-path"
        return cls(
            repository_path=config.backup_repository_path if host_path else "",
            archive_timeout_seconds=config.wal_archive_timeout_seconds,
            full_interval_hours=config.backup_full_interval_hours,
            diff_interval_hours=config.backup_diff_interval_hours,
            retention_full=config.backup_retention_full,
            check_seconds=config.backup_check_seconds,
            restore_target=config.restore_target,
            restore_timeline=config.restore_timeline,
            restore_timeout_seconds=config.restore_timeout_minutes * 60,
        )

    def pgbackrest_env(self) -> dict[str, str]:
        return {
            "PGBACKREST_STANZA": STANZA,
            "PGBACKREST_PG1_PATH": PGDATA,
            "PGBACKREST_PG1_SOCKET_PATH": SOCKET_DIR,
            "PGBACKREST_PG1_USER": POSTGRES_ADMIN_USER,
            "PGBACKREST_REPO1_PATH": REPOSITORY_DIR,
            "PGBACKREST_REPO1_RETENTION_FULL": str(self.retention_full),
            "PGBACKREST_COMPRESS_TYPE": "lz4",
            # A backup starts with an immediate checkpoint rather than waiting for the next one.
            "PGBACKREST_START_FAST": "y",
            # The root filesystem is read-only: locks on the private /tmp, logs to the console.
            "PGBACKREST_LOCK_PATH": "/tmp/pgbackrest",  # noqa: S108 - the private tmpfs
            "PGBACKREST_LOG_LEVEL_FILE": "off",
            "PGBACKREST_LOG_LEVEL_CONSOLE": "warn",
        }

    def repository_mounts(self) -> tuple[tuple[VolumeMount, ...], tuple[BindMount, ...]]:
        if self.repository_path:
            return (), (BindMount(Path(self.repository_path), REPOSITORY_DIR, read_only=False),)
        return (VolumeMount("backup", REPOSITORY_DIR),), ()


def archiving(postgres: Service, settings: BackupSettings) -> Service:
    """The PostgreSQL role with WAL archiving, its socket on a volume the backup role shares, and
    a restore on first start when `restoreTarget` is set."""
    volumes, binds = settings.repository_mounts()
    tmpfs = {path: options for path, options in postgres.tmpfs.items() if path != SOCKET_DIR}
    env = {**postgres.env, **settings.pgbackrest_env()}
    service = replace(
        postgres,
        image="postgres-backup",
        # The image's entrypoint (restore-then-start.sh) restores, then runs the official one.
        command=(
            "postgres",
            "-c",
            "archive_mode=on",
            "-c",
            "archive_command=pgbackrest archive-push %p",
            "-c",
            f"archive_timeout={settings.archive_timeout_seconds}",
        ),
        env=env,
        volumes=(*postgres.volumes, VolumeMount("postgres-run", SOCKET_DIR), *volumes),
        binds=(*postgres.binds, *binds),
        tmpfs=tmpfs,
    )
    if not settings.restore_target:
        return service
    check = postgres.healthcheck
    assert check is not None
    return replace(
        service,
        env={
            **env,
            "RESTORE_TARGET": settings.restore_target,
            "RESTORE_TIMELINE": settings.restore_timeline,
        },
        # The server answers once it is promoted; until then (restore and replay) it is starting.
        healthcheck=replace(check, start_period=_go_duration(settings.restore_timeout_seconds)),
        wait_timeout_seconds=settings.restore_timeout_seconds + 60,
    )


def backup(
    settings: BackupSettings, shared: Shared, db: str, schema: str, node_labels: tuple[str, ...]
) -> Service:
    """The role that takes the backups, beside the database (its data and socket volumes: on a
    several-node target, pinned to PostgreSQL's `node_labels`). `schema`: the app role's, where
    the migration made backup_status."""
    volumes, binds = settings.repository_mounts()
    return Service(
        role="backup",
        image="postgres-backup",
        command=(),
        entrypoint=("backup-schedule.sh",),
        env={
            **settings.pgbackrest_env(),
            "PGHOST": SOCKET_DIR,
            "PGUSER": POSTGRES_ADMIN_USER,
            "PGDATABASE": db,
            "APP_SCHEMA": schema,
            "BACKUP_FULL_INTERVAL_HOURS": str(settings.full_interval_hours),
            "BACKUP_DIFF_INTERVAL_HOURS": str(settings.diff_interval_hours),
            "BACKUP_CHECK_SECONDS": str(settings.check_seconds),
        },
        user=DATA_USER,
        # No peer over the network: PostgreSQL through its socket, the repository on a mount.
        # Attached to the data network only because a container has one.
        networks=(NetworkAttachment("data"),),
        hardening=shared.hardening,
        restart=shared.restart,
        labels=shared.labels("backup"),
        volumes=(
            VolumeMount("postgres", PGDATA),
            VolumeMount("postgres-run", SOCKET_DIR),
            *volumes,
        ),
        binds=binds,
        tmpfs=PRIVATE_TMP,
        limits=shared.limits(BACKUP_LIMITS),
        # backup_status is the migration's table.
        depends_on=("migrate",),
        max_processes=DATA_MAX_PROCESSES,
        node_labels=node_labels,
        stop_grace_seconds=30,
    )


def _go_duration(seconds: int) -> str:
    """A healthcheck duration as the provider reads a container's back: Go's Duration.String()
    ("1h0m0s"), the form HealthCheck holds."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
