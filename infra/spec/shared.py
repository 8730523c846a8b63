"""What every role is made of: its user, labels, private /tmp, process bound and prod limits.

`Shared` is the slice of the configuration every role builder reads (the stack, prod or not, the
restart policy); each role family's module adds the slice of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.config import SECRETS_DIR as APP_SECRETS_DIR
from infra.config import RestartPolicy, StackConfig
from infra.spec.model import Hardening, Limits, PublishedPort, Role

# Where a secret store (Swarm) mounts credentials: the directory the app reads them from.
SECRETS_DIR = str(APP_SECRETS_DIR)

# The image contract (docs/architecture.md): app code runs as app, 10001:10001. The postgres and
# redis images run as their own uid 999; starting them as that user skips the entrypoints' root-only
# chown/setpriv step, so no capability has to be added back after dropping them all.
APP_USER = "10001:10001"
DATA_USER = "999:999"
# The haproxy image's own user (its contract: uid/gid 99).
PROXY_USER = "99:99"

LABEL_STACK = "com.taskstack.stack"
LABEL_ROLE = "com.taskstack.role"
LABEL_MANAGED_BY = "com.taskstack.managed-by"

# Small processes get fixed prod limits; the four that matter are set per stack (config).
FIXED_LIMITS: Mapping[Role, Limits] = {
    "migrate": Limits(256, "0.5"),
    "beat": Limits(256, "0.25"),
    "flower": Limits(256, "0.5"),
    "proxy": Limits(256, "1.0"),
    "alertmanager": Limits(128, "0.25"),
    "postgres-exporter": Limits(128, "0.25"),
    "redis-exporter": Limits(64, "0.25"),
}
PRIVATE_TMP = {"/tmp": "rw,noexec,nosuid,nodev,size=64m,mode=1777"}  # noqa: S108 - a private tmpfs

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
# The monitoring roles: one Go process each, with its threads (Prometheus, Alertmanager and the
# PostgreSQL exporter share nobody's uid).
MONITORING_MAX_PROCESSES = 256


@dataclass(frozen=True)
class Shared:
    """What every role reads: the stack's name, whether it is prod, the restart policy."""

    stack: str
    prod: bool
    restart: RestartPolicy

    @classmethod
    def of(cls, config: StackConfig, stack: str) -> Shared:
        return cls(stack=stack, prod=config.is_prod, restart=config.restart_policy)

    def labels(self, role: str) -> dict[str, str]:
        return {LABEL_STACK: self.stack, LABEL_ROLE: role, LABEL_MANAGED_BY: "pulumi"}

    @property
    def hardening(self) -> Hardening:
        prod = self.prod
        return Hardening(
            read_only_rootfs=prod, no_new_privileges=prod, cap_drop=("ALL",) if prod else ()
        )

    def limits(self, limits: Limits) -> Limits | None:
        """`limits` in prod; dev runs without."""
        return limits if self.prod else None

    def dev_port(self, internal: int, external: int) -> tuple[PublishedPort, ...]:
        # Dev only, on loopback: a developer's client reaches the database; prod publishes none.
        local = PublishedPort(internal, external, "127.0.0.1", local_only=True)
        return () if self.prod else (local,)
