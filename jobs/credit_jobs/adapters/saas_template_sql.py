"""Set-based statements of `credit-jobs import saas-template`: the SaaS template's live credits into the ledger.

The template's tables are read where they are: in the ledger's database, in the schema `--source-schema` names (default
`public`, where the template's Drizzle migrations put them; a template in another database is mounted there with
postgres_fdw's `IMPORT FOREIGN SCHEMA`, docs/adopting.md). The schema name is quoted, never spliced as given.
`import_chunk` gives the steps of one chunk. `reconcile` compares, per user, the live credits imported against the
template's own cache `user_credit.current_credits` (its most recently updated row: the template has no unique
constraint on `user_credit.user_id`, so some users have several rows — counted and named) in one aggregate statement
over both tables, never a query per user.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from credit_jobs.domain.saas_template import IMPORT_KEY_PREFIX, PERIODIC_TYPES, ImportPlan

SAMPLE = 20  # rows named in a report (counts are always exact)
USED_BEFORE_IMPORT = "used in the SaaS template before the import"  # the reason on those usage entries

# Columns the statements read, per table (check_source refuses a source without them).
REQUIRED_COLUMNS = {
    "credit_transaction": (
        "id",
        "user_id",
        "type",
        "amount",
        "remaining_amount",
        "period_key",
        "expiration_date",
        "expiration_date_processed_at",
        "created_at",
    ),
    "user_credit": ("id", "user_id", "current_credits", "updated_at"),
}

# A live grant: credits left, never expired by the template, not past its expiry at the cut-off. The template's
# timestamps are without time zone and read as UTC (as examples/saas-template/eligibility.sql does).
_LIVE = """{t}.amount > 0 AND {t}.remaining_amount > 0 AND {t}.expiration_date_processed_at IS NULL
    AND ({t}.expiration_date IS NULL OR {t}.expiration_date > (CAST(:cutoff AS timestamptz) AT TIME ZONE 'UTC'))"""


# A spent grant of the cut-over month (the month of the cut-off, UTC): nothing left to carry, but it is the user's
# grant of that month. It is imported too, as a used-up grant with a usage entry for all of it (so the grant is
# conserved and `check` stays clean): it holds the month for its user, and distribute-credits does not grant the
# month again. A spent grant of an earlier month holds nothing a distribution could still grant: not imported.
_HOLDING = """({t}.amount > 0 AND {t}.remaining_amount = 0 AND {t}.expiration_date_processed_at IS NULL
    AND {t}.period_key = :cutover_key AND {t}.type = ANY(:holding_types))"""


def _live(alias: str) -> str:
    return _LIVE.format(t=alias)


def _imported(alias: str) -> str:
    """The template grants the import carries over: the live ones, and the spent ones of the cut-over month.

    Besides the live grants, the import carries over the *spent* periodic grants of the cut-over month (the month of
    the cut-off): used up, they still hold that month for their user (`_HOLDING`)."""
    return f"(({_live(alias)}) OR {_HOLDING.format(t=alias)})"


def _cutoff_params(cutoff: datetime) -> dict[str, object]:
    month = cutoff.astimezone(UTC)
    return {"cutoff": cutoff, "cutover_key": month.year * 100 + month.month, "holding_types": sorted(PERIODIC_TYPES)}


def quote_schema(conn: sa.Connection, schema: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(schema)


def check_source(conn: sa.Connection, schema: str) -> list[str]:
    """What the source schema lacks, one phrase each; empty when it has every table and column the import reads.

    The schema must exist and hold `credit_transaction` and `user_credit` with the columns used here
    (`REQUIRED_COLUMNS`) — what the command checks before it starts a run (a bad `--source-schema` exits 2 with
    nothing written)."""
    exists = conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).first()
    if exists is None:
        return [f"schema {schema!r} does not exist"]
    found: dict[str, set[str]] = {}
    for row in conn.execute(
        sa.text(
            "SELECT c.relname AS table_name, a.attname AS column_name FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = :s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname = ANY(:tables)"
        ),
        {"s": schema, "tables": list(REQUIRED_COLUMNS)},
    ):
        found.setdefault(row.table_name, set()).add(row.column_name)
    problems = []
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in found:
            problems.append(f"table {schema}.{table} does not exist")
            continue
        missing = [c for c in columns if c not in found[table]]
        if missing:
            problems.append(f"table {schema}.{table} has no column {', '.join(missing)}")
    return problems


@dataclass(frozen=True)
class SourceProfile:
    grants: int  # live grants to import
    credits: int  # their remaining credits
    types: dict[str, int]  # template type -> live grants
    period_keys: list[int]  # distinct template period keys among them


def profile_source(conn: sa.Connection, schema: str, *, cutoff: datetime) -> SourceProfile:
    sql = (
        f"SELECT t.type, t.period_key, count(*) AS grants, sum(t.remaining_amount) AS credits "
        f"FROM {quote_schema(conn, schema)}.credit_transaction t WHERE {_imported('t')} "
        "GROUP BY t.type, t.period_key"
    )
    types: Counter[str] = Counter()
    keys: set[int] = set()
    grants = credits = 0
    for row in conn.execute(sa.text(sql), _cutoff_params(cutoff)):
        types[row.type] += int(row.grants)
        keys.add(int(row.period_key or 0))
        grants += int(row.grants)
        credits += int(row.credits)
    return SourceProfile(grants, credits, dict(types), sorted(keys))


@dataclass(frozen=True)
class ImportChunk:
    last_id: str | None  # None: no live grants left; else the keyset position (a credit_transaction id)
    seen: int  # live grants the chunk covered
    imported: int  # grants written (a dry run: would be written)
    credits: int  # their remaining credits
    used_before: int  # credits already spent in the template, recorded as usage entries
    already_imported: int  # import key already in the ledger
    period_taken: int  # the month already granted to the user by the ledger itself
    period_taken_sample: list[dict[str, Any]] = field(default_factory=list)
    unplanned: int = 0  # a type or period key the plan did not see (written to the template since): a rerun takes it
    without_period: int = 0  # periodic grants carried over without a month (a second grant of a month, no readable key)
    periods: dict[str, int] = field(default_factory=dict)  # ledger month -> grants imported holding it


_CHUNK = """
WITH src AS (
    SELECT t.id, t.user_id, t.type, t.amount, t.remaining_amount, t.period_key, t.created_at, t.expiration_date
    FROM {src}.credit_transaction t
    WHERE t.id > :after AND {live_t}
    ORDER BY t.id
    LIMIT :batch
), plan_types AS (
    SELECT * FROM unnest(CAST(:template_types AS text[]), CAST(:ledger_types AS text[]),
                         CAST(:periodic AS boolean[])) AS x(template_type, ledger_type, periodic)
), plan_keys AS (
    SELECT * FROM unnest(CAST(:template_keys AS integer[]), CAST(:ledger_keys AS text[])) AS x(template_key, ledger_key)
), mapped AS (
    SELECT s.id, s.user_id, s.amount, s.remaining_amount, s.created_at, s.expiration_date, s.type, s.period_key,
           pt.ledger_type AS grant_type, coalesce(pt.periodic, false) AS periodic,
           CASE WHEN pt.periodic THEN pk.ledger_key END AS month
    FROM src s
    LEFT JOIN plan_types pt ON pt.template_type = s.type
    LEFT JOIN plan_keys pk ON pk.template_key = s.period_key
), already AS (
    -- import keys already in the ledger (a second import): probed by key through the partial unique index on
    -- idempotency_key; written as a correlated EXISTS the planner hashed a scan of every grant per chunk
    -- (quadratic over an import: measured 6.3x the distribution at 200k users before, see docs/performance.md)
    SELECT g.idempotency_key FROM credit_grants g
    WHERE g.idempotency_key = ANY(ARRAY(SELECT :key_prefix || m.id FROM mapped m))
), planned AS (
    -- the user's first live periodic grant of a month holds it; a second one of the same month (another type: a
    -- plan change) carries over without a period. The probe walks the template's partial unique index on
    -- (user_id, type, period_key) WHERE period_key > 0: the literal `o.period_key > 0` lets the planner use it
    -- (a month is mapped only from a positive key); without it each row scanned the whole table (measured:
    -- a 5000-row chunk over 250k template rows passed the 300 s statement timeout)
    SELECT m.*,
           CASE WHEN m.month IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM {src}.credit_transaction o
                    WHERE o.user_id = m.user_id AND o.period_key > 0 AND o.period_key = m.period_key
                      AND o.type = ANY(:periodic_types)
                      AND {live_o} AND (o.created_at, o.id) < (m.created_at, m.id))
                THEN m.month END AS period_key_ledger,
           :key_prefix || m.id AS import_key,
           a.idempotency_key IS NOT NULL AS already
    FROM mapped m
    LEFT JOIN already a ON a.idempotency_key = :key_prefix || m.id
    WHERE m.grant_type IS NOT NULL
), fresh AS (
    SELECT p.* FROM planned p WHERE NOT p.already
), {write}
SELECT
    (SELECT max(id) FROM src) AS last_id,
    (SELECT count(*) FROM src) AS seen,
    (SELECT count(*) FROM mapped WHERE grant_type IS NULL) AS unplanned,
    (SELECT count(*) FROM planned WHERE already) AS already_imported,
    (SELECT count(*) FROM fresh WHERE periodic AND period_key_ledger IS NULL) AS without_period,
    (SELECT count(*) FROM written) AS imported,
    (SELECT coalesce(sum(remaining), 0) FROM written) AS credits,
    (SELECT coalesce(sum(amount - remaining), 0) FROM written) AS used_before,
    (SELECT coalesce(jsonb_object_agg(period_key, n), '{{}}') FROM (
        SELECT period_key, count(*) AS n FROM written WHERE period_key IS NOT NULL GROUP BY period_key) w) AS periods,
    (SELECT count(*) FROM taken) AS period_taken,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('user_id', user_id, 'transaction_id', id,
                                                  'period_key', period_key_ledger)), '[]')
     FROM (SELECT * FROM taken ORDER BY user_id COLLATE "C", id LIMIT {sample}) s) AS period_taken_sample
"""

_WRITE = """
inserted AS (
    INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, granted_at,
                               expires_at, cause_run_id, idempotency_key)
    SELECT f.user_id, f.grant_type, CASE WHEN f.period_key_ledger IS NOT NULL THEN :grant_family END,
           f.period_key_ledger, greatest(f.amount, f.remaining_amount), f.remaining_amount,
           f.created_at AT TIME ZONE 'UTC', f.expiration_date AT TIME ZONE 'UTC', :run_id, f.import_key
    FROM fresh f
    ORDER BY f.user_id COLLATE "C", f.id  -- lock order: user id in byte order, as every ledger writer
    -- the import key (a second import) or the (user, grant family, month) of a grant the ledger already has
    ON CONFLICT DO NOTHING
    RETURNING grant_id, user_id, grant_type, period_key, amount, remaining, idempotency_key
), used AS (
    INSERT INTO credit_entries (user_id, grant_id, kind, amount, created_at, cause_run_id, reason)
    SELECT user_id, grant_id, 'usage', amount - remaining, :now, :run_id, :used_reason
    FROM inserted WHERE amount > remaining
    RETURNING 1
), credited AS (
    INSERT INTO credit_accounts AS a (user_id, balance, updated_at)
    SELECT user_id, sum(remaining), :now FROM inserted GROUP BY user_id
    ORDER BY user_id  -- lock order: user id (TEXT COLLATE "C")
    ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance, updated_at = EXCLUDED.updated_at
    RETURNING 1
), written AS (
    -- (data-modifying CTEs run to completion whether read or not: `used` and `credited` need no reader)
    SELECT period_key, amount, remaining FROM inserted
), taken AS (
    SELECT f.* FROM fresh f WHERE NOT EXISTS (SELECT 1 FROM inserted i WHERE i.idempotency_key = f.import_key)
)"""

# Dry run: what the insert would write, nothing written. A grant is not written when its month is already held.
_PREVIEW = """
taken AS (
    SELECT f.* FROM fresh f
    WHERE f.period_key_ledger IS NOT NULL AND EXISTS (
        SELECT 1 FROM credit_grants g
        WHERE g.user_id = f.user_id AND g.grant_family = :grant_family AND g.period_key = f.period_key_ledger
          AND NOT g.legacy_duplicate AND g.rolled_back_at IS NULL)
), written AS (
    SELECT f.period_key_ledger AS period_key, greatest(f.amount, f.remaining_amount) AS amount,
           f.remaining_amount AS remaining
    FROM fresh f WHERE NOT EXISTS (SELECT 1 FROM taken t WHERE t.id = f.id)
)"""


def _plan_params(plan: ImportPlan) -> dict[str, object]:
    types = list(plan.types.items())
    return {
        "template_types": [t for t, _ in types],
        "ledger_types": [ledger for _, (ledger, _) in types],
        "periodic": [periodic for _, (_, periodic) in types],
        "periodic_types": [t for t, (_, periodic) in types if periodic],
        "template_keys": list(plan.period_keys),
        "ledger_keys": list(plan.period_keys.values()),
    }


def import_chunk(
    conn: sa.Connection,
    *,
    schema: str,
    plan: ImportPlan,
    after: str,
    batch: int,
    cutoff: datetime,
    grant_family: str,
    now: datetime,
    run_id: uuid.UUID,
    dry_run: bool,
) -> ImportChunk:
    """Import up to `batch` live grants whose id follows `after` ('' : from the first).

    A chunk walks `credit_transaction.id` order (its primary key: the keyset walks the index, whatever the table's
    size), in one statement of data-modifying CTEs:
    1. map each row's type and period key by joining the plan's arrays; a periodic row keeps its month only if it is
       the user's first live periodic grant of that month (`created_at`, `id`) — the template allows one per (user,
       type, month), the ledger one per (user, grant family, month): a user moved from free to pro mid-month has two,
       and the later one carries over without a period (its credits are kept, the month is held once);
    2. insert the grants (`idempotency_key` = `saas-template:<id>`; expiry and grant time kept, read as UTC) in user-id
       order with `ON CONFLICT DO NOTHING`: an import key already present (a second import) or a month the ledger
       already granted to that user (distribute-credits ran first) inserts nothing — counted apart, the second named;
    3. a `usage` entry for what the user had already spent of each grant (amount - remaining), so each grant is
       conserved (`credit-jobs check`) and a later rollback of the month counts those credits as kept;
    4. balances upserted by what was imported, in user-id order (the ledger's lock order).
    A dry run runs step 1 and reports what steps 2 and 4 would do, writing nothing.

    The plan's arrays come from `profile_source`: one aggregate over the template's live grants (positive `amount` and
    `remaining_amount`, not expiry-processed, `expiration_date` NULL or after the cut-off): the types and period keys
    they carry, how many, how many credits. The usecase maps those (`domain.saas_template.plan_import`) and passes
    the mapping back as arrays."""
    sql = _CHUNK.format(
        src=quote_schema(conn, schema),
        live_t=_imported("t"),
        live_o=_imported("o"),
        write=_PREVIEW if dry_run else _WRITE,
        sample=SAMPLE,
    )
    params: dict[str, object] = {
        "after": after,
        "batch": batch,
        **_cutoff_params(cutoff),
        "key_prefix": IMPORT_KEY_PREFIX,
        "grant_family": grant_family,
        **_plan_params(plan),
    }
    if not dry_run:
        params.update(now=now, run_id=run_id, used_reason=USED_BEFORE_IMPORT)
    row = conn.execute(sa.text(sql), params).one()
    return ImportChunk(
        last_id=row.last_id,
        seen=int(row.seen),
        imported=int(row.imported),
        credits=int(row.credits),
        used_before=int(row.used_before),
        already_imported=int(row.already_imported),
        period_taken=int(row.period_taken),
        period_taken_sample=list(row.period_taken_sample),
        unplanned=int(row.unplanned),
        without_period=int(row.without_period),
        periods={str(k): int(v) for k, v in row.periods.items()},
    )


def first_grant_after(conn: sa.Connection, *, schema: str, after: str, cutoff: datetime) -> tuple[str, str] | None:
    """(credit_transaction id, user id) of the live grant a chunk of size 1 after `after` covers."""
    sql = (
        f"SELECT t.id, t.user_id FROM {quote_schema(conn, schema)}.credit_transaction t "
        f"WHERE t.id > :after AND {_imported('t')} ORDER BY t.id LIMIT 1"
    )
    row = conn.execute(sa.text(sql), {"after": after, **_cutoff_params(cutoff)}).one_or_none()
    return None if row is None else (str(row.id), str(row.user_id))


@dataclass(frozen=True)
class Reconciliation:
    users_compared: int  # users with live grants or a user_credit row
    mismatches: int  # users whose live grants differ from user_credit.current_credits
    mismatch_sample: list[dict[str, Any]]
    live_credits: int  # Σ remaining of the live grants (what the import carries over)
    recorded_credits: int  # Σ current_credits (each user's most recently updated user_credit row)
    duplicate_users: int  # users with more than one user_credit row
    duplicate_sample: list[dict[str, Any]]

    def as_details(self) -> dict[str, Any]:
        return {
            "reconciled_users": self.users_compared,
            "balance_mismatches": self.mismatches,
            "balance_mismatch_sample": self.mismatch_sample,
            "template_live_credits": self.live_credits,
            "template_user_credits": self.recorded_credits,
            "duplicate_user_credit_users": self.duplicate_users,
            "duplicate_user_credit_sample": self.duplicate_sample,
        }


_RECONCILE = """
WITH live AS (
    SELECT t.user_id, sum(t.remaining_amount) AS credits FROM {src}.credit_transaction t WHERE {live_t}
    GROUP BY t.user_id
), recorded AS (
    SELECT u.user_id, count(*) AS rows_,
           (array_agg(u.current_credits ORDER BY u.updated_at DESC NULLS LAST, u.id DESC))[1] AS credits,
           array_agg(u.current_credits ORDER BY u.updated_at DESC NULLS LAST, u.id DESC) AS all_credits
    FROM {src}.user_credit u GROUP BY u.user_id
), compared AS (
    SELECT coalesce(l.user_id, r.user_id) AS user_id, coalesce(l.credits, 0) AS live,
           coalesce(r.credits, 0) AS recorded, coalesce(r.rows_, 0) AS rows_, r.all_credits
    FROM live l FULL JOIN recorded r ON r.user_id = l.user_id
)
SELECT count(*) AS users,
       count(*) FILTER (WHERE live <> recorded) AS mismatches,
       coalesce(sum(live), 0) AS live_credits,
       coalesce(sum(recorded), 0) AS recorded_credits,
       count(*) FILTER (WHERE rows_ > 1) AS duplicate_users,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('user_id', user_id, 'live_grants', live,
                                                     'user_credit', recorded, 'user_credit_rows', rows_)), '[]')
        FROM (SELECT * FROM compared WHERE live <> recorded ORDER BY user_id COLLATE "C" LIMIT {sample}) s)
           AS mismatch_sample,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('user_id', user_id, 'rows', rows_,
                                                     'current_credits', all_credits)), '[]')
        FROM (SELECT * FROM compared WHERE rows_ > 1 ORDER BY user_id COLLATE "C" LIMIT {sample}) s)
           AS duplicate_sample
FROM compared
"""


def reconcile(conn: sa.Connection, *, schema: str, cutoff: datetime) -> Reconciliation:
    sql = _RECONCILE.format(src=quote_schema(conn, schema), live_t=_live("t"), sample=SAMPLE)
    row = conn.execute(sa.text(sql), {"cutoff": cutoff}).one()
    return Reconciliation(
        users_compared=int(row.users),
        mismatches=int(row.mismatches),
        mismatch_sample=list(row.mismatch_sample),
        live_credits=int(row.live_credits),
        recorded_credits=int(row.recorded_credits),
        duplicate_users=int(row.duplicate_users),
        duplicate_sample=list(row.duplicate_sample),
    )
