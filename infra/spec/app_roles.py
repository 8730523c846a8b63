"""The roles of the app image: the migration, the API, the workers, beat and Flower.

Each needs PostgreSQL (as the app's role), Redis and the migrated schema, and gets only the
connections it uses (infra/spec/connections.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pulumi

from app.config import Settings
from infra.config import LogLevel, StackConfig
from infra.spec.connections import ADMIN_DATABASE_FILES, BROKER_FILES, DATABASE_FILES, Connections
from infra.spec.model import (
    REPLICA,
    BindMount,
    FileSecrets,
    HealthCheck,
    Limits,
    NetworkAttachment,
    PublishedPort,
    Role,
    SecretKey,
    Service,
    VolumeMount,
)
from infra.spec.shared import (
    APP_MAX_PROCESSES,
    APP_USER,
    FIXED_LIMITS,
    PRIVATE_TMP,
    SECRETS_DIR,
    Shared,
)

API_PORT = 8000
# The name every API copy answers to on the app network: what the proxy resolves.
API_ALIAS = "api"
# Each API process (docs/app.md "Overload"): idle keep-alive connections closed after this many
# seconds; at most this many connections held open (uvicorn answers 503 beyond, a last line behind
# the app's own admission limit, which counts requests); the listen backlog.
API_KEEP_ALIVE_SECONDS = 5
API_MAX_CONNECTIONS = 1000
API_BACKLOG = 2048

FLOWER_PORT = 5555
# The tasks Flower keeps in memory, below its own default: what that default costs its memory
# limit is measured in RELIABILITY.md ("Overload and slow clients"; bench/flower_events.py). The
# jobs' record is PostgreSQL's.
FLOWER_MAX_TASKS = 5_000

# Where each worker's heartbeat file is: the app's own default (app/config.py), checked by the
# worker's healthcheck.
WORKER_HEARTBEAT_PATH = str(Settings.model_fields["worker_heartbeat_path"].default)
# The Dockerfile creates this directory owned by app, so a fresh named volume mounted on it inherits
# that owner (Docker copies the image directory's ownership into an empty volume).
STATE_DIR = "/var/lib/taskstack"
# Where the API's and the workers' processes keep their metrics (prometheus_client's multiprocess
# mode, docs/observability.md): on the private tmpfs, so empty at every start.
METRICS_DIR = "/tmp/metrics"  # noqa: S108 - the container's private tmpfs
WORKER_METRICS_PORT = int(Settings.model_fields["metrics_port"].default)
WORKER_ALIAS = "worker"
BEAT_SCHEDULE_PATH = f"{STATE_DIR}/celerybeat-schedule"


@dataclass(frozen=True)
class AppRoles:
    """What every role of the app image reads: the shared slice, the settings the stack passes
    through `appEnv`, and the connections."""

    shared: Shared
    env: Mapping[str, str]
    connections: Connections

    @classmethod
    def of(cls, config: StackConfig, shared: Shared, connections: Connections) -> AppRoles:
        env = dict(entry.partition("=")[::2] for entry in config.app_env)
        env["LOG_FORMAT"] = config.log_format
        if config.otlp_endpoint:
            env["OTLP_ENDPOINT"] = config.otlp_endpoint
        return cls(shared, env, connections)

    def service(self, role: Role, command: tuple[str, ...], limits: Limits) -> Service:
        """A role of the app image, after the migration, with the database and the broker."""
        shared = self.shared
        return Service(
            role=role,
            image="app",
            command=command,
            env=self.env,
            user=APP_USER,
            # Both networks: `data` reaches PostgreSQL and Redis (internal in prod), `app` the rest.
            networks=(NetworkAttachment("app"), NetworkAttachment("data")),
            hardening=shared.hardening,
            restart=shared.restart,
            labels=shared.labels(role),
            tmpfs=PRIVATE_TMP,
            limits=shared.limits(limits),
            depends_on=("postgres", "redis", "migrate"),
            file_secrets=FileSecrets(files={**DATABASE_FILES, **BROKER_FILES}),
            max_processes=APP_MAX_PROCESSES,
        )


def migrate(app: AppRoles, initial_api_key: pulumi.Output[str] | None = None) -> Service:
    # The first API key, stored hashed by the migration (docs/app.md, "API keys").
    key_file: dict[str, SecretKey] = (
        {"initial_api_key": "initial_api_key"} if initial_api_key is not None else {}
    )
    return replace(
        app.service("migrate", ("alembic", "upgrade", "head"), FIXED_LIMITS["migrate"]),
        # The administrator, to make the app's role, and the app's role, to migrate as it; no
        # broker.
        file_secrets=FileSecrets(files={**DATABASE_FILES, **ADMIN_DATABASE_FILES, **key_file}),
        one_shot=True,
        restart="no",
        depends_on=("postgres",),
    )


@dataclass(frozen=True)
class ApiSettings:
    """What the API's configuration sets. `source`: the app's code, bind-mounted in dev."""

    access_log: bool
    workers: int
    replicas: int
    start_first: bool
    limits: Limits
    source: Path
    json_logs: bool
    # API keys and the interactive docs, as the app reads them (app/config.py).
    access_env: Mapping[str, str]

    @classmethod
    def of(cls, config: StackConfig, repo_root: Path) -> ApiSettings:
        return cls(
            access_env={
                "AUTH_REQUIRED": str(config.api_keys_required).lower(),
                "API_DOCS": str(config.api_docs).lower(),
                "API_KEY_RATE_PER_SECOND": str(config.api_key_rate_per_second),
                "API_KEY_BURST": str(config.api_key_burst),
                "API_KEY_MAX_CONCURRENT": str(config.api_key_max_concurrent),
            },
            json_logs=config.log_format == "json",
            access_log=config.api_access_log,
            workers=config.api_workers,
            replicas=config.api_replicas,
            start_first=config.api_update_order == "start-first",
            limits=Limits(config.api_memory_mb, config.api_cpus),
            source=repo_root / "app",
        )


def _api_command(settings: ApiSettings, prod: bool) -> tuple[str, ...]:
    command: tuple[str, ...] = ("uvicorn", "app.main:app", "--host", "0.0.0.0")
    command += ("--port", str(API_PORT))
    command += ("--timeout-keep-alive", str(API_KEEP_ALIVE_SECONDS))
    command += ("--limit-concurrency", str(API_MAX_CONNECTIONS), "--backlog", str(API_BACKLOG))
    if not settings.access_log:
        # A line per request has a cost (docs/bench.md, "What was changed for speed"); gunicorn's
        # default is the same. Errors are still logged.
        command += ("--no-access-log",)
    if settings.json_logs:
        # uvicorn's supervisor of `--workers` never imports the app: its own few lines in the
        # same JSON schema (docs/observability.md, "Logs").
        command += ("--log-config", "/app/app/uvicorn_logging.json")
    if prod:
        return (*command, "--workers", str(settings.workers))
    return (*command, "--reload", "--reload-dir", "/app/app")


def api(app: AppRoles, settings: ApiSettings) -> Service:
    prod = app.shared.prod
    bind = BindMount(settings.source, "/app/app", read_only=True)
    return replace(
        app.service("api", _api_command(settings, prod), settings.limits),
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
        env={**app.env, **settings.access_env, "PROMETHEUS_MULTIPROC_DIR": METRICS_DIR},
        # No published port: the proxy owns it and finds the copies by this alias (Prometheus
        # too, each copy's /metrics).
        networks=(NetworkAttachment("app", (API_ALIAS,)), NetworkAttachment("data")),
        binds=() if prod else (bind,),
        replicas=settings.replicas,
        start_first=settings.start_first,
        one_at_a_time=True,
        stop_grace_seconds=30,
    )


@dataclass(frozen=True)
class WorkerSettings:
    """What the workers' configuration sets. `cpu_shares`: their CPU weight (Flower's too)."""

    log_level: LogLevel
    concurrency: int
    replicas: int
    stop_grace_seconds: int
    cpu_shares: int
    limits: Limits

    @classmethod
    def of(cls, config: StackConfig) -> WorkerSettings:
        return cls(
            log_level=config.worker_log_level,
            concurrency=config.worker_concurrency,
            replicas=config.worker_replicas,
            stop_grace_seconds=config.worker_stop_grace_seconds,
            cpu_shares=config.background_cpu_shares,
            limits=Limits(config.worker_memory_mb, config.worker_cpus),
        )


def worker(app: AppRoles, settings: WorkerSettings) -> Service:
    command = (
        *("celery", "-A", "app.worker", "worker"),
        *(f"--loglevel={settings.log_level}", f"--concurrency={settings.concurrency}"),
    )
    return replace(
        app.service("worker", command, settings.limits),
        env={
            **app.env,
            "WORKER_HEARTBEAT_PATH": WORKER_HEARTBEAT_PATH,
            "PROMETHEUS_MULTIPROC_DIR": METRICS_DIR,
        },
        # Prometheus finds every worker by this name and scrapes each one's METRICS_PORT.
        networks=(NetworkAttachment("app", (WORKER_ALIAS,)), NetworkAttachment("data")),
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
        replicas=settings.replicas,
        cpu_shares=settings.cpu_shares,
        start_first=True,
        # Celery's warm shutdown on SIGTERM finishes running tasks; give it the configured grace.
        stop_grace_seconds=settings.stop_grace_seconds,
    )


def beat(app: AppRoles) -> Service:
    command = ("celery", "-A", "app.worker", "beat", "--loglevel=INFO")
    return replace(
        app.service("beat", command, FIXED_LIMITS["beat"]),
        env={**app.env, "BEAT_SCHEDULE_PATH": BEAT_SCHEDULE_PATH},
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


@dataclass(frozen=True)
class FlowerSettings:
    """Where Flower is published, and its CPU weight (the workers')."""

    host_port: int
    publish_address: str
    cpu_shares: int

    @classmethod
    def of(cls, config: StackConfig) -> FlowerSettings:
        return cls(config.flower_port, config.publish_address, config.background_cpu_shares)


def flower(app: AppRoles, settings: FlowerSettings, auth: pulumi.Output[str] | None) -> Service:
    # app.monitoring: the Celery app, with Flower's /metrics behind Flower's own authentication.
    command = (
        *("celery", "-A", "app.monitoring", "flower"),
        *(f"--max_tasks={FLOWER_MAX_TASKS}", f"--port={FLOWER_PORT}"),
    )
    service = replace(
        app.service("flower", command, FIXED_LIMITS["flower"]),
        # The broker only: Flower never touches the database.
        file_secrets=FileSecrets(files=BROKER_FILES),
        # Reads the credentials from the environment, so they never appear in the healthcheck input.
        healthcheck=_flower_healthcheck("os.environ.get('FLOWER_BASIC_AUTH', '')"),
        ports=(PublishedPort(FLOWER_PORT, settings.host_port, settings.publish_address),),
        # Flower decodes three task events per job: it drains with the workers.
        cpu_shares=settings.cpu_shares,
    )
    if auth is None:
        return service
    # Flower reads FLOWER_BASIC_AUTH from its environment only: the shell exports it from the file
    # for the Flower process alone; the healthcheck reads the file itself.
    auth_file = f"{SECRETS_DIR}/flower_basic_auth"
    return replace(
        service,
        file_secrets=FileSecrets(
            files={**BROKER_FILES, "flower_basic_auth": "flower_basic_auth"},
            command=(
                "sh",
                "-c",
                f'FLOWER_BASIC_AUTH="$(cat {auth_file})"; export FLOWER_BASIC_AUTH; '
                f"exec {' '.join(command)}",
            ),
            healthcheck=_flower_healthcheck(f"open('{auth_file}').read().strip()"),
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
