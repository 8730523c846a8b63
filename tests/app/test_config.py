"""Settings: defaults, normalisation, secrets files and a clear stop on malformed values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings
from tests.app.environment import REPO_ROOT


def test_broker_and_backend_default_to_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache.example:6379/3")
    monkeypatch.delenv("CELERY_BROKER_URL")
    monkeypatch.delenv("CELERY_RESULT_BACKEND")
    settings = Settings()
    assert settings.celery_broker_url == "redis://cache.example:6379/3"
    assert settings.celery_result_backend == "redis://cache.example:6379/3"


def test_plain_postgresql_url_gets_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/app")
    assert Settings().database_url == "postgresql+psycopg://u:p@db:5432/app"


def test_secrets_directory_files_set_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL")
    (tmp_path / "database_url").write_text("postgresql://app:from-file@db:5432/app\n")
    settings = Settings(_secrets_dir=tmp_path)
    assert settings.database_url == "postgresql+psycopg://app:from-file@db:5432/app"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JOB_WORK_SECONDS", "soon"),
        ("DATABASE_URL", "mysql://db/app"),
        ("REDIS_URL", "http://redis"),
        ("READINESS_TIMEOUT_SECONDS", "-1"),
        ("FLOWER_BASIC_AUTH", "admin"),
    ],
)
def test_malformed_setting_stops_the_process_naming_the_variable(variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from app.config import get_settings; get_settings()"],
        env=os.environ | {variable: value},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert f"Invalid setting {variable}:" in result.stderr
    assert "Traceback" not in result.stderr


def test_api_refuses_to_start_with_a_malformed_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import app.main"],
        env=os.environ | {"VISIBILITY_TIMEOUT_SECONDS": "an hour"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Invalid setting VISIBILITY_TIMEOUT_SECONDS:" in result.stderr
