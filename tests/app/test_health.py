"""Readiness: 200 when everything answers, 503 naming what failed, always within the bound."""

import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from app.api.deps import get_broker_client
from app.config import get_settings
from app.main import app
from app.storage.db import get_async_engine
from tests.app.environment import admin_execute

pytestmark = pytest.mark.anyio
# READINESS_TIMEOUT_SECONDS plus generous room for a slow machine.
ANSWER_BOUND_SECONDS = get_settings().readiness_timeout_seconds + 5


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections and never answers (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def _timed_ready(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get("/health/ready")
    return response, time.monotonic() - started


async def test_ready_when_database_broker_and_schema_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "schema": "ok", "database_pool": "ok"},
    }


async def test_unreachable_redis_is_reported_but_still_ready_within_the_bound(
    client: httpx.AsyncClient, closed_port: int
) -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{closed_port}/0")
    app.dependency_overrides[get_broker_client] = lambda: dead
    response, elapsed = await _timed_ready(client)
    await dead.aclose()

    # Jobs are accepted without the broker (the outbox): still ready, the failure reported.
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    checks = response.json()["checks"]
    assert checks["broker"].startswith("failed")
    assert checks["database"] == "ok"
    assert checks["schema"] == "ok"
    assert elapsed < ANSWER_BOUND_SECONDS


async def test_hung_redis_is_reported_but_still_ready_within_the_bound(
    client: httpx.AsyncClient, silent_port: int
) -> None:
    # No socket timeout on this client: only the readiness bound stops the wait.
    hung = Redis.from_url(f"redis://127.0.0.1:{silent_port}/0")
    app.dependency_overrides[get_broker_client] = lambda: hung
    response, elapsed = await _timed_ready(client)
    await hung.aclose()

    assert response.status_code == 200
    assert response.json()["checks"]["broker"].startswith("failed: no answer within")
    assert elapsed < ANSWER_BOUND_SECONDS


async def test_unreachable_postgresql_is_503_within_the_bound(
    client: httpx.AsyncClient, closed_port: int
) -> None:
    dead = create_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/x")
    app.dependency_overrides[get_async_engine] = lambda: dead
    response, elapsed = await _timed_ready(client)
    await dead.dispose()

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"].startswith("failed")
    assert checks["schema"].startswith("failed")
    assert checks["broker"] == "ok"
    assert elapsed < ANSWER_BOUND_SECONDS


async def test_hung_postgresql_is_503_within_the_bound(
    client: httpx.AsyncClient, silent_port: int
) -> None:
    hung = create_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:{silent_port}/x")
    app.dependency_overrides[get_async_engine] = lambda: hung
    response, elapsed = await _timed_ready(client)
    await hung.dispose()

    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("failed: no answer within")
    assert elapsed < ANSWER_BOUND_SECONDS


@pytest.fixture
async def unmigrated_database() -> AsyncIterator[str]:
    name = f"{get_async_engine().url.database}_empty"
    admin_execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_schema_behind_the_code_is_503(
    client: httpx.AsyncClient, unmigrated_database: str
) -> None:
    empty = create_async_engine(unmigrated_database)
    app.dependency_overrides[get_async_engine] = lambda: empty
    response = await client.get("/health/ready")
    await empty.dispose()

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks == {
        "database": "ok",
        "broker": "ok",
        "schema": checks["schema"],
        "database_pool": "ok",
    }
    assert checks["schema"].startswith("failed")
