"""GET /jobs: the job records, filtered by status and paginated."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import SessionDep
from app.api.schemas import JobOut, JobPage
from app.storage import jobs
from app.storage.models import JobStatus

router = APIRouter(tags=["jobs"])


@router.get("/jobs")
async def list_jobs(
    session: SessionDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobPage:
    """Jobs, newest first."""
    page, total = await jobs.list_jobs(session, status, limit, offset)
    return JobPage(
        items=[JobOut.model_validate(job) for job in page],
        total=total,
        limit=limit,
        offset=offset,
    )
