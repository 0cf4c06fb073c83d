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

The app's SQL interface (docs/sql-api.md) is installed here too, in the ledger's schema: `credit_balance(user)`,
`credit_consume(user, amount, request_id)` and `credit_grant(user, amount, type, idempotency_key, expires_at)`,
callable inside the application's own transaction, with their input checks `credit_check_text_id` and
`credit_check_amount`. SQLSTATEs: CJ001 insufficient credits, CJ002 an id reused with other parameters, CJ003 no
credit account, 22023 bad input.
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


# The app's SQL interface, frozen as of this revision: docs/sql-api.md describes it.
CHECK_TEXT = r"""
CREATE FUNCTION credit_check_text_id(value text, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL OR value !~ '[^[:space:]]' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('the %s must not be empty or blank', what);
    ELSIF char_length(value) > 255 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('the %s is %s characters long, over the limit of 255', what, char_length(value));
    ELSIF value ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('the %s %L contains control or unprintable characters', what, value);
    ELSIF value ~ '^[[:space:]]' OR value ~ '[[:space:]]$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('the %s %L has leading or trailing whitespace', what, value);
    END IF;
END $$
"""

CHECK_AMOUNT = r"""
CREATE FUNCTION credit_check_amount(amount bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF amount IS NULL OR amount <= 0 OR amount > 1000000000000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('amount must be 1 to 1000000000000 credits, got %s', coalesce(amount::text, 'NULL'));
    END IF;
END $$
"""

BALANCE = r"""
CREATE FUNCTION credit_balance(p_user_id text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(remaining), 0)::bigint FROM credit_grants
    WHERE user_id = p_user_id AND expired_at IS NULL AND remaining > 0
      AND (expires_at IS NULL OR expires_at > clock_timestamp())
$$
"""

CONSUME = r"""
CREATE FUNCTION credit_consume(p_user_id text, p_amount bigint, p_request_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_params jsonb := jsonb_build_object('user_id', p_user_id, 'amount', p_amount);
    v_now timestamptz := clock_timestamp();
    v_first record;
    v_available bigint;
    v_takes jsonb;
BEGIN
    PERFORM credit_check_text_id(p_user_id, 'user id');
    PERFORM credit_check_amount(p_amount);
    PERFORM credit_check_text_id(p_request_id, 'request id');
    -- the claim first: a concurrent call with the same id waits here until the first commits or rolls back
    INSERT INTO credit_requests (request_id, operation, user_id, params, created_at)
    VALUES (p_request_id, 'consume', p_user_id, v_params, v_now)
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT operation, params, result INTO v_first FROM credit_requests WHERE request_id = p_request_id;
        IF v_first.operation <> 'consume' OR v_first.params->'user_id' IS DISTINCT FROM v_params->'user_id'
           OR v_first.params->'amount' IS DISTINCT FROM v_params->'amount' THEN
            RAISE EXCEPTION USING ERRCODE = 'CJ002',
                MESSAGE = format('request id %L was first used for %s %s, this request is consume %s: '
                                 'use a new request id for a different request',
                                 p_request_id, v_first.operation, v_first.params, v_params);
        END IF;
        RETURN coalesce(v_first.result, '{}'::jsonb) || jsonb_build_object('replayed', true);
    END IF;
    -- the user's live grants, locked (grants before the balance row: the order expiry uses)
    PERFORM 1 FROM credit_grants
    WHERE user_id = p_user_id AND expired_at IS NULL AND remaining > 0 AND (expires_at IS NULL OR expires_at > v_now)
    ORDER BY expires_at NULLS LAST, grant_id FOR UPDATE;
    SELECT coalesce(sum(remaining), 0) INTO v_available FROM credit_grants
    WHERE user_id = p_user_id AND expired_at IS NULL AND remaining > 0 AND (expires_at IS NULL OR expires_at > v_now);
    IF v_available < p_amount THEN
        IF v_available = 0 AND NOT EXISTS (SELECT 1 FROM credit_accounts WHERE user_id = p_user_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'CJ003',
                MESSAGE = format('user %L has no credit account (never granted credits): nothing was consumed',
                                 p_user_id);
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'CJ001',
            MESSAGE = format('user %L has %s credits available, %s requested; nothing was consumed',
                             p_user_id, v_available, p_amount),
            DETAIL = format('available: %s', v_available);
    END IF;
    -- soonest-expiring first (never-expiring last, ties by grant id): take from each until the amount is covered
    WITH live AS (
        SELECT grant_id, remaining,
               sum(remaining) OVER (ORDER BY expires_at NULLS LAST, grant_id) - remaining AS before
        FROM credit_grants
        WHERE user_id = p_user_id AND expired_at IS NULL AND remaining > 0
          AND (expires_at IS NULL OR expires_at > v_now)
    ), plan AS (
        SELECT grant_id, least(remaining, p_amount - before) AS take, before FROM live WHERE before < p_amount
    ), taken AS (
        UPDATE credit_grants g SET remaining = g.remaining - p.take FROM plan p WHERE g.grant_id = p.grant_id
        RETURNING g.grant_id, p.take, p.before
    ), entries AS (
        INSERT INTO credit_entries (user_id, grant_id, kind, amount, created_at, cause_request_id)
        SELECT p_user_id, grant_id, 'usage', take, v_now, p_request_id FROM taken
    ), debited AS (
        UPDATE credit_accounts SET balance = balance - p_amount, updated_at = v_now WHERE user_id = p_user_id
    )
    SELECT jsonb_agg(jsonb_build_array(grant_id, take) ORDER BY before) INTO v_takes FROM taken;
    UPDATE credit_requests SET result = jsonb_build_object('takes', v_takes) WHERE request_id = p_request_id;
    RETURN jsonb_build_object('takes', v_takes, 'replayed', false);
END $$
"""

GRANT = r"""
CREATE FUNCTION credit_grant(p_user_id text, p_amount bigint, p_grant_type text, p_idempotency_key text,
                             p_expires_at timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_params jsonb := jsonb_build_object('user_id', p_user_id, 'amount', p_amount, 'grant_type', p_grant_type,
                                         'expires_at', p_expires_at);
    v_now timestamptz := clock_timestamp();
    v_first record;
    v_grant_id bigint;
BEGIN
    PERFORM credit_check_text_id(p_user_id, 'user id');
    PERFORM credit_check_amount(p_amount);
    PERFORM credit_check_text_id(p_idempotency_key, 'idempotency key');
    IF p_grant_type IS NULL OR p_grant_type NOT IN ('gift', 'purchase', 'adjustment') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('grant type %L is not a one-off type: use gift, purchase or adjustment', p_grant_type);
    END IF;
    IF p_expires_at IS NOT NULL AND p_expires_at <= v_now THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('expires_at %s is not in the future', p_expires_at);
    END IF;
    INSERT INTO credit_requests (request_id, operation, user_id, params, created_at)
    VALUES (p_idempotency_key, 'grant', p_user_id, v_params, v_now)
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT operation, params, result INTO v_first FROM credit_requests WHERE request_id = p_idempotency_key;
        IF v_first.operation <> 'grant' OR v_first.params->'user_id' IS DISTINCT FROM v_params->'user_id'
           OR v_first.params->'amount' IS DISTINCT FROM v_params->'amount'
           OR v_first.params->'grant_type' IS DISTINCT FROM v_params->'grant_type'
           OR (v_first.params->>'expires_at')::timestamptz IS DISTINCT FROM p_expires_at THEN
            RAISE EXCEPTION USING ERRCODE = 'CJ002',
                MESSAGE = format('idempotency key %L was first used for %s %s, this request is grant %s: '
                                 'use a new idempotency key for a different request',
                                 p_idempotency_key, v_first.operation, v_first.params, v_params);
        END IF;
        RETURN (v_first.result->>'grant_id')::bigint;
    END IF;
    INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at, cause_request_id,
                               idempotency_key)
    VALUES (p_user_id, p_grant_type, p_amount, p_amount, v_now, p_expires_at, p_idempotency_key, p_idempotency_key)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING grant_id INTO v_grant_id;
    IF v_grant_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'CJ002',
            MESSAGE = format('idempotency key %L is already on a grant written without a request claim: use a new key',
                             p_idempotency_key);
    END IF;
    INSERT INTO credit_accounts AS a (user_id, balance, updated_at) VALUES (p_user_id, p_amount, v_now)
    ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance, updated_at = EXCLUDED.updated_at;
    UPDATE credit_requests SET result = jsonb_build_object('grant_id', v_grant_id)
    WHERE request_id = p_idempotency_key;
    RETURN v_grant_id;
END $$
"""

SQL_API = (CHECK_TEXT, CHECK_AMOUNT, BALANCE, CONSUME, GRANT)
SQL_API_DROP = (
    "DROP FUNCTION credit_grant(text, bigint, text, text, timestamptz)",
    "DROP FUNCTION credit_consume(text, bigint, text)",
    "DROP FUNCTION credit_balance(text)",
    "DROP FUNCTION credit_check_amount(bigint)",
    "DROP FUNCTION credit_check_text_id(text, text)",
)


def upgrade() -> None:
    for table in USER_ID_TABLES:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN user_id TYPE text COLLATE "C" USING CAST(user_id AS text)')
    op.execute(TEXT_IDS_IN_CLAIMS)
    op.execute(f"ALTER TABLE credit_accounts ADD CONSTRAINT credit_accounts_user_id_text CHECK ({USER_ID_RULES})")
    op.execute(SHARD_HASH)
    for statement in SQL_API:
        op.execute(statement)


def downgrade() -> None:
    for statement in SQL_API_DROP:
        op.execute(statement)
    op.execute("DROP FUNCTION credit_shard_hash(text)")
    op.execute("ALTER TABLE credit_accounts DROP CONSTRAINT credit_accounts_user_id_text")
    op.execute(NUMBER_IDS_IN_CLAIMS)
    for table in reversed(USER_ID_TABLES):
        op.execute(f"ALTER TABLE {table} ALTER COLUMN user_id TYPE bigint USING CAST(user_id AS bigint)")
