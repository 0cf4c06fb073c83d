"""who asked for a run (HTTP API issue) — slot, filled by its branch

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 06:00:00

No schema change yet.
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
