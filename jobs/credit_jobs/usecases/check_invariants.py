"""check: the ledger invariants, each a set-based query in `adapters.ledger_checks` returning the violating rows;
plus, for one period, its coverage (eligible users now without the period's grant).

Set-based, so it is cheap enough to run after every job in production, not only after crashes and concurrent runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from credit_jobs.adapters import ledger_checks
from credit_jobs.adapters.ledger_checks import CHECKS, Coverage
from credit_jobs.domain.grant_rules import DEFAULT_GRANT_FAMILY

__all__ = ["CHECKS", "CheckReport", "Coverage", "check_invariants"]


@dataclass
class CheckReport:
    violations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    coverage: Coverage | None = None  # informational: eligibility changes after a run, so a gap is no violation

    @property
    def ok(self) -> bool:
        return not self.violations


def check_invariants(
    engine: sa.Engine,
    *,
    period_key: str | None = None,
    grant_family: str = DEFAULT_GRANT_FAMILY,
    job: str | None = None,
) -> CheckReport:
    report = CheckReport()
    with engine.connect() as conn:
        report.violations = ledger_checks.find_violations(conn)
        report.counts = ledger_checks.table_counts(conn)
        if period_key is not None:
            report.coverage = ledger_checks.period_coverage(
                conn, period_key=period_key, grant_family=grant_family, job=job
            )
    return report
