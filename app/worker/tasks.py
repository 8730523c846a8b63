"""Celery tasks. The job row is the source of truth; the result backend is not read for jobs."""

import logging
import time
import uuid
from typing import Any

from celery import Task
from celery.utils.log import get_task_logger

from app.config import get_settings
from app.metrics import worker as metrics
from app.storage import jobs
from app.storage.db import (
    DATABASE_DOWN_ERRORS,
    get_sync_sessionmaker,
    on_job_connection,
    reconnecting,
)
from app.storage.models import JobStatus
from app.worker.celery import celery_app

logger = get_task_logger(__name__)
settings = get_settings()

# How many progress updates a job with a non-zero work time writes (25 %, 50 %, 75 %).
PROGRESS_STEPS = 4
# The longest wait between two runs of a job whose database went away (1, 2, 4, … s).
DATABASE_RETRY_MAX_SECONDS = 30


class TransientJobError(Exception):
    """A failure worth retrying (a flaky dependency); anything else fails the job at once."""


class JobTask(Task):  # type: ignore[misc]
    """Mirrors Celery's retry and failure outcomes into the job row."""

    def _uncounted(self) -> bool:
        """Whether the delivery ending now has not counted its attempt yet (`mark_started`)."""
        return not getattr(self.request, "attempt_counted", False)

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        # The retry message is already published: if PostgreSQL is the reason for the retry, the
        # row cannot say so now, and the job runs again all the same.
        metrics.JOB_RETRIES.labels(metrics.task_label(self.name)).inc()
        try:
            reconnecting(
                get_sync_sessionmaker(),
                lambda session: jobs.mark_retrying(
                    session, uuid.UUID(task_id), _describe(exc), count_attempt=self._uncounted()
                ),
            )
        except DATABASE_DOWN_ERRORS as error:
            logger.warning("job %s retrying; its row not updated: %s", task_id, _describe(error))

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        if isinstance(exc, DATABASE_DOWN_ERRORS):
            # The database went away (a restart): the job did not fail. Left unfinished, it is
            # republished by the reaper; marking it failed here (the server may be back by now)
            # would lose it.
            logger.warning("job %s interrupted by the database: %s", task_id, _describe(exc))
            return
        if reconnecting(
            get_sync_sessionmaker(),
            lambda session: jobs.mark_failed(
                session, uuid.UUID(task_id), _describe(exc), count_attempt=self._uncounted()
            ),
        ):
            metrics.job_finished(self.name, "failed", _run_seconds(self))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _run_seconds(task: Task) -> float | None:
    started = getattr(task.request, "run_started", None)
    return None if started is None else time.monotonic() - started


def publish_job(job_id: uuid.UUID) -> None:
    """Publish `process_data` for a committed job; the Celery task id is the job id.

    Blocking (kombu): the API calls it from a worker thread, never on the event loop.
    """
    process_data.apply_async(
        args=[str(job_id)],
        task_id=str(job_id),
        # The job row holds the result: skip the result-backend subscription and write.
        ignore_result=True,
    )


@celery_app.task(  # type: ignore[untyped-decorator]
    base=JobTask,
    bind=True,
    name="app.tasks.process_data",
    ignore_result=True,
    autoretry_for=(TransientJobError,),
    max_retries=settings.job_max_retries,
    retry_backoff=settings.job_retry_backoff_seconds,
    retry_backoff_max=settings.job_retry_backoff_max_seconds,
    retry_jitter=True,
)
def process_data(self: Task, job_id: str) -> dict[str, Any] | None:
    """Process one job: idempotent, so a redelivered message for a finished job changes nothing."""
    try:
        return _process(self, job_id)
    except DATABASE_DOWN_ERRORS as error:
        # The job did not fail: PostgreSQL went away (a restart). Run it again shortly instead of
        # leaving it to the reaper; this retry is not one of the job's JOB_MAX_RETRIES.
        retries = self.request.retries
        raise self.retry(
            exc=error,
            countdown=min(2**retries, DATABASE_RETRY_MAX_SECONDS),
            max_retries=retries + 1,
        ) from error


def _process(self: Task, job_id: str) -> dict[str, Any] | None:
    job_uuid = uuid.UUID(job_id)
    self.request.run_started = time.monotonic()
    job = on_job_connection(lambda connection: jobs.claim(connection, job_uuid))
    if job is None:
        logger.info("job %s is finished or unknown; ignoring this delivery", job_id)
        return None
    if job.attempts == 0 and job.status == JobStatus.QUEUED:
        metrics.JOB_QUEUE_WAIT.labels(metrics.task_label(self.name)).observe(job.waited_seconds)

    work_seconds = get_settings().job_work_seconds
    # `started` is written only when the job has time to be seen running. A job done at once goes
    # from queued to succeeded in one UPDATE that counts the attempt and stamps started_at: one
    # write per job instead of two. `started` commits without waiting for the WAL flush
    # (app.storage.db.get_sync_engine): a crash may lose it, never the job, whose message is
    # acknowledged only after the durable `finish` below. The delivery's attempt is counted exactly
    # once: by `mark_started`, else by the change that ends the attempt (`JobTask._uncounted`).
    self.request.attempt_counted = False
    attempt = job.attempts + 1
    if work_seconds > 0:
        progress = get_sync_sessionmaker(durable=False)
        started = reconnecting(progress, lambda session: jobs.mark_started(session, job_uuid))
        if started is None:
            logger.info("job %s was finished by another delivery", job_id)
            return None
        attempt = started
        self.request.attempt_counted = True

    fail_times = int(job.payload.get("fail_times", 0))
    if attempt <= fail_times:
        raise TransientJobError(f"simulated transient failure {attempt} of {fail_times}")

    if work_seconds > 0:
        for step in range(1, PROGRESS_STEPS):
            time.sleep(work_seconds / PROGRESS_STEPS)
            percent = step * 100 // PROGRESS_STEPS
            reconnecting(progress, lambda session: jobs.mark_progress(session, job_uuid, percent))  # noqa: B023 - called at once
        time.sleep(work_seconds / PROGRESS_STEPS)

    result = {"item_id": job.item_id, "status": "processed"}
    count_attempt = not self.request.attempt_counted
    if on_job_connection(
        lambda connection: jobs.finish(connection, job_uuid, result, count_attempt=count_attempt)
    ):
        metrics.job_finished(self.name, "succeeded", _run_seconds(self))
    else:
        logger.info("job %s was finished by another delivery", job_id)
    return result


@celery_app.task(  # type: ignore[untyped-decorator]
    name="app.tasks.send_notification"
)
def send_notification(user_id: int, message: str) -> dict[str, Any]:
    """Deliver a notification (simulated: logged); fire and forget, Flower shows its progress."""
    logger.info("notification for user %s: %s", user_id, message)
    return {"user_id": user_id, "delivered": True}


@celery_app.task(  # type: ignore[untyped-decorator]
    name="app.tasks.requeue_stale_jobs"
)
def requeue_stale_jobs() -> int:
    """Republish jobs queued, started or retrying for longer than REAPER_STALE_AFTER_SECONDS."""
    current = get_settings()
    with get_sync_sessionmaker()() as session:
        job_ids = jobs.claim_stale_jobs(
            session, current.reaper_stale_after_seconds, current.reaper_batch_size
        )
    for job_id in job_ids:
        publish_job(job_id)
        metrics.JOBS_REQUEUED.labels("reaper").inc()
    if job_ids:
        logger.warning("republished %d stale jobs", len(job_ids))
    return len(job_ids)


@celery_app.task(  # type: ignore[untyped-decorator]
    name="app.tasks.purge_finished_jobs"
)
def purge_finished_jobs() -> int:
    """Delete finished jobs older than JOB_RETENTION_DAYS, Idempotency-Keys older than
    IDEMPOTENCY_KEY_RETENTION_HOURS."""
    settings = get_settings()
    with get_sync_sessionmaker()() as session:
        deleted = jobs.purge_finished_jobs(session, settings.job_retention_days)
        keys = jobs.purge_idempotency_keys(session, settings.idempotency_key_retention_hours)
    logging.getLogger(__name__).info("purged %d finished jobs, %d idempotency keys", deleted, keys)
    return deleted
