"""The API's hot path on asyncpg: one pool per event loop, for the two statements every request of
the tutorial's workload runs (the batched INSERT of `app.intake.group_commit`, the SELECT of
GET /task).

SQLAlchemy stays for the models, Alembic, the worker and the other routes; these two statements
skip its statement machinery and psycopg's per-query overhead (docs/bench.md, "What was changed
for speed"). asyncpg prepares and caches each statement per connection. There is no ping per
checkout: a connection that broke (a PostgreSQL restart) raises once, is discarded by the pool, and
the request answers 503 with Retry-After (`DatabaseUnavailable`).
"""

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from app.config import get_settings

# What a PostgreSQL that is down, restarting or out of connections raises through asyncpg:
# worth a retry by the client, never a 500.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # A pooled connection left mid-operation when the server went away ("cannot switch to state
    # 12; another operation is in progress"), seen during a PostgreSQL restart: the pool drops it.
    asyncpg.exceptions.InternalClientError,
)


class DatabaseUnavailable(Exception):
    """PostgreSQL did not take the statement; nothing was recorded. The API answers 503."""


_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncpg.Pool]" = (
    weakref.WeakKeyDictionary()
)
_pool_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = (
    weakref.WeakKeyDictionary()
)


async def get_pool() -> asyncpg.Pool:
    """The running loop's pool, created on first use (asyncio connections belong to one loop)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is not None:
        return pool
    lock = _pool_locks.setdefault(loop, asyncio.Lock())
    async with lock:
        pool = _pools.get(loop)
        if pool is None:
            settings = get_settings()
            pool = await asyncpg.create_pool(
                settings.database_libpq_url,
                min_size=0,
                max_size=settings.database_pool_size,
                timeout=settings.readiness_timeout_seconds,
                # JSONB arrives as text: GET /task embeds it without a decode/encode round trip.
            )
            _pools[loop] = pool
    return pool


@asynccontextmanager
async def connection() -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, waiting at most READINESS_TIMEOUT_SECONDS for one; failures to reach
    PostgreSQL (here or in the statements run on it) become `DatabaseUnavailable`."""
    try:
        pool = await get_pool()
        async with pool.acquire(timeout=get_settings().readiness_timeout_seconds) as conn:
            yield conn
    except UNAVAILABLE_ERRORS as error:
        raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error


async def close_pool() -> None:
    """Close the running loop's pool, if it was opened (the API's shutdown, the tests)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()
