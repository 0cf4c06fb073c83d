"""one periodic grant per user, grant family and period

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 03:10:00

Before: unique (user_id, grant_type, period_key), so a user whose plan changed grant type mid-period got a second
grant on any rerun. After: every periodic grant carries a `grant_family` (the distributing job's, default 'plan'),
and the unique index is (user_id, grant_family, period_key) over periodic grants.

Existing data: every periodic grant is backfilled into family 'plan' (the only family there was). Where a user
already has two or more periodic grants for one period (the bug above), the migration does not fail and deletes
nothing — credits may have been spent from either grant: the earliest grant (lowest grant_id) stays in the unique
index, the later ones are flagged `legacy_duplicate = true`, which keeps them out of the index (so a rerun still
conflicts with the earliest and grants nothing), and `credit-jobs check` reports them until an operator voids them
(docs/credits-lifecycle.md, "One grant per period").

Cost: the new column with a constant default is a metadata-only change; the default is then removed and one-off
grants (few) reset to NULL, so only one-offs are rewritten. Building the new index scans credit_grants once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DEFAULT_FAMILY = "plan"  # credit_jobs.domain.grant_rules.DEFAULT_GRANT_FAMILY at the time of this revision


def upgrade() -> None:
    # every existing row gets 'plan' without a rewrite (PostgreSQL ≥ 11 stores a constant default in the catalog)
    op.add_column("credit_grants", sa.Column("grant_family", sa.Text(), server_default=sa.text(f"'{DEFAULT_FAMILY}'")))
    op.alter_column("credit_grants", "grant_family", server_default=None)
    op.execute("UPDATE credit_grants SET grant_family = NULL WHERE period_key IS NULL")
    op.add_column(
        "credit_grants",
        sa.Column("legacy_duplicate", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.execute(
        """
        UPDATE credit_grants g SET legacy_duplicate = true
        FROM (
            SELECT grant_id, row_number() OVER (PARTITION BY user_id, grant_family, period_key ORDER BY grant_id) AS n
            FROM credit_grants WHERE period_key IS NOT NULL
        ) d
        WHERE g.grant_id = d.grant_id AND d.n > 1
        """
    )
    op.create_check_constraint(
        "credit_grants_periodic_has_family", "credit_grants", "(period_key IS NULL) = (grant_family IS NULL)"
    )
    op.drop_index("credit_grants_once_per_period", table_name="credit_grants")
    op.create_index(
        "credit_grants_once_per_period",
        "credit_grants",
        ["user_id", "grant_family", "period_key"],
        unique=True,
        postgresql_where=sa.text("period_key IS NOT NULL AND NOT legacy_duplicate"),
    )


def downgrade() -> None:
    # Fails (unique violation) if a user now holds grants of one type in two families for one period: the old rule
    # cannot express that, and which grant to drop is a billing decision, not a migration's.
    op.drop_index("credit_grants_once_per_period", table_name="credit_grants")
    op.create_index(
        "credit_grants_once_per_period", "credit_grants", ["user_id", "grant_type", "period_key"], unique=True
    )
    op.drop_constraint("credit_grants_periodic_has_family", "credit_grants", type_="check")
    op.drop_column("credit_grants", "legacy_duplicate")
    op.drop_column("credit_grants", "grant_family")
