"""initial schema: policies, eligibility, accounts, ledger, run audit

Revision ID: 0001
Revises:
Create Date: 2026-11-28 12:45:51.936766
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_accounts",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("balance >= 0", name="credit_accounts_balance_not_negative"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "credit_eligibility",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("plan_code", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("is_lifetime", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_banned", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "credit_grants",
        sa.Column("grant_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("grant_type", sa.Text(), nullable=False),
        sa.Column("period_key", sa.Text(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cause_run_id", sa.UUID(), nullable=True),
        sa.Column("cause_request_id", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "grant_type IN ('free_tier', 'subscription', 'lifetime_monthly', 'gift', 'purchase', 'adjustment')",
            name="credit_grants_grant_type",
        ),
        sa.CheckConstraint("amount > 0", name="credit_grants_amount_positive"),
        sa.CheckConstraint("expired_at IS NULL OR remaining = 0", name="credit_grants_expired_is_empty"),
        sa.CheckConstraint("num_nonnulls(cause_run_id, cause_request_id) = 1", name="credit_grants_has_cause"),
        sa.CheckConstraint("remaining >= 0 AND remaining <= amount", name="credit_grants_remaining_bounds"),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    op.create_index(
        "credit_grants_expiring",
        "credit_grants",
        ["expires_at", "grant_id"],
        unique=False,
        postgresql_where=sa.text("expired_at IS NULL AND remaining > 0"),
    )
    op.create_index(
        "credit_grants_idempotency_key",
        "credit_grants",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "credit_grants_once_per_period", "credit_grants", ["user_id", "grant_type", "period_key"], unique=True
    )
    op.create_table(
        "job_runs",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("usecase", sa.Text(), nullable=False),
        sa.Column("period_key", sa.Text(), nullable=False),
        sa.Column("shard", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("shards", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "stats",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("host", sa.Text(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'skipped')", name="job_runs_status"),
        sa.CheckConstraint("trigger IN ('schedule', 'manual', 'catch-up', 'backfill', 'cli')", name="job_runs_trigger"),
        sa.CheckConstraint("shard >= 0 AND shard < shards", name="job_runs_shard_in_range"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index(
        "job_runs_one_running",
        "job_runs",
        ["job", "period_key", "shard"],
        unique=True,
        postgresql_where=sa.text("status = 'running' AND NOT dry_run"),
    )
    op.create_index("job_runs_started_at", "job_runs", ["started_at"], unique=False)
    op.create_table(
        "plan_credit_policies",
        sa.Column("plan_code", sa.Text(), nullable=False),
        sa.Column("grant_type", sa.Text(), nullable=False),
        sa.Column("credits_per_period", sa.Integer(), nullable=False),
        sa.Column("expiry_days", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "grant_type IN ('free_tier', 'subscription', 'lifetime_monthly')",
            name="plan_credit_policies_grant_type",
        ),
        sa.CheckConstraint("credits_per_period > 0", name="plan_credit_policies_credits_positive"),
        sa.CheckConstraint("expiry_days IS NULL OR expiry_days > 0", name="plan_credit_policies_expiry_positive"),
        sa.PrimaryKeyConstraint("plan_code"),
    )
    op.create_table(
        "credit_entries",
        sa.Column("entry_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("grant_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("cause_run_id", sa.UUID(), nullable=True),
        sa.Column("cause_request_id", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('usage', 'expiry', 'void')", name="credit_entries_kind"),
        sa.CheckConstraint("amount > 0", name="credit_entries_amount_positive"),
        sa.CheckConstraint("num_nonnulls(cause_run_id, cause_request_id) = 1", name="credit_entries_has_cause"),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["credit_grants.grant_id"],
        ),
        sa.PrimaryKeyConstraint("entry_id"),
    )
    op.create_index(
        "credit_entries_one_expiry",
        "credit_entries",
        ["grant_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'expiry'"),
    )
    op.create_index(
        "credit_entries_request",
        "credit_entries",
        ["cause_request_id"],
        unique=False,
        postgresql_where=sa.text("cause_request_id IS NOT NULL"),
    )
    op.create_index("credit_entries_user", "credit_entries", ["user_id", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("credit_entries_user", table_name="credit_entries")
    op.drop_index(
        "credit_entries_request",
        table_name="credit_entries",
        postgresql_where=sa.text("cause_request_id IS NOT NULL"),
    )
    op.drop_index("credit_entries_one_expiry", table_name="credit_entries", postgresql_where=sa.text("kind = 'expiry'"))
    op.drop_table("credit_entries")
    op.drop_table("plan_credit_policies")
    op.drop_index("job_runs_started_at", table_name="job_runs")
    op.drop_index(
        "job_runs_one_running",
        table_name="job_runs",
        postgresql_where=sa.text("status = 'running' AND NOT dry_run"),
    )
    op.drop_table("job_runs")
    op.drop_index("credit_grants_once_per_period", table_name="credit_grants")
    op.drop_index("credit_grants_idempotency_key", table_name="credit_grants")
    op.drop_index(
        "credit_grants_expiring",
        table_name="credit_grants",
        postgresql_where=sa.text("expired_at IS NULL AND remaining > 0"),
    )
    op.drop_table("credit_grants")
    op.drop_table("credit_eligibility")
    op.drop_table("credit_accounts")
