"""text user ids and the app's SQL functions (adoption issue) — slot, filled by its branch

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 06:00:00

No schema change yet.
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
