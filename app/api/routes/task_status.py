"""GET /task/{task_id}: the tutorial's polling endpoint, answered from the job row.

A finished job's answer, once read here, is kept and served by `app.api.finished_jobs`'s middleware
before routing: this route runs for unfinished, unknown and not yet cached jobs.
"""

import json
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Response, status

from app.api.deps import FinishedJobsDep, HotConnectionDep
from app.api.finished_jobs import NO_STORE, cache_control
from app.api.schemas import CELERY_STATE, TaskStatus
from app.storage.models import FINISHED_STATUSES, JobStatus

router = APIRouter(tags=["jobs"])

# A prepared statement per pooled connection (asyncpg); JSONB comes back as its text.
SELECT_TASK_STATE = "SELECT status, result, progress, error, finished_at FROM jobs WHERE id = $1"


@router.get(
    "/task/{task_id}",
    response_model=TaskStatus,
    responses={404: {"description": "No job has this id."}},
)
async def get_task(
    task_id: uuid.UUID, connection: HotConnectionDep, finished: FinishedJobsDep
) -> Response:
    """The job's state under Celery's names (PENDING, STARTED, RETRY, SUCCESS, FAILURE)."""
    row = await connection.fetchrow(SELECT_TASK_STATE, task_id)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"no task {task_id}",
            headers={"Cache-Control": NO_STORE},
        )
    job_status = JobStatus(row["status"])
    body = (
        TaskStatus(
            task_id=str(task_id),
            status=CELERY_STATE[job_status],
            result=None if row["result"] is None else json.loads(row["result"]),
            progress=row["progress"],
            error=row["error"],
        )
        .model_dump_json()
        .encode()
    )
    caching = NO_STORE
    if job_status in FINISHED_STATUSES and finished.max_entries > 0:
        finished.put(task_id, body, row["finished_at"])
        caching = cache_control(row["finished_at"] + finished.retention, datetime.now(UTC))
    # Already the response model's JSON: returned as is, not validated and serialised again.
    return Response(body, media_type="application/json", headers={"Cache-Control": caching})
