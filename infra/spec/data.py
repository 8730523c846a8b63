"""The data roles: PostgreSQL and Redis, each with its volume, on the data network only."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import pulumi

from infra.config import StackConfig
from infra.spec.connections import (
    POSTGRES_ADMIN_USER,
    POSTGRES_ALIAS,
    POSTGRES_PORT,
    REDIS_ALIAS,
    REDIS_PORT,
)
from infra.spec.model import (
    FileSecrets,
    HealthCheck,
    Limits,
    NetworkAttachment,
    Service,
    VolumeMount,
)
from infra.spec.shared import DATA_MAX_PROCESSES, DATA_USER, PRIVATE_TMP, SECRETS_DIR, Shared

# Redis refuses writes (`OOM command not allowed`) beyond this share of its container's memory,
# rather than being killed by the kernel: the API answers such a refusal with 503. The rest is
# headroom for the copy-on-write of an append-only-file rewrite and for client buffers.
REDIS_MAXMEMORY_SHARE = 0.75

DataRole = Literal["postgres", "redis"]


@dataclass(frozen=True)
class DataSettings:
    """What a data role's configuration sets: its dev port, its prod limits, and the nodes it is
    pinned to (its volume lives there)."""

    host_port: int
    limits: Limits
    node_labels: tuple[str, ...]

    @classmethod
    def postgres(cls, config: StackConfig) -> DataSettings:
        limits = Limits(config.postgres_memory_mb, config.postgres_cpus)
        return cls(config.postgres_host_port, limits, config.postgres_node_labels)

    @classmethod
    def redis(cls, config: StackConfig) -> DataSettings:
        limits = Limits(config.redis_memory_mb, config.redis_cpus)
        return cls(config.redis_host_port, limits, config.redis_node_labels)


def _data_service(
    role: DataRole, settings: DataSettings, shared: Shared, alias: str, port: int, data: str
) -> Service:
    """A data role, healthy before anything that needs it is created."""
    return Service(
        role=role,
        image=role,
        command=(),
        env={},
        user=DATA_USER,
        networks=(NetworkAttachment("data", (alias,)),),
        hardening=shared.hardening,
        restart=shared.restart,
        labels=shared.labels(role),
        wait_healthy=True,
        ports=shared.dev_port(port, settings.host_port),
        volumes=(VolumeMount(role, data),),
        tmpfs=PRIVATE_TMP,
        limits=shared.limits(settings.limits),
        node_labels=settings.node_labels,
        max_processes=DATA_MAX_PROCESSES,
    )


def postgres(
    settings: DataSettings, shared: Shared, db: str, password: pulumi.Output[str]
) -> Service:
    user = POSTGRES_ADMIN_USER
    service = _data_service(
        "postgres", settings, shared, POSTGRES_ALIAS, POSTGRES_PORT, "/var/lib/postgresql/data"
    )
    return replace(
        service,
        # initdb makes the administrator and the database (owned by it); the migration makes the
        # app's role. The command is the image's own: postgres.
        env={"POSTGRES_USER": user, "POSTGRES_DB": db},
        # -h 127.0.0.1: during first-start initdb the server listens on the socket only, so a socket
        # probe would report ready before the database is.
        healthcheck=HealthCheck(
            test=("CMD", "pg_isready", "-h", "127.0.0.1", "-U", user, "-d", db),
            interval="5s",
            timeout="5s",
            retries=5,
            start_period="1m0s",
        ),
        tmpfs={**PRIVATE_TMP, "/var/run/postgresql": "rw,noexec,nosuid,nodev,size=16m,mode=1777"},
        # The official image reads the password from a file when POSTGRES_PASSWORD_FILE is set.
        file_secrets=FileSecrets(
            files={"postgres_password": "postgres_password"},
            env={"POSTGRES_PASSWORD_FILE": f"{SECRETS_DIR}/postgres_password"},
        ),
        stop_signal="SIGINT",  # PostgreSQL's fast shutdown, as the official image declares
        stop_grace_seconds=60,
    )


_REDIS_CHECK = "redis-cli ping | grep -q PONG"


def _redis_server(memory_mb: int) -> str:
    """redis-server's arguments: append-only, and a full broker refuses writes (noeviction: an
    evicted key would be a lost task message) instead of growing until it is killed."""
    maxmemory_mb = int(memory_mb * REDIS_MAXMEMORY_SHARE)
    return (
        f"redis-server --appendonly yes --maxmemory {maxmemory_mb}mb --maxmemory-policy noeviction"
    )


def _redis_check(test: str) -> HealthCheck:
    return HealthCheck(
        test=("CMD-SHELL", test), interval="5s", timeout="5s", retries=5, start_period="30s"
    )


def redis(settings: DataSettings, shared: Shared, password: pulumi.Output[str] | None) -> Service:
    server = _redis_server(settings.limits.memory_mb)
    service = replace(
        _data_service("redis", settings, shared, REDIS_ALIAS, REDIS_PORT, "/data"),
        command=tuple(server.split()),
        # grep: redis-cli prints an error reply (NOAUTH, LOADING) but may still exit 0.
        healthcheck=_redis_check(_REDIS_CHECK),
        stop_grace_seconds=30,
    )
    if password is None:
        return service
    # From a file: the shell reads it when the process starts, so no resource input holds it (nor
    # the environment, which `docker inspect` shows).
    password_file = f"{SECRETS_DIR}/redis_password"
    return replace(
        service,
        file_secrets=FileSecrets(
            files={"redis_password": "redis_password"},
            command=("sh", "-c", f'exec {server} --requirepass "$(cat {password_file})"'),
            healthcheck=_redis_check(f'REDISCLI_AUTH="$(cat {password_file})" {_REDIS_CHECK}'),
        ),
    )
