"""idempotency claims for every request id (consume, grant, void)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 03:10:00

`credit_requests` holds one row per request id (consume and void request ids and grant idempotency keys share one
namespace): the request's parameters and its first result. Its primary key is what makes a request exactly-once.

Existing databases: the ids already in the ledger are backfilled as claims, so a retry of a request made before the
upgrade still replays (or is refused if its parameters differ) instead of applying again:
- every one-off grant's `idempotency_key` (expires_in_days recovered as the whole days between granted_at and
  expires_at, as the old code computed expires_at from them);
- every `usage` request id, as a consume of the user with the oldest entry under that id (the old per-user replay
  check let one id charge several users; only the first is claimed), with its takes;
- every `void` request id, as a void of the grant of its oldest entry.
Grants are claimed first, then consumptions, then voids; an id seen twice keeps its first claim (ON CONFLICT DO
NOTHING).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BACKFILL_GRANTS = """
INSERT INTO credit_requests (request_id, operation, user_id, params, result, created_at)
SELECT idempotency_key, 'grant', user_id,
       jsonb_build_object('user_id', user_id, 'amount', amount, 'grant_type', grant_type,
                          'expires_in_days',
                          CAST(round(extract(epoch FROM expires_at - granted_at) / 86400) AS integer)),
       jsonb_build_object('grant_id', grant_id), granted_at
FROM credit_grants WHERE idempotency_key IS NOT NULL
ORDER BY grant_id
ON CONFLICT (request_id) DO NOTHING
"""

BACKFILL_CONSUMES = """
WITH per_user AS (
    SELECT cause_request_id AS request_id, user_id, min(entry_id) AS first_entry, min(created_at) AS created_at,
           sum(amount) AS amount,
           jsonb_agg(jsonb_build_array(grant_id, amount) ORDER BY entry_id) AS takes
    FROM credit_entries WHERE kind = 'usage' AND cause_request_id IS NOT NULL
    GROUP BY cause_request_id, user_id
)
INSERT INTO credit_requests (request_id, operation, user_id, params, result, created_at)
SELECT DISTINCT ON (request_id) request_id, 'consume', user_id,
       jsonb_build_object('user_id', user_id, 'amount', amount), jsonb_build_object('takes', takes), created_at
FROM per_user
ORDER BY request_id, first_entry
ON CONFLICT (request_id) DO NOTHING
"""

BACKFILL_VOIDS = """
INSERT INTO credit_requests (request_id, operation, user_id, params, result, created_at)
SELECT DISTINCT ON (cause_request_id) cause_request_id, 'void', user_id,
       jsonb_build_object('grant_id', grant_id), jsonb_build_object('user_id', user_id, 'voided', amount), created_at
FROM credit_entries WHERE kind = 'void' AND cause_request_id IS NOT NULL
ORDER BY cause_request_id, entry_id
ON CONFLICT (request_id) DO NOTHING
"""


def upgrade() -> None:
    op.create_table(
        "credit_requests",
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("operation IN ('consume', 'grant', 'void')", name="credit_requests_operation"),
        sa.PrimaryKeyConstraint("request_id"),
    )
    for statement in (BACKFILL_GRANTS, BACKFILL_CONSUMES, BACKFILL_VOIDS):
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("credit_requests")
