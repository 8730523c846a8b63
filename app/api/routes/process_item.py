"""POST /process/{item_id}: the tutorial's entry point."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from app.api.deps import IntakeDep
from app.intake import BrokerUnavailable
from app.schemas import TaskAccepted

router = APIRouter(tags=["jobs"])

# The column is a PostgreSQL integer.
ItemId = Annotated[int, Path(ge=0, le=2**31 - 1, description="The item to process.")]


@router.post(
    "/process/{item_id}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        503: {
            "description": "PostgreSQL did not take the job (nothing recorded), or the broker "
            "did not take its message (recorded; the reaper queues it later). Retry-After is set."
        }
    },
)
async def process_item(item_id: ItemId, intake: IntakeDep) -> TaskAccepted:
    """Record a job, then queue it; poll GET /task/{task_id} for its state.

    The row is committed before its message is published and before this answers (app/intake.py:
    requests arriving together share one INSERT and one LPUSH).
    """
    try:
        job_id = await intake.accept(item_id)
    except BrokerUnavailable as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(error), headers={"Retry-After": "1"}
        ) from error
    return TaskAccepted(task_id=str(job_id))
