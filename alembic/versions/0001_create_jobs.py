"""Create the jobs table.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 06:26:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_STATUS = sa.Enum("queued", "started", "retrying", "succeeded", "failed", name="job_status")
UNFINISHED = sa.text("status IN ('queued', 'started', 'retrying')")
FINISHED_AT_SET = sa.text("finished_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), server_default="process_data", nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", JOB_STATUS, server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("progress", sa.Integer(), server_default="0", nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("celery_task_id", sa.String(length=36), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "queued_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(
        "ix_jobs_finished_at", "jobs", ["finished_at"], postgresql_where=FINISHED_AT_SET
    )
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at"])
    op.create_index(
        "ix_jobs_unfinished_queued_at", "jobs", ["queued_at"], postgresql_where=UNFINISHED
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_unfinished_queued_at", table_name="jobs", postgresql_where=UNFINISHED)
    op.drop_index("ix_jobs_status_created_at", table_name="jobs")
    op.drop_index("ix_jobs_finished_at", table_name="jobs", postgresql_where=FINISHED_AT_SET)
    op.drop_table("jobs")
    JOB_STATUS.drop(op.get_bind(), checkfirst=True)
