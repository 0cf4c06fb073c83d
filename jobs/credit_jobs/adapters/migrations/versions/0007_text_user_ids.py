"""text user ids and a stable shard hash

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 06:00:00

User ids become the host application's own text ids (numbers, uuids, nanoids, an auth library's strings):
- every `user_id` column (credit_eligibility, credit_accounts, credit_grants, credit_entries, credit_requests,
  stored_files) becomes `TEXT COLLATE "C"`; an existing id becomes its decimal text (42 → '42'). Collation "C" orders
  by bytes: keyset walks and the user-id lock order are the same on every host, and no C-library upgrade can
  reorder (and so silently corrupt) the indexes on these columns;
- the claims' stored parameters and void results (`credit_requests.params->'user_id'`, `result->'user_id'`) become
  JSON strings, so a retry after the upgrade (which sends the id as text) still replays instead of being refused
  as "first used with another user_id";
- `credit_accounts_user_id_text`: every account's id obeys the user-id rules of `credit_jobs.domain.requests`
  (non-empty, at most 255 characters, no control characters, no surrounding whitespace). On accounts only: every
  user who holds credits has one, and a bad id coming from the eligibility source is refused at its first grant
  (the chunk loop isolates and names the user) without a per-row regex on the millions of grant rows;
- `credit_shard_hash(text)`: the shard hash, `domain.sharding.shard_hash` — the first 32 bits of md5(id) as an
  unsigned number. An inlinable IMMUTABLE SQL function; md5 is a fixed standard, so it is stable across PostgreSQL
  versions (PostgreSQL's own `hashtext` is not promised to be).

Cost on an existing database: each `ALTER COLUMN … TYPE` rewrites its table and rebuilds every index on it under an
ACCESS EXCLUSIVE lock (reads and writes of that table wait): roughly the time of a `VACUUM FULL` of the six tables
(measured in docs/performance.md, "Migration 0007"). Run it in a maintenance
window, with the jobs suspended. No foreign key references a user id, so none is rebuilt; `credit_entries`' key to
`credit_grants.grant_id` is untouched. `downgrade` converts back (and fails, changing nothing, if any id is not a
decimal number by then).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

USER_ID_TABLES = (
    "credit_eligibility",
    "credit_accounts",
    "credit_grants",
    "credit_entries",
    "credit_requests",
    "stored_files",
)

MAX_USER_ID_LENGTH = 255  # credit_jobs.domain.limits.MAX_USER_ID_LENGTH at the time of this revision
USER_ID_RULES = (
    f"char_length(user_id) BETWEEN 1 AND {MAX_USER_ID_LENGTH} AND user_id !~ '[[:cntrl:]]' "
    "AND user_id !~ '^[[:space:]]' AND user_id !~ '[[:space:]]$'"
)

SHARD_HASH = """
CREATE FUNCTION credit_shard_hash(user_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT CAST(CAST(('x' || substr(md5(user_id), 1, 8)) AS bit(32)) AS bigint) $$
"""

# The claims' JSON: numbers become strings (only where a user id is recorded; voids carry it in their result).
TEXT_IDS_IN_CLAIMS = """
UPDATE credit_requests
SET params = CASE WHEN jsonb_typeof(params->'user_id') = 'number'
                  THEN jsonb_set(params, '{user_id}', to_jsonb(params->>'user_id')) ELSE params END,
    result = CASE WHEN jsonb_typeof(result->'user_id') = 'number'
                  THEN jsonb_set(result, '{user_id}', to_jsonb(result->>'user_id')) ELSE result END
WHERE jsonb_typeof(params->'user_id') = 'number' OR jsonb_typeof(result->'user_id') = 'number'
"""

NUMBER_IDS_IN_CLAIMS = """
UPDATE credit_requests
SET params = CASE WHEN jsonb_typeof(params->'user_id') = 'string'
                  THEN jsonb_set(params, '{user_id}', to_jsonb(CAST(params->>'user_id' AS bigint))) ELSE params END,
    result = CASE WHEN jsonb_typeof(result->'user_id') = 'string'
                  THEN jsonb_set(result, '{user_id}', to_jsonb(CAST(result->>'user_id' AS bigint))) ELSE result END
WHERE jsonb_typeof(params->'user_id') = 'string' OR jsonb_typeof(result->'user_id') = 'string'
"""


def upgrade() -> None:
    for table in USER_ID_TABLES:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN user_id TYPE text COLLATE "C" USING CAST(user_id AS text)')
    op.execute(TEXT_IDS_IN_CLAIMS)
    op.execute(f"ALTER TABLE credit_accounts ADD CONSTRAINT credit_accounts_user_id_text CHECK ({USER_ID_RULES})")
    op.execute(SHARD_HASH)


def downgrade() -> None:
    op.execute("DROP FUNCTION credit_shard_hash(text)")
    op.execute("ALTER TABLE credit_accounts DROP CONSTRAINT credit_accounts_user_id_text")
    op.execute(NUMBER_IDS_IN_CLAIMS)
    for table in reversed(USER_ID_TABLES):
        op.execute(f"ALTER TABLE {table} ALTER COLUMN user_id TYPE bigint USING CAST(user_id AS bigint)")
