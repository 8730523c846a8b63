"""Which container receives which credential: each only the ones it uses.

One table of secret files, checked against what the program registers for both targets: the
files uploaded for each container (docker, whose environment holds none) and the secret files of
each service (swarm), in dev and prod. A credential showing up anywhere else (its plain value in
any other input) fails too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from infra.config import DEV_ONLY_POSTGRES_PASSWORD
from infra.spec import ROLES, app_role_password
from tests.infra.pulumi_mocks import ProgramRun, container_env
from tests.infra.stacks import (
    PROD_SECRETS,
    mounted_files,
    role_containers,
    run_stack,
    swarm,
    uploaded_files,
)

BROKER = {"redis_url", "celery_broker_url", "celery_result_backend"}
# Role -> the files under /run/secrets that hold a credential, on both targets (in prod; dev has no
# Redis or Flower auth). A file is named like the setting it holds.
CREDENTIALS: Mapping[str, set[str]] = {
    "postgres": {"postgres_password"},  # initdb's administrator
    "redis": {"redis_password"},  # requirepass, and the healthcheck's redis-cli
    "migrate": {"database_url", "admin_database_url"},  # makes the app role, migrates as it
    "api": {"database_url", *BROKER},
    "worker": {"database_url", *BROKER},
    "beat": {"database_url", *BROKER},
    "flower": {*BROKER, "flower_basic_auth"},  # never the database
    "proxy": set(),  # its TLS key and certificate when the stack sets them (none here)
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
    if stack == "dev":  # no Redis password, no Flower auth: their files carry none
        expected -= {"redis_password", "flower_basic_auth", *BROKER}
    return expected


def _carrying(files: Mapping[str, str], values: Mapping[str, str]) -> dict[str, set[str]]:
    """File name -> the credentials its content holds."""
    held = {
        name.rsplit("/", 1)[-1]: {
            credential for credential, value in values.items() if value in text
        }
        for name, text in files.items()
    }
    return {name: credentials for name, credentials in held.items() if credentials}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_container_receives_only_the_credentials_it_uses(stack: str) -> None:
    run = run_stack(stack)
    values = _credential_values(stack)
    for role in ROLES:
        for container in run.role(role):
            assert not _carrying(container_env(container), values), container.name
            carrying = _carrying(uploaded_files(run, container), values)
            assert set(carrying) == _expected(role, stack), (container.name, carrying)


def test_the_administrator_password_reaches_postgres_and_the_migration_only(
    prod: ProgramRun,
) -> None:
    admin = PROD_SECRETS["postgresPassword"]
    holders = {
        container.name
        for container in role_containers(prod)
        if admin in json.dumps([container.plain, uploaded_files(prod, container)])
    }
    assert holders == {"postgres", "migrate"}


def test_flower_has_no_database_and_the_migration_no_broker(prod: ProgramRun) -> None:
    flower = {path.rsplit("/", 1)[-1] for path in uploaded_files(prod, prod.named("flower"))}
    migrate = {path.rsplit("/", 1)[-1] for path in uploaded_files(prod, prod.named("migrate"))}
    assert flower
    assert not {"database_url", "admin_database_url"} & flower
    assert migrate
    assert not BROKER & migrate
    redis_password = PROD_SECRETS["redisPassword"]
    assert redis_password not in json.dumps(uploaded_files(prod, prod.named("migrate")))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_swarm_service_mounts_only_the_credentials_it_uses(stack: str) -> None:
    run = swarm(stack)
    values = _credential_values(stack)
    for role in ROLES:
        files = mounted_files(run, role)
        held = {name for name, text in files.items() if any(v in text for v in values.values())}
        assert held == _expected(role, stack), (role, sorted(files))
