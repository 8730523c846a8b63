"""Private servers for the session, a fresh database and fresh processes for each scenario."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.servers import AppProcesses, PrivatePostgres, PrivateRedis, Stack

# The recovery timings are the SHIPPED defaults (visibility timeout 1 h, reaper every 60 s for
# jobs untouched 10 min, worker heartbeat 2 s, dead after 6 s, outbox relay every 0.5 s): what
# recovers a scenario in seconds is the outbox, worker liveness and the database retry, not a
# shortened window. Only the work per job is short, so that a 1,000-job batch takes seconds.
FAULT_SETTINGS = {
    "JOB_WORK_SECONDS": "0.01",
    "JOB_MAX_RETRIES": "3",
    "JOB_RETRY_BACKOFF_SECONDS": "1",
    "JOB_RETRY_BACKOFF_MAX_SECONDS": "2",
    "READINESS_TIMEOUT_SECONDS": "1",
    "DATABASE_POOL_SIZE": "5",
}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def fault_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="taskstack-faults-"))
    yield directory
    if request.session.testsfailed:
        # The servers' and processes' logs are what explains a failure: keep them.
        print(f"\n[faults] a test failed; logs kept in {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(fault_dir: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(fault_dir / "postgres")
    server.init()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(fault_dir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(fault_dir / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stack(
    postgres: PrivatePostgres, redis_server: PrivateRedis, fault_dir: Path
) -> Iterator[Stack]:
    """A migrated database and an empty Redis; the test starts the API, workers and beat."""
    if redis_server.process is None:  # a previous scenario failed with Redis down
        redis_server.start()
    redis_server.flush()
    database = f"faults_{secrets.token_hex(4)}"
    postgres.execute(f'CREATE DATABASE "{database}"')
    run_dir = fault_dir / database
    run_dir.mkdir()
    env = {
        **os.environ,
        **FAULT_SETTINGS,
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/{database}",
        "REDIS_URL": redis_server.url,
        "CELERY_BROKER_URL": redis_server.url,
        "CELERY_RESULT_BACKEND": redis_server.url,
        "BEAT_SCHEDULE_PATH": str(run_dir / "beat-schedule"),
        "WORKER_HEARTBEAT_PATH": str(run_dir / "worker.heartbeat"),
    }
    processes = AppProcesses(run_dir, env)
    processes.migrate()
    try:
        yield Stack(postgres, redis_server, processes, database)
    finally:
        processes.stop_all()
        postgres.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
