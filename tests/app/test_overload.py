"""Overload: requests beyond a process's bound, and a database pool with no free connection, are
answered 503 with Retry-After at once (never 500, never a wait past the pool's bound)."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.admission import AdmissionLimit
from app.config import get_settings
from app.main import app
from app.storage.db import get_async_engine, get_session

pytestmark = pytest.mark.anyio


def _client(asgi: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://testserver")  # type: ignore[arg-type]


class _Blocking:
    """An ASGI app whose requests wait until released; counts how many got in."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: object, receive: object, send: object) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


async def _until(condition: object, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await anyio.sleep(0.01)


async def test_requests_over_the_bound_are_503_with_retry_after_and_health_still_answers() -> None:
    inner = _Blocking()
    limited = AdmissionLimit(inner, max_requests=3, max_job_lists=1)
    async with _client(limited) as client, anyio.create_task_group() as group:
        answers: list[int] = []

        async def call(path: str) -> None:
            answers.append((await client.get(path)).status_code)

        for _ in range(3):
            group.start_soon(call, "/task/x")
        await _until(lambda: inner.entered == 3)
        refused = await client.get("/task/y")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "3 requests in flight" in refused.json()["detail"]
        # The health endpoints are never refused (they reach the app, which is blocked here).
        group.start_soon(call, "/health/ready")
        await _until(lambda: inner.entered == 4)
        inner.release.set()
    assert sorted(answers) == [200, 200, 200, 200]
    assert limited.in_flight == 0
    # Once they finished, the next request is admitted.
    async with _client(limited) as client:
        assert (await client.get("/task/z")).status_code == 200


async def test_job_lists_have_their_own_smaller_bound() -> None:
    inner = _Blocking()
    limited = AdmissionLimit(inner, max_requests=10, max_job_lists=2)
    async with _client(limited) as client, anyio.create_task_group() as group:
        for _ in range(2):
            group.start_soon(client.get, "/jobs")
        await _until(lambda: inner.entered == 2)
        refused = await client.get("/jobs")
        assert refused.status_code == 503
        assert "2 job lists in flight" in refused.json()["detail"]
        # Other requests still get in.
        group.start_soon(client.get, "/task/x")
        await _until(lambda: inner.entered == 3)
        inner.release.set()
    assert limited.job_lists_in_flight == 0


async def test_the_app_sheds_job_lists_beyond_its_setting(client: httpx.AsyncClient) -> None:
    """The real app: GET /jobs pages held in flight (their session waits) up to the setting, the
    next one is 503 with Retry-After before it touches the database."""
    release = asyncio.Event()
    entered = 0

    async def held_session() -> AsyncIterator[AsyncSession]:
        nonlocal entered
        entered += 1
        await release.wait()
        async for session in get_session():
            yield session

    app.dependency_overrides[get_session] = held_session
    bound = get_settings().max_concurrent_job_lists
    async with anyio.create_task_group() as group:
        statuses: list[int] = []

        async def page() -> None:
            statuses.append((await client.get("/jobs", params={"limit": 500})).status_code)

        for _ in range(bound):
            group.start_soon(page)
        await _until(lambda: entered == bound)
        refused = await client.get("/jobs", params={"limit": 500})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        release.set()
    assert statuses == [200] * bound


async def test_an_exhausted_database_pool_is_503_within_the_pool_wait(
    client: httpx.AsyncClient,
) -> None:
    """Every connection of the API's SQLAlchemy pool held: GET /jobs waits the pool's bound
    (READINESS_TIMEOUT_SECONDS), then answers 503 with Retry-After (it was a 500 after 30 s)."""
    settings = get_settings()
    engine = get_async_engine()
    async with AsyncExitStack() as held:
        for _ in range(settings.database_pool_size + settings.database_max_overflow):
            await held.enter_async_context(engine.connect())
        response = await client.get("/jobs")
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"] == "database unavailable: TimeoutError"
    # The wait is the pool's bound (SQLAlchemy's default, 30 s, is past most clients' patience).
    assert engine.sync_engine.pool.timeout() == settings.readiness_timeout_seconds  # type: ignore[attr-defined]
