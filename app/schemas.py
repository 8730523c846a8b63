"""Request and response bodies."""

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models import JobStatus

# Celery's state names, which the tutorial's client polls for.
CeleryState = Literal["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE"]

CELERY_STATE: dict[JobStatus, CeleryState] = {
    JobStatus.QUEUED: "PENDING",
    JobStatus.STARTED: "STARTED",
    JobStatus.RETRYING: "RETRY",
    JobStatus.SUCCEEDED: "SUCCESS",
    JobStatus.FAILED: "FAILURE",
}


class TaskAccepted(BaseModel):
    task_id: str
    status: Literal["queued"] = "queued"


class TaskStatus(BaseModel):
    task_id: str
    status: CeleryState
    result: dict[str, Any] | None = Field(description="The job's result once SUCCESS, else null.")
    progress: int = Field(description="Percent done, 0 to 100.")
    error: str | None = Field(description="The last error (RETRY, FAILURE), else null.")


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    item_id: int
    kind: str
    status: JobStatus
    attempts: int
    progress: int
    result: dict[str, Any] | None
    error: str | None
    celery_task_id: str
    created_at: datetime
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class NotificationIn(BaseModel):
    user_id: int = Field(ge=0, le=2**63 - 1)
    message: str = Field(min_length=1, max_length=2000)


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    checks: dict[str, str] = Field(description='Each check: "ok" or why it failed.')
