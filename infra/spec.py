"""One description of the stack, independent of where it runs.

`describe_stack` turns a validated `StackConfig` into plain data: roles, images, commands,
environment (plain and secret parts kept apart), health checks, ports, volumes, hardening, limits,
replicas, placement, rollout and ordering (`Service.depends_on`, which every target follows). A
target renderer (`infra/targets/docker.py`: containers on one host, `infra/targets/swarm.py`:
services on a swarm) turns that into resources and adds only what is its own (how a one-shot is
run, how a copy learns its number). Nothing here is specific to a target or declares a resource:
the only Pulumi values are the credentials, which stay secret `Output`s throughout.

One small function per role (`_postgres`, `_redis`, `_migrate`, `_api`, `_worker`, `_beat`,
`_flower`) builds that role from `_Common`, what the roles share.

Credentials are described twice, as the two kinds of target deliver them: as environment variables
(`secret_env`, for plain containers) and as files under /run/secrets (`file_secrets`, for targets
with a secret store), where each consumer has its own way to read a file (PostgreSQL's
`POSTGRES_PASSWORD_FILE`, the app's pydantic-settings `secrets_dir`, a shell `$(cat ...)`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pulumi

from infra import proxy
from infra.config import PROJECT, Credentials, StackConfig

# Where a secret store (Swarm) mounts credentials; app/config.py reads this directory.
SECRETS_DIR = "/run/secrets"

Role = Literal["postgres", "redis", "migrate", "api", "worker", "beat", "flower", "proxy"]
ImageKind = Literal["app", "postgres", "redis", "proxy"]
NetworkKey = Literal["app", "data"]
VolumeKey = Literal["postgres", "redis", "beat"]
SecretKey = Literal[
    "postgres_password",
    "redis_password",
    "flower_basic_auth",
    "database_url",
    "admin_database_url",
    "redis_url",
    "tls_pem",
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
APP_ROLES: tuple[Role, ...] = ("migrate", "api", "worker", "beat", "flower")

# In `Service.replica_env` values: the copy's number (1, 2, ...), filled in by the target.
REPLICA = "{replica}"

# The image contract (docs/architecture.md): app code runs as app, 10001:10001. The postgres and
# redis images run as their own uid 999; starting them as that user skips the entrypoints' root-only
# chown/setpriv step, so no capability has to be added back after dropping them all.
APP_USER = "10001:10001"
DATA_USER = "999:999"
# The haproxy image's own user (its contract: uid/gid 99).
PROXY_USER = "99:99"

# PostgreSQL's administrator (the superuser initdb makes, the image's default name): the migration
# connects as it to make the app's own role, `postgresUser`, which owns its schema and nothing more
# (app/roles.py, docs/infra.md "Database roles"). Only the postgres and migrate containers get it.
POSTGRES_ADMIN_USER = "postgres"

POSTGRES_ALIAS = "postgres"
REDIS_ALIAS = "redis"
POSTGRES_PORT = 5432
REDIS_PORT = 6379
API_PORT = 8000
# The name every API copy answers to on the app network: what the proxy resolves.
API_ALIAS = "api"
FLOWER_PORT = 5555
# The tasks Flower keeps in memory (its default 10,000 took it to 230 of its 256 MiB, and once
# past: bench/flower_events.py, RELIABILITY.md "Overload"). The jobs' record is PostgreSQL's.
FLOWER_MAX_TASKS = 5_000

WORKER_HEARTBEAT_PATH = "/tmp/celery-worker-heartbeat"  # noqa: S108 - a tmpfs in every container
# The Dockerfile creates this directory owned by app, so a fresh named volume mounted on it inherits
# that owner (Docker copies the image directory's ownership into an empty volume).
STATE_DIR = "/var/lib/taskstack"
BEAT_SCHEDULE_PATH = f"{STATE_DIR}/celerybeat-schedule"

LABEL_STACK = "com.taskstack.stack"
LABEL_ROLE = "com.taskstack.role"
LABEL_MANAGED_BY = "com.taskstack.managed-by"

# Small processes get fixed prod limits; the four that matter are set per stack (config).
_FIXED_LIMITS: Mapping[Role, tuple[int, str]] = {
    "migrate": (256, "0.5"),
    "beat": (256, "0.25"),
    "flower": (256, "0.5"),
    "proxy": (256, "1.0"),
}
_TMP = {"/tmp": "rw,noexec,nosuid,nodev,size=64m,mode=1777"}  # noqa: S108 - a private tmpfs

# Process (and thread) bounds, as RLIMIT_NPROC: the docker provider (pulumi-docker 5.x,
# terraform-provider-docker v4.5.0) has no `pids_limit`, and the kernel counts this limit per user
# id, across the containers that run as it. The app roles all run as APP_USER: their sum in prod is
# about 300 (4 uvicorn processes with up to 40 threads each, 3 x 5 Celery processes, beat, Flower),
# so 1024 leaves room and still stops a fork bomb. PostgreSQL (a process per connection, 100 at
# most by default, plus its own) and Redis share DATA_USER.
APP_MAX_PROCESSES = 1024
DATA_MAX_PROCESSES = 512
# HAProxy (its own uid 99): one process, a thread per CPU.
PROXY_MAX_PROCESSES = 256

# Redis refuses writes (`OOM command not allowed`) beyond this share of its container's memory,
# rather than being killed by the kernel: the API answers such a refusal with 503. The rest is
# headroom for the copy-on-write of an append-only-file rewrite and for client buffers.
REDIS_MAXMEMORY_SHARE = 0.75

# Each API process (docs/app.md "Overload"): idle keep-alive connections closed after this many
# seconds; at most this many connections held open (uvicorn answers 503 beyond, a last line behind
# the app's own admission limit, which counts requests); the listen backlog.
API_KEEP_ALIVE_SECONDS = 5
API_MAX_CONNECTIONS = 1000
API_BACKLOG = 2048


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
    secret_env: Mapping[str, pulumi.Output[str]]
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
    name: str  # repository:tag
    context: Path
    dockerfile: Path
    platform: str


@dataclass(frozen=True)
class Endpoints:
    api_url: str
    docs_url: str
    flower_url: str


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
    # Proxy tasks on a cluster (the description's proxy is one copy: one host has one of each
    # published port).
    proxy_replicas: int


@dataclass(frozen=True)
class StackDescription:
    project: str
    stack: str
    environment: str
    target: str
    networks: tuple[Network, ...]
    volumes: tuple[Volume, ...]
    app_image: AppImage
    images: Mapping[ImageKind, str]  # pinned references of the pulled images (not "app")
    services: tuple[Service, ...]  # in dependency order: each after the roles it depends on
    logging: LogSettings
    wait_timeout_seconds: int
    endpoints: Endpoints
    database_url: pulumi.Output[str]
    redis_url: pulumi.Output[str]
    secrets: Mapping[SecretKey, pulumi.Output[str]]
    cluster: ClusterSettings
    proxy: proxy.ProxyConfig

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


# --- What the roles share ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Common:
    config: StackConfig
    stack: str
    repo_root: Path
    hardening: Hardening
    app_env: Mapping[str, str]
    database_env: Mapping[str, pulumi.Output[str]]
    admin_database_env: Mapping[str, pulumi.Output[str]]
    broker_env: Mapping[str, pulumi.Output[str]]
    credentials: Credentials

    @property
    def prod(self) -> bool:
        return self.config.is_prod

    def labels(self, role: str) -> dict[str, str]:
        return {LABEL_STACK: self.stack, LABEL_ROLE: role, LABEL_MANAGED_BY: "pulumi"}

    def limits(self, role: Role) -> Limits | None:
        c = self.config
        per_stack: Mapping[Role, tuple[int, str]] = {
            "api": (c.api_memory_mb, c.api_cpus),
            "worker": (c.worker_memory_mb, c.worker_cpus),
            "postgres": (c.postgres_memory_mb, c.postgres_cpus),
            "redis": (c.redis_memory_mb, c.redis_cpus),
        }
        memory_mb, cpus = {**_FIXED_LIMITS, **per_stack}[role]
        return Limits(memory_mb, cpus) if self.prod else None

    def dev_port(self, internal: int, external: int) -> tuple[PublishedPort, ...]:
        # Dev only, on loopback: a developer's client reaches the database; prod publishes none.
        local = PublishedPort(internal, external, "127.0.0.1", local_only=True)
        return () if self.prod else (local,)


# pydantic-settings reads a file named like a setting (app/config.py `secrets_dir`). Each role
# gets only the connections it uses: the database (app role), the administrator (the migration),
# the broker.
_DATABASE_FILES: Mapping[str, SecretKey] = {"database_url": "database_url"}
_ADMIN_DATABASE_FILES: Mapping[str, SecretKey] = {"admin_database_url": "admin_database_url"}
_BROKER_FILES: Mapping[str, SecretKey] = {
    "redis_url": "redis_url",
    "celery_broker_url": "redis_url",
    "celery_result_backend": "redis_url",
}


def _database_url(
    config: StackConfig, user: str, password: pulumi.Output[str]
) -> pulumi.Output[str]:
    prefix = f"postgresql+psycopg://{user}:"
    suffix = f"@{POSTGRES_ALIAS}:{POSTGRES_PORT}/{config.postgres_db}"
    return pulumi.Output.secret(password.apply(lambda p: f"{prefix}{quote(p, safe='')}{suffix}"))


def app_role_password(admin_password: str, role: str) -> str:
    """The app role's password, derived from the administrator's (HMAC-SHA256): one credential to
    set and rotate, and knowing the app's password reveals nothing of the administrator's. The
    migration sets it on the role on every run (app/roles.py)."""
    digest = hmac.new(
        admin_password.encode(), f"taskstack app role {role}".encode(), hashlib.sha256
    )
    return digest.hexdigest()


def _redis_url(password: pulumi.Output[str] | None) -> pulumi.Output[str]:
    address = f"{REDIS_ALIAS}:{REDIS_PORT}/0"
    if password is None:  # dev runs Redis without a password unless one is set
        return pulumi.Output.secret(f"redis://{address}")
    return pulumi.Output.secret(password.apply(lambda p: f"redis://:{quote(p, safe='')}@{address}"))


def _common(config: StackConfig, credentials: Credentials, stack: str, repo_root: Path) -> _Common:
    prod = config.is_prod
    redis_url = _redis_url(credentials.redis_password)
    admin_password = credentials.postgres_password
    role = config.postgres_user
    derived: pulumi.Output[str] = admin_password.apply(lambda p: app_role_password(p, role))
    app_password: pulumi.Output[str] = pulumi.Output.secret(derived)
    return _Common(
        config=config,
        stack=stack,
        repo_root=repo_root,
        hardening=Hardening(
            read_only_rootfs=prod, no_new_privileges=prod, cap_drop=("ALL",) if prod else ()
        ),
        app_env=dict(entry.partition("=")[::2] for entry in config.app_env),
        database_env={"DATABASE_URL": _database_url(config, role, app_password)},
        admin_database_env={
            "ADMIN_DATABASE_URL": _database_url(config, POSTGRES_ADMIN_USER, admin_password)
        },
        broker_env={
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": redis_url,
        },
        credentials=credentials,
    )


# --- One function per role -----------------------------------------------------------------------


def _postgres(c: _Common) -> Service:
    user, db = POSTGRES_ADMIN_USER, c.config.postgres_db
    return Service(
        role="postgres",
        image="postgres",
        command=(),  # the image's own: postgres
        # initdb makes the administrator and the database (owned by it); the migration makes the
        # app's role.
        env={"POSTGRES_USER": user, "POSTGRES_DB": db},
        secret_env={"POSTGRES_PASSWORD": c.credentials.postgres_password},
        user=DATA_USER,
        networks=(NetworkAttachment("data", (POSTGRES_ALIAS,)),),
        hardening=c.hardening,
        restart=c.config.restart_policy,
        labels=c.labels("postgres"),
        # -h 127.0.0.1: during first-start initdb the server listens on the socket only, so a socket
        # probe would report ready before the database is.
        healthcheck=HealthCheck(
            test=("CMD", "pg_isready", "-h", "127.0.0.1", "-U", user, "-d", db),
            interval="5s",
            timeout="5s",
            retries=5,
            start_period="1m0s",
        ),
        wait_healthy=True,
        ports=c.dev_port(POSTGRES_PORT, c.config.postgres_host_port),
        volumes=(VolumeMount("postgres", "/var/lib/postgresql/data"),),
        tmpfs={**_TMP, "/var/run/postgresql": "rw,noexec,nosuid,nodev,size=16m,mode=1777"},
        limits=c.limits("postgres"),
        node_labels=c.config.postgres_node_labels,
        # The official image reads the password from a file when POSTGRES_PASSWORD_FILE is set.
        file_secrets=FileSecrets(
            files={"postgres_password": "postgres_password"},
            env={"POSTGRES_PASSWORD_FILE": f"{SECRETS_DIR}/postgres_password"},
        ),
        stop_signal="SIGINT",  # PostgreSQL's fast shutdown, as the official image declares
        stop_grace_seconds=60,
        max_processes=DATA_MAX_PROCESSES,
    )


_REDIS_CHECK = "redis-cli ping | grep -q PONG"


def _redis_server(c: _Common) -> str:
    """redis-server's arguments: append-only, and a full broker refuses writes (noeviction: an
    evicted key would be a lost task message) instead of growing until it is killed."""
    maxmemory_mb = int(c.config.redis_memory_mb * REDIS_MAXMEMORY_SHARE)
    return (
        f"redis-server --appendonly yes --maxmemory {maxmemory_mb}mb --maxmemory-policy noeviction"
    )


def _redis_check(test: str) -> HealthCheck:
    return HealthCheck(
        test=("CMD-SHELL", test), interval="5s", timeout="5s", retries=5, start_period="30s"
    )


def _redis(c: _Common) -> Service:
    password = c.credentials.redis_password
    service = Service(
        role="redis",
        image="redis",
        command=tuple(_redis_server(c).split()),
        env={},
        secret_env={},
        user=DATA_USER,
        networks=(NetworkAttachment("data", (REDIS_ALIAS,)),),
        hardening=c.hardening,
        restart=c.config.restart_policy,
        labels=c.labels("redis"),
        # grep: redis-cli prints an error reply (NOAUTH, LOADING) but may still exit 0.
        healthcheck=_redis_check(_REDIS_CHECK),
        wait_healthy=True,
        ports=c.dev_port(REDIS_PORT, c.config.redis_host_port),
        volumes=(VolumeMount("redis", "/data"),),
        tmpfs=_TMP,
        limits=c.limits("redis"),
        node_labels=c.config.redis_node_labels,
        stop_grace_seconds=30,
        max_processes=DATA_MAX_PROCESSES,
    )
    if password is None:
        return service
    # From a file: the shell reads it when the process starts, so no resource input holds it.
    password_file = f"{SECRETS_DIR}/redis_password"
    return replace(
        service,
        # The password reaches redis-server through the environment, never through the command (a
        # plain resource input). REDISCLI_AUTH is also what the healthcheck's redis-cli reads.
        command=("sh", "-c", f'exec {_redis_server(c)} --requirepass "$REDISCLI_AUTH"'),
        secret_env={"REDISCLI_AUTH": password},
        file_secrets=FileSecrets(
            files={"redis_password": "redis_password"},
            command=(
                "sh",
                "-c",
                f'exec {_redis_server(c)} --requirepass "$(cat {password_file})"',
            ),
            healthcheck=_redis_check(f'REDISCLI_AUTH="$(cat {password_file})" {_REDIS_CHECK}'),
        ),
    )


def _app_service(c: _Common, role: Role, command: tuple[str, ...]) -> Service:
    """A role of the app image: needs PostgreSQL (as the app's role), Redis and the migrated
    schema."""
    return Service(
        role=role,
        image="app",
        command=command,
        env=c.app_env,
        secret_env={**c.database_env, **c.broker_env},
        user=APP_USER,
        # Both networks: `data` reaches PostgreSQL and Redis (internal in prod), `app` the rest.
        networks=(NetworkAttachment("app"), NetworkAttachment("data")),
        hardening=c.hardening,
        restart=c.config.restart_policy,
        labels=c.labels(role),
        tmpfs=_TMP,
        limits=c.limits(role),
        depends_on=("postgres", "redis", "migrate"),
        file_secrets=FileSecrets(files={**_DATABASE_FILES, **_BROKER_FILES}),
        max_processes=APP_MAX_PROCESSES,
    )


def _migrate(c: _Common) -> Service:
    return replace(
        _app_service(c, "migrate", ("alembic", "upgrade", "head")),
        # The administrator, to make the app's role, and the app's role, to migrate as it; no
        # broker.
        secret_env={**c.database_env, **c.admin_database_env},
        file_secrets=FileSecrets(files={**_DATABASE_FILES, **_ADMIN_DATABASE_FILES}),
        one_shot=True,
        restart="no",
        depends_on=("postgres",),
    )


def _api(c: _Common) -> Service:
    command: tuple[str, ...] = ("uvicorn", "app.main:app", "--host", "0.0.0.0")
    command += ("--port", str(API_PORT))
    command += ("--timeout-keep-alive", str(API_KEEP_ALIVE_SECONDS))
    command += ("--limit-concurrency", str(API_MAX_CONNECTIONS), "--backlog", str(API_BACKLOG))
    if not c.config.api_access_log:
        # A line per request costs the API about half its GET /task throughput (docs/bench.md);
        # gunicorn's default is the same. Errors are still logged.
        command += ("--no-access-log",)
    if c.prod:
        command += ("--workers", str(c.config.api_workers))
    else:
        command += ("--reload", "--reload-dir", "/app/app")
    bind = BindMount(c.repo_root / "app", "/app/app", read_only=True)
    return replace(
        _app_service(c, "api", command),
        # The image has no curl; urlopen raises on a 503 and on a timeout, exiting non-zero.
        healthcheck=HealthCheck(
            test=(
                "CMD",
                "python",
                "-c",
                "import urllib.request; "
                f"urllib.request.urlopen('http://127.0.0.1:{API_PORT}/health/ready', timeout=8)",
            ),
            interval="5s",
            timeout="10s",
            retries=5,
            start_period="30s",
        ),
        wait_healthy=True,
        # No published port: the proxy owns it and finds the copies by this alias.
        networks=(NetworkAttachment("app", (API_ALIAS,)), NetworkAttachment("data")),
        binds=() if c.prod else (bind,),
        replicas=c.config.api_replicas,
        start_first=c.config.api_update_order == "start-first",
        one_at_a_time=True,
        stop_grace_seconds=30,
    )


def _worker(c: _Common) -> Service:
    command = ("celery", "-A", "app.worker", "worker", f"--loglevel={c.config.worker_log_level}")
    return replace(
        _app_service(c, "worker", (*command, f"--concurrency={c.config.worker_concurrency}")),
        env={**c.app_env, "WORKER_HEARTBEAT_PATH": WORKER_HEARTBEAT_PATH},
        # Celery's node name (`--hostname`, read from CELERY_WORKER_HOSTNAME): Flower and
        # `celery inspect` show worker-1@<host>, worker-2@<host> rather than celery@<container id>.
        replica_env={"CELERY_WORKER_HOSTNAME": f"worker-{REPLICA}@%h"},
        # A shell `find`, not a Python process: the worker touches the file while its consumer is
        # connected (architecture.md "Health signals").
        healthcheck=HealthCheck(
            test=(
                "CMD-SHELL",
                f'test -n "$(find {WORKER_HEARTBEAT_PATH} -mmin -1 2>/dev/null)"',
            ),
            interval="10s",
            timeout="5s",
            retries=3,
            start_period="1m0s",
        ),
        wait_healthy=True,
        replicas=c.config.worker_replicas,
        cpu_shares=c.config.background_cpu_shares,
        start_first=True,
        # Celery's warm shutdown on SIGTERM finishes running tasks; give it the configured grace.
        stop_grace_seconds=c.config.worker_stop_grace_seconds,
    )


def _beat(c: _Common) -> Service:
    return replace(
        _app_service(c, "beat", ("celery", "-A", "app.worker", "beat", "--loglevel=INFO")),
        env={**c.app_env, "BEAT_SCHEDULE_PATH": BEAT_SCHEDULE_PATH},
        volumes=(VolumeMount("beat", STATE_DIR),),
        # Beat's persistent scheduler rewrites its schedule file at least every few minutes
        # (celery's sync_every is 3 min; ticks come at least every beat_max_loop_interval, 5 min).
        healthcheck=HealthCheck(
            test=(
                "CMD-SHELL",
                f"test -n \"$(find {STATE_DIR} -name 'celerybeat-schedule*' -mmin -10"
                ' 2>/dev/null)"',
            ),
            interval="30s",
            timeout="5s",
            retries=3,
            start_period="1m0s",
        ),
        replicas=1,  # exactly one: two beats would schedule every periodic task twice
    )


def _flower(c: _Common) -> Service:
    # app.monitoring: the Celery app, with Flower's /metrics behind Flower's own authentication.
    command = (
        *("celery", "-A", "app.monitoring", "flower"),
        *(f"--max_tasks={FLOWER_MAX_TASKS}", f"--port={FLOWER_PORT}"),
    )
    service = replace(
        _app_service(c, "flower", command),
        # The broker only: Flower never touches the database.
        secret_env=c.broker_env,
        file_secrets=FileSecrets(files=_BROKER_FILES),
        # Reads the credentials from the environment, so they never appear in the healthcheck input.
        healthcheck=_flower_healthcheck("os.environ.get('FLOWER_BASIC_AUTH', '')"),
        ports=(PublishedPort(FLOWER_PORT, c.config.flower_port, c.config.publish_address),),
        # Flower decodes three task events per job: it drains with the workers.
        cpu_shares=c.config.background_cpu_shares,
    )
    auth = c.credentials.flower_basic_auth
    if auth is None:
        return service
    # Flower reads FLOWER_BASIC_AUTH from its environment only: the shell exports it from the file
    # for the Flower process alone; the healthcheck reads the file itself.
    auth_file = f"{SECRETS_DIR}/flower_basic_auth"
    return replace(
        service,
        secret_env={**c.broker_env, "FLOWER_BASIC_AUTH": auth},
        file_secrets=FileSecrets(
            files={**_BROKER_FILES, "flower_basic_auth": "flower_basic_auth"},
            command=(
                "sh",
                "-c",
                f'FLOWER_BASIC_AUTH="$(cat {auth_file})"; export FLOWER_BASIC_AUTH; '
                f"exec {' '.join(command)}",
            ),
            healthcheck=_flower_healthcheck(f"open('{auth_file}').read().strip()"),
        ),
    )


def proxy_config(config: StackConfig, tls: bool) -> proxy.ProxyConfig:
    return proxy.ProxyConfig(
        api_port=API_PORT,
        replicas=config.api_replicas,
        processes_per_replica=config.api_workers,
        request_timeout_seconds=config.proxy_request_timeout_seconds,
        max_body_bytes=config.proxy_max_body_kb * 1024,
        access_log=config.proxy_access_log,
        tls=tls,
    )


def _tls_pem(credentials: Credentials) -> pulumi.Output[str] | None:
    """The certificate chain and its key in one PEM, as HAProxy's `crt` reads it."""
    if credentials.tls_certificate is None or credentials.tls_key is None:
        return None
    return pulumi.Output.secret(
        pulumi.Output.all(credentials.tls_certificate, credentials.tls_key).apply(
            lambda pair: f"{pair[0].strip()}\n{pair[1].strip()}\n"
        )
    )


def _proxy(c: _Common) -> Service:
    pem = _tls_pem(c.credentials)
    settings = proxy_config(c.config, tls=pem is not None)
    tls_file = f"{SECRETS_DIR}/tls_pem"
    return Service(
        role="proxy",
        image="proxy",
        command=proxy.start_command(f'printf "%s" "${proxy.TLS_PEM_ENV}"' if pem else None),
        env={proxy.CONFIG_ENV: proxy.render(settings)},
        secret_env={proxy.TLS_PEM_ENV: pem} if pem else {},
        user=PROXY_USER,
        networks=(NetworkAttachment("app"),),
        hardening=c.hardening,
        restart=c.config.restart_policy,
        labels=c.labels("proxy"),
        healthcheck=HealthCheck(
            test=proxy.HEALTHCHECK, interval="5s", timeout="5s", retries=3, start_period="10s"
        ),
        wait_healthy=True,
        ports=(PublishedPort(settings.listen_port, c.config.api_port, c.config.publish_address),),
        tmpfs=_TMP,
        limits=c.limits("proxy"),
        # Created once the API answers, so the first request after `up` finds a copy.
        depends_on=("api",),
        file_secrets=FileSecrets(
            files={"tls_pem": "tls_pem"},
            command=proxy.start_command(f"cat {tls_file}"),
        )
        if pem
        else FileSecrets(files={}),
        # HAProxy's soft stop (the image's STOPSIGNAL): open connections finish first.
        stop_signal="SIGUSR1",
        stop_grace_seconds=30,
        max_processes=PROXY_MAX_PROCESSES,
    )


def _flower_healthcheck(credentials: str) -> HealthCheck:
    """GET Flower's /healthcheck, with the first user:password that `credentials` evaluates to."""
    return HealthCheck(
        test=(
            "CMD",
            "python",
            "-c",
            "import base64, os, urllib.request as u; "
            f"r = u.Request('http://127.0.0.1:{FLOWER_PORT}/healthcheck'); "
            f"a = {credentials}.split(',')[0]; "
            "a and r.add_header('Authorization', "
            "'Basic ' + base64.b64encode(a.encode()).decode()); "
            "u.urlopen(r, timeout=5)",
        ),
        interval="10s",
        timeout="10s",
        retries=3,
        start_period="30s",
    )


# --- The stack -----------------------------------------------------------------------------------


def _secrets(c: _Common) -> dict[SecretKey, pulumi.Output[str]]:
    secrets: dict[SecretKey, pulumi.Output[str]] = {
        "postgres_password": c.credentials.postgres_password,
        "database_url": c.database_env["DATABASE_URL"],
        "admin_database_url": c.admin_database_env["ADMIN_DATABASE_URL"],
        "redis_url": c.broker_env["REDIS_URL"],
    }
    if c.credentials.redis_password is not None:
        secrets["redis_password"] = c.credentials.redis_password
    if c.credentials.flower_basic_auth is not None:
        secrets["flower_basic_auth"] = c.credentials.flower_basic_auth
    pem = _tls_pem(c.credentials)
    if pem is not None:
        secrets["tls_pem"] = pem
    return secrets


def _endpoints(config: StackConfig, tls: bool) -> Endpoints:
    shown_host = "127.0.0.1" if config.publish_address == "0.0.0.0" else config.publish_address
    api_url = f"{'https' if tls else 'http'}://{shown_host}:{config.api_port}"
    return Endpoints(
        api_url=api_url,
        docs_url=f"{api_url}/docs",
        flower_url=f"http://{shown_host}:{config.flower_port}",
    )


def _networks(c: _Common) -> tuple[Network, ...]:
    # Dev keeps both networks but leaves `data` routable so its ports can be published on 127.0.0.1;
    # in prod it is `internal`: only containers attached to it reach PostgreSQL and Redis.
    prefix = f"{PROJECT}-{c.stack}"
    return (
        Network("app", f"{prefix}-app", internal=False, labels=c.labels("network")),
        Network("data", f"{prefix}-data", internal=c.prod, labels=c.labels("network")),
    )


def _volumes(c: _Common) -> tuple[Volume, ...]:
    keys: tuple[VolumeKey, ...] = ("postgres", "redis", "beat")
    prefix = f"{PROJECT}-{c.stack}"
    return tuple(
        Volume(key, f"{prefix}-{key}-data", retain_on_delete=c.prod, labels=c.labels(key))
        for key in keys
    )


def describe_stack(
    config: StackConfig, credentials: Credentials, stack: str, repo_root: Path
) -> StackDescription:
    """The whole stack for `stack`, from its validated configuration and its credentials."""
    c = _common(config, credentials, stack, repo_root)
    roles = (_postgres, _redis, _migrate, _api, _worker, _beat, _flower, _proxy)
    tls = credentials.tls_certificate is not None
    return StackDescription(
        project=PROJECT,
        stack=stack,
        environment=config.environment,
        target=config.target,
        networks=_networks(c),
        volumes=_volumes(c),
        app_image=AppImage(
            name=f"{config.app_image_name}:{config.app_image_tag or stack}",
            context=repo_root,
            dockerfile=repo_root / "Dockerfile",
            platform=config.platform,
        ),
        images={
            "postgres": config.postgres_image,
            "redis": config.redis_image,
            "proxy": config.proxy_image,
        },
        services=in_dependency_order(tuple(role(c) for role in roles)),
        logging=LogSettings(
            driver="json-file",
            options={
                "max-size": f"{config.log_max_size_mb}m",
                "max-file": str(config.log_max_files),
            },
        ),
        wait_timeout_seconds=config.wait_timeout_seconds,
        endpoints=_endpoints(config, tls),
        database_url=c.database_env["DATABASE_URL"],
        redis_url=c.broker_env["REDIS_URL"],
        secrets=_secrets(c),
        cluster=ClusterSettings(
            endpoint_mode=config.endpoint_mode,
            publish_mode=config.publish_mode,
            update_parallelism=config.update_parallelism,
            update_delay_seconds=config.update_delay_seconds,
            update_monitor_seconds=config.update_monitor_seconds,
            overlay_encryption=config.overlay_encryption,
            restart_delay_seconds=config.restart_delay_seconds,
            proxy_replicas=config.proxy_replicas,
        ),
        proxy=proxy_config(config, tls),
    )
