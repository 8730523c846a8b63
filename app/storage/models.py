"""The tables: `jobs` (one row per accepted unit of work, the source of truth for its state),
`outbox` (task messages committed but not yet on the broker), `idempotency_keys` and `api_keys`
(the clients allowed in when AUTH_REQUIRED is on)."""

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names keep Alembic migrations and `alembic check` stable.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED)
# The client of every request while AUTH_REQUIRED is off (no key): `api_keys` ids start at 1.
ANONYMOUS_CLIENT = 0
UNFINISHED_STATUSES = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    item_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64), server_default="process_data")
    # Free-form options for the task; `fail_times` simulates transient failures (docs/app.md).
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    status: Mapped[JobStatus] = mapped_column(
        Enum(
            JobStatus,
            name="job_status",
            values_callable=lambda statuses: [s.value for s in statuses],
        ),
        server_default=JobStatus.QUEUED.value,
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    progress: Mapped[int] = mapped_column(Integer, server_default="0")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    # Equal to `id` as text: the Celery task id is the job id, so GET /task is a primary-key lookup.
    celery_task_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Last time a message for this job was published (first publish, retry or reaper republish).
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The `api_keys` row of the key that created it, ANONYMOUS_CLIENT without one. A plain column,
    # not a foreign key: a key is revoked, never deleted, and a foreign key would cost every
    # INSERT of the group commit a lookup and a lock of the key's row.
    client_id: Mapped[int] = mapped_column(Integer, server_default=str(ANONYMOUS_CLIENT))

    __table_args__ = (
        # The oldest job not yet started (GET /metrics).
        Index("ix_jobs_status_created_at", "status", "created_at"),
        # GET /jobs: a client's jobs newest first, the keyset cursor (created_at, id) a range in
        # either index, with or without the status filter.
        Index("ix_jobs_client_id_created_at_id", "client_id", "created_at", "id"),
        Index("ix_jobs_client_id_status_created_at_id", "client_id", "status", "created_at", "id"),
        # The purge's "finished before the cutoff" scan.
        Index(
            "ix_jobs_finished_at",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
        # The reaper: only unfinished rows, ordered by their last publish.
        Index(
            "ix_jobs_unfinished_queued_at",
            "queued_at",
            postgresql_where=text("status IN ('queued', 'started', 'retrying')"),
        ),
    )


class OutboxBatch(Base):
    """Task messages whose rows are committed and which the broker may not hold yet
    (app/intake/outbox.py).

    One row per group of messages committed together (a group commit's jobs, one notification),
    written in the same statement as the rows it names and deleted once the broker took them.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(200))
    task_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(Uuid))
    # One list of arguments per task id; NULL means each task's argument is its own id (jobs).
    args: Mapped[list[list[Any]] | None] = mapped_column(JSONB)
    # One W3C traceparent per task id (app/tracing.py), NULL entries for none.
    traceparents: Mapped[list[str | None] | None] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IdempotencyKey(Base):
    """A request's Idempotency-Key, what it was sent with, and what it was answered."""

    __tablename__ = "idempotency_keys"

    # Each client's keys are its own: the same key sent by two clients is two records.
    client_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, server_default=str(ANONYMOUS_CLIENT)
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the method, path and body: the same key with another request is refused.
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    status_code: Mapped[int] = mapped_column(SmallInteger, server_default="202")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    # The purge's "older than the retention" scan.
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


class ApiKey(Base):
    """A client's API key (app/api/auth.py): not the key itself, its SHA-256 and first characters.

    The limits are the key's own when set, else the settings' defaults (`API_KEY_*`).
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # The key's first characters, not secret: shown by `python -m app.keys list`, and how a
    # presented key finds the record it is compared with.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    rate_per_second: Mapped[float | None] = mapped_column(Float)
    burst: Mapped[int | None] = mapped_column(Integer)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BackupStatus(Base):
    """What the pgBackRest repository holds (docs/backup.md): the newest backup of each kind
    (full, diff, incr) and, as kind `repository`, the repository's size. Written by the backup
    role (infra/postgres/backup-due.sql), read by the API's /metrics."""

    __tablename__ = "backup_status"

    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    label: Mapped[str | None] = mapped_column(Text)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
