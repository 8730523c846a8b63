"""The app's PostgreSQL role, made by the migration (app/storage/roles.py): not a superuser, no
CREATEDB or CREATEROLE, owner of its schema and of the tables the migrations create, and nothing
more."""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from app.storage.roles import AppRoleError, ensure_app_role, scram_verifier
from tests.app.environment import PG_ADMIN_DSN, REPO_ROOT, admin_execute


@dataclass(frozen=True)
class RoleDatabase:
    role: str
    database: str

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"

    @property
    def app_url(self) -> str:
        return f"postgresql+psycopg://{self.role}:app-password-1234@127.0.0.1:5432/{self.database}"


@pytest.fixture
def role_database() -> Iterator[RoleDatabase]:
    """A fresh database and a role name no other run uses (roles are cluster-wide)."""
    token = secrets.token_hex(6)
    made = RoleDatabase(role=f"taskstack_role_{token}", database=f"taskstack_roles_{token}")
    admin_execute(f'CREATE DATABASE "{made.database}"')
    yield made
    admin_execute(f'DROP DATABASE IF EXISTS "{made.database}" WITH (FORCE)')
    admin_execute(f'DROP ROLE IF EXISTS "{made.role}"')


def _migrate(made: RoleDatabase) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=os.environ | {"DATABASE_URL": made.app_url, "ADMIN_DATABASE_URL": made.admin_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout + completed.stderr


def _query(database: str, statement: str, *params: object) -> list[tuple[object, ...]]:
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    with psycopg.connect(dsn) as connection:
        return connection.execute(statement.encode(), params).fetchall()


def test_the_migration_makes_an_unprivileged_role_that_owns_its_schema_and_tables(
    role_database: RoleDatabase,
) -> None:
    _migrate(role_database)
    role, database = role_database.role, role_database.database
    (flags,) = _query(
        database,
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin"
        " FROM pg_roles WHERE rolname = %s",
        role,
    )
    assert flags == (False, False, False, False, False, True)
    # Its password is stored as a SCRAM verifier, never in clear.
    ((password,),) = _query(database, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", role)
    assert str(password).startswith("SCRAM-SHA-256$4096:")
    # Its own schema, and every table the migrations made is in it and owned by it.
    ((schema_owner,),) = _query(
        database, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s", role
    )
    assert schema_owner == role
    tables = _query(
        database,
        "SELECT schemaname, tablename, tableowner FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    assert sorted(tables) == [
        (role, name, role)
        for name in (
            "alembic_version",
            "api_keys",
            "backup_status",
            "idempotency_keys",
            "jobs",
            "outbox",
        )
    ]
    # Nothing else: it owns no database and no other schema.
    assert (
        _query(database, "SELECT datname FROM pg_database WHERE datdba::regrole::text = %s", role)
        == []
    )
    assert _query(
        database, "SELECT nspname FROM pg_namespace WHERE nspowner::regrole::text = %s", role
    ) == [(role,)]
    # Read-only statistics, for the WAL archive's gauges (docs/backup.md); no other membership.
    members = _query(
        database,
        "SELECT roleid::regrole::text FROM pg_auth_members WHERE member::regrole::text = %s",
        role,
    )
    assert members == [("pg_monitor",)]


def test_the_role_cannot_create_databases_roles_or_objects_in_public(
    role_database: RoleDatabase,
) -> None:
    _migrate(role_database)
    dsn = f"postgresql://{role_database.role}@127.0.0.1:5432/{role_database.database}"
    for statement in (
        "CREATE DATABASE taskstack_should_not_exist",
        "CREATE ROLE taskstack_should_not_exist",
        "CREATE TABLE public.should_not_exist (id int)",
    ):
        with (
            psycopg.connect(dsn, autocommit=True) as connection,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            connection.execute(statement.encode())
    # What the app does works: its unqualified names resolve to its own schema.
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_a_second_migration_changes_nothing_and_keeps_the_role_unprivileged(
    role_database: RoleDatabase,
) -> None:
    _migrate(role_database)
    # Someone granted it more since: the next migration takes it back.
    admin_execute(f'ALTER ROLE "{role_database.role}" CREATEDB CREATEROLE')
    _migrate(role_database)
    (flags,) = _query(
        role_database.database,
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
        role_database.role,
    )
    assert flags == (False, False, False)


def test_the_app_role_may_not_be_the_administrator(role_database: RoleDatabase) -> None:
    with pytest.raises(AppRoleError, match="both connect as postgres"):
        ensure_app_role(role_database.admin_url, role_database.admin_url)


def test_the_bootstrap_superuser_is_refused_with_the_way_out(role_database: RoleDatabase) -> None:
    """An older stack's app connected as the superuser PostgreSQL was initialised with (here the
    machine's `postgres`): it cannot be demoted, and the error says where the way out is."""
    other_admin = f"{role_database.role}_admin"
    admin_execute(f'CREATE ROLE "{other_admin}" SUPERUSER LOGIN')
    try:
        with pytest.raises(AppRoleError, match="cannot be demoted"):
            ensure_app_role(
                f"postgresql://{other_admin}@127.0.0.1:5432/{role_database.database}",
                f"postgresql://postgres:pw@127.0.0.1:5432/{role_database.database}",
            )
    finally:
        admin_execute(f'DROP ROLE IF EXISTS "{other_admin}"')


def test_the_scram_verifier_has_postgresqls_form() -> None:
    """The rehearsed stacks log in with it over TCP (scram-sha-256): tests/e2e."""
    verifier = scram_verifier("correct horse", salt=b"0123456789abcdef")
    head, keys = verifier.split("$", 1)[1].split("$")
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert head == "4096:MDEyMzQ1Njc4OWFiY2RlZg=="
    assert [len(part) for part in keys.split(":")] == [44, 44]
    assert verifier != scram_verifier("correct horse")  # a fresh salt each time
