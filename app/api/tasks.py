"""GET /task/{task_id}: the tutorial's polling endpoint, answered from the job row."""

import uuid

from fastapi import APIRouter, HTTPException, status

from app import jobs
from app.db import get_autocommit_engine
from app.schemas import CELERY_STATE, TaskStatus

router = APIRouter(tags=["jobs"])


@router.get("/task/{task_id}", responses={404: {"description": "No job has this id."}})
async def get_task(task_id: uuid.UUID) -> TaskStatus:
    """The job's state under Celery's names (PENDING, STARTED, RETRY, SUCCESS, FAILURE)."""
    # One SELECT in autocommit: no BEGIN/ROLLBACK round trips, no ORM object.
    async with get_autocommit_engine().connect() as connection:
        job = await jobs.get_job_state(connection, task_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no task {task_id}")
    return TaskStatus(
        task_id=str(task_id),
        status=CELERY_STATE[job.status],
        result=job.result,
        progress=job.progress,
        error=job.error,
    )
