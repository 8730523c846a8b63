"""API keys; each job and Idempotency-Key belongs to the client that sent it; GET /jobs by keyset.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows written before this migration, and while AUTH_REQUIRED is off, belong to client 0
# (`ANONYMOUS_CLIENT`). A constant default: adding the column rewrites no row.
ANONYMOUS = sa.text("0")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), sa.Identity(always=True), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(), nullable=False),
        sa.Column("rate_per_second", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
    )
    op.add_column(
        "jobs", sa.Column("client_id", sa.Integer(), server_default=ANONYMOUS, nullable=False)
    )
    op.create_index("ix_jobs_client_id_created_at_id", "jobs", ["client_id", "created_at", "id"])
    op.create_index(
        "ix_jobs_client_id_status_created_at_id",
        "jobs",
        ["client_id", "status", "created_at", "id"],
    )
    op.add_column(
        "idempotency_keys",
        sa.Column("client_id", sa.Integer(), server_default=ANONYMOUS, nullable=False),
    )
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["client_id", "key"])


def downgrade() -> None:
    # Two clients' records of one key cannot both stay under the old key-only primary key.
    op.execute(
        "DELETE FROM idempotency_keys a USING idempotency_keys b"
        " WHERE a.key = b.key AND a.client_id > b.client_id"
    )
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["key"])
    op.drop_column("idempotency_keys", "client_id")
    op.drop_index("ix_jobs_client_id_status_created_at_id", table_name="jobs")
    op.drop_index("ix_jobs_client_id_created_at_id", table_name="jobs")
    op.drop_column("jobs", "client_id")
    op.drop_table("api_keys")
