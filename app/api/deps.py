"""Dependencies shared by the routes; tests override them to point at unreachable services."""

from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Annotated

import asyncpg
from fastapi import Depends
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.finished_jobs import FinishedJobCache, get_finished_job_cache
from app.config import Settings, get_settings
from app.intake.group_commit import JobIntake, get_intake
from app.storage import pg
from app.storage.db import get_async_engine, get_session

SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_async_engine)]


# Coroutines, not plain functions: FastAPI runs a sync dependency in a worker thread, a hop that
# costs more than these hot routes' own work (and the intake belongs to the running loop).
async def intake() -> JobIntake:
    """POST /process's group commit of the running loop (app/intake/group_commit.py)."""
    return get_intake()


async def finished_jobs() -> FinishedJobCache:
    """GET /task's final answers of this process (app/api/finished_jobs.py)."""
    return get_finished_job_cache()


async def hot_connection() -> AsyncIterator[asyncpg.Connection]:
    """A connection of the hot path's asyncpg pool (app/storage/pg.py) for the request."""
    async with pg.connection() as connection:
        yield connection


IntakeDep = Annotated[JobIntake, Depends(intake)]
HotConnectionDep = Annotated[asyncpg.Connection, Depends(hot_connection)]
FinishedJobsDep = Annotated[FinishedJobCache, Depends(finished_jobs)]


@lru_cache
def get_broker_client() -> Redis:
    """An asyncio client for the broker's Redis, for the readiness PING (one pool per process)."""
    settings = get_settings()
    return Redis.from_url(
        settings.celery_broker_url,
        socket_connect_timeout=settings.readiness_timeout_seconds,
        socket_timeout=settings.readiness_timeout_seconds,
    )


BrokerDep = Annotated[Redis, Depends(get_broker_client)]
