"""the `import` trigger: `credit-jobs import saas-template` records its runs

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 09:30:00

The audit row's trigger CHECK accepts `import` besides the triggers of 0008. Nothing else changes: an import writes
ordinary grants (its key per source row is the grant's `idempotency_key`, `saas-template:<credit_transaction.id>`,
held by the existing partial unique index `credit_grants_idempotency_key`) and ordinary `usage` entries.

Existing data: every row already satisfies the wider CHECK. Cost: re-adding a CHECK scans job_runs once under a
short ACCESS EXCLUSIVE lock (the table holds one row per run, purged by purge-retention).
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# the contract's triggers at the time of this revision (credit_jobs.domain.contract.TRIGGERS)
_TRIGGERS_BEFORE = ("schedule", "manual", "catch-up", "backfill", "cli", "rollback")
_TRIGGERS_AFTER = (*_TRIGGERS_BEFORE, "import")


def _in(values: tuple[str, ...]) -> str:
    return f"trigger IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.drop_constraint("job_runs_trigger", "job_runs", type_="check")
    op.create_check_constraint("job_runs_trigger", "job_runs", _in(_TRIGGERS_AFTER))


def downgrade() -> None:
    # Fails (check violation) once an import ran: its audit rows name a trigger the old rule refuses, and whether to
    # drop that history is an operator's decision, not a migration's.
    op.drop_constraint("job_runs_trigger", "job_runs", type_="check")
    op.create_check_constraint("job_runs_trigger", "job_runs", _in(_TRIGGERS_BEFORE))
