"""Engines and sessions: an async engine for the API's event loop, a sync one for Celery tasks.

Both are created lazily, once per process, with a long-lived pool. A forked Celery child must not
reuse the parent's connections, so `app.worker` disposes the sync engine in `worker_process_init`.
"""

import os
import threading
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings

T = TypeVar("T")


@lru_cache
def get_async_engine() -> AsyncEngine:
    settings = get_settings()
    return create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        # A request waits this long for a free connection, then is a 503 (app.main), well under a
        # client's patience; SQLAlchemy's default, 30 s, turned overload into 500s.
        pool_timeout=settings.readiness_timeout_seconds,
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
def get_sync_engine(durable: bool = True) -> Engine:
    """The worker's engines (one pool each, per process), without a ping on every checkout.

    `durable=False` commits without waiting for the WAL flush (`synchronous_commit=off`): for the
    states a PostgreSQL crash may lose without losing a job, `started` and progress. Their job's
    message stays unacknowledged until `succeeded`/`failed` is committed durably (the default
    engine), and a durable commit also flushes every earlier one, in order.
    A pooled connection that died (PostgreSQL restarted) is replaced by `reconnecting`.
    """
    settings = get_settings()
    return create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        connect_args={} if durable else {"options": "-c synchronous_commit=off"},
    )


@lru_cache
def get_sync_sessionmaker(durable: bool = True) -> sessionmaker[Session]:
    """Sessions for the worker's job updates, in autocommit (same pool as `get_sync_engine`).

    Every job-lifecycle change (`app.storage.jobs`) is one statement, atomic on its own; autocommit
    saves the BEGIN and COMMIT round trips around each. A job's own claim and finish do not come
    here (`on_job_connection`).
    """
    return sessionmaker(
        get_sync_engine(durable).execution_options(isolation_level="AUTOCOMMIT"),
        expire_on_commit=False,
    )


def reconnecting(sessions: sessionmaker[Session], change: Callable[[Session], T]) -> T:
    """Run one job change in a new session; once more if its pooled connection was dead.

    Instead of a ping round trip on every checkout: a connection that PostgreSQL closed (a restart)
    fails its statement, SQLAlchemy then invalidates the whole pool, and the second attempt runs on
    a fresh connection. Every change in `app.storage.jobs` is conditional, so running one twice is
    harmless.
    """
    try:
        with sessions() as session:
            return change(session)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    with sessions() as session:
        return change(session)


# What a PostgreSQL that is down or restarting raises in the worker, through SQLAlchemy or through
# the hot path's own psycopg connection: the job did not fail, it is interrupted.
DATABASE_DOWN_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)

_job_connections = threading.local()


def _job_connection() -> psycopg.Connection[Any]:
    connection: psycopg.Connection[Any] | None = getattr(_job_connections, "connection", None)
    # A forked child must not use its parent's socket: a connection is its process's own.
    if connection is None or connection.closed or _job_connections.pid != os.getpid():
        connection = psycopg.connect(
            get_settings().database_libpq_url, autocommit=True, prepare_threshold=0
        )
        _job_connections.connection, _job_connections.pid = connection, os.getpid()
    return connection


def on_job_connection(statement: Callable[[psycopg.Connection[Any]], T]) -> T:
    """Run one of the worker's two per-job statements (`app.storage.jobs.claim`,
    `app.storage.jobs.finish`) on this thread's own psycopg connection, in autocommit, prepared once
    per connection.

    Not through SQLAlchemy: its statement machinery cost ten times the driver's own work per job
    (docs/bench.md). Without a ping: a connection PostgreSQL closed (a restart) fails the
    statement, and it runs once more on a new connection; both statements are safe to repeat.
    """
    try:
        return statement(_job_connection())
    except psycopg.OperationalError:
        connection = getattr(_job_connections, "connection", None)
        if connection is not None and not connection.closed:
            connection.close()
        _job_connections.connection = None
    return statement(_job_connection())


def dispose_sync_engines() -> None:
    """Forget the pools' connections without closing them (a forked child must open its own)."""
    for durable in (True, False):
        get_sync_engine(durable).dispose(close=False)


ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


@lru_cache
def alembic_head() -> str | None:
    """The migration head this code expects, read once from the Alembic scripts shipped with it."""
    return ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
