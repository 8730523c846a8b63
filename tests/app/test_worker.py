"""process_data, the reaper, the purge and beat, run by a real prefork worker."""

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest

from app.config import get_settings
from app.worker.celery import MAINTENANCE_QUEUE, celery_app
from app.worker.tasks import process_data, publish_job, purge_finished_jobs, requeue_stale_jobs
from tests.app.environment import REPO_ROOT, RUN_DIR, TEST_ENV, WORKER_LOG, stop_process
from tests.app.helpers import (
    create_queued_job,
    execute,
    job_row,
    wait_for_log_line_sync,
    wait_for_task,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("worker")]
RESULT_WAIT = 60


async def test_duplicate_message_for_a_finished_job_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    task_id = (await client.post("/process/11")).json()["task_id"]
    await wait_for_task(client, task_id, {"SUCCESS"})
    before = job_row(uuid.UUID(task_id))

    # A redelivery of the same message; asking for its result lets the test wait for it.
    duplicate = process_data.apply_async(args=[task_id], task_id=task_id, ignore_result=False)
    assert duplicate.get(timeout=RESULT_WAIT) is None

    assert job_row(uuid.UUID(task_id)) == before
    assert before is not None
    assert before["attempts"] == 1


async def test_two_copies_of_one_message_finish_the_job_once(client: httpx.AsyncClient) -> None:
    job_id = await create_queued_job(12)
    publish_job(job_id)
    publish_job(job_id)

    done = await wait_for_task(client, str(job_id), {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"
    assert done["result"] == {"item_id": 12, "status": "processed"}
    finished = job_row(job_id)
    # Both copies have run once the worker has logged two task ends for this id.
    line = f"process_data[{job_id}] succeeded"
    deadline = time.monotonic() + RESULT_WAIT
    while WORKER_LOG.read_text().count(line) < 2:
        assert time.monotonic() < deadline, "the second copy never ran"
        await anyio.sleep(0.1)
    # Whichever copy came second either found the job finished or lost the race to finish it.
    assert job_row(job_id) == finished
    assert finished is not None
    assert finished["attempts"] in {1, 2}


async def test_transient_failure_is_retried_then_succeeds(client: httpx.AsyncClient) -> None:
    job_id = await create_queued_job(21, {"fail_times": 1})
    publish_job(job_id)

    done = await wait_for_task(client, str(job_id), {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"
    assert done["error"] is None
    row = job_row(job_id)
    assert row is not None
    assert row["attempts"] == 2


async def test_retries_exhausted_ends_failed_with_the_error(client: httpx.AsyncClient) -> None:
    job_id = await create_queued_job(22, {"fail_times": 100})
    publish_job(job_id)

    done = await wait_for_task(client, str(job_id), {"SUCCESS", "FAILURE"})
    attempts = get_settings().job_max_retries + 1
    assert done["status"] == "FAILURE"
    assert done["result"] is None
    assert done["error"] == (f"TransientJobError: simulated transient failure {attempts} of 100")
    row = job_row(job_id)
    assert row is not None
    assert row["attempts"] == attempts
    assert row["status"] == "failed"
    assert row["finished_at"] is not None


async def test_reaper_republishes_a_stranded_job_which_then_succeeds(
    client: httpx.AsyncClient,
) -> None:
    # Recorded but never published (say the broker was down), an hour ago.
    job_id = await create_queued_job(31)
    execute(
        "UPDATE jobs SET created_at = now() - interval '1 hour',"
        " queued_at = now() - interval '1 hour' WHERE id = :id",
        id=job_id,
    )
    fresh_id = await create_queued_job(32)

    republished = requeue_stale_jobs.apply_async().get(timeout=RESULT_WAIT)
    assert republished >= 1

    done = await wait_for_task(client, str(job_id), {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"
    # A job queued less than REAPER_STALE_AFTER_SECONDS ago is left alone.
    assert (await client.get(f"/task/{fresh_id}")).json()["status"] == "PENDING"


async def test_purge_deletes_only_finished_jobs_past_retention(client: httpx.AsyncClient) -> None:
    retention = timedelta(days=get_settings().job_retention_days)
    old_finished = await create_queued_job(41)
    recent_finished = await create_queued_job(42)
    old_unfinished = await create_queued_job(43)
    for job_id, age, status in (
        (old_finished, retention + timedelta(days=1), "succeeded"),
        (recent_finished, timedelta(hours=1), "failed"),
        (old_unfinished, retention + timedelta(days=1), "started"),
    ):
        execute(
            "UPDATE jobs SET status = CAST(:status AS job_status), created_at = now() - :age,"
            " finished_at = CASE WHEN :status = 'started' THEN NULL ELSE now() - :age END"
            " WHERE id = :id",
            id=job_id,
            age=age,
            status=status,
        )

    deleted = purge_finished_jobs.apply_async().get(timeout=RESULT_WAIT)
    assert deleted >= 1
    assert job_row(old_finished) is None
    assert job_row(recent_finished) is not None
    assert job_row(old_unfinished) is not None
    # Keep the stranded "started" row from being picked up by later reaper runs.
    execute("DELETE FROM jobs WHERE id = :id", id=old_unfinished)


def test_beat_schedule_holds_both_periodic_tasks() -> None:
    settings = get_settings()
    schedule = celery_app.conf.beat_schedule
    entries = {entry["task"]: entry["schedule"] for entry in schedule.values()}
    assert entries == {
        "app.tasks.requeue_stale_jobs": timedelta(seconds=settings.reaper_interval_seconds),
        "app.tasks.purge_finished_jobs": timedelta(seconds=settings.purge_interval_seconds),
    }
    assert set(entries) <= set(celery_app.tasks)
    # Off the jobs queue, so a backlog of jobs cannot starve them (RELIABILITY.md).
    for task in entries:
        assert celery_app.amqp.router.route({}, task)["queue"].name == MAINTENANCE_QUEUE
    assert celery_app.conf.beat_schedule_filename == TEST_ENV["BEAT_SCHEDULE_PATH"]


def test_beat_sends_the_reaper_on_its_interval() -> None:
    """A real `celery beat` with a one-second reaper interval: the worker receives the runs."""
    log_path = RUN_DIR / "beat.log"
    schedule_path = RUN_DIR / "beat-test-schedule"
    with log_path.open("wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "app.worker", "beat", "--loglevel=INFO"],
            cwd=REPO_ROOT,
            env=os.environ
            | {"REAPER_INTERVAL_SECONDS": "1", "BEAT_SCHEDULE_PATH": str(schedule_path)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_log_line_sync(WORKER_LOG, "Task app.tasks.requeue_stale_jobs[")
        wait_for_log_line_sync(log_path, "Sending due task requeue-stale-jobs")
    finally:
        stop_process(beat)
    # The schedule file lives where the setting says (the code directory may be read-only).
    assert list(RUN_DIR.glob("beat-test-schedule*"))


def test_worker_heartbeat_file_is_touched_while_connected() -> None:
    heartbeat = Path(TEST_ENV["WORKER_HEARTBEAT_PATH"])
    first = heartbeat.stat().st_mtime
    deadline = time.monotonic() + 30
    while heartbeat.stat().st_mtime == first:
        assert time.monotonic() < deadline, "heartbeat not refreshed"
        time.sleep(0.2)
