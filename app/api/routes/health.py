"""Liveness and readiness."""

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from app.api.deps import BrokerDep, EngineDep, SettingsDep
from app.api.schemas import Readiness
from app.storage import pg
from app.storage.db import alembic_head

router = APIRouter(tags=["health"])

REQUIRED_CHECKS = ("database", "schema", "database_pool")


@router.get("/health")
async def liveness() -> dict[str, str]:
    """The process answers; touches no dependency."""
    return {"status": "ok"}


async def _check(probe: Awaitable[None], bound: float) -> str:
    try:
        async with asyncio.timeout(bound):
            await probe
    except TimeoutError:
        return f"failed: no answer within {bound:g} s"
    except Exception as error:
        return f"failed: {type(error).__name__}: {error}"
    return "ok"


@router.get(
    "/health/ready",
    responses={503: {"model": Readiness, "description": "A dependency failed; see `checks`."}},
)
async def readiness(
    response: Response, settings: SettingsDep, engine: EngineDep, broker: BrokerDep
) -> Readiness:
    """PostgreSQL answers (through both pools), the broker answers, the schema is at the head."""

    async def database() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def schema() -> None:
        async with engine.connect() as connection:
            current = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        if current != alembic_head():
            raise RuntimeError(f"schema at {current}, code expects {alembic_head()}")

    async def broker_ping() -> None:
        await broker.ping()

    async def hot_path_pool() -> None:
        # POST /process and GET /task use their own asyncpg pool (app/storage/pg.py): a process
        # whose pool cannot reach PostgreSQL cannot serve them, whatever the SQLAlchemy engine says.
        async with pg.connection() as connection:
            await connection.fetchval("SELECT 1")

    timeout = settings.readiness_timeout_seconds
    names = ("database", "broker", "schema", "database_pool")
    probes = (database(), broker_ping(), schema(), hot_path_pool())
    results = await asyncio.gather(*(_check(probe, timeout) for probe in probes))
    checks = dict(zip(names, results, strict=True))
    # The broker is reported, not required: jobs are accepted while it is away
    # (app/intake/outbox.py), so a broker outage must not take the API out of a load balancer.
    ready = all(checks[name] == "ok" for name in REQUIRED_CHECKS)
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(status="ready" if ready else "unready", checks=checks)
