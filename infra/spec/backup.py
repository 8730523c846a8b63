"""Continuous archiving, scheduled backups and a declared restore, with pgBackRest (docs/backup.md).

When `backup` is on, PostgreSQL runs an image the program builds on top of `postgresImage` with
pgBackRest in it (infra/postgres/). The server archives each WAL segment to the repository
(`archive_timeout` bounds how long a commit waits for it); the `backup` role, the same image,
takes full and differential backups on a schedule, verifies each full one and records the
repository's state for /metrics. `restoreTarget` makes the server's first start on an empty volume
a restore from the repository.

With `backupRepository: repository-host` the repository lives in a role of its own, `repository`
(on a swarm, pinned to another node than the database), which runs pgBackRest's TLS server and
the schedule: PostgreSQL pushes WAL to it and restores from it, and it takes the backups through
the `backup` role, which then only serves the database's files (pgBackRest's TLS server beside
PostgreSQL). Their certificates are infra/spec/backup_tls.py's.

pgBackRest reads every option from PGBACKREST_* variables: no configuration file to mount.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pulumi

from infra.config import StackConfig
from infra.spec.backup_tls import tls_files
from infra.spec.connections import POSTGRES_ADMIN_USER, POSTGRES_ALIAS, POSTGRES_PORT
from infra.spec.model import (
    BindMount,
    FileSecrets,
    HealthCheck,
    Limits,
    NetworkAttachment,
    SecretKey,
    Service,
    VolumeMount,
)
from infra.spec.shared import DATA_MAX_PROCESSES, DATA_USER, PRIVATE_TMP, SECRETS_DIR, Shared

# The stanza: pgBackRest's name for this cluster in its repository.
STANZA = "taskstack"
PGDATA = "/var/lib/postgresql/data"
SOCKET_DIR = "/var/run/postgresql"
REPOSITORY_DIR = "/var/lib/pgbackrest"
# The image's build context, beside this package.
IMAGE_CONTEXT = Path(__file__).resolve().parent.parent / "postgres"
BACKUP_LIMITS = Limits(256, "0.5")

# The repository host's and the database-side server's names on the data network: what each
# TLS client dials, and the name its certificate carries.
REPOSITORY_ALIAS = "repository"
AGENT_ALIAS = "backup"
# pgBackRest's TLS certificate files, the same names in every role that has them (each role its
# own certificate). The key is copied to the private /tmp before use (with-tls-key.sh): pgBackRest
# refuses a key that group or others may read, which a mounted secret file may be.
TLS_CA_FILE = f"{SECRETS_DIR}/pgbackrest-ca.crt"
TLS_CERT_FILE = f"{SECRETS_DIR}/pgbackrest.crt"
TLS_KEY_SOURCE = f"{SECRETS_DIR}/pgbackrest.key"
TLS_KEY_FILE = "/tmp/pgbackrest-tls.key"  # noqa: S108 - the private tmpfs
TLS_SECRETS: Mapping[str, Mapping[str, SecretKey]] = {
    POSTGRES_ALIAS: {
        "pgbackrest-ca.crt": "tls_ca",
        "pgbackrest.crt": "postgres_tls_crt",
        "pgbackrest.key": "postgres_tls_key",
    },
    AGENT_ALIAS: {
        "pgbackrest-ca.crt": "tls_ca",
        "pgbackrest.crt": "backup_tls_crt",
        "pgbackrest.key": "backup_tls_key",
    },
    REPOSITORY_ALIAS: {
        "pgbackrest-ca.crt": "tls_ca",
        "pgbackrest.crt": "repository_tls_crt",
        "pgbackrest.key": "repository_tls_key",
    },
}
# The TLS servers answer a ping without a certificate: the healthcheck of both.
TLS_SERVER_CHECK = HealthCheck(
    test=("CMD", "pgbackrest", "server-ping", "--tls-server-address=127.0.0.1"),
    interval="5s",
    timeout="5s",
    retries=5,
    start_period="30s",
)


@dataclass(frozen=True)
class BackupSettings:
    """What the backup configuration sets (docs/backup.md lists the keys)."""

    repository_path: str  # empty: the stack's `backup` volume
    # The repository in the `repository` role, reached over TLS, pinned to these node labels.
    repository_host: bool
    repository_node_labels: tuple[str, ...]
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
            repository_host=config.backup_repository == "repository-host",
            repository_node_labels=config.backup_repository_node_labels,
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

    def mounts_beside_the_database(
        self,
    ) -> tuple[tuple[VolumeMount, ...], tuple[BindMount, ...]]:
        """The repository's mount in PostgreSQL's and the backup role's containers: none with a
        repository host, which alone mounts it."""
        return ((), ()) if self.repository_host else self.repository_mounts()

    def repository_mounts(self) -> tuple[tuple[VolumeMount, ...], tuple[BindMount, ...]]:
        if self.repository_path:
            return (), (BindMount(Path(self.repository_path), REPOSITORY_DIR, read_only=False),)
        return (VolumeMount("backup", REPOSITORY_DIR),), ()


def _tls_client(option: str, server: str) -> dict[str, str]:
    """pgBackRest's options for reaching `server` over TLS: `option` is REPO1_HOST (the
    repository host) or PG1_HOST (the database's side)."""
    return {
        f"PGBACKREST_{option}": server,
        f"PGBACKREST_{option}_TYPE": "tls",
        f"PGBACKREST_{option}_CA_FILE": TLS_CA_FILE,
        f"PGBACKREST_{option}_CERT_FILE": TLS_CERT_FILE,
        f"PGBACKREST_{option}_KEY_FILE": TLS_KEY_FILE,
    }


def _tls_server(client: str) -> dict[str, str]:
    """pgBackRest's TLS server, admitting only the certificate named `client`, for our stanza."""
    return {
        "PGBACKREST_TLS_SERVER_ADDRESS": "*",
        "PGBACKREST_TLS_SERVER_CA_FILE": TLS_CA_FILE,
        "PGBACKREST_TLS_SERVER_CERT_FILE": TLS_CERT_FILE,
        "PGBACKREST_TLS_SERVER_KEY_FILE": TLS_KEY_FILE,
        "PGBACKREST_TLS_SERVER_AUTH": f"{client}={STANZA}",
    }


# with-tls-key.sh: the key copied from TLS_KEY_SOURCE to TLS_KEY_FILE, then the command.
_TLS_KEY_ENV = {"TLS_KEY_SOURCE": TLS_KEY_SOURCE, "TLS_KEY_FILE": TLS_KEY_FILE}


def _with_tls(service: Service, alias: str, then: tuple[str, ...]) -> Service:
    """`service` with the TLS files of `alias`, its key copied before `then` runs (the entrypoint
    it would have had: the image's, restore-then-start.sh, or its own)."""
    files = {**service.file_secrets.files, **TLS_SECRETS[alias]}
    return replace(
        service,
        env={**service.env, **_TLS_KEY_ENV},
        file_secrets=replace(service.file_secrets, files=files),
        entrypoint=("with-tls-key.sh", *then),
    )


def backup_tls_secrets(password: pulumi.Output[str]) -> dict[SecretKey, pulumi.Output[str]]:
    """The TLS files of a repository host's roles, derived from the administrator's password."""

    def derived(alias: str, part: str) -> pulumi.Output[str]:
        return pulumi.Output.secret(
            password.apply(lambda secret: str(getattr(tls_files(secret, alias), part)))
        )

    secrets: dict[SecretKey, pulumi.Output[str]] = {"tls_ca": derived(REPOSITORY_ALIAS, "ca")}
    for alias, files in TLS_SECRETS.items():
        secrets[files["pgbackrest.crt"]] = derived(alias, "certificate")
        secrets[files["pgbackrest.key"]] = derived(alias, "key")
    return secrets


def archiving(postgres: Service, settings: BackupSettings) -> Service:
    """The PostgreSQL role with WAL archiving, its socket on a volume the backup role shares, and
    a restore on first start when `restoreTarget` is set."""
    volumes, binds = settings.mounts_beside_the_database()
    tmpfs = {path: options for path, options in postgres.tmpfs.items() if path != SOCKET_DIR}
    env = {**postgres.env, **settings.pgbackrest_env()}
    if settings.repository_host:
        env |= _tls_client("REPO1_HOST", REPOSITORY_ALIAS)
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
        # With a repository host, PostgreSQL's first start may restore from it: it is up first.
        depends_on=(*postgres.depends_on, *(("repository",) if settings.repository_host else ())),
    )
    if settings.repository_host:
        service = _with_tls(service, POSTGRES_ALIAS, ("restore-then-start.sh",))
    if not settings.restore_target:
        return service
    check = postgres.healthcheck
    assert check is not None
    return replace(
        service,
        env={
            **service.env,
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
    """The role beside the database (its data and socket volumes: on a several-node target,
    pinned to PostgreSQL's `node_labels`): it takes the backups, or with a repository host it
    serves the database's files to the host that takes them. `schema`: the app role's, where the
    migration made backup_status."""
    volumes, binds = settings.mounts_beside_the_database()
    service = Service(
        role="backup",
        image="postgres-backup",
        command=(),
        entrypoint=("backup-schedule.sh",),
        env={
            **settings.pgbackrest_env(),
            "PGHOST": SOCKET_DIR,
            "PGUSER": POSTGRES_ADMIN_USER,
            "PGDATABASE": db,
            **_schedule_env(settings, schema),
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
    if not settings.repository_host:
        return service
    return _with_tls(
        replace(
            service,
            command=("server",),
            env={**settings.pgbackrest_env(), **_tls_server(REPOSITORY_ALIAS)},
            # The repository host dials it by this name.
            networks=(NetworkAttachment("data", (AGENT_ALIAS,)),),
            healthcheck=TLS_SERVER_CHECK,
            depends_on=("postgres",),
        ),
        AGENT_ALIAS,
        ("pgbackrest",),
    )


def repository(settings: BackupSettings, shared: Shared, db: str, schema: str) -> Service:
    """The repository host: the repository on its own volume, on a several-node target pinned to
    `backupRepositoryNodeLabels` (another node than the database's); pgBackRest's TLS server for
    PostgreSQL's WAL and restores, and the schedule, whose backups read the database's files
    through the `backup` role. It reaches PostgreSQL over the network, as the administrator, to
    record backup_status."""
    volumes, _ = settings.repository_mounts()
    return _with_tls(
        Service(
            role="repository",
            image="postgres-backup",
            command=(),
            env={
                **settings.pgbackrest_env(),
                **_tls_server(POSTGRES_ALIAS),
                **_tls_client("PG1_HOST", AGENT_ALIAS),
                "PGHOST": POSTGRES_ALIAS,
                "PGPORT": str(POSTGRES_PORT),
                "PGUSER": POSTGRES_ADMIN_USER,
                "PGDATABASE": db,
                "PGPASSWORD_FILE": f"{SECRETS_DIR}/postgres_password",
                **_schedule_env(settings, schema),
            },
            user=DATA_USER,
            networks=(NetworkAttachment("data", (REPOSITORY_ALIAS,)),),
            hardening=shared.hardening,
            restart=shared.restart,
            labels=shared.labels("repository"),
            healthcheck=TLS_SERVER_CHECK,
            # PostgreSQL pushes WAL to it from its first start, and may restore from it first.
            wait_healthy=True,
            volumes=volumes,
            tmpfs=PRIVATE_TMP,
            limits=shared.limits(BACKUP_LIMITS),
            max_processes=DATA_MAX_PROCESSES,
            node_labels=settings.repository_node_labels,
            stop_grace_seconds=30,
            file_secrets=FileSecrets(files={"postgres_password": "postgres_password"}),
        ),
        REPOSITORY_ALIAS,
        ("backup-schedule.sh",),
    )


def _schedule_env(settings: BackupSettings, schema: str) -> dict[str, str]:
    return {
        "APP_SCHEMA": schema,
        "BACKUP_FULL_INTERVAL_HOURS": str(settings.full_interval_hours),
        "BACKUP_DIFF_INTERVAL_HOURS": str(settings.diff_interval_hours),
        "BACKUP_CHECK_SECONDS": str(settings.check_seconds),
    }


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
