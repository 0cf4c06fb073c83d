"""who asked for a run: `job_runs.requested_by`

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 06:00:00

A nullable text column naming the principal that asked for a run (an API credential's name, `basic:<user>`), set by
`credit-jobs api` for local runs and carried by the operator for run-now requests made through the API. Existing rows
keep NULL (nobody recorded who asked). Adding a nullable column without a default is a catalog-only change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_runs", sa.Column("requested_by", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("job_runs", "requested_by")
