"""period rollback: rolled-back grants, the void reason, the `rollback` trigger

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 06:00:00

Before: a periodic grant held its (user, grant family, period) key forever, so after a void the period could never
be granted again. After: `credit-jobs rollback` marks a grant rolled back (`rolled_back_at`, `rollback_run_id`, and
`rollback_kept` = the credits the user kept from it: used or expired before the rollback), and the unique index
leaves rolled-back grants out, so the period can be distributed again; distribution subtracts what the user kept
(`credit_grants_rolled_back`, a partial index that is empty until a rollback, finds it). Void entries carry the
operator's reason (`credit_entries.reason`). The audit row's trigger accepts `rollback`.

Existing data: no grant is rolled back (the new columns are NULL, a metadata-only change), so every CHECK holds.
Cost: rebuilding the unique index scans credit_grants once (as 0006 did); the new partial index is empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# the contract's triggers at the time of this revision (credit_jobs.domain.contract.TRIGGERS)
_TRIGGERS_BEFORE = ("schedule", "manual", "catch-up", "backfill", "cli")
_TRIGGERS_AFTER = (*_TRIGGERS_BEFORE, "rollback")
_ONCE_BEFORE = "period_key IS NOT NULL AND NOT legacy_duplicate"
_ONCE_AFTER = "period_key IS NOT NULL AND NOT legacy_duplicate AND rolled_back_at IS NULL"


def _in(values: tuple[str, ...]) -> str:
    return f"trigger IN ({', '.join(repr(v) for v in values)})"


def _once_per_period(predicate: str) -> None:
    op.drop_index("credit_grants_once_per_period", table_name="credit_grants")
    op.create_index(
        "credit_grants_once_per_period",
        "credit_grants",
        ["user_id", "grant_family", "period_key"],
        unique=True,
        postgresql_where=sa.text(predicate),
    )


def upgrade() -> None:
    op.add_column("credit_grants", sa.Column("rolled_back_at", sa.DateTime(timezone=True)))
    op.add_column("credit_grants", sa.Column("rollback_run_id", UUID(as_uuid=True)))
    op.add_column("credit_grants", sa.Column("rollback_kept", sa.BigInteger()))
    op.create_check_constraint(
        "credit_grants_rollback_complete",
        "credit_grants",
        "num_nulls(rolled_back_at, rollback_run_id, rollback_kept) IN (0, 3)",
    )
    op.create_check_constraint(
        "credit_grants_rolled_back_is_empty",
        "credit_grants",
        "rolled_back_at IS NULL OR (period_key IS NOT NULL AND remaining = 0 "
        "AND rollback_kept >= 0 AND rollback_kept <= amount)",
    )
    op.add_column("credit_entries", sa.Column("reason", sa.Text()))
    _once_per_period(_ONCE_AFTER)
    op.create_index(
        "credit_grants_rolled_back",
        "credit_grants",
        ["user_id", "grant_family", "period_key"],
        postgresql_where=sa.text("rolled_back_at IS NOT NULL"),
    )
    op.drop_constraint("job_runs_trigger", "job_runs", type_="check")
    op.create_check_constraint("job_runs_trigger", "job_runs", _in(_TRIGGERS_AFTER))


def downgrade() -> None:
    # Fails (check violation) once a rollback ran: its audit rows name a trigger the old rule refuses, and which
    # history to drop is an operator's decision, not a migration's. The same holds for a redone period (unique index).
    op.drop_constraint("job_runs_trigger", "job_runs", type_="check")
    op.create_check_constraint("job_runs_trigger", "job_runs", _in(_TRIGGERS_BEFORE))
    op.drop_index("credit_grants_rolled_back", table_name="credit_grants")
    _once_per_period(_ONCE_BEFORE)
    op.drop_column("credit_entries", "reason")
    op.drop_constraint("credit_grants_rolled_back_is_empty", "credit_grants", type_="check")
    op.drop_constraint("credit_grants_rollback_complete", "credit_grants", type_="check")
    op.drop_column("credit_grants", "rollback_kept")
    op.drop_column("credit_grants", "rollback_run_id")
    op.drop_column("credit_grants", "rolled_back_at")
