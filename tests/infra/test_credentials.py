"""Which container receives which credential: each only the ones it uses.

One table, checked against what the program registers for both targets: the environment of each
container (docker) and the secret files of each service (swarm), in dev and prod. A credential
showing up anywhere else (its plain value in any other input) fails too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from infra.config import DEV_ONLY_POSTGRES_PASSWORD
from infra.spec import ROLES, app_role_password
from tests.infra.pulumi_mocks import ProgramRun, container_env
from tests.infra.stacks import PROD_SECRETS, mounted_files, run_stack, swarm

BROKER = {"REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
# Role -> the credential-carrying variables it gets (in prod; dev has no Redis or Flower auth).
CREDENTIALS: Mapping[str, set[str]] = {
    "postgres": {"POSTGRES_PASSWORD"},  # initdb's administrator
    "redis": {"REDISCLI_AUTH"},  # requirepass, and the healthcheck's redis-cli
    "migrate": {
        "DATABASE_URL",
        "ADMIN_DATABASE_URL",
    },  # makes the app role, migrates as it; no broker
    "api": {"DATABASE_URL", *BROKER},
    "worker": {"DATABASE_URL", *BROKER},
    "beat": {"DATABASE_URL", *BROKER},
    "flower": {*BROKER, "FLOWER_BASIC_AUTH"},  # never the database
    "proxy": set(),  # its TLS key and certificate when the stack sets them (none here)
}
# Swarm: the same, as files (a file named like the setting; PostgreSQL and Redis their own names).
FILES: Mapping[str, str] = {
    "POSTGRES_PASSWORD": "postgres_password",
    "REDISCLI_AUTH": "redis_password",
    "FLOWER_BASIC_AUTH": "flower_basic_auth",
}


def _credential_values(stack: str) -> dict[str, str]:
    """Each stack credential's plain value, by a name for the messages."""
    admin = PROD_SECRETS["postgresPassword"] if stack == "prod" else DEV_ONLY_POSTGRES_PASSWORD
    values = {"admin password": admin, "app password": app_role_password(admin, "taskstack")}
    if stack == "prod":
        values["redis password"] = PROD_SECRETS["redisPassword"]
        values["flower password"] = PROD_SECRETS["flowerBasicAuth"].split(":", 1)[1]
    return values


def _expected(role: str, stack: str) -> set[str]:
    expected = set(CREDENTIALS[role])
    if stack == "dev":  # no Redis password, no Flower auth: their variables carry none
        expected -= {"REDISCLI_AUTH", "FLOWER_BASIC_AUTH", *BROKER}
    return expected


def _carrying(env: Mapping[str, str], values: Mapping[str, str]) -> dict[str, set[str]]:
    """Variable -> the credentials its value holds."""
    held = {
        variable: {name for name, value in values.items() if value in text}
        for variable, text in env.items()
    }
    return {variable: names for variable, names in held.items() if names}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_container_receives_only_the_credentials_it_uses(stack: str) -> None:
    run = run_stack(stack)
    values = _credential_values(stack)
    for role in ROLES:
        for container in run.role(role):
            carrying = _carrying(container_env(container), values)
            assert set(carrying) == _expected(role, stack), (container.name, carrying)


def test_the_administrator_password_reaches_postgres_and_the_migration_only(
    prod: ProgramRun,
) -> None:
    admin = PROD_SECRETS["postgresPassword"]
    holders = {
        container.name for container in prod.containers() if admin in json.dumps(container.inputs)
    }
    assert holders == {"postgres", "migrate"}


def test_flower_has_no_database_and_the_migration_no_broker(prod: ProgramRun) -> None:
    assert not {"DATABASE_URL", "ADMIN_DATABASE_URL"} & set(container_env(prod.named("flower")))
    assert not BROKER & set(container_env(prod.named("migrate")))
    redis_password = PROD_SECRETS["redisPassword"]
    assert redis_password not in json.dumps(prod.named("migrate").inputs)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_swarm_service_mounts_only_the_credentials_it_uses(stack: str) -> None:
    run = swarm(stack)
    values = _credential_values(stack)
    for role in ROLES:
        files = mounted_files(run, role)
        expected = {FILES.get(variable, variable.lower()) for variable in _expected(role, stack)}
        held = {name for name, text in files.items() if any(v in text for v in values.values())}
        assert held == expected, (role, sorted(files))
