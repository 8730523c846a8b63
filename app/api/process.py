"""POST /process/{item_id}: the tutorial's entry point."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from app import jobs
from app.broker import publish_task
from app.db import get_autocommit_engine
from app.schemas import TaskAccepted
from app.tasks import process_data

router = APIRouter(tags=["jobs"])

# The column is a PostgreSQL integer.
ItemId = Annotated[int, Path(ge=0, le=2**31 - 1, description="The item to process.")]


@router.post(
    "/process/{item_id}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"description": "The broker did not take the message; the job stays queued."}},
)
async def process_item(item_id: ItemId) -> TaskAccepted:
    """Record a job, then queue it; poll GET /task/{task_id} for its state."""
    # Committed before publishing (an autocommit INSERT): a message never names a job the
    # database does not have.
    async with get_autocommit_engine().connect() as connection:
        job_id = await jobs.insert_job(connection, item_id)
    task_id = str(job_id)
    try:
        # On the event loop: the same message as `process_data.apply_async` (app.broker).
        await publish_task(process_data.name, task_id, [task_id])
    except Exception as error:
        # The row stays queued; the reaper republishes it once the broker is back.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"job {task_id} recorded but not queued: broker unavailable",
        ) from error
    return TaskAccepted(task_id=task_id)
