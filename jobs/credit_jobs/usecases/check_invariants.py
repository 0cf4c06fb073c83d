"""check: the ledger invariants (design.md ⚓) as queries; each returns the violating rows, empty when sound.

Used by `credit-jobs check` (exit 1 listing violations), the demo, and every reliability test after crashes and
concurrent runs. Set-based, so it is cheap enough to run after every job in production too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

SAMPLE = 20

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
    "one_grant_per_period": (
        "2: at most one grant per (user, grant type, period key)",
        """
        SELECT user_id, grant_type, period_key, count(*) AS grants FROM credit_grants
        WHERE period_key IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1
        """,
    ),
    "expired_once": (
        "3: an expired grant has exactly one expiry entry, and only expired grants have one",
        """
        SELECT g.grant_id, g.expired_at, count(e.entry_id) AS expiry_entries
        FROM credit_grants g
        LEFT JOIN credit_entries e ON e.grant_id = g.grant_id AND e.kind = 'expiry'
        GROUP BY g.grant_id, g.expired_at
        HAVING count(e.entry_id) > 1 OR (count(e.entry_id) = 1 AND g.expired_at IS NULL)
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
    "one_running_run": (
        "6: at most one running run per (job, period key, shard)",
        """
        SELECT job, period_key, shard, count(*) AS running FROM job_runs
        WHERE status = 'running' AND NOT dry_run GROUP BY 1, 2, 3 HAVING count(*) > 1
        """,
    ),
}


@dataclass
class CheckReport:
    violations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


def check_invariants(engine: sa.Engine) -> CheckReport:
    report = CheckReport()
    with engine.connect() as conn:
        for name, (_, sql) in CHECKS.items():
            rows = [dict(r._mapping) for r in conn.execute(sa.text(sql + f" LIMIT {SAMPLE}"))]
            if rows:
                report.violations[name] = rows
        for table in ("credit_accounts", "credit_grants", "credit_entries", "job_runs"):
            report.counts[table] = int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    return report
