"""GET /metrics: this container's API processes added up (app/metrics/), and the stack-wide
gauges read at scrape time from PostgreSQL and the broker (`read_stack`)."""

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import asyncpg
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from app.api.deps import BrokerDep
from app.config import get_settings
from app.metrics import process_collector
from app.storage import pg
from app.worker import liveness
from app.worker.celery import celery_app

logger = logging.getLogger(__name__)


def queues() -> list[str]:
    """The Celery queues a worker consumes (app/worker/celery.py)."""
    return [queue.name for queue in celery_app.conf.task_queues]


def queue_keys(queue: str) -> list[str]:
    """Every Redis list a message of `queue` may wait in: kombu's Redis transport keeps one per
    priority step, the bare name for priority 0 (kombu transport/redis.py, `_q_for_pri`)."""
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel
    return [queue] + [f"{queue}{channel.sep}{step}" for step in channel.priority_steps if step]


# The outbox's rows and the oldest's age; the oldest job not yet started (the jobs' index on
# (status, created_at) answers it without a scan).
OUTBOX_QUERY = """
SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
FROM outbox
"""
OLDEST_PENDING_QUERY = """
SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
FROM jobs WHERE status = 'queued'
"""

# Continuous archiving (docs/backup.md): the WAL segments waiting for archive_command (their
# `.ready` files) and the oldest one's age; the last segment archived; whether archiving is on.
ARCHIVE_QUERY = """
SELECT count(*)::float8,
       coalesce(extract(epoch FROM clock_timestamp() - min(modification)), 0)::float8,
       (SELECT extract(epoch FROM clock_timestamp() - last_archived_time) FROM pg_stat_archiver),
       (current_setting('archive_mode') <> 'off')::int::float8
FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'
"""
# What the backup role last found in the repository (infra/postgres/backup-due.sql).
BACKUP_STATUS_QUERY = """
SELECT kind, extract(epoch FROM clock_timestamp() - stopped_at)::float8, bytes::float8
FROM backup_status
"""


@dataclass
class StackGauges(Collector):
    """The stack-wide gauges read for one scrape: each source (PostgreSQL, the broker) that
    did not answer within the bound is left out, and logged."""

    families: list[Metric] = field(default_factory=list)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


async def _database_gauges(bound: float) -> list[Metric]:
    async with asyncio.timeout(bound), pg.connection() as connection:
        rows, oldest = await connection.fetchrow(OUTBOX_QUERY, timeout=bound)
        pending_age = await connection.fetchval(OLDEST_PENDING_QUERY, timeout=bound)
        backups = await _backup_gauges(connection, bound)
    return [
        *backups,
        _gauge("taskstack_outbox_pending_rows", "Outbox rows not yet pushed to the broker", rows),
        _gauge("taskstack_outbox_oldest_age_seconds", "Age of the oldest outbox row", oldest),
        _gauge(
            "taskstack_oldest_pending_job_age_seconds",
            "Age of the oldest job not yet started",
            pending_age,
        ),
    ]


async def _backup_gauges(connection: asyncpg.Connection, bound: float) -> list[Metric]:
    """The archive's and the backups' freshness; none when they cannot be read (a database
    whose app role predates its pg_monitor grant), logged."""
    try:
        pending, oldest, last_archived, archiving = await connection.fetchrow(
            ARCHIVE_QUERY, timeout=bound
        )
        rows = await connection.fetch(BACKUP_STATUS_QUERY, timeout=bound)
    except asyncpg.PostgresError as error:
        logger.warning("metrics: backup gauges left out: %s: %s", type(error).__name__, error)
        return []
    families: list[Metric] = [
        _gauge("taskstack_wal_archiving", "1 when PostgreSQL archives its WAL", archiving),
        _gauge(
            "taskstack_wal_archive_pending_segments",
            "WAL segments waiting to be archived",
            pending,
        ),
        _gauge(
            "taskstack_wal_archive_oldest_pending_age_seconds",
            "Age of the oldest WAL segment waiting to be archived (0: none)",
            oldest,
        ),
    ]
    if last_archived is not None:
        families.append(
            _gauge(
                "taskstack_wal_last_archived_age_seconds",
                "Age of the last WAL segment archived",
                last_archived,
            )
        )
    age = GaugeMetricFamily(
        "taskstack_backup_age_seconds", "Age of the newest backup of each kind", labels=["kind"]
    )
    for kind, seconds, size in rows:
        if kind == "repository":
            families.append(
                _gauge("taskstack_backup_repository_bytes", "Size of the backup repository", size)
            )
        elif seconds is not None:
            age.add_metric([kind], seconds)
    return [*families, age]


async def _broker_gauges(broker: Redis, bound: float) -> list[Metric]:
    async with asyncio.timeout(bound):
        names = queues()
        async with broker.pipeline(transaction=False) as pipe:
            for name in names:
                for key in queue_keys(name):
                    pipe.llen(key)
            lengths = await pipe.execute()
        depth = GaugeMetricFamily(
            "taskstack_queue_depth", "Messages waiting in the queue's Redis lists", labels=["queue"]
        )
        per_queue = len(queue_keys(names[0])) if names else 0
        for index, name in enumerate(names):
            depth.add_metric([name], sum(lengths[index * per_queue : (index + 1) * per_queue]))
        workers = sorted(await broker.smembers(liveness.WORKERS))
        fresh = 0
        if workers:
            keys = [liveness.active_key(_text(worker)) for worker in workers]
            fresh = sum(value is not None for value in await broker.mget(keys))
    return [
        depth,
        _gauge("taskstack_workers_alive", "Workers whose liveness heartbeat is fresh", fresh),
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_stack(broker: Redis) -> StackGauges:
    """The stack-wide gauges, each source bounded by READINESS_TIMEOUT_SECONDS (concurrently),
    so a hung PostgreSQL or Redis cannot hang a scrape."""
    bound = get_settings().readiness_timeout_seconds
    sources = ("database", "broker")
    results = await asyncio.gather(
        _database_gauges(bound), _broker_gauges(broker, bound), return_exceptions=True
    )
    gauges = StackGauges()
    for source, result in zip(sources, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            logger.warning(
                "metrics: %s gauges left out: %s: %s", source, type(result).__name__, result
            )
        else:
            gauges.families.extend(result)
    return gauges


class _Both(Collector):
    def __init__(self, collectors: Iterable[Collector]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(broker: BrokerDep) -> Response:
    """Prometheus's text format: this container's processes added up, and the stack-wide
    gauges read now."""
    stack = await read_stack(broker)
    # Reading every process's files is file I/O: off the event loop.
    body = await asyncio.to_thread(generate_latest, _Both((process_collector(), stack)))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
