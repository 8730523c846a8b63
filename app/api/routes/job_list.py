"""GET /jobs: the client's job records, newest first, filtered by status, a page at a time.

Paged by a keyset cursor, not an offset: the cursor names the last job of a page by its
(created_at, id), and the next page is the index range after it, so every page costs its own rows
only, however deep, and a job inserted meanwhile neither repeats nor hides another. There is no
total: counting would read every row the filter matches.
"""

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from app.api.clients import CallerDep
from app.api.deps import SessionDep
from app.api.schemas import JobOut, JobPage
from app.storage import jobs
from app.storage.models import JobStatus

router = APIRouter(tags=["jobs"])

Cursor = tuple[datetime, uuid.UUID]


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    """Opaque to clients: URL-safe base64 of `<created_at ISO 8601>,<id>`."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()},{job_id}".encode()).decode()


def decode_cursor(cursor: str) -> Cursor:
    """The (created_at, id) a cursor names; 422 for anything `encode_cursor` did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        created_at, _, job_id = text.partition(",")
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("no time zone")
        return when, uuid.UUID(job_id)
    except (binascii.Error, UnicodeError, ValueError) as error:
        problem = {
            "type": "value_error",
            "loc": ["query", "cursor"],
            "msg": "not a cursor this API issued (the next_cursor of a page)",
            "input": cursor,
        }
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[problem]) from error


@router.get("/jobs")
async def list_jobs(
    session: SessionDep,
    client: CallerDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="`next_cursor` of the previous page; none: the first."),
    ] = None,
) -> JobPage:
    """The client's jobs, newest first; `next_cursor` fetches the next page."""
    after = None if cursor is None else decode_cursor(cursor)
    # One row more than the page: whether there is a next page, without a second query.
    page = list(await jobs.list_jobs(session, client, status, limit + 1, after))
    next_cursor = None
    if len(page) > limit:
        del page[limit:]
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id)
    return JobPage(
        items=[JobOut.model_validate(job) for job in page], limit=limit, next_cursor=next_cursor
    )
