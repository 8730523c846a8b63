"""Per-run isolation and a real Celery worker.

At import (before `app` reads its settings) this picks a fresh database name and an empty Redis db
number and points the environment at them; the session fixtures create the database, migrate it,
start `celery -A app.worker worker` as a subprocess and remove everything at the end.
"""

import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_HOST_URL = "redis://127.0.0.1:6379"
CLAIM_KEY = "taskstack:test-run"


def _claim_empty_redis_db() -> int:
    """An empty Redis db number, claimed with a marker key so a parallel run picks another."""
    for number in random.sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{REDIS_HOST_URL}/{number}")
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, os.getpid(), nx=True, ex=3600):
                return number
        finally:
            client.close()
    raise RuntimeError("no empty Redis db among 1-15 on 127.0.0.1:6379")


RUN_DIR = Path(tempfile.mkdtemp(prefix="taskstack-tests-"))
DATABASE_NAME = f"taskstack_test_{secrets.token_hex(6)}"
REDIS_DB = _claim_empty_redis_db()
TEST_ENV = {
    "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE_NAME}",
    "REDIS_URL": f"{REDIS_HOST_URL}/{REDIS_DB}",
    "CELERY_BROKER_URL": f"{REDIS_HOST_URL}/{REDIS_DB}",
    "CELERY_RESULT_BACKEND": f"{REDIS_HOST_URL}/{REDIS_DB}",
    "JOB_WORK_SECONDS": "0.1",
    "JOB_MAX_RETRIES": "2",
    "JOB_RETRY_BACKOFF_SECONDS": "1",
    "JOB_RETRY_BACKOFF_MAX_SECONDS": "2",
    "REAPER_STALE_AFTER_SECONDS": "30",
    "BEAT_SCHEDULE_PATH": str(RUN_DIR / "beat-schedule"),
    "WORKER_HEARTBEAT_PATH": str(RUN_DIR / "worker-heartbeat"),
    "WORKER_HEARTBEAT_SECONDS": "1",
    "READINESS_TIMEOUT_SECONDS": "2",
}
os.environ.update(TEST_ENV)
WORKER_LOG = RUN_DIR / "worker.log"


def admin_execute(statement: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
        connection.execute(statement.encode())


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """The run's own database, migrated to head; dropped at the end with the Redis db."""
    from alembic.config import Config

    from alembic import command

    admin_execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    try:
        config = Config(str(REPO_ROOT / "alembic.ini"))
        config.attributes["configure_logger"] = False
        command.upgrade(config, "head")
        yield TEST_ENV["DATABASE_URL"]
    finally:
        from app.db import get_sync_engine

        get_sync_engine().dispose()
        admin_execute(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)')
        client = redis.Redis.from_url(TEST_ENV["REDIS_URL"])
        client.flushdb()
        client.close()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_file(path: Path, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"{path} did not appear; log:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def worker(database: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real prefork worker (two children) on the run's database and Redis db."""
    with WORKER_LOG.open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "app.worker", "worker"),
                *("--loglevel=INFO", "--concurrency=2", "--hostname=test@%h"),
            ],
            cwd=REPO_ROOT,
            env=os.environ.copy(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    # The heartbeat file appears once the consumer is connected and consuming.
    wait_for_file(Path(TEST_ENV["WORKER_HEARTBEAT_PATH"]), process, WORKER_LOG, 60)
    yield process
    stop_process(process)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The ASGI app in process; engines and clients are closed after each test (one loop each)."""
    from app import pg
    from app.api.deps import get_broker_client
    from app.broker import close_publisher
    from app.db import get_async_engine
    from app.main import app

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    app.dependency_overrides.clear()
    if get_broker_client.cache_info().currsize:
        await get_broker_client().aclose()
        get_broker_client.cache_clear()
    await get_async_engine().dispose()
    await pg.close_pool()
    await close_publisher()
