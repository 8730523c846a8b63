"""How the roles reach PostgreSQL and Redis: the connection URLs, as secrets, and who gets which.

Every target delivers credentials as files under SECRETS_DIR (`Service.file_secrets`), never as
environment variables (which `docker inspect` shows): pydantic-settings reads a file named like a
setting (app/config.py `secrets_dir`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import pulumi

from infra.config import Credentials, StackConfig
from infra.spec.model import SecretKey

# PostgreSQL's administrator (the superuser initdb makes, the image's default name): the migration
# connects as it to make the app's own role, `postgresUser`, which owns its schema and nothing more
# (app/storage/roles.py, docs/infra.md "Database roles"). Only the postgres and migrate containers
# get it.
POSTGRES_ADMIN_USER = "postgres"

POSTGRES_ALIAS = "postgres"
REDIS_ALIAS = "redis"
POSTGRES_PORT = 5432
REDIS_PORT = 6379

# Each role gets only the connections it uses: the database (app role), the administrator (the
# migration), the broker. File name (a setting's name) -> the stack secret it holds.
DATABASE_FILES: Mapping[str, SecretKey] = {"database_url": "database_url"}
ADMIN_DATABASE_FILES: Mapping[str, SecretKey] = {"admin_database_url": "admin_database_url"}
BROKER_FILES: Mapping[str, SecretKey] = {
    "redis_url": "redis_url",
    "celery_broker_url": "redis_url",
    "celery_result_backend": "redis_url",
}


def app_role_password(admin_password: str, role: str) -> str:
    """The app role's password, derived from the administrator's (HMAC-SHA256): one credential to
    set and rotate, and knowing the app's password reveals nothing of the administrator's. The
    migration sets it on the role on every run (app/storage/roles.py)."""
    digest = hmac.new(
        admin_password.encode(), f"taskstack app role {role}".encode(), hashlib.sha256
    )
    return digest.hexdigest()


def _database_url(db: str, user: str, password: pulumi.Output[str]) -> pulumi.Output[str]:
    prefix = f"postgresql+psycopg://{user}:"
    suffix = f"@{POSTGRES_ALIAS}:{POSTGRES_PORT}/{db}"
    return pulumi.Output.secret(password.apply(lambda p: f"{prefix}{quote(p, safe='')}{suffix}"))


def _redis_url(password: pulumi.Output[str] | None) -> pulumi.Output[str]:
    address = f"{REDIS_ALIAS}:{REDIS_PORT}/0"
    if password is None:  # dev runs Redis without a password unless one is set
        return pulumi.Output.secret(f"redis://{address}")
    return pulumi.Output.secret(password.apply(lambda p: f"redis://:{quote(p, safe='')}@{address}"))


@dataclass(frozen=True)
class Connections:
    """The connection URLs (secret Outputs)."""

    database_url: pulumi.Output[str]  # as the app's own role
    admin_database_url: pulumi.Output[str]  # as the administrator
    redis_url: pulumi.Output[str]
    # The app role's own password (the PostgreSQL exporter connects as that role).
    database_password: pulumi.Output[str]

    @classmethod
    def of(cls, config: StackConfig, credentials: Credentials) -> Connections:
        admin_password = credentials.postgres_password
        role, db = config.postgres_user, config.postgres_db
        derived: pulumi.Output[str] = admin_password.apply(lambda p: app_role_password(p, role))
        app_password: pulumi.Output[str] = pulumi.Output.secret(derived)
        return cls(
            database_url=_database_url(db, role, app_password),
            admin_database_url=_database_url(db, POSTGRES_ADMIN_USER, admin_password),
            redis_url=_redis_url(credentials.redis_password),
            database_password=app_password,
        )


def stack_secrets(
    credentials: Credentials, connections: Connections, tls_pem: pulumi.Output[str] | None
) -> dict[SecretKey, pulumi.Output[str]]:
    """Every credential of the stack by key: what the roles' secret files hold."""
    secrets: dict[SecretKey, pulumi.Output[str]] = {
        "postgres_password": credentials.postgres_password,
        "database_url": connections.database_url,
        "admin_database_url": connections.admin_database_url,
        "redis_url": connections.redis_url,
        "database_password": connections.database_password,
    }
    if credentials.redis_password is not None:
        secrets["redis_password"] = credentials.redis_password
    if credentials.flower_basic_auth is not None:
        secrets["flower_basic_auth"] = credentials.flower_basic_auth
    if tls_pem is not None:
        secrets["tls_pem"] = tls_pem
    if credentials.initial_api_key is not None:
        secrets["initial_api_key"] = credentials.initial_api_key
    return secrets
