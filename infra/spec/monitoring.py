"""The monitoring roles (`monitoring`, docs/observability.md): Prometheus, Alertmanager and the
PostgreSQL and Redis exporters.

Prometheus and Alertmanager run their images' own servers, started by a shell that first writes
their configuration (rendered by infra/monitoring.py, passed as environment variables; the
credentials among it from their files under SECRETS_DIR) to the private tmpfs: the root filesystem
stays read-only.
In prod both consoles ask for the console credentials (`flowerBasicAuth`, as Flower does);
Prometheus itself reaches Alertmanager and its own endpoint as an internal user whose password is
derived from them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import pulumi

from infra import monitoring
from infra.config import Credentials, StackConfig, Target
from infra.spec.connections import POSTGRES_ALIAS, POSTGRES_PORT, REDIS_ALIAS, REDIS_PORT
from infra.spec.model import (
    FileSecrets,
    HealthCheck,
    Limits,
    MonitoringRole,
    NetworkAttachment,
    PublishedPort,
    SecretKey,
    Service,
    VolumeMount,
)
from infra.spec.shared import (
    FIXED_LIMITS,
    MONITORING_MAX_PROCESSES,
    PRIVATE_TMP,
    SECRETS_DIR,
    Shared,
)

PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
# The images' own users: nobody for Prometheus, Alertmanager and the PostgreSQL exporter;
# redis_exporter's image runs as 59000.
MONITORING_USER = "65534:65534"
REDIS_EXPORTER_USER = "59000:59000"
# The user Prometheus authenticates as, to Alertmanager and to itself (prod).
INTERNAL_USER = "prometheus"

_CONFIG = "/tmp/prometheus.yml"  # noqa: S108 - the container's private tmpfs
_RULES = "/tmp/rules.yml"  # noqa: S108
_WEB = "/tmp/web.yml"  # noqa: S108
_PASSWORD = "/tmp/internal_password"  # noqa: S105, S108 - a path, not a password
_CLIENT = "/tmp/client.yml"  # noqa: S108 - promtool's and amtool's own basic_auth
_ALERTMANAGER_CONFIG = "/tmp/alertmanager.yml"  # noqa: S108
_WEBHOOK_URL = "/tmp/webhook_url"  # noqa: S108


def internal_password(console_auth: str) -> str:
    """The internal user's password, derived from the console credentials (HMAC-SHA256): one
    credential to set and rotate."""
    digest = hmac.new(console_auth.encode(), b"taskstack prometheus internal", hashlib.sha256)
    return digest.hexdigest()


def web_config(console_auth: str) -> str:
    """Prometheus's and Alertmanager's `--web.config.file`: every console user, and the internal
    user, each with a bcrypt hash that is the same on every `up` (infra/monitoring.py)."""
    users = dict(pair.partition(":")[::2] for pair in console_auth.split(","))
    users[INTERNAL_USER] = internal_password(console_auth)
    return monitoring.web_config({user: monitoring.bcrypt_hash(pw) for user, pw in users.items()})


@dataclass(frozen=True)
class MonitoringRoles:
    """What the monitoring roles' configuration sets: the rendered files' settings (alert
    thresholds, intervals), where the consoles are published, what Prometheus keeps."""

    rendering: monitoring.MonitoringSettings
    target: Target
    prometheus_port: int
    alertmanager_port: int
    publish_address: str
    retention_days: int
    retention_mb: int
    prometheus_limits: Limits

    @classmethod
    def of(cls, config: StackConfig) -> MonitoringRoles:
        interval = f"{config.scrape_interval_seconds}s"
        return cls(
            rendering=monitoring.MonitoringSettings(
                scrape_interval=interval,
                evaluation_interval=interval,
                queue_depth_floor=config.alert_queue_depth_floor,
                oldest_pending_job_seconds=config.alert_oldest_pending_job_seconds,
                job_failure_ratio=config.alert_job_failure_ratio,
                job_failure_min_finished=config.alert_job_failure_min_finished,
                api_5xx_ratio=config.alert_api_5xx_ratio,
                api_5xx_min_requests=config.alert_api_5xx_min_requests,
                api_latency_p99_seconds=config.alert_api_latency_p99_seconds,
                outbox_oldest_seconds=config.alert_outbox_oldest_seconds,
                wal_archive_behind_seconds=config.alert_wal_archive_behind_seconds,
                backup_full_age_hours=config.alert_backup_full_age_hours,
            ),
            target=config.target,
            prometheus_port=config.prometheus_port,
            alertmanager_port=config.alertmanager_port,
            publish_address=config.publish_address,
            retention_days=config.prometheus_retention_days,
            retention_mb=config.prometheus_retention_mb,
            prometheus_limits=Limits(config.prometheus_memory_mb, "0.5"),
        )


def _write(path: str, env: str) -> str:
    return f'printf "%s\\n" "${env}" > {path}'


def _start(plain: Mapping[str, str], secret: Mapping[str, SecretKey], server: Sequence[str]) -> str:
    """A shell script: write each file (path -> the variable holding it; secrets: path -> the
    secret file it is copied from), then exec the server. Owner-only files (umask 077)."""
    lines = ["umask 077", *(_write(path, env) for path, env in plain.items())]
    lines += [f"cat {SECRETS_DIR}/{key} > {path}" for path, key in secret.items()]
    return "; ".join([*lines, "exec " + " ".join(server)])


def _service(
    role: MonitoringRole,
    shared: Shared,
    plain_env: Mapping[str, str],
    server: Sequence[str],
    files: Mapping[str, str],
    secret_files: Mapping[str, SecretKey],
) -> Service:
    """A role whose image's entrypoint is its server: a shell writes the files, then runs it."""
    return Service(
        role=role,
        image=role,
        entrypoint=("sh", "-c"),
        # Its credentials are read from their files by the script itself.
        command=(_start(files, secret_files, server),),
        env=plain_env,
        user=MONITORING_USER,
        networks=(NetworkAttachment("app", (role,)),),
        hardening=shared.hardening,
        restart=shared.restart,
        labels=shared.labels(role),
        tmpfs=PRIVATE_TMP,
        file_secrets=FileSecrets(files={key: key for key in secret_files.values()}),
        max_processes=MONITORING_MAX_PROCESSES,
    )


def prometheus(
    settings: MonitoringRoles, shared: Shared, auth: pulumi.Output[str] | None
) -> Service:
    internal = monitoring.BasicAuth(INTERNAL_USER, _PASSWORD) if auth is not None else None
    server = [
        "/bin/prometheus",
        f"--config.file={_CONFIG}",
        "--storage.tsdb.path=/prometheus",
        f"--storage.tsdb.retention.time={settings.retention_days}d",
        f"--storage.tsdb.retention.size={settings.retention_mb}MB",
        f"--web.listen-address=:{PROMETHEUS_PORT}",
    ]
    files = {_CONFIG: "PROMETHEUS_CONFIG", _RULES: "PROMETHEUS_RULES"}
    env = {
        "PROMETHEUS_CONFIG": monitoring.prometheus_config(
            settings.rendering,
            settings.target,
            rules_path=_RULES,
            self_auth=internal,
            alertmanager_auth=internal,
        ),
        "PROMETHEUS_RULES": monitoring.alert_rules(settings.rendering),
    }
    secret_files: dict[str, SecretKey] = {}
    check = ["/bin/promtool", "check", "healthy", f"--url=http://127.0.0.1:{PROMETHEUS_PORT}"]
    if auth is not None:
        server.append(f"--web.config.file={_WEB}")
        files[_CLIENT] = "CLIENT_CONFIG"
        env["CLIENT_CONFIG"] = _client_config()
        secret_files = {_WEB: "monitoring_web_config", _PASSWORD: "console_password"}
        check.append(f"--http.config.file={_CLIENT}")
    service = _service("prometheus", shared, env, server, files, secret_files)
    return replace(
        service,
        # Both networks: the exporters are on `data` only.
        networks=(NetworkAttachment("app", ("prometheus",)), NetworkAttachment("data")),
        healthcheck=HealthCheck(
            test=("CMD", *check), interval="10s", timeout="5s", retries=3, start_period="30s"
        ),
        ports=(PublishedPort(PROMETHEUS_PORT, settings.prometheus_port, settings.publish_address),),
        volumes=(VolumeMount("prometheus", "/prometheus"),),
        limits=shared.limits(settings.prometheus_limits),
        stop_grace_seconds=30,  # its TSDB's head is written out on SIGTERM
    )


def alertmanager(
    settings: MonitoringRoles,
    shared: Shared,
    auth: pulumi.Output[str] | None,
    webhook_url: pulumi.Output[str] | None,
) -> Service:
    server = [
        "/bin/alertmanager",
        f"--config.file={_ALERTMANAGER_CONFIG}",
        "--storage.path=/alertmanager",
        f"--web.listen-address=:{ALERTMANAGER_PORT}",
        # One instance: no gossip port.
        "--cluster.listen-address=",
    ]
    files = {_ALERTMANAGER_CONFIG: "ALERTMANAGER_CONFIG"}
    url_file = _WEBHOOK_URL if webhook_url is not None else None
    rendered = monitoring.alertmanager_config(settings.rendering, webhook_url_file=url_file)
    env = {"ALERTMANAGER_CONFIG": rendered}
    secret_files: dict[str, SecretKey] = {}
    if auth is not None:
        server.append(f"--web.config.file={_WEB}")
        secret_files[_WEB] = "monitoring_web_config"
    if webhook_url is not None:
        secret_files[_WEBHOOK_URL] = "alert_webhook_url"
    service = _service("alertmanager", shared, env, server, files, secret_files)
    return replace(
        service,
        ports=(
            PublishedPort(ALERTMANAGER_PORT, settings.alertmanager_port, settings.publish_address),
        ),
        volumes=(VolumeMount("alertmanager", "/alertmanager"),),
        limits=shared.limits(FIXED_LIMITS["alertmanager"]),
    )


def _client_config() -> str:
    return f"basic_auth:\n  username: {INTERNAL_USER}\n  password_file: {_PASSWORD}\n"


def _auth_secrets(auth: pulumi.Output[str]) -> dict[SecretKey, pulumi.Output[str]]:
    web: pulumi.Output[str] = pulumi.Output.secret(auth.apply(web_config))
    password: pulumi.Output[str] = pulumi.Output.secret(auth.apply(internal_password))
    return {"monitoring_web_config": web, "console_password": password}


def monitoring_secrets(credentials: Credentials) -> dict[SecretKey, pulumi.Output[str]]:
    """The monitoring roles' credentials by key, what their secret files hold."""
    secrets: dict[SecretKey, pulumi.Output[str]] = {}
    if credentials.flower_basic_auth is not None:
        secrets.update(_auth_secrets(credentials.flower_basic_auth))
    if credentials.alert_webhook_url is not None:
        secrets["alert_webhook_url"] = credentials.alert_webhook_url
    if credentials.redis_password is not None:
        secrets["redis_exporter_passwords"] = _redis_exporter_passwords(credentials.redis_password)
    return secrets


def _redis_exporter_passwords(password: pulumi.Output[str]) -> pulumi.Output[str]:
    """redis_exporter's password file: a JSON object of address -> password, not a bare one."""
    address = f"redis://{REDIS_ALIAS}:{REDIS_PORT}"
    return pulumi.Output.secret(password.apply(lambda p: json.dumps({address: p})))


def _exporter(role: MonitoringRole, shared: Shared, env: Mapping[str, str], user: str) -> Service:
    return Service(
        role=role,
        image=role,
        command=(),
        env=env,
        user=user,
        # Only PostgreSQL's or Redis's network, where Prometheus reaches it too.
        networks=(NetworkAttachment("data", (role,)),),
        hardening=shared.hardening,
        restart=shared.restart,
        labels=shared.labels(role),
        tmpfs=PRIVATE_TMP,
        limits=shared.limits(FIXED_LIMITS[role]),
        max_processes=MONITORING_MAX_PROCESSES,
    )


def postgres_exporter(shared: Shared, db: str, user: str, password: pulumi.Output[str]) -> Service:
    """As the app's own role (its statistics views are readable by every role): the exporter
    needs no superuser."""
    env = {
        "DATA_SOURCE_URI": f"{POSTGRES_ALIAS}:{POSTGRES_PORT}/{db}?sslmode=disable",
        "DATA_SOURCE_USER": user,
    }
    return replace(
        _exporter("postgres-exporter", shared, env, MONITORING_USER),
        file_secrets=FileSecrets(
            files={"database_password": "database_password"},
            env={"DATA_SOURCE_PASS_FILE": f"{SECRETS_DIR}/database_password"},
        ),
        # The app's role is made by the migration.
        depends_on=("migrate",),
    )


def redis_exporter(shared: Shared, password: pulumi.Output[str] | None) -> Service:
    env = {"REDIS_ADDR": f"redis://{REDIS_ALIAS}:{REDIS_PORT}"}
    service = replace(
        _exporter("redis-exporter", shared, env, REDIS_EXPORTER_USER), depends_on=("redis",)
    )
    if password is None:
        return service
    return replace(
        service,
        file_secrets=FileSecrets(
            files={"redis_exporter_passwords": "redis_exporter_passwords"},
            env={"REDIS_PASSWORD_FILE": f"{SECRETS_DIR}/redis_exporter_passwords"},
        ),
    )
