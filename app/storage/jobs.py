"""Job lifecycle as plain functions: the API and the Celery tasks call these, tests too.

Each state change is one conditional UPDATE, so a redelivered or duplicated message for a finished
job changes nothing (the WHERE clause excludes finished rows).
"""

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import CursorResult, Select, delete, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.storage.models import (
    FINISHED_STATUSES,
    UNFINISHED_STATUSES,
    IdempotencyKey,
    Job,
    JobStatus,
)

PROCESS_DATA = "process_data"


async def create_job(
    session: AsyncSession, item_id: int, payload: dict[str, Any] | None = None
) -> Job:
    """Insert and commit a queued job; it must exist before any message names it."""
    job_id = uuid.uuid4()
    job = Job(
        id=job_id,
        item_id=item_id,
        kind=PROCESS_DATA,
        payload=payload or {},
        status=JobStatus.QUEUED,
        celery_task_id=str(job_id),
    )
    session.add(job)
    await session.commit()
    return job


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return await session.get(Job, job_id)


def page_query(
    client_id: int,
    status: JobStatus | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> Select[Job]:
    """A page of the client's jobs, newest first (`created_at`, then `id`, both descending),
    starting after the job whose (created_at, id) is `after`.

    A range of one index (`ix_jobs_client_id_created_at_id`, or with the status
    `ix_jobs_client_id_status_created_at_id`): the page reads `limit` rows, however deep it is.
    """
    query = select(Job).where(Job.client_id == client_id)
    if status is not None:
        query = query.where(Job.status == status)
    if after is not None:
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(*after))
    return query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)


async def list_jobs(
    session: AsyncSession,
    client_id: int,
    status: JobStatus | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> Sequence[Job]:
    """The page of `page_query`."""
    page = await session.scalars(page_query(client_id, status, limit, after))
    return page.all()


_UNFINISHED = ", ".join(f"'{status.value}'" for status in UNFINISHED_STATUSES)
_FINISHED = ", ".join(f"'{status.value}'" for status in FINISHED_STATUSES)

# The worker's two statements per job, in plain SQL on its own psycopg connection
# (`app.storage.db.on_job_connection`), not through SQLAlchemy (docs/bench.md).
# `waited` is the time since the row's commit (its queue wait, for a first attempt).
CLAIM = f"""
SELECT status, attempts, item_id, payload,
    extract(epoch FROM clock_timestamp() - created_at)::float8 AS waited
FROM jobs
WHERE id = %(id)s AND status IN ({_UNFINISHED})
"""  # noqa: S608 - the IN list is this module's own constants
# `count` says whether this change counts the delivery's attempt (see `_ending_attempt`).
FINISH = f"""
UPDATE jobs SET
    attempts = attempts + CASE WHEN %(count)s THEN 1 ELSE 0 END,
    started_at = CASE WHEN %(count)s THEN now() ELSE started_at END,
    status = 'succeeded', progress = 100, result = %(result)s, error = NULL, finished_at = now()
WHERE id = %(id)s AND status NOT IN ({_FINISHED})
RETURNING id
"""  # noqa: S608


class Claimed(NamedTuple):
    status: JobStatus
    attempts: int
    item_id: int
    payload: dict[str, Any]
    waited_seconds: float


def claim(connection: psycopg.Connection[Any], job_id: uuid.UUID) -> Claimed | None:
    """The unfinished job a delivery is about to run, or None when it is finished or unknown.
    A read: no row version, no WAL, no index entries."""
    row = connection.execute(CLAIM, {"id": job_id}).fetchone()
    return None if row is None else Claimed(JobStatus(row[0]), row[1], row[2], row[3], row[4])


def finish(
    connection: psycopg.Connection[Any],
    job_id: uuid.UUID,
    result: dict[str, Any],
    *,
    count_attempt: bool,
) -> bool:
    """Record the result; False when another delivery already finished the job."""
    parameters = {"id": job_id, "result": Jsonb(result), "count": count_attempt}
    return connection.execute(FINISH, parameters).fetchone() is not None


def mark_started(session: Session, job_id: uuid.UUID) -> int | None:
    """Count this delivery's attempt and mark the job started; its attempt number, or None when
    it is finished or unknown. Only for jobs with time to be seen running (`app.worker.tasks`)."""
    attempts = session.scalar(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(UNFINISHED_STATUSES))
        .values(
            status=JobStatus.STARTED,
            attempts=Job.attempts + 1,
            started_at=func.now(),
            error=None,
        )
        .returning(Job.attempts)
        # No ORM object of this row is loaded in the session: skip evaluating the WHERE on it.
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return attempts


def _ending_attempt(count_attempt: bool) -> dict[str, Any]:
    """A delivery counts its attempt once: in `mark_started` when it ran one, otherwise
    (`count_attempt`) in the change that ends the attempt, which then also stamps `started_at`."""
    if not count_attempt:
        return {}
    return {"attempts": Job.attempts + 1, "started_at": func.now()}


def mark_progress(session: Session, job_id: uuid.UUID, percent: int) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.STARTED)
        .values(progress=percent)
    )
    session.commit()


def mark_retrying(session: Session, job_id: uuid.UUID, error: str, *, count_attempt: bool) -> None:
    # queued_at moves to now: for the reaper, the retry message is a fresh publish.
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.not_in(FINISHED_STATUSES))
        .values(
            **_ending_attempt(count_attempt),
            status=JobStatus.RETRYING,
            error=error,
            queued_at=func.now(),
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()


def mark_failed(session: Session, job_id: uuid.UUID, error: str, *, count_attempt: bool) -> bool:
    """Record the failure; False when the job was already finished (nothing changed)."""
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.not_in(FINISHED_STATUSES))
        .values(
            **_ending_attempt(count_attempt),
            status=JobStatus.FAILED,
            error=error,
            finished_at=func.now(),
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return cast(CursorResult[Any], changed).rowcount > 0


def claim_stale_jobs(session: Session, stale_after_seconds: float, limit: int) -> list[uuid.UUID]:
    """Jobs unfinished and untouched for longer than the threshold, re-stamped as just queued.

    The caller publishes them again after this commits. `SKIP LOCKED` lets two reapers run without
    republishing the same job twice.
    """
    cutoff = func.now() - timedelta(seconds=stale_after_seconds)
    stale = (
        select(Job.id)
        .where(
            Job.status.in_(UNFINISHED_STATUSES),
            Job.queued_at < cutoff,
            or_(Job.started_at.is_(None), Job.started_at < cutoff),
        )
        .order_by(Job.queued_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    job_ids = list(
        session.scalars(
            update(Job)
            .where(Job.id.in_(stale))
            .values(queued_at=func.now())
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
    )
    session.commit()
    return job_ids


def purge_finished_jobs(session: Session, retention_days: float) -> int:
    """Delete finished jobs older than the retention; returns how many."""
    deleted = session.execute(
        delete(Job)
        .where(
            Job.status.in_(FINISHED_STATUSES),
            Job.finished_at < func.now() - timedelta(days=retention_days),
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return cast(CursorResult[Any], deleted).rowcount


def purge_idempotency_keys(session: Session, retention_hours: float) -> int:
    """Forget Idempotency-Keys older than the retention; returns how many."""
    deleted = session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.created_at < func.now() - timedelta(hours=retention_hours))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return cast(CursorResult[Any], deleted).rowcount
