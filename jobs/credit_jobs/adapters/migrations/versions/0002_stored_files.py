"""stored files for cleanup-storage

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 13:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_files",
        sa.Column("file_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delete_run_id", sa.UUID(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("size_bytes >= 0", name="stored_files_size_not_negative"),
        sa.CheckConstraint("deleted_at IS NULL OR delete_run_id IS NOT NULL", name="stored_files_delete_has_cause"),
        sa.PrimaryKeyConstraint("file_id"),
    )
    op.create_index("stored_files_uri", "stored_files", ["uri"], unique=True)
    op.create_index(
        "stored_files_due",
        "stored_files",
        ["expires_at", "file_id"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL AND expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "stored_files_due",
        table_name="stored_files",
        postgresql_where=sa.text("deleted_at IS NULL AND expires_at IS NOT NULL"),
    )
    op.drop_index("stored_files_uri", table_name="stored_files")
    op.drop_table("stored_files")
