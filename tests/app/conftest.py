"""Per-run isolation and a real Celery worker.

At import (before `app` reads its settings) tests/app/environment.py picks a fresh database name
and an empty Redis db number and points the environment at them; the session fixtures create the
database, migrate it, start `celery -A app.worker worker` as a subprocess and remove everything at
the end.
"""

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.app.environment import (
    DATABASE_NAME,
    REPO_ROOT,
    TEST_ENV,
    WORKER_LOG,
    WORKER_METRICS_ENV,
    admin_execute,
    stop_process,
)


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
        from app.storage.db import get_sync_engine

        get_sync_engine().dispose()
        admin_execute(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)')
        client = redis.Redis.from_url(TEST_ENV["REDIS_URL"])
        client.flushdb()
        client.close()


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
            env={**os.environ, **WORKER_METRICS_ENV},
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
    from app.api.deps import get_broker_client
    from app.intake.broker import close_publisher
    from app.main import app
    from app.storage import pg
    from app.storage.db import get_async_engine

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
