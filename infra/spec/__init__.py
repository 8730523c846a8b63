"""One description of the stack, independent of where it runs.

`describe_stack` turns a validated `StackConfig` into plain data (`model.py`): roles, images,
commands, environment (plain and secret parts kept apart), health checks, ports, volumes,
hardening, limits, replicas, placement, rollout and ordering (`Service.depends_on`, which every
target follows). A target renderer (infra/targets/) turns that into resources and adds only what is
its own (how a one-shot is run, how a copy learns its number).

One module per role family, each builder taking the slice of configuration it reads: `data.py`
(PostgreSQL, Redis), `app_roles.py` (migration, API, workers, beat, Flower), `front_door.py` (the
proxy); `shared.py` and `connections.py` hold what they share, `stack.py` the assembly.
"""

from infra.spec.app_roles import (
    API_ALIAS,
    API_BACKLOG,
    API_KEEP_ALIVE_SECONDS,
    API_MAX_CONNECTIONS,
    API_PORT,
    FLOWER_MAX_TASKS,
    WORKER_HEARTBEAT_PATH,
)
from infra.spec.connections import POSTGRES_ADMIN_USER, app_role_password
from infra.spec.model import (
    APP_ROLES,
    BACKUP_ROLES,
    MONITORING_ROLES,
    REPLICA,
    REPOSITORY_ROLES,
    ROLES,
    ClusterSettings,
    HealthCheck,
    LogSettings,
    Network,
    NetworkKey,
    Role,
    SecretKey,
    Service,
    StackDescription,
    Volume,
    VolumeKey,
    in_dependency_order,
)
from infra.spec.shared import (
    APP_MAX_PROCESSES,
    DATA_MAX_PROCESSES,
    FIXED_LIMITS,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_STACK,
    MONITORING_MAX_PROCESSES,
    PROXY_MAX_PROCESSES,
    SECRETS_DIR,
)
from infra.spec.stack import describe_stack

__all__ = [
    "API_ALIAS",
    "API_BACKLOG",
    "API_KEEP_ALIVE_SECONDS",
    "API_MAX_CONNECTIONS",
    "API_PORT",
    "APP_MAX_PROCESSES",
    "APP_ROLES",
    "BACKUP_ROLES",
    "DATA_MAX_PROCESSES",
    "FIXED_LIMITS",
    "FLOWER_MAX_TASKS",
    "LABEL_MANAGED_BY",
    "LABEL_ROLE",
    "LABEL_STACK",
    "MONITORING_MAX_PROCESSES",
    "MONITORING_ROLES",
    "POSTGRES_ADMIN_USER",
    "PROXY_MAX_PROCESSES",
    "REPLICA",
    "REPOSITORY_ROLES",
    "ROLES",
    "SECRETS_DIR",
    "WORKER_HEARTBEAT_PATH",
    "ClusterSettings",
    "HealthCheck",
    "LogSettings",
    "Network",
    "NetworkKey",
    "Role",
    "SecretKey",
    "Service",
    "StackDescription",
    "Volume",
    "VolumeKey",
    "app_role_password",
    "describe_stack",
    "in_dependency_order",
]
