"""amount and balance bounds (credit_jobs.domain.limits) as CHECK constraints

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 03:10:00

The constraints are added NOT VALID: they hold for every row written from now on (so an out-of-bounds grant or
balance can no longer be written by any path), while rows that already break them are left for `credit-jobs check`
to report instead of failing the upgrade of a production database.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MAX_CREDITS = 10**12  # credit_jobs.domain.limits.MAX_CREDITS at the time of this revision
MAX_BALANCE = 10**15  # credit_jobs.domain.limits.MAX_BALANCE
MAX_EXPIRY_DAYS = 36_500  # credit_jobs.domain.limits.MAX_EXPIRY_DAYS

BOUNDS = (
    ("credit_grants", "credit_grants_amount_bounded", f"amount <= {MAX_CREDITS}"),
    ("credit_entries", "credit_entries_amount_bounded", f"amount <= {MAX_CREDITS}"),
    ("credit_accounts", "credit_accounts_balance_bounded", f"balance <= {MAX_BALANCE}"),
    # credits_per_period is an INTEGER (< 2.2e9), already inside MAX_CREDITS
    ("plan_credit_policies", "plan_credit_policies_expiry_bounded", f"expiry_days <= {MAX_EXPIRY_DAYS}"),
)


def upgrade() -> None:
    for table, name, condition in BOUNDS:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")


def downgrade() -> None:
    for table, name, _ in reversed(BOUNDS):
        op.drop_constraint(name, table, type_="check")
