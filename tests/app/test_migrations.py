"""Alembic: the round trip matches the models, and concurrent upgrades are safe."""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from app.storage.db import alembic_head
from tests.app.environment import REPO_ROOT, admin_execute


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"taskstack_migrations_{secrets.token_hex(6)}"
    admin_execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic(database_url: str, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "alembic", *arguments],
        cwd=REPO_ROOT,
        env=os.environ | {"DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_alembic(database_url: str, *arguments: str) -> str:
    process = alembic(database_url, *arguments)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    return output


def schema_of(database_url: str) -> tuple[set[str], set[str], str | None]:
    """Tables, enum types and the recorded Alembic revision."""
    with psycopg.connect(database_url) as connection:
        tables = {
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        types = {
            row[0]
            for row in connection.execute(
                "SELECT typname FROM pg_type t"
                " JOIN pg_namespace n ON n.oid = t.typnamespace"
                " WHERE n.nspname = 'public' AND t.typtype = 'e'"
            )
        }
        version = None
        if "alembic_version" in tables:
            version = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        return tables, types, version[0] if version else None


def test_upgrade_check_downgrade_upgrade(empty_database: str) -> None:
    run_alembic(empty_database, "upgrade", "head")
    assert schema_of(empty_database) == (
        {"alembic_version", "jobs", "outbox", "idempotency_keys", "api_keys", "backup_status"},
        {"job_status"},
        alembic_head(),
    )
    # No drift between the models and the migrations.
    assert "No new upgrade operations detected" in run_alembic(empty_database, "check")

    run_alembic(empty_database, "downgrade", "base")
    assert schema_of(empty_database) == ({"alembic_version"}, set(), None)

    run_alembic(empty_database, "upgrade", "head")
    assert schema_of(empty_database)[2] == alembic_head()


def test_two_concurrent_upgrades_both_succeed(empty_database: str) -> None:
    runs = [alembic(empty_database, "upgrade", "head") for _ in range(2)]
    for run in runs:
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output
    assert schema_of(empty_database) == (
        {"alembic_version", "jobs", "outbox", "idempotency_keys", "api_keys", "backup_status"},
        {"job_status"},
        alembic_head(),
    )
