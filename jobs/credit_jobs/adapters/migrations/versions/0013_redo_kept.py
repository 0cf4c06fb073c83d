"""what a redo subtracted: `credit_grants.kept_earlier`

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 06:30:00

A periodic grant now records what its user had kept of the period's rolled-back grants when it was written:
0 for a first distribution, the kept credits for a redo after `credit-jobs rollback` (whose grant is the policy
amount minus them). `credit-jobs check` compares it with the rolled-back grants of the same (user, grant family,
period): a redo written from a snapshot older than a rollback (a race now excluded by the run guard)
shows as a grant that subtracted less than the user kept — credits above the policy, named by user and period.
NULL for grants written before this revision and for imported ones (not checked). Adding a nullable column with no
default is a catalog change: no table rewrite, a brief ACCESS EXCLUSIVE lock only.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE credit_grants ADD COLUMN kept_earlier bigint")


def downgrade() -> None:
    op.execute("ALTER TABLE credit_grants DROP COLUMN kept_earlier")
