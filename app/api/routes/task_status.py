"""GET /task/{task_id}: the tutorial's polling endpoint, answered from the job row.

A finished job's answer, once read here, is kept and served by `app.api.finished_jobs`'s middleware
before routing: this route runs for unfinished, unknown and not yet cached jobs.

A job is its client's only (app/api/clients.py): another client's is answered exactly as an id
never issued (404), never 403, which would say that it exists.
"""

import json
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Response, status

from app.api.clients import CallerDep
from app.api.deps import FinishedJobsDep, HotConnectionDep
from app.api.finished_jobs import NO_STORE, cache_control
from app.api.schemas import CELERY_STATE, TaskStatus
from app.storage.models import FINISHED_STATUSES, JobStatus

router = APIRouter(tags=["jobs"])

# A prepared statement per pooled connection (asyncpg); JSONB comes back as its text.
SELECT_TASK_STATE = """
SELECT status, result, progress, error, finished_at FROM jobs WHERE id = $1 AND client_id = $2
"""


@router.get(
    "/task/{task_id}",
    response_model=TaskStatus,
    responses={404: {"description": "No job of this client has this id."}},
)
async def get_task(
    task_id: uuid.UUID, connection: HotConnectionDep, finished: FinishedJobsDep, client: CallerDep
) -> Response:
    """The job's state under Celery's names (PENDING, STARTED, RETRY, SUCCESS, FAILURE)."""
    row = await connection.fetchrow(SELECT_TASK_STATE, task_id, client)
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
        finished.put((client, task_id), body, row["finished_at"])
        purgeable_at = row["finished_at"] + finished.retention
        caching = cache_control(purgeable_at, datetime.now(UTC), client)
    # Already the response model's JSON: returned as is, not validated and serialised again.
    return Response(body, media_type="application/json", headers={"Cache-Control": caching})
