"""backup_status: what the pgBackRest repository holds, written by the backup role, read by the
API's /metrics (docs/backup.md).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per backup kind (full, diff, incr: the newest of it) and one for the repository.
    op.create_table(
        "backup_status",
        sa.Column("kind", sa.Text(), primary_key=True),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("backup_status")
