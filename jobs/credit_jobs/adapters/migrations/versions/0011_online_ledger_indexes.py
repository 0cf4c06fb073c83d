"""per-user indexes for the online ledger: what one request reads is found by its user, not by a walk

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:00:00

Before: no index served "the live grants of one user" (consume, balance, the ledger endpoints walked
`credit_grants_expiring`, every live grant of every user, filtering by user), "every grant of one user, newest
first" (`grants USER`: a sequential scan of credit_grants) or "the entries of one grant" (rollback, void). Each cost
grew with the whole user base, per request. After:
- `credit_grants_live_by_user` (user_id, expires_at, grant_id) WHERE live: the user's live grants in the order
  consume takes them — a probe of one or two entries, and small, as `credit_grants_expiring` is;
- `credit_grants_user_history` (user_id, granted_at DESC, grant_id DESC): the user's history, newest first;
- `credit_entries_grant` (grant_id): a grant's entries.

Built CONCURRENTLY, outside the migration's transaction (Alembic's autocommit block): a live ledger keeps consuming
and distributing while they build. A build that fails or is cancelled leaves an INVALID index behind; the next
upgrade drops it (CONCURRENTLY too) and builds it again. Cost: one scan of credit_grants per credit_grants index and
one of credit_entries, at most two waits for the transactions running when each build starts. Existing data: none
changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_LIVE = "expired_at IS NULL AND remaining > 0"
_INDEXES = (  # (name, table, columns, predicate)
    ("credit_grants_live_by_user", "credit_grants", "user_id, expires_at, grant_id", _LIVE),
    ("credit_grants_user_history", "credit_grants", "user_id, granted_at DESC, grant_id DESC", None),
    ("credit_entries_grant", "credit_entries", "grant_id", None),
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        for name, table, columns, where in _INDEXES:
            invalid = bind.execute(
                sa.text(
                    "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
                ),
                {"name": name},
            ).scalar()
            if invalid:  # left by an interrupted build
                op.execute(f"DROP INDEX CONCURRENTLY {name}")
            predicate = f" WHERE {where}" if where else ""
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} ({columns}){predicate}")


def downgrade() -> None:
    for name, _table, _columns, _where in reversed(_INDEXES):
        op.execute(f"DROP INDEX IF EXISTS {name}")
