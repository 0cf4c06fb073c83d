"""canonical period keys enforced by CHECK constraints

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 03:10:00

`credit_grants.period_key` and `job_runs.period_key` must be spelled as `credit_jobs.domain.period_keys` formats
them (ASCII digits; monthly, ISO-weekly, daily, or hourly with a UTC offset). The legacy hourly form without an offset
(`2026-11-28T13`, written before this revision) stays accepted, so old rows remain updatable (a consumption or an
expiry updates its grant); the code never writes it again and refuses it as input.

The constraints are added NOT VALID, as in 0004: every row written or updated from now on must pass, while a row
that already breaks them (possible only through the Unicode-digit defect this revision closes: full-width 2026-11) does
not fail the upgrade of a production database; docs/period-keys.md shows how to find such rows.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# credit_jobs.domain.period_keys.SQL_KEY_PATTERN at the time of this revision (a migration never imports live code).
KEY_PATTERN = (
    "^[0-9]{4}-((0[1-9]|1[0-2])|W(0[1-9]|[1-4][0-9]|5[0-3])"
    "|(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3])([+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?)$"
)

CHECKS = (
    ("credit_grants", "credit_grants_period_key_canonical", f"period_key IS NULL OR period_key ~ '{KEY_PATTERN}'"),
    ("job_runs", "job_runs_period_key_canonical", f"period_key ~ '{KEY_PATTERN}'"),
)


def upgrade() -> None:
    for table, name, condition in CHECKS:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")


def downgrade() -> None:
    for table, name, _ in reversed(CHECKS):
        op.drop_constraint(name, table, type_="check")
