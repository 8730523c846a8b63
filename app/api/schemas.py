"""Request and response bodies."""

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.storage.models import JobStatus

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
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class NotificationIn(BaseModel):
    # At most 2**53 - 1: larger JSON numbers lose precision in most clients (JavaScript, floats).
    user_id: int = Field(ge=0, le=2**53 - 1)
    # The pattern documents the NUL rule in the OpenAPI schema; the validator below words the 422.
    message: str = Field(
        min_length=1, max_length=2000, json_schema_extra={"pattern": r"^[^\u0000]*$"}
    )

    @field_validator("user_id", mode="before")
    @classmethod
    def _json_integer(cls, value: Any) -> Any:
        # Lax mode would take `false` or "7" as a user id; JSON Schema's integer (the OpenAPI
        # contract) is a number, so only numbers pass (345.0 is one; 345.5 still fails below).
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("user_id must be a JSON integer")
        return value

    @field_validator("message")
    @classmethod
    def _storable_text(cls, value: str) -> str:
        # PostgreSQL's text cannot hold NUL (the notification is stored in the outbox): a 422 here,
        # not a 500 from the INSERT.
        if "\x00" in value:
            raise ValueError("message must not contain the NUL character (\\u0000)")
        return value


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    checks: dict[str, str] = Field(description='Each check: "ok" or why it failed.')
