"""The database schema as SQLAlchemy 2 typed declarative models — the shape Alembic's migrations create.

Every ledger invariant the database can hold is a constraint or index here (docs/contract.md, ledger invariants):
balances never negative (CHECK), one periodic grant per (user, grant family, period key) (partial unique index),
one expiry entry per grant (partial unique index), every ledger row names its cause (CHECK num_nonnulls), at most
one *running* audit row per (job, period key, shard) (partial unique index). `tests/integration/schema/test_schema.py`
proves the migrations and these models agree. The usecases query with set-based SQL over these tables (see
`credit_jobs.adapters.ledger_sql`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from credit_jobs.domain.contract import TRIGGERS as TRIGGERS  # the audit row's trigger CHECK
from credit_jobs.domain.limits import MAX_BALANCE, MAX_CREDITS, MAX_EXPIRY_DAYS
from credit_jobs.domain.period_keys import SQL_KEY_PATTERN

GRANT_TYPES = ("free_tier", "subscription", "lifetime_monthly", "gift", "purchase", "adjustment")
PERIODIC_GRANT_TYPES = ("free_tier", "subscription", "lifetime_monthly")
ENTRY_KINDS = ("usage", "expiry", "void")
REQUEST_OPERATIONS = ("consume", "grant", "void")
RUN_STATUSES = ("running", "succeeded", "failed", "skipped")


# User ids are the host application's text ids, byte-ordered (migration 0007: stable keyset and lock order, and
# indexes no C-library collation change can reorder).
UserId = Text(collation="C")
# The id rule of domain.requests.validate_user_id, as the database function migration 0012 installs.
USER_ID_RULES = "credit_text_id_is_valid(user_id)"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    pass


class PlanCreditPolicy(Base):
    """How many credits a plan grants each period, of which grant type, and how long they last."""

    __tablename__ = "plan_credit_policies"
    __table_args__ = (
        CheckConstraint(_in("grant_type", PERIODIC_GRANT_TYPES), name="plan_credit_policies_grant_type"),
        CheckConstraint("credits_per_period > 0", name="plan_credit_policies_credits_positive"),
        CheckConstraint("expiry_days IS NULL OR expiry_days > 0", name="plan_credit_policies_expiry_positive"),
        CheckConstraint(f"expiry_days <= {MAX_EXPIRY_DAYS}", name="plan_credit_policies_expiry_bounded"),
    )

    plan_code: Mapped[str] = mapped_column(Text, primary_key=True)
    grant_type: Mapped[str] = mapped_column(Text)
    credits_per_period: Mapped[int] = mapped_column(Integer)
    expiry_days: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CreditEligibility(Base):
    """The eligibility source: who is subscribed to what. The integration point with a host application, which may
    replace this table by a view of the same shape (user_id, plan_code, status, is_lifetime, is_banned)."""

    __tablename__ = "credit_eligibility"

    user_id: Mapped[str] = mapped_column(UserId, primary_key=True)
    plan_code: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)  # 'active' is eligible; anything else is not, unless lifetime
    is_lifetime: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    is_banned: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class CreditAccount(Base):
    """A user's balance: always the sum of `remaining` over their grants (invariant 1), never negative."""

    __tablename__ = "credit_accounts"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="credit_accounts_balance_not_negative"),
        CheckConstraint(f"balance <= {MAX_BALANCE}", name="credit_accounts_balance_bounded"),
        CheckConstraint(USER_ID_RULES, name="credit_accounts_user_id_text"),  # domain.requests.validate_user_id
    )

    user_id: Mapped[str] = mapped_column(UserId, primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CreditGrant(Base):
    """Credits given to a user: by a periodic job run (period_key set) or one-off (idempotency_key set)."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint(_in("grant_type", GRANT_TYPES), name="credit_grants_grant_type"),
        CheckConstraint("amount > 0", name="credit_grants_amount_positive"),
        CheckConstraint(f"amount <= {MAX_CREDITS}", name="credit_grants_amount_bounded"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="credit_grants_remaining_bounds"),
        CheckConstraint("expired_at IS NULL OR remaining = 0", name="credit_grants_expired_is_empty"),
        CheckConstraint("num_nonnulls(cause_run_id, cause_request_id) = 1", name="credit_grants_has_cause"),
        # one spelling per period (migration 0005, NOT VALID there): ASCII digits, the forms of domain.period_keys
        CheckConstraint(
            f"period_key IS NULL OR period_key ~ '{SQL_KEY_PATTERN}'", name="credit_grants_period_key_canonical"
        ),
        # invariant 2: one periodic grant per (user, grant family, period key), whatever its grant type (migration
        # 0006); one-offs (no period key), the duplicates 0006 found and flagged, and grants rolled back (0008: the
        # period may be distributed again) are outside the index
        Index(
            "credit_grants_once_per_period",
            "user_id",
            "grant_family",
            "period_key",
            unique=True,
            postgresql_where=text("period_key IS NOT NULL AND NOT legacy_duplicate AND rolled_back_at IS NULL"),
        ),
        # a redo after a rollback subtracts what the user kept (0008); empty until a period is rolled back
        Index(
            "credit_grants_rolled_back",
            "user_id",
            "grant_family",
            "period_key",
            postgresql_where=text("rolled_back_at IS NOT NULL"),
        ),
        CheckConstraint(
            "num_nulls(rolled_back_at, rollback_run_id, rollback_kept) IN (0, 3)",
            name="credit_grants_rollback_complete",
        ),
        CheckConstraint(
            "rolled_back_at IS NULL OR (period_key IS NOT NULL AND remaining = 0 "
            "AND rollback_kept >= 0 AND rollback_kept <= amount)",
            name="credit_grants_rolled_back_is_empty",
        ),
        CheckConstraint("(period_key IS NULL) = (grant_family IS NULL)", name="credit_grants_periodic_has_family"),
        # partial: periodic grants (the millions) carry no key and skip this index entirely
        Index(
            "credit_grants_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # what expiry walks (keyset on expires_at, grant_id): only live grants, so it stays small as history grows
        Index(
            "credit_grants_expiring",
            "expires_at",
            "grant_id",
            postgresql_where=text("expired_at IS NULL AND remaining > 0"),
        ),
        # one user's live grants in the order consume takes them (consume, balance, the ledger endpoints): a probe
        # of the user's few entries, whatever the number of users (migration 0011)
        Index(
            "credit_grants_live_by_user",
            "user_id",
            "expires_at",
            "grant_id",
            postgresql_where=text("expired_at IS NULL AND remaining > 0"),
        ),
        # one user's every grant, newest first (`credit-jobs grants USER`, GET …/grants?all)
        Index("credit_grants_user_history", "user_id", text("granted_at DESC"), text("grant_id DESC")),
    )

    grant_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(UserId)
    grant_type: Mapped[str] = mapped_column(Text)
    period_key: Mapped[str | None] = mapped_column(Text)
    grant_family: Mapped[str | None] = mapped_column(Text)  # set exactly when period_key is (0006)
    # true only on periodic grants migration 0006 found sharing a (user, family, period) with an earlier grant
    legacy_duplicate: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cause_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    cause_request_id: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    # `credit-jobs rollback` (0008): when, by which run, and how many credits the user kept (used or expired before)
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rollback_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    rollback_kept: Mapped[int | None] = mapped_column(BigInteger)
    # A distribution's grant (0013): what its user had kept of the period's rolled-back grants when it was written
    # (0 for a first distribution); `check` compares it with them. NULL before 0013 and for imported grants.
    kept_earlier: Mapped[int | None] = mapped_column(BigInteger)


class CreditEntry(Base):
    """Credits taken out of one grant: by usage, by expiry (exactly once per grant), or by a void."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        CheckConstraint(_in("kind", ENTRY_KINDS), name="credit_entries_kind"),
        CheckConstraint("amount > 0", name="credit_entries_amount_positive"),
        CheckConstraint(f"amount <= {MAX_CREDITS}", name="credit_entries_amount_bounded"),
        CheckConstraint("num_nonnulls(cause_run_id, cause_request_id) = 1", name="credit_entries_has_cause"),
        # invariant 3: a grant is expired at most once, whatever runs overlap
        Index("credit_entries_one_expiry", "grant_id", unique=True, postgresql_where=text("kind = 'expiry'")),
        Index("credit_entries_user", "user_id", "created_at"),
        Index("credit_entries_grant", "grant_id"),  # a grant's entries (rollback, void, the ledger checks)
        Index(
            "credit_entries_request",
            "cause_request_id",
            postgresql_where=text("cause_request_id IS NOT NULL"),
        ),
    )

    entry_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(UserId)
    grant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("credit_grants.grant_id"))
    kind: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    cause_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    cause_request_id: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)  # a rollback's void: the operator's --reason (0008)


class CreditRequest(Base):
    """The claim of one request id (consume, void) or idempotency key (grant): its parameters and first result.

    The primary key makes every request exactly-once: the claim is inserted in the transaction that applies the
    request, so a concurrent retry waits on it and then replays (docs/credits-lifecycle.md, "Idempotency")."""

    __tablename__ = "credit_requests"
    __table_args__ = (CheckConstraint(_in("operation", REQUEST_OPERATIONS), name="credit_requests_operation"),)

    request_id: Mapped[str] = mapped_column(Text, primary_key=True)
    operation: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(UserId)  # a void's is filled once its grant is read
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # set in the claiming transaction
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StoredFile(Base):
    """A file the host application stored, with the end of its retention. `cleanup-storage` deletes the object
    once `expires_at` has passed and records `deleted_at`; the host app inserts a row when it stores a file."""

    __tablename__ = "stored_files"
    __table_args__ = (
        CheckConstraint("size_bytes >= 0", name="stored_files_size_not_negative"),
        CheckConstraint("deleted_at IS NULL OR delete_run_id IS NOT NULL", name="stored_files_delete_has_cause"),
        Index("stored_files_uri", "uri", unique=True),
        # what cleanup walks (keyset on expires_at, file_id): only files still stored and due some day
        Index(
            "stored_files_due",
            "expires_at",
            "file_id",
            postgresql_where=text("deleted_at IS NULL AND expires_at IS NOT NULL"),
        ),
    )

    file_id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(UserId)
    uri: Mapped[str] = mapped_column(Text)  # file:///abs/path or s3://bucket/key
    size_bytes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # NULL: keep forever
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delete_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    last_error: Mapped[str | None] = mapped_column(Text)  # why the last delete attempt failed


class JobRun(Base):
    """The audit row of one run: who, which period and shard, what happened, with which counts."""

    __tablename__ = "job_runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="job_runs_status"),
        CheckConstraint(_in("trigger", TRIGGERS), name="job_runs_trigger"),
        CheckConstraint("shard >= 0 AND shard < shards", name="job_runs_shard_in_range"),
        CheckConstraint(f"period_key ~ '{SQL_KEY_PATTERN}'", name="job_runs_period_key_canonical"),  # see 0005
        # invariant 6, as far as a table can say it: one running (non-dry) run per (job, period key, shard)
        Index(
            "job_runs_one_running",
            "job",
            "period_key",
            "shard",
            unique=True,
            postgresql_where=text("status = 'running' AND NOT dry_run"),
        ),
        Index("job_runs_started_at", "started_at"),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    job: Mapped[str] = mapped_column(Text)
    usecase: Mapped[str] = mapped_column(Text)
    period_key: Mapped[str] = mapped_column(Text)
    shard: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    shards: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    trigger: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    requested_by: Mapped[str | None] = mapped_column(Text)  # who asked (API principal); NULL: not recorded
