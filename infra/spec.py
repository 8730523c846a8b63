"""One description of the stack, independent of where it runs.

`describe_stack` turns a validated `StackConfig` into plain data: roles, images, commands,
environment (plain and secret parts kept apart), health checks, ports, volumes, hardening, limits,
replicas and ordering. A target renderer (`infra/targets/docker.py`: containers on one host,
`infra/targets/swarm.py`: services on a swarm) turns that into resources; nothing here imports
Pulumi, so the description stands on its own.

Credentials are described twice, as the two kinds of target deliver them: as environment variables
(`secret_env`, for plain containers) and as files under /run/secrets (`file_secrets`, for targets
with a secret store), where each consumer has its own way to read a file (PostgreSQL's
`POSTGRES_PASSWORD_FILE`, the app's pydantic-settings `secrets_dir`, a shell `$(cat ...)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import SecretStr

from infra.config import DEV_ONLY_POSTGRES_PASSWORD, PROJECT, StackConfig

# Where a secret store (Swarm) mounts credentials; app/config.py reads this directory.
SECRETS_DIR = "/run/secrets"

Role = Literal["postgres", "redis", "migrate", "api", "worker", "beat", "flower"]
ImageKind = Literal["app", "postgres", "redis"]
NetworkKey = Literal["app", "data"]
VolumeKey = Literal["postgres", "redis", "beat"]
SecretKey = Literal[
    "postgres_password", "redis_password", "flower_basic_auth", "database_url", "redis_url"
]

ROLES: tuple[Role, ...] = ("postgres", "redis", "migrate", "api", "worker", "beat", "flower")
APP_ROLES: tuple[Role, ...] = ("migrate", "api", "worker", "beat", "flower")

# The image contract (docs/architecture.md): app code runs as app, 10001:10001. The postgres and
# redis images run as their own uid 999; starting them as that user skips the entrypoints' root-only
# chown/setpriv step, so no capability has to be added back after dropping them all.
APP_USER = "10001:10001"
DATA_USER = "999:999"

POSTGRES_ALIAS = "postgres"
REDIS_ALIAS = "redis"
POSTGRES_PORT = 5432
REDIS_PORT = 6379
API_PORT = 8000
FLOWER_PORT = 5555

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
}


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
    internal: int
    external: int
    host_ip: str


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
    cap_add: tuple[str, ...] = ()


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
    """One role. `replicas` copies; a `one_shot` runs to completion and gates its dependants."""

    role: Role
    image: ImageKind
    command: tuple[str, ...]
    env: Mapping[str, str]
    secret_env: Mapping[str, SecretStr]
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
    replicas: int = 1
    depends_on: tuple[Role, ...] = ()
    one_shot: bool = False
    stop_signal: str = "SIGTERM"
    stop_grace_seconds: int = 10
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
class SwarmSettings:
    """How services are spread, published and rolled out on a swarm (target swarm only)."""

    api_replicas: int
    placement: Mapping[Role, tuple[str, ...]]  # node labels (key=value) a role is pinned to
    endpoint_mode: str
    publish_mode: str
    update_parallelism: int
    update_delay_seconds: int
    update_monitor_seconds: int
    api_update_order: str


@dataclass(frozen=True)
class StackDescription:
    project: str
    stack: str
    environment: str
    target: str
    networks: tuple[Network, ...]
    volumes: tuple[Volume, ...]
    app_image: AppImage
    postgres_image: str
    redis_image: str
    services: tuple[Service, ...]
    logging: LogSettings
    wait_timeout_seconds: int
    endpoints: Endpoints
    database_url: SecretStr
    redis_url: SecretStr
    secrets: Mapping[SecretKey, SecretStr]
    swarm: SwarmSettings

    def service(self, role: Role) -> Service:
        return next(s for s in self.services if s.role == role)

    def container_name(self, role: Role, replica: int | None = None) -> str:
        base = f"{self.project}-{self.stack}-{role}"
        return base if replica is None else f"{base}-{replica}"


def describe_stack(config: StackConfig, stack: str, repo_root: Path) -> StackDescription:
    """The whole stack for `stack`, from its validated configuration."""
    prod = config.is_prod
    name_prefix = f"{PROJECT}-{stack}"

    def labels(role: str) -> dict[str, str]:
        return {LABEL_STACK: stack, LABEL_ROLE: role, LABEL_MANAGED_BY: "pulumi"}

    postgres_password = config.postgres_password or SecretStr(DEV_ONLY_POSTGRES_PASSWORD)
    redis_password = config.redis_password  # dev runs Redis without a password unless one is set
    database_url = SecretStr(
        f"postgresql+psycopg://{config.postgres_user}:"
        f"{quote(postgres_password.get_secret_value(), safe='')}"
        f"@{POSTGRES_ALIAS}:{POSTGRES_PORT}/{config.postgres_db}"
    )
    redis_auth = f":{quote(redis_password.get_secret_value(), safe='')}@" if redis_password else ""
    redis_url = SecretStr(f"redis://{redis_auth}{REDIS_ALIAS}:{REDIS_PORT}/0")

    hardening = Hardening(
        read_only_rootfs=prod,
        no_new_privileges=prod,
        cap_drop=("ALL",) if prod else (),
    )
    tmp = {"/tmp": "rw,noexec,nosuid,nodev,size=64m,mode=1777"}  # noqa: S108 - a private tmpfs
    # Dev keeps both networks but leaves `data` routable so its ports can be published on 127.0.0.1;
    # in prod it is `internal`: only containers attached to it reach PostgreSQL and Redis.
    app_networks = (NetworkAttachment("app"), NetworkAttachment("data"))

    def limits(role: Role) -> Limits | None:
        per_stack: Mapping[Role, tuple[int, str]] = {
            "api": (config.api_memory_mb, config.api_cpus),
            "worker": (config.worker_memory_mb, config.worker_cpus),
            "postgres": (config.postgres_memory_mb, config.postgres_cpus),
            "redis": (config.redis_memory_mb, config.redis_cpus),
        }
        memory_mb, cpus = {**_FIXED_LIMITS, **per_stack}[role]
        return Limits(memory_mb, cpus) if prod else None

    def dev_port(internal: int, external: int) -> tuple[PublishedPort, ...]:
        return () if prod else (PublishedPort(internal, external, "127.0.0.1"),)

    app_env = dict(entry.partition("=")[::2] for entry in config.app_env)
    connection_env: dict[str, SecretStr] = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
    }

    # pydantic-settings reads a file named like a setting (app/config.py `secrets_dir`).
    connection_files: dict[str, SecretKey] = {
        "database_url": "database_url",
        "redis_url": "redis_url",
        "celery_broker_url": "redis_url",
        "celery_result_backend": "redis_url",
    }

    def app_service(role: Role, command: tuple[str, ...], **overrides: object) -> Service:
        fields: dict[str, object] = {
            "role": role,
            "image": "app",
            "command": command,
            "env": app_env,
            "secret_env": connection_env,
            "user": APP_USER,
            "networks": app_networks,
            "hardening": hardening,
            "restart": config.restart_policy,
            "labels": labels(role),
            "tmpfs": tmp,
            "limits": limits(role),
            "depends_on": ("postgres", "redis", "migrate"),
            "file_secrets": FileSecrets(files=connection_files),
        }
        fields.update(overrides)
        return Service(**fields)  # type: ignore[arg-type]

    postgres = Service(
        role="postgres",
        image="postgres",
        command=(),  # the image's own: postgres
        env={"POSTGRES_USER": config.postgres_user, "POSTGRES_DB": config.postgres_db},
        secret_env={"POSTGRES_PASSWORD": postgres_password},
        user=DATA_USER,
        networks=(NetworkAttachment("data", (POSTGRES_ALIAS,)),),
        hardening=hardening,
        restart=config.restart_policy,
        labels=labels("postgres"),
        # -h 127.0.0.1: during first-start initdb the server listens on the socket only, so a socket
        # probe would report ready before the database is.
        healthcheck=HealthCheck(
            test=(
                "CMD",
                "pg_isready",
                "-h",
                "127.0.0.1",
                "-U",
                config.postgres_user,
                "-d",
                config.postgres_db,
            ),
            interval="5s",
            timeout="5s",
            retries=5,
            start_period="1m0s",
        ),
        wait_healthy=True,
        ports=dev_port(POSTGRES_PORT, config.postgres_host_port),
        volumes=(VolumeMount("postgres", "/var/lib/postgresql/data"),),
        tmpfs={**tmp, "/var/run/postgresql": "rw,noexec,nosuid,nodev,size=16m,mode=1777"},
        limits=limits("postgres"),
        # The official image reads the password from a file when POSTGRES_PASSWORD_FILE is set.
        file_secrets=FileSecrets(
            files={"postgres_password": "postgres_password"},
            env={"POSTGRES_PASSWORD_FILE": f"{SECRETS_DIR}/postgres_password"},
        ),
        stop_signal="SIGINT",  # PostgreSQL's fast shutdown, as the official image declares
        stop_grace_seconds=60,
    )

    redis_command: tuple[str, ...] = ("redis-server", "--appendonly", "yes")
    redis_secret_env: dict[str, SecretStr] = {}
    redis_check = "redis-cli ping | grep -q PONG"
    redis_file_secrets = FileSecrets(files={})
    if redis_password is not None:
        # From a file: the shell reads it when the process starts, so no resource input holds it.
        password_file = f"{SECRETS_DIR}/redis_password"
        redis_file_secrets = FileSecrets(
            files={"redis_password": "redis_password"},
            command=(
                "sh",
                "-c",
                f'exec redis-server --appendonly yes --requirepass "$(cat {password_file})"',
            ),
            healthcheck=HealthCheck(
                test=("CMD-SHELL", f'REDISCLI_AUTH="$(cat {password_file})" {redis_check}'),
                interval="5s",
                timeout="5s",
                retries=5,
                start_period="30s",
            ),
        )
        # The password reaches redis-server through the environment, never through the command (a
        # plain resource input). REDISCLI_AUTH is also what the healthcheck's redis-cli reads.
        redis_command = (
            "sh",
            "-c",
            'exec redis-server --appendonly yes --requirepass "$REDISCLI_AUTH"',
        )
        redis_secret_env["REDISCLI_AUTH"] = redis_password
    redis = Service(
        role="redis",
        image="redis",
        command=redis_command,
        env={},
        secret_env=redis_secret_env,
        user=DATA_USER,
        networks=(NetworkAttachment("data", (REDIS_ALIAS,)),),
        hardening=hardening,
        restart=config.restart_policy,
        labels=labels("redis"),
        # grep: redis-cli prints an error reply (NOAUTH, LOADING) but may still exit 0.
        healthcheck=HealthCheck(
            test=("CMD-SHELL", redis_check),
            interval="5s",
            timeout="5s",
            retries=5,
            start_period="30s",
        ),
        wait_healthy=True,
        ports=dev_port(REDIS_PORT, config.redis_host_port),
        volumes=(VolumeMount("redis", "/data"),),
        tmpfs=tmp,
        limits=limits("redis"),
        file_secrets=redis_file_secrets,
        stop_grace_seconds=30,
    )

    migrate = app_service(
        "migrate",
        ("alembic", "upgrade", "head"),
        one_shot=True,
        restart="no",
        depends_on=("postgres",),
    )

    api_command: tuple[str, ...] = (
        "uvicorn",
        "app.main:app",
        "--host",
        "0.0.0.0",
        "--port",
        str(API_PORT),
    )
    if prod:
        api_command += ("--workers", str(config.api_workers))
    else:
        api_command += ("--reload", "--reload-dir", "/app/app")
    api = app_service(
        "api",
        api_command,
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
        ports=(PublishedPort(API_PORT, config.api_port, config.publish_address),),
        binds=() if prod else (BindMount(repo_root / "app", "/app/app", read_only=True),),
        stop_grace_seconds=30,
    )

    worker = app_service(
        "worker",
        (
            "celery",
            "-A",
            "app.worker",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={config.worker_concurrency}",
        ),
        env={**app_env, "WORKER_HEARTBEAT_PATH": WORKER_HEARTBEAT_PATH},
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
        replicas=config.worker_replicas,
        # Celery's warm shutdown on SIGTERM finishes running tasks; give it the configured grace.
        stop_grace_seconds=config.worker_stop_grace_seconds,
    )

    beat = app_service(
        "beat",
        ("celery", "-A", "app.worker", "beat", "--loglevel=INFO"),
        env={**app_env, "BEAT_SCHEDULE_PATH": BEAT_SCHEDULE_PATH},
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

    flower_secret_env = dict(connection_env)
    flower_command: tuple[str, ...] = (
        "celery",
        "-A",
        "app.worker",
        "flower",
        f"--port={FLOWER_PORT}",
    )
    flower_file_secrets = FileSecrets(files=connection_files)
    if config.flower_basic_auth is not None:
        flower_secret_env["FLOWER_BASIC_AUTH"] = config.flower_basic_auth
        # Flower reads FLOWER_BASIC_AUTH from its environment only: the shell exports it from the
        # file for the Flower process alone; the healthcheck reads the file itself.
        auth_file = f"{SECRETS_DIR}/flower_basic_auth"
        flower_file_secrets = FileSecrets(
            files={**connection_files, "flower_basic_auth": "flower_basic_auth"},
            command=(
                "sh",
                "-c",
                f'FLOWER_BASIC_AUTH="$(cat {auth_file})"; export FLOWER_BASIC_AUTH; '
                f"exec {' '.join(flower_command)}",
            ),
            healthcheck=_flower_healthcheck(f"open('{auth_file}').read().strip()"),
        )
    flower = app_service(
        "flower",
        flower_command,
        secret_env=flower_secret_env,
        # Reads the credentials from the environment, so they never appear in the healthcheck input.
        healthcheck=_flower_healthcheck("os.environ.get('FLOWER_BASIC_AUTH', '')"),
        file_secrets=flower_file_secrets,
        ports=(PublishedPort(FLOWER_PORT, config.flower_port, config.publish_address),),
    )

    secrets: dict[SecretKey, SecretStr] = {
        "postgres_password": postgres_password,
        "database_url": database_url,
        "redis_url": redis_url,
    }
    if redis_password is not None:
        secrets["redis_password"] = redis_password
    if config.flower_basic_auth is not None:
        secrets["flower_basic_auth"] = config.flower_basic_auth

    shown_host = "127.0.0.1" if config.publish_address == "0.0.0.0" else config.publish_address
    api_url = f"http://{shown_host}:{config.api_port}"
    return StackDescription(
        project=PROJECT,
        stack=stack,
        environment=config.environment,
        target=config.target,
        networks=(
            Network("app", f"{name_prefix}-app", internal=False, labels=labels("network")),
            Network("data", f"{name_prefix}-data", internal=prod, labels=labels("network")),
        ),
        volumes=tuple(
            Volume(key, f"{name_prefix}-{key}-data", retain_on_delete=prod, labels=labels(key))
            for key in ("postgres", "redis", "beat")
        ),
        app_image=AppImage(
            name=f"{config.app_image_name}:{config.app_image_tag or stack}",
            context=repo_root,
            dockerfile=repo_root / "Dockerfile",
            platform=config.platform,
        ),
        postgres_image=config.postgres_image,
        redis_image=config.redis_image,
        services=(postgres, redis, migrate, api, worker, beat, flower),
        logging=LogSettings(
            driver="json-file",
            options={
                "max-size": f"{config.log_max_size_mb}m",
                "max-file": str(config.log_max_files),
            },
        ),
        wait_timeout_seconds=config.wait_timeout_seconds,
        endpoints=Endpoints(
            api_url=api_url,
            docs_url=f"{api_url}/docs",
            flower_url=f"http://{shown_host}:{config.flower_port}",
        ),
        database_url=database_url,
        redis_url=redis_url,
        secrets=secrets,
        swarm=SwarmSettings(
            api_replicas=config.api_replicas,
            placement={
                "postgres": config.postgres_node_labels,
                "redis": config.redis_node_labels,
            },
            endpoint_mode=config.endpoint_mode,
            publish_mode=config.publish_mode,
            update_parallelism=config.update_parallelism,
            update_delay_seconds=config.update_delay_seconds,
            update_monitor_seconds=config.update_monitor_seconds,
            api_update_order=config.api_update_order,
        ),
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
