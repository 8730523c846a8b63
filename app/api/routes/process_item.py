"""POST /process/{item_id}: the tutorial's entry point."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status

from app.api.clients import CallerDep
from app.api.deps import IntakeDep
from app.api.schemas import TaskAccepted
from app.intake.idempotency import IdempotencyKeyHeader, IdempotencyKeyReused

router = APIRouter(tags=["jobs"])

# The column is a PostgreSQL integer.
ItemId = Annotated[int, Path(ge=0, le=2**31 - 1, description="The item to process.")]

# Set on an answer that repeats an earlier one (same Idempotency-Key).
REPLAYED_HEADER = "Idempotent-Replayed"


@router.post(
    "/process/{item_id}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        422: {
            "description": "A malformed item id or Idempotency-Key, or a key already used "
            "with another item id."
        },
        503: {
            "description": "PostgreSQL did not take the job: nothing was recorded, retry after "
            "Retry-After (with the same Idempotency-Key, if one was sent)."
        },
    },
)
async def process_item(
    item_id: ItemId,
    intake: IntakeDep,
    response: Response,
    client: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TaskAccepted:
    """Record a job; poll GET /task/{task_id} for its state.

    The 202 comes once the row is committed; its message reaches the broker afterwards, through
    the outbox (app/intake/group_commit.py, app/intake/outbox.py), whatever the broker is doing at
    the time.
    """
    try:
        job_id, replayed = await intake.accept(item_id, idempotency_key, client)
    except IdempotencyKeyReused as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from error
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return TaskAccepted(task_id=str(job_id))
