"""The ledger invariants as set-based queries (each returns the violating rows, empty when sound), and the coverage
of one period. Whole-table scans and anti-joins, never a query per user.

docs/credits-lifecycle.md ("What check reports") lists the same checks for operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from credit_jobs.domain.limits import MAX_BALANCE, MAX_CREDITS, MAX_EXPIRY_DAYS

SAMPLE = 20

# The run guard's lock (adapters.run_guard: pg_try_advisory_lock(hashtextextended(guard_key(...), 0))), computed in
# SQL from an audit row. A bigint advisory lock shows in pg_locks as classid = high 32 bits, objid = low 32 bits,
# objsubid = 1 — whether it is held by a session or a transaction.
_GUARD_LOCK_HELD = """
    EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid::bigint = ((k.key >> 32) & 4294967295)
          AND l.objid::bigint = (k.key & 4294967295))
"""

CHECKS: dict[str, tuple[str, str]] = {
    "balance_equals_grants": (
        "1: a balance equals the sum of remaining over the user's grants",
        """
        SELECT coalesce(a.user_id, g.user_id) AS user_id, a.balance, g.remaining
        FROM credit_accounts a
        FULL JOIN (SELECT user_id, sum(remaining) AS remaining FROM credit_grants GROUP BY user_id) g
          ON g.user_id = a.user_id
        WHERE coalesce(a.balance, 0) <> coalesce(g.remaining, 0)
        """,
    ),
    "balance_not_negative": (
        "1: no balance is negative",
        "SELECT user_id, balance FROM credit_accounts WHERE balance < 0",
    ),
    "grant_conserved": (
        "1/3/4: a grant's amount equals what is left plus what entries took out",
        """
        SELECT g.grant_id, g.user_id, g.amount, g.remaining, coalesce(e.taken, 0) AS taken
        FROM credit_grants g
        LEFT JOIN (SELECT grant_id, sum(amount) AS taken FROM credit_entries GROUP BY grant_id) e
          ON e.grant_id = g.grant_id
        WHERE g.amount <> g.remaining + coalesce(e.taken, 0)
        """,
    ),
    # Any grant type: a plan change mid-period must not add a second grant. Grants of *different* families are
    # independent by design (two distributing jobs). A grant carrying a void entry no longer counts: voiding the
    # extra grant is how an operator settles a duplicate found by migration 0006; a rolled-back grant (`credit-jobs
    # rollback`, migration 0008) no longer counts either: its period may be distributed again.
    "one_periodic_grant_per_family_period": (
        "2: at most one periodic grant per (user, grant family, period key), whatever its grant type",
        """
        SELECT g.user_id, g.period_key, g.grant_family, count(*) AS grants,
               array_agg(g.grant_id ORDER BY g.grant_id) AS grant_ids,
               array_agg(DISTINCT g.grant_type) AS grant_types
        FROM credit_grants g
        WHERE g.period_key IS NOT NULL AND g.rolled_back_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM credit_entries v WHERE v.grant_id = g.grant_id AND v.kind = 'void')
        GROUP BY g.user_id, g.period_key, g.grant_family HAVING count(*) > 1
        """,
    ),
    # A redo after `credit-jobs rollback` grants the policy amount minus what the user kept of the rolled-back grants
    # (0013 records that subtraction on the grant). A redo that read before a rollback committed subtracted less:
    # the user got credits above the policy. Only tuples with rolled-back grants are read (a small partial index).
    "redo_subtracts_what_was_kept": (
        "2: a period's live grant subtracted exactly what the user kept of its rolled-back grants (never above the "
        "policy after a rollback and redo)",
        """
        SELECT g.user_id, g.grant_family, g.period_key, g.grant_id, g.amount, g.kept_earlier AS subtracted,
               r.kept, r.kept - g.kept_earlier AS over
        FROM (SELECT user_id, grant_family, period_key, sum(rollback_kept) AS kept FROM credit_grants
              WHERE rolled_back_at IS NOT NULL GROUP BY user_id, grant_family, period_key) r
        JOIN credit_grants g ON g.user_id = r.user_id AND g.grant_family = r.grant_family
             AND g.period_key = r.period_key AND g.rolled_back_at IS NULL AND NOT g.legacy_duplicate
        WHERE g.kept_earlier IS NOT NULL AND g.kept_earlier <> r.kept
        """,
    ),
    "expired_once": (
        "3: a grant marked expired has exactly one expiry entry, and only expired grants have one",
        """
        SELECT g.grant_id, g.user_id, g.expired_at, count(e.entry_id) AS expiry_entries
        FROM credit_grants g
        LEFT JOIN credit_entries e ON e.grant_id = g.grant_id AND e.kind = 'expiry'
        GROUP BY g.grant_id, g.user_id, g.expired_at
        HAVING count(e.entry_id) > 1
            OR (count(e.entry_id) = 1 AND g.expired_at IS NULL)
            OR (count(e.entry_id) = 0 AND g.expired_at IS NOT NULL)
        """,
    ),
    "entry_user_is_grant_user": (
        "4: every entry (usage, expiry, void) takes from a grant of its own user",
        """
        SELECT e.entry_id, e.kind, e.grant_id, e.user_id AS entry_user_id, g.user_id AS grant_user_id, e.amount
        FROM credit_entries e JOIN credit_grants g ON g.grant_id = e.grant_id
        WHERE e.user_id <> g.user_id
        """,
    ),
    "cause_named": (
        "5: every ledger row names its cause (a run id or a request id)",
        """
        SELECT 'grant' AS kind, grant_id AS id FROM credit_grants
        WHERE num_nonnulls(cause_run_id, cause_request_id) <> 1
        UNION ALL
        SELECT 'entry', entry_id FROM credit_entries WHERE num_nonnulls(cause_run_id, cause_request_id) <> 1
        """,
    ),
    # Migration 0004 added these bounds NOT VALID: rows written before it may still break them.
    "within_bounds": (
        f"5: amounts ≤ {MAX_CREDITS}, balances ≤ {MAX_BALANCE}, policy expiry ≤ {MAX_EXPIRY_DAYS} days",
        f"""
        SELECT 'credit_grants' AS table_name, grant_id::text AS row_id, 'amount' AS column_name, amount::text AS value
        FROM credit_grants WHERE amount > {MAX_CREDITS}
        UNION ALL
        SELECT 'credit_entries', entry_id::text, 'amount', amount::text FROM credit_entries WHERE amount > {MAX_CREDITS}
        UNION ALL
        SELECT 'credit_accounts', user_id::text, 'balance', balance::text FROM credit_accounts
        WHERE balance > {MAX_BALANCE}
        UNION ALL
        SELECT 'plan_credit_policies', plan_code, 'expiry_days', expiry_days::text FROM plan_credit_policies
        WHERE expiry_days > {MAX_EXPIRY_DAYS}
        """,
    ),
    "one_running_run": (
        "6: at most one running run per (job, period key, shard)",
        """
        SELECT job, period_key, shard, count(*) AS running FROM job_runs
        WHERE status = 'running' AND NOT dry_run GROUP BY 1, 2, 3 HAVING count(*) > 1
        """,
    ),
    # A dead holder's row stays 'running' until the next run of that period takes it over; until then the period
    # may be unfinished. Judged by the lock, not by heartbeat age: a slow run is alive as long as its lock is held.
    "running_run_has_live_holder": (
        "6: every running run's guard lock is held (its holder is alive)",
        f"""
        SELECT r.run_id, r.job, r.period_key, r.shard, r.started_at, r.heartbeat_at, r.host, r.pid
        FROM job_runs r
        CROSS JOIN LATERAL (
            SELECT hashtextextended('credit-jobs:' || r.job || ':' || r.period_key || ':' || r.shard, 0) AS key
        ) k
        WHERE r.status = 'running' AND NOT r.dry_run AND NOT {_GUARD_LOCK_HELD}
        ORDER BY r.started_at
        """,
    ),
}

# Checks whose rows must be seen by two consecutive statements: the statement's snapshot of job_runs predates its
# read of pg_locks, so a run finishing in between (status written, then lock released) would look dead once. A run
# records its end before releasing its lock, so a row still 'running' in the later snapshot really had no holder.
CONFIRM_TWICE = {"running_run_has_live_holder": "run_id"}


def find_violations(conn: sa.Connection) -> dict[str, list[dict[str, Any]]]:
    violations: dict[str, list[dict[str, Any]]] = {}
    for name, (_, sql) in CHECKS.items():
        found = [dict(r._mapping) for r in conn.execute(sa.text(sql + f" LIMIT {SAMPLE}"))]
        if found and name in CONFIRM_TWICE:
            key = CONFIRM_TWICE[name]
            again = {r._mapping[key] for r in conn.execute(sa.text(sql))}
            found = [r for r in found if r[key] in again]
        if found:
            violations[name] = found
    return violations


def table_counts(conn: sa.Connection) -> dict[str, int]:
    return {
        table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
        for table in ("credit_accounts", "credit_grants", "credit_entries", "job_runs")
    }


@dataclass(frozen=True)
class Coverage:
    period_key: str
    grant_family: str
    eligible: int
    missing: int
    missing_sample: list[str]
    runs: dict[str, int] = field(default_factory=dict)  # with a job: its non-dry runs of the period, by status
    # runs of the period (of the job, if given) left `running` by a dead holder: the period may be unfinished
    stuck_runs: list[str] = field(default_factory=list)


# "Eligible" is distribute-credits' rule (active or lifetime, not banned, plan with an active policy), evaluated now.
_COVERAGE = f"""
WITH eligible AS (
    SELECT e.user_id, p.credits_per_period AS credits FROM credit_eligibility e
    JOIN plan_credit_policies p ON p.plan_code = e.plan_code AND p.active
    WHERE (e.status = 'active' OR e.is_lifetime) AND NOT e.is_banned
), missing AS (
    SELECT el.user_id FROM eligible el
    WHERE NOT EXISTS (
        SELECT 1 FROM credit_grants g
        WHERE g.user_id = el.user_id AND g.grant_family = :family AND g.period_key = :period_key
          AND NOT g.legacy_duplicate AND g.rolled_back_at IS NULL)
      -- after a rollback, a user who kept at least the policy amount gets no new grant on the redo: covered
      AND coalesce((SELECT sum(r.rollback_kept) FROM credit_grants r
                    WHERE r.user_id = el.user_id AND r.grant_family = :family AND r.period_key = :period_key
                      AND r.rolled_back_at IS NOT NULL), 0) < el.credits
)
SELECT (SELECT count(*) FROM eligible) AS eligible,
       (SELECT count(*) FROM missing) AS missing,
       (SELECT coalesce(array_agg(user_id ORDER BY user_id), '{{}}')
        FROM (SELECT user_id FROM missing ORDER BY user_id LIMIT {SAMPLE}) s) AS sample
"""


def period_coverage(conn: sa.Connection, *, period_key: str, grant_family: str, job: str | None) -> Coverage:
    row = conn.execute(sa.text(_COVERAGE), {"family": grant_family, "period_key": period_key}).one()
    runs: dict[str, int] = {}
    if job is not None:
        runs = {
            r.status: int(r.runs)
            for r in conn.execute(
                sa.text(
                    "SELECT status, count(*) AS runs FROM job_runs WHERE job = :job AND period_key = :period_key "
                    "AND NOT dry_run GROUP BY status ORDER BY status"
                ),
                {"job": job, "period_key": period_key},
            )
        }
    stuck = _stuck_runs(conn, period_key=period_key, job=job)
    return Coverage(period_key, grant_family, int(row.eligible), int(row.missing), list(row.sample), runs, stuck)


def _stuck_runs(conn: sa.Connection, *, period_key: str, job: str | None) -> list[str]:
    """The `running_run_has_live_holder` check for one period (and job), confirmed twice as that check is."""
    sql = f"SELECT s.run_id FROM ({CHECKS['running_run_has_live_holder'][1]}) s WHERE s.period_key = :period_key" + (
        "" if job is None else " AND s.job = :job"
    )
    params = {"period_key": period_key, **({} if job is None else {"job": job})}
    first = [r.run_id for r in conn.execute(sa.text(sql), params)]
    if not first:
        return []
    again = {r.run_id for r in conn.execute(sa.text(sql), params)}
    return [str(run_id) for run_id in first if run_id in again]
