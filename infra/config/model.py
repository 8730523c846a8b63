"""Every `taskstack:*` key a stack may set, typed and validated: `StackConfig`.

Each key is a field (camelCase alias = Pulumi key); a validator per rule, and the rules that tie
keys together (`_cross_key_rules`). `Pulumi.yaml` declares the same keys with the same defaults
(tests/infra/test_config.py holds them together).
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator
from pydantic.alias_generators import to_camel

from app.config import MAX_REQUEST_BODY_BYTES
from infra.config.backup_rules import backup_rules
from infra.config.formats import (
    CPUS,
    IDENTIFIER,
    NODE_LABEL,
    PINNED_IMAGE,
    REPOSITORY,
    TAG,
    positive_below,
    provider_cpus,
)

PROJECT = "taskstack"

Environment = Literal["dev", "prod"]
Target = Literal["docker", "swarm"]
RestartPolicy = Literal["no", "on-failure", "always", "unless-stopped"]
Platform = Literal["linux/amd64", "linux/arm64"]
EndpointMode = Literal["vip", "dnsrr"]
PublishMode = Literal["ingress", "host"]
UpdateOrder = Literal["start-first", "stop-first"]
# What the proxy logs: every request, or only the abnormal ones (HAProxy's `dontlog-normal`).
ProxyAccessLog = Literal["all", "errors", "off"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["json", "text"]
# Where pgBackRest keeps its repository: a named volume on the engine's host, a host directory
# (another disk, a network mount) bound into the database's and the backup role's containers, or
# a repository host: a role of its own that the others reach over TLS, on a swarm on another node.
BackupRepository = Literal["volume", "host-path", "repository-host"]
Port = Annotated[int, Field(ge=1, le=65535)]

# App settings (`app.config.Settings` fields, as environment variables) a stack may pass through
# `appEnv`; tests/infra/test_app_contract.py holds each to a field. The connection URLs,
# BEAT_SCHEDULE_PATH, WORKER_HEARTBEAT_PATH and FLOWER_BASIC_AUTH are the program's own.
APP_ENV_KEYS = frozenset(
    {
        "JOB_WORK_SECONDS",
        "JOB_MAX_RETRIES",
        "VISIBILITY_TIMEOUT_SECONDS",
        "REAPER_INTERVAL_SECONDS",
        "REAPER_STALE_AFTER_SECONDS",
        "JOB_RETENTION_DAYS",
        "PURGE_INTERVAL_SECONDS",
        "WORKER_HEARTBEAT_SECONDS",
        "READINESS_TIMEOUT_SECONDS",
    }
)


class StackConfig(BaseModel):
    """Every `taskstack:*` configuration key, typed and validated. Defaults equal Pulumi.yaml's."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    environment: Environment = "prod"
    target: Target = "docker"

    postgres_image: str = "postgres:17"
    redis_image: str = "redis:8"
    app_image_name: str = "taskstack-app"
    app_image_tag: str = ""  # empty: the stack name
    platform: Platform = "linux/amd64"

    publish_address: str = "127.0.0.1"
    api_port: Port = 8000
    flower_port: Port = 5555
    postgres_host_port: Port = 15432
    redis_host_port: Port = 16379

    postgres_user: str = "taskstack"
    postgres_db: str = "taskstack"

    # uvicorn processes per API copy: one per CPU of `api_cpus` (more processes than CPUs in a copy
    # only contend: docs/bench.md, "The front door's cost"); scale out with `api_replicas`.
    api_workers: PositiveInt = 1
    api_access_log: bool = False
    # API copies behind the proxy, on both targets: a new image replaces them one at a time while
    # the others answer, so prod needs two at least (`_cross_key_rules`).
    api_replicas: PositiveInt = 2

    # The front door (infra/proxy.py, docs/infra.md "The front door"): HAProxy owns the API port.
    proxy_image: str = "haproxy:3.0"
    # Seconds a client has to send a whole request (headers and body); a slower one gets 408.
    proxy_request_timeout_seconds: Annotated[int, Field(ge=1, le=300)] = 10
    # Largest request body the proxy passes on (413 beyond): by default the app's own cap.
    proxy_max_body_kb: Annotated[int, Field(ge=1, le=102400)] = MAX_REQUEST_BODY_BYTES // 1024
    # "errors" logs what an operator looks for (errors, timeouts, aborts, retries, redispatches,
    # 5xx, requests the proxy refused); "all", a line per request, has a cost measured in
    # docs/bench.md ("The front door's cost").
    proxy_access_log: ProxyAccessLog = "errors"
    worker_replicas: PositiveInt = 2
    worker_concurrency: PositiveInt = 2
    # Celery's own default: INFO writes two lines per job through the engine's log pipeline (what
    # that costs the drain: docs/bench.md, "What was changed for speed"); dev keeps INFO.
    worker_log_level: LogLevel = "WARNING"
    worker_stop_grace_seconds: PositiveInt = 60
    # The workers' and Flower's CPU weight (Docker's cpu-shares; the others have 1024): when the
    # CPUs are all busy, requests go first (docs/infra.md). Target docker only.
    background_cpu_shares: Annotated[int, Field(ge=2, le=1024)] = 256
    wait_timeout_seconds: PositiveInt = 120
    restart_policy: RestartPolicy = "unless-stopped"
    log_max_size_mb: PositiveInt = 10
    log_max_files: PositiveInt = 3

    api_memory_mb: PositiveInt = 512
    api_cpus: str = "1.0"
    worker_memory_mb: PositiveInt = 1024
    worker_cpus: str = "1.0"
    postgres_memory_mb: PositiveInt = 1024
    postgres_cpus: str = "1.0"
    redis_memory_mb: PositiveInt = 512
    redis_cpus: str = "0.5"

    # API keys (docs/app.md, "API keys"): every endpoint but the health checks needs one.
    api_keys_required: bool = True
    # /docs, /redoc and /openapi.json: off unless turned on.
    api_docs: bool = False
    # Each key's limits unless it has its own: requests a second (stack-wide) and its burst, and
    # requests at once per API process; beyond them, 429 with Retry-After.
    api_key_rate_per_second: Annotated[float, Field(gt=0, le=1_000_000)] = 100.0
    api_key_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    api_key_max_concurrent: Annotated[int, Field(ge=1, le=10_000)] = 16
    # The front door's fence per client (its key, or its address without one): requests in flight
    # at once through the proxy; beyond it, 429 at the door, so one client's flood never queues
    # in front of another's requests.
    proxy_client_max_concurrent: Annotated[int, Field(ge=1, le=100_000)] = 64

    app_env: tuple[str, ...] = ()
    # The app's log lines: JSON (one schema for every role, docs/observability.md) or text.
    log_format: LogFormat = "json"
    # Where the app's roles send OpenTelemetry traces (OTLP over HTTP); empty: none are exported.
    otlp_endpoint: str = ""

    # Monitoring (docs/observability.md): Prometheus, Alertmanager and the two exporters.
    monitoring: bool = True
    prometheus_image: str = "prom/prometheus:v2.53.3"
    alertmanager_image: str = "prom/alertmanager:v0.28.1"
    postgres_exporter_image: str = "quay.io/prometheuscommunity/postgres-exporter:v0.17.1"
    redis_exporter_image: str = "oliver006/redis_exporter:v1.69.0"
    prometheus_port: Port = 9090
    alertmanager_port: Port = 9093
    scrape_interval_seconds: Annotated[int, Field(ge=1, le=300)] = 15
    # What Prometheus keeps on its volume: the older of the two bounds wins.
    prometheus_retention_days: Annotated[int, Field(ge=1, le=3650)] = 15
    prometheus_retention_mb: Annotated[int, Field(ge=64, le=10_000_000)] = 4096
    prometheus_memory_mb: Annotated[int, Field(ge=128)] = 512
    # Alert thresholds (docs/observability.md, "Alerts").
    alert_queue_depth_floor: Annotated[int, Field(ge=0)] = 100
    alert_oldest_pending_job_seconds: PositiveInt = 300
    alert_job_failure_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.05
    alert_job_failure_min_finished: Annotated[int, Field(ge=0)] = 20
    alert_api_5xx_ratio: Annotated[float, Field(gt=0, lt=1, alias="alertApi5xxRatio")] = 0.01
    alert_api_5xx_min_requests: Annotated[int, Field(ge=0, alias="alertApi5xxMinRequests")] = 100
    alert_api_latency_p99_seconds: Annotated[float, Field(gt=0)] = 1.0
    alert_outbox_oldest_seconds: PositiveInt = 30

    # Continuous archiving and backups with pgBackRest (docs/backup.md).
    backup: bool = True
    backup_repository: BackupRepository = "volume"
    backup_repository_path: str = ""
    # swarm, backupRepository repository-host: the node labels the repository host is pinned to
    # (its volume lives there); a node other than PostgreSQL's.
    backup_repository_node_labels: tuple[str, ...] = ("taskstack.backup=true",)
    # A segment is closed at most this long after its first commit (archive_timeout) and pushed at
    # once: below 60 s, so that a commit is in the repository within the minute prod promises.
    wal_archive_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 50
    backup_full_interval_hours: Annotated[int, Field(ge=1, le=24 * 31)] = 24
    backup_diff_interval_hours: Annotated[int, Field(ge=1, le=24 * 31)] = 4
    # Full backups kept; the WAL that the oldest of them needs is kept with it: this many days of
    # point-in-time recovery at the default interval.
    backup_retention_full: Annotated[int, Field(ge=1, le=1000)] = 7
    backup_check_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    # A declared restore: "latest" (the end of the archived WAL) or a time with its offset. It
    # happens only into an empty data volume; `postgresVolumeGeneration` gives a fresh one.
    restore_target: str = ""
    # The timeline a restore to a time follows: "latest" (the newest branch, as PostgreSQL does),
    # "current" (the backup's: redo a restore on the history an earlier restore branched from), or
    # a timeline number.
    restore_timeline: str = "latest"
    postgres_volume_generation: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    # How long PostgreSQL may take to restore and replay before the stack gives up on it.
    restore_timeout_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 60
    alert_wal_archive_behind_seconds: PositiveInt = 300
    alert_backup_full_age_hours: PositiveInt = 26

    # target swarm only (docs/swarm.md); a docker stack accepts and ignores them.
    postgres_node_labels: tuple[str, ...] = ("taskstack.postgres=true",)
    redis_node_labels: tuple[str, ...] = ("taskstack.redis=true",)
    endpoint_mode: EndpointMode = "vip"
    publish_mode: PublishMode = "ingress"
    update_parallelism: PositiveInt = 1
    update_delay_seconds: Annotated[int, Field(ge=0, le=3600)] = 10
    update_monitor_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    api_update_order: UpdateOrder = "start-first"
    # IPsec between nodes for the overlays' traffic; off only where the kernel cannot do it.
    overlay_encryption: bool = True
    # Seconds Swarm waits before restarting a task that exited (its restart policy's delay).
    restart_delay_seconds: Annotated[int, Field(ge=0, le=3600)] = 5
    # Each service's reservation as a share of its limits (docs/swarm.md).
    reservation_percent: Annotated[int, Field(ge=0, le=100)] = 25
    # Proxy tasks. Host-published, a node runs one at most: as many as nodes lets a client use
    # any node's address (the three-node rehearsal runs three).
    proxy_replicas: PositiveInt = 1

    @field_validator(
        "postgres_image",
        "redis_image",
        "proxy_image",
        "prometheus_image",
        "alertmanager_image",
        "postgres_exporter_image",
        "redis_exporter_image",
    )
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        if not PINNED_IMAGE.match(value) or value.endswith(":latest"):
            raise ValueError("must be an image reference pinned to a tag or digest, not :latest")
        return value

    @field_validator("app_image_name")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not REPOSITORY.match(value):
            raise ValueError("must be a lowercase image repository name without a tag")
        return value

    @field_validator("app_image_tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if value and not TAG.match(value):
            raise ValueError("must be a valid image tag (letters, digits, '_', '.', '-')")
        return value

    @field_validator("publish_address")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError("must be an IPv4 address such as 127.0.0.1 or 0.0.0.0") from None
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/]+(?:/\S*)?$", value):
            raise ValueError("must be empty or an http(s) URL such as http://collector:4318")
        return value

    @field_validator("restore_target")
    @classmethod
    def _restore_target(cls, value: str) -> str:
        if value in ("", "latest"):
            return value
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise ValueError(
                'must be empty, "latest", or a time with its offset such as '
                "2026-12-07T10:00:00+00:00"
            )
        # pgBackRest's --target, as PostgreSQL's recovery_target_time reads it.
        return moment.isoformat(sep=" ")

    @field_validator("restore_timeline")
    @classmethod
    def _restore_timeline(cls, value: str) -> str:
        if value not in ("latest", "current") and not (value.isdigit() and int(value) > 0):
            raise ValueError('must be "latest", "current" or a timeline number such as 2')
        return value

    @field_validator("backup_repository_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if value and (not value.startswith("/") or any(c in value for c in ":,\n")):
            raise ValueError("must be an absolute host path such as /mnt/backups/taskstack")
        return value

    @field_validator("postgres_user", "postgres_db")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError("must be a lowercase SQL identifier (a-z, 0-9, _; 63 chars at most)")
        return value

    @field_validator("api_cpus", "worker_cpus", "postgres_cpus", "redis_cpus")
    @classmethod
    def _cpus(cls, value: str) -> str:
        if not CPUS.match(value) or float(value) <= 0:
            raise ValueError("must be a positive number of CPUs such as 0.5 or 2")
        read_back = provider_cpus(value)
        if Decimal(read_back) != Decimal(value):
            raise ValueError(
                f"the docker provider reads {value} back as {read_back}: every pulumi up would "
                "replace the container; use a value such as 0.25, 0.5, 1.5 or 2"
            )
        # The form the provider reads back (`cpus` forces a new container: docs/infra.md).
        return read_back

    @field_validator(
        "app_env",
        "postgres_node_labels",
        "redis_node_labels",
        "backup_repository_node_labels",
        mode="before",
    )
    @classmethod
    def _decode_json_array(cls, value: Any) -> Any:
        # The CLI hands arrays to the program as JSON text.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("must be a JSON array of strings") from None
        return value

    @field_validator("postgres_node_labels", "redis_node_labels", "backup_repository_node_labels")
    @classmethod
    def _node_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # The data services keep their volume on one node: an empty list would let Swarm move them
        # to a node without their data.
        if not value:
            raise ValueError("must name at least one node label (the data volume is node-local)")
        for entry in value:
            if not NODE_LABEL.match(entry):
                raise ValueError(f"entry {entry!r} must be a node label as key=value")
        return value

    @field_validator("app_env")
    @classmethod
    def _app_env_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            name, sep, _ = entry.partition("=")
            if not sep or name not in APP_ENV_KEYS:
                allowed = ", ".join(sorted(APP_ENV_KEYS))
                raise ValueError(f"entry {entry!r} must be NAME=value with NAME one of {allowed}")
            if name == "WORKER_HEARTBEAT_SECONDS" and not positive_below(entry, 60):
                # The worker healthcheck is `find -mmin -1`: a heartbeat must land every minute.
                raise ValueError("WORKER_HEARTBEAT_SECONDS must be a whole number from 1 to 59")
        return value

    @model_validator(mode="after")
    def _cross_key_rules(self) -> StackConfig:
        published = {"apiPort": self.api_port, "flowerPort": self.flower_port}
        if self.monitoring:
            published |= {
                "prometheusPort": self.prometheus_port,
                "alertmanagerPort": self.alertmanager_port,
            }
        if self.environment == "dev":
            published |= {
                "postgresHostPort": self.postgres_host_port,
                "redisHostPort": self.redis_host_port,
            }
        seen: dict[int, str] = {}
        for key, port in published.items():
            if port in seen:
                raise ValueError(f"{key}: port {port} is already used by {seen[port]}")
            seen[port] = key
        if self.environment == "prod" and self.api_replicas < 2:
            # One copy cannot be replaced without a gap: the proxy needs another to send to.
            raise ValueError(
                "apiReplicas: a prod stack runs 2 API copies at least, so that a deployment "
                "replaces one while the other answers"
            )
        backup_rules(self)
        if self.endpoint_mode == "dnsrr" and self.publish_mode == "ingress":
            # Swarm rejects the pair: the routing mesh balances over a virtual IP.
            raise ValueError(
                "publishMode: ingress publishing needs endpointMode vip; with dnsrr use host"
            )
        return self

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"
