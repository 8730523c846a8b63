"""Engines and sessions: an async engine for the API's event loop, a sync one for Celery tasks.

Both are created lazily, once per process, with a long-lived pool. A forked Celery child must not
reuse the parent's connections, so `app.worker` disposes the sync engine in `worker_process_init`.
"""

from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings


@lru_cache
def get_async_engine() -> AsyncEngine:
    settings = get_settings()
    return create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=True,
    )


@lru_cache
def get_async_sessionmaker() -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(get_async_engine(), expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request, connections from the shared pool."""
    async with get_async_sessionmaker()() as session:
        yield session


@lru_cache
def get_sync_engine() -> Engine:
    settings = get_settings()
    return create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=False,
    )


@lru_cache
def get_sync_sessionmaker() -> sessionmaker[Session]:
    """Sessions for the worker's job updates, in autocommit (same pool as `get_sync_engine`).

    Every job-lifecycle change (`app.jobs`) is one statement, atomic on its own; autocommit saves
    the BEGIN and COMMIT round trips around each (a job with no work time costs two UPDATEs).
    """
    return sessionmaker(
        get_sync_engine().execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )


ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


@lru_cache
def alembic_head() -> str | None:
    """The migration head this code expects, read once from the Alembic scripts shipped with it."""
    return ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
