"""POST /process/{item_id}: the tutorial's entry point."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from starlette.concurrency import run_in_threadpool

from app import jobs
from app.api.deps import SessionDep
from app.schemas import TaskAccepted
from app.tasks import publish_job

router = APIRouter(tags=["jobs"])

# The column is a PostgreSQL integer.
ItemId = Annotated[int, Path(ge=0, le=2**31 - 1, description="The item to process.")]


@router.post(
    "/process/{item_id}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"description": "The broker did not take the message; the job stays queued."}},
)
async def process_item(item_id: ItemId, session: SessionDep) -> TaskAccepted:
    """Record a job, then queue it; poll GET /task/{task_id} for its state."""
    # Committed before publishing: a message never names a job the database does not have.
    job = await jobs.create_job(session, item_id)
    try:
        await run_in_threadpool(publish_job, job.id)
    except Exception as error:
        # The row stays queued; the reaper republishes it once the broker is back.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"job {job.id} recorded but not queued: broker unavailable",
        ) from error
    return TaskAccepted(task_id=str(job.id))
