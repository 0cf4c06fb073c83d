"""one implementation of the money path: the SQL functions decide, and every interface calls them

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 05:30:00

Before: consume and grant existed twice — the SQL functions of 0007 for the application, the Python library's own
statements for the CLI and the HTTP API — and the two disagreed: the functions accepted ids the CLI refused as
unprintable, users the eligibility source does not know, expiries of `infinity` or after 9999 (after which the CLI
and the API could not read that user), and compared a retried grant's absolute expiry to the microsecond. After, the
functions are the one implementation (the library calls them; docs/sql-api.md):
- `credit_text_id_is_valid(text)` / `credit_check_text_id(text, what)`: one id rule, the CLI's — 1 to 255
  characters, not blank, no surrounding space, none of the frozen unprintable ranges of
  `credit_jobs.domain.limits.UNPRINTABLE_RANGES` (copied below: a migration does not follow later edits);
  `credit_accounts_user_id_text` now says the same (added NOT VALID, then validated outside the transaction);
- `credit_now()`: the functions' clock, `clock_timestamp()`, unless the transaction set
  `credit_jobs.simulated_now` (the library's `now=`, for tests that simulate time);
- `credit_grant(…, p_expires_at, p_expires_in_days, p_allow_unknown_user)`: a relative validity in days (24-hour
  days, ≤ 36,500) that a retried webhook sends unchanged; an absolute instant must be finite, in the future, at most
  36,500 days ahead, and a replay compares it to the second; a user not in `credit_eligibility` is refused (CJ004)
  unless `p_allow_unknown_user`. The 0007 signature is replaced (callers passing five arguments call the new one);
- `credit_void(grant_id, request_id)`: what the library's void did (CJ005 for an unknown grant);
- `credit_consume`, `credit_balance`: the same plans, on `credit_now()`; a reused id's refusal names the first field
  that differs (`credit_reuse_refusal`), as the library's did.
Existing data: a grant whose expiry is not a finite instant before 10000-01-01 (only a 0007 `credit_grant` could
write one) becomes never-expiring, which is what such a date meant; the count is logged.

Locks: the function replacements and the constraint swap commit together (a call sees either all old or all new
functions); `credit_accounts` is ACCESS EXCLUSIVE-locked for the swap only, not for its validation, which scans the
accounts under SHARE UPDATE EXCLUSIVE (consumes go on), as does the expiry repair (an UPDATE of the rows it finds).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

# credit_jobs.domain.limits.UNPRINTABLE_RANGES as of this revision, as a PostgreSQL regular expression (NUL, the
# first of them, cannot be in PostgreSQL text at all).
UNPRINTABLE = (
    r"[\u0001-\u001F\u007F-\u00A0\u00AD\u0600-\u0605\u061C\u06DD\u070F\u0890-\u0891\u08E2\u1680\u180E\u2000-\u200F"
    r"\u2028-\u202F\u205F-\u2064\u2066-\u206F\u3000\uE000-\uF8FF\uFDD0-\uFDEF\uFEFF\uFFF9-\uFFFB\uFFFE-\uFFFF"
    r"\U000110BD\U000110CD\U00013430-\U00013438\U0001BCA0-\U0001BCA3\U0001D173-\U0001D17A\U0001FFFE-\U0001FFFF"
    r"\U0002FFFE-\U0002FFFF\U0003FFFE-\U0003FFFF\U0004FFFE-\U0004FFFF\U0005FFFE-\U0005FFFF\U0006FFFE-\U0006FFFF"
    r"\U0007FFFE-\U0007FFFF\U0008FFFE-\U0008FFFF\U0009FFFE-\U0009FFFF\U000AFFFE-\U000AFFFF\U000BFFFE-\U000BFFFF"
    r"\U000CFFFE-\U000CFFFF\U000DFFFE-\U000DFFFF\U000E0001\U000E0020-\U000E007F\U000EFFFE-\U0010FFFF]"
)
# Python's str.isspace() characters: a value of only these is "blank" (the library's `not value.strip()`).
BLANK = r"^[\u0009-\u000D\u001C-\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
MAX_ID = 255  # domain.limits.MAX_USER_ID_LENGTH and MAX_REQUEST_ID_LENGTH
MAX_CREDITS = 10**12  # domain.limits.MAX_CREDITS
MAX_EXPIRY_DAYS = 36_500  # domain.limits.MAX_EXPIRY_DAYS

NOW = r"""
CREATE FUNCTION credit_now() RETURNS timestamptz
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT coalesce(CAST(nullif(current_setting('credit_jobs.simulated_now', true), '') AS timestamptz),
                    clock_timestamp())
$$
"""

IS_VALID = rf"""
CREATE FUNCTION credit_text_id_is_valid(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT char_length(value) <= {MAX_ID} AND value !~ '{BLANK}' AND value !~ '{UNPRINTABLE}'
           AND value !~ '^ ' AND value !~ ' $'
$$
"""

CHECK_TEXT = rf"""
CREATE OR REPLACE FUNCTION credit_check_text_id(value text, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL OR value ~ '{BLANK}' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('the %s must not be empty or blank', what);
    ELSIF char_length(value) > {MAX_ID} THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('the %s is %s characters long, over the limit of {MAX_ID}', what, char_length(value));
    ELSIF value ~ '{UNPRINTABLE}' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('the %s %L contains control or unprintable characters', what, value);
    ELSIF value ~ '^ ' OR value ~ ' $' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('the %s %L has leading or trailing whitespace', what, value);
    END IF;
END $$
"""

# One field of a claim's parameters as a refusal shows it (Python's repr: 'text', 30, None), and as a replay compares
# it: an absent field and JSON null are both None; an absolute expiry counts to the second, in UTC.
REQUEST_FIELD = r"""
CREATE FUNCTION credit_request_field(params jsonb, field text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN params->field IS NULL OR jsonb_typeof(params->field) = 'null' THEN 'None'
        WHEN field = 'expires_at' THEN quote_literal(to_char(
            date_trunc('second', CAST(params->>field AS timestamptz)) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
        WHEN jsonb_typeof(params->field) = 'string' THEN quote_literal(params->>field)
        ELSE params->>field
    END
$$
"""

# NULL when a retried request equals its first use (a replay); else the refusal naming the first field that differs.
REUSE_REFUSAL = r"""
CREATE FUNCTION credit_reuse_refusal(what text, id text, operation text, params jsonb,
                                     first_operation text, first_params jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_now jsonb := params || jsonb_build_object('operation', operation);
    v_first jsonb := first_params || jsonb_build_object('operation', first_operation);
    v_field text;
BEGIN
    FOREACH v_field IN ARRAY ARRAY['operation', 'user_id', 'amount', 'grant_type', 'expires_in_days', 'expires_at',
                                   'grant_id'] LOOP
        IF credit_request_field(v_now, v_field) <> credit_request_field(v_first, v_field) THEN
            RETURN format('%s %s was first used with %s=%s, this request has %s=%s: use a new %s for a different '
                          'request', what,
                          CASE WHEN char_length(id) <= 36 THEN quote_literal(id)
                               ELSE quote_literal(left(id, 32)) || '… (' || char_length(id) || ' characters)' END,
                          v_field, credit_request_field(v_first, v_field), v_field,
                          credit_request_field(v_now, v_field), what);
        END IF;
    END LOOP;
    RETURN NULL;
END $$
"""

BALANCE = r"""
CREATE OR REPLACE FUNCTION credit_balance(p_user_id text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(remaining), 0)::bigint FROM credit_grants
    WHERE user_id = p_user_id AND expired_at IS NULL AND remaining > 0
      AND (expires_at IS NULL OR expires_at > credit_now())
$$
"""

CONSUME = r"""
CREATE OR REPLACE FUNCTION credit_consume(p_user_id text, p_amount bigint, p_request_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_params jsonb := jsonb_build_object('user_id', p_user_id, 'amount', p_amount);
    v_now timestamptz := credit_now();
    v_first record;
    v_refusal text;
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
        v_refusal := credit_reuse_refusal('request id', p_request_id, 'consume', v_params,
                                          v_first.operation, v_first.params);
        IF v_refusal IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'CJ002', MESSAGE = v_refusal;
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

GRANT = rf"""
CREATE FUNCTION credit_grant(p_user_id text, p_amount bigint, p_grant_type text, p_idempotency_key text,
                             p_expires_at timestamptz DEFAULT NULL, p_expires_in_days integer DEFAULT NULL,
                             p_allow_unknown_user boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_params jsonb := jsonb_build_object('user_id', p_user_id, 'amount', p_amount, 'grant_type', p_grant_type,
                                         'expires_in_days', p_expires_in_days);
    v_now timestamptz := credit_now();
    v_expires_at timestamptz;
    v_first record;
    v_refusal text;
    v_grant_id bigint;
BEGIN
    PERFORM credit_check_text_id(p_user_id, 'user id');
    PERFORM credit_check_amount(p_amount);
    PERFORM credit_check_text_id(p_idempotency_key, 'idempotency key');
    IF p_grant_type IS NULL OR p_grant_type NOT IN ('gift', 'purchase', 'adjustment') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('grant type %L is not a one-off type: use gift, purchase or adjustment', p_grant_type);
    END IF;
    IF p_expires_in_days IS NOT NULL AND p_expires_at IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'give either p_expires_in_days or p_expires_at, not both';
    ELSIF p_expires_in_days IS NOT NULL THEN
        IF p_expires_in_days NOT BETWEEN 1 AND {MAX_EXPIRY_DAYS} THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('expires-in-days must be between 1 and {MAX_EXPIRY_DAYS}, got %s', p_expires_in_days);
        END IF;
        v_expires_at := v_now + p_expires_in_days * interval '24 hours';
    ELSIF p_expires_at IS NOT NULL THEN
        IF NOT isfinite(p_expires_at) THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('expires_at %s is not a finite instant: pass NULL for credits that never expire',
                                 p_expires_at);
        ELSIF p_expires_at <= v_now THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('expires_at %s is not in the future', p_expires_at);
        ELSIF p_expires_at > v_now + {MAX_EXPIRY_DAYS} * interval '24 hours' THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('expires_at %s is too far ahead: at most {MAX_EXPIRY_DAYS} days from now',
                                 p_expires_at);
        END IF;
        v_expires_at := p_expires_at;
        v_params := v_params || jsonb_build_object('expires_at', p_expires_at);
    END IF;
    INSERT INTO credit_requests (request_id, operation, user_id, params, created_at)
    VALUES (p_idempotency_key, 'grant', p_user_id, v_params, v_now)
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT operation, params, result INTO v_first FROM credit_requests WHERE request_id = p_idempotency_key;
        v_refusal := credit_reuse_refusal('idempotency key', p_idempotency_key, 'grant', v_params,
                                          v_first.operation, v_first.params);
        IF v_refusal IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'CJ002', MESSAGE = v_refusal;
        END IF;
        RETURN (v_first.result->>'grant_id')::bigint;
    END IF;
    IF NOT p_allow_unknown_user AND NOT EXISTS (SELECT 1 FROM credit_eligibility WHERE user_id = p_user_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'CJ004',
            MESSAGE = format('user %L is not in credit_eligibility (the application''s users): nothing was granted; '
                             'check the user id, or pass p_allow_unknown_user => true', p_user_id);
    END IF;
    INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at, cause_request_id,
                               idempotency_key)
    VALUES (p_user_id, p_grant_type, p_amount, p_amount, v_now, v_expires_at, p_idempotency_key, p_idempotency_key)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING grant_id INTO v_grant_id;
    IF v_grant_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'CJ002',
            MESSAGE = format('idempotency key %L is already on grant %s, written without a request claim (by SQL '
                             'outside credit-jobs): use a new key', p_idempotency_key,
                             (SELECT grant_id FROM credit_grants WHERE idempotency_key = p_idempotency_key));
    END IF;
    INSERT INTO credit_accounts AS a (user_id, balance, updated_at) VALUES (p_user_id, p_amount, v_now)
    ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance, updated_at = EXCLUDED.updated_at;
    UPDATE credit_requests SET result = jsonb_build_object('grant_id', v_grant_id)
    WHERE request_id = p_idempotency_key;
    RETURN v_grant_id;
END $$
"""

VOID = r"""
CREATE FUNCTION credit_void(p_grant_id bigint, p_request_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_params jsonb := jsonb_build_object('grant_id', p_grant_id);
    v_now timestamptz := credit_now();
    v_first record;
    v_refusal text;
    v_grant record;
BEGIN
    IF p_grant_id IS NULL OR p_grant_id < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('grant id must be between 1 and 9223372036854775807, got %s',
                             coalesce(p_grant_id::text, 'NULL'));
    END IF;
    PERFORM credit_check_text_id(p_request_id, 'request id');
    INSERT INTO credit_requests (request_id, operation, user_id, params, created_at)
    VALUES (p_request_id, 'void', NULL, v_params, v_now)
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT operation, params, result INTO v_first FROM credit_requests WHERE request_id = p_request_id;
        v_refusal := credit_reuse_refusal('request id', p_request_id, 'void', v_params,
                                          v_first.operation, v_first.params);
        IF v_refusal IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'CJ002', MESSAGE = v_refusal;
        END IF;
        RETURN coalesce(v_first.result, '{}'::jsonb) || jsonb_build_object('grant_id', p_grant_id, 'replayed', true);
    END IF;
    -- the lock order of consume and expiry: the grant row, then the balance row
    SELECT grant_id, user_id, remaining INTO v_grant FROM credit_grants WHERE grant_id = p_grant_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'CJ005', MESSAGE = format('no grant %s', p_grant_id);
    END IF;
    IF v_grant.remaining > 0 THEN
        UPDATE credit_grants SET remaining = 0 WHERE grant_id = p_grant_id;
        INSERT INTO credit_entries (user_id, grant_id, kind, amount, created_at, cause_request_id)
        VALUES (v_grant.user_id, p_grant_id, 'void', v_grant.remaining, v_now, p_request_id);
        UPDATE credit_accounts SET balance = balance - v_grant.remaining, updated_at = v_now
        WHERE user_id = v_grant.user_id;
    END IF;
    UPDATE credit_requests
    SET result = jsonb_build_object('user_id', v_grant.user_id, 'voided', v_grant.remaining), user_id = v_grant.user_id
    WHERE request_id = p_request_id;
    RETURN jsonb_build_object('grant_id', p_grant_id, 'user_id', v_grant.user_id, 'voided', v_grant.remaining,
                              'replayed', false);
END $$
"""

OLD_GRANT_SIGNATURE = "credit_grant(text, bigint, text, text, timestamptz)"
NEW_GRANT_SIGNATURE = "credit_grant(text, bigint, text, text, timestamptz, integer, boolean)"
ACCOUNT_RULE = "credit_text_id_is_valid(user_id)"
# credit_grants.expires_at values no client can read back (Python's datetime ends with year 9999).
UNREADABLE_EXPIRY = "expires_at IS NOT NULL AND (NOT isfinite(expires_at) OR expires_at >= '10000-01-01 00:00:00+00')"


def upgrade() -> None:
    for statement in (NOW, IS_VALID, CHECK_TEXT, REQUEST_FIELD, REUSE_REFUSAL, BALANCE, CONSUME):
        op.execute(statement)
    op.execute(f"DROP FUNCTION {OLD_GRANT_SIGNATURE}")
    op.execute(GRANT)
    op.execute(VOID)
    op.execute("ALTER TABLE credit_accounts DROP CONSTRAINT credit_accounts_user_id_text")
    op.execute(
        f"ALTER TABLE credit_accounts ADD CONSTRAINT credit_accounts_user_id_text CHECK ({ACCOUNT_RULE}) NOT VALID"
    )
    with op.get_context().autocommit_block():  # the replacements are committed; these scans lock no reader or writer
        bind = op.get_bind()
        repaired = bind.execute(sa.text(f"UPDATE credit_grants SET expires_at = NULL WHERE {UNREADABLE_EXPIRY}"))
        if repaired.rowcount:
            log.warning("0012: %s grant(s) with an expiry past 9999 or infinite now never expire", repaired.rowcount)
        bad = bind.execute(sa.text(f"SELECT count(*) FROM credit_accounts WHERE NOT {ACCOUNT_RULE}")).scalar_one()
        if bad == 0:
            op.execute("ALTER TABLE credit_accounts VALIDATE CONSTRAINT credit_accounts_user_id_text")
        else:  # written by a 0007 function: kept readable; new and updated rows are checked all the same
            log.warning("0012: %s account(s) have user ids outside the id rule; the constraint stays NOT VALID", bad)


def _v0007() -> ModuleType:
    path = Path(__file__).with_name("0007_text_user_ids.py")
    spec = importlib.util.spec_from_file_location("credit_jobs_migration_0007", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def downgrade() -> None:
    v0007 = _v0007()
    op.execute("ALTER TABLE credit_accounts DROP CONSTRAINT credit_accounts_user_id_text")
    op.execute(
        f"ALTER TABLE credit_accounts ADD CONSTRAINT credit_accounts_user_id_text CHECK ({v0007.USER_ID_RULES}) "
        "NOT VALID"
    )
    op.execute("DROP FUNCTION credit_void(bigint, text)")
    op.execute(f"DROP FUNCTION {NEW_GRANT_SIGNATURE}")
    op.execute(v0007.GRANT)
    for statement in (v0007.CONSUME, v0007.BALANCE, v0007.CHECK_TEXT):
        op.execute(statement.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    for function in (
        "credit_reuse_refusal(text, text, text, jsonb, text, jsonb)",
        "credit_request_field(jsonb, text)",
        "credit_text_id_is_valid(text)",
        "credit_now()",
    ):
        op.execute(f"DROP FUNCTION {function}")
