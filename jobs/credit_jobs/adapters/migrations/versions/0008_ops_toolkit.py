"""period rollback and retention (ops toolkit issue) — slot, filled by its branch

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 06:00:00

No schema change yet.
"""

from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
