"""import saas-template: move a SaaS template database's live credits into the ledger, once.

Each live template grant becomes a ledger grant keyed `saas-template:<id>`, so a second import inserts nothing.
`import_usecase` gives the steps; docs/adopting.md walks through an adoption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
import structlog

from credit_jobs.adapters import saas_template_sql
from credit_jobs.domain.contract import IMPORT_SAAS_TEMPLATE, Period
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.run_model import RunContext, RunStats, UsecaseSpec
from credit_jobs.domain.saas_template import ImportPlan, plan_import
from credit_jobs.usecases.chunk_runner import ChunkedWork, run_chunks

log = structlog.get_logger()

DOCS_HINT = "see docs/adopting.md"


@dataclass(frozen=True)
class ImportScope:
    """Where the template's tables are and the cut-off for "unexpired" (None: the run's now)."""

    source_schema: str = "public"
    as_of: datetime | None = None


def verify_source(engine: sa.Engine, schema: str) -> None:
    """Refuse (exit 2) a source schema without the template's tables, saying what is missing and how to point at it."""
    with engine.connect() as conn:
        problems = saas_template_sql.check_source(conn, schema)
    if problems:
        raise ConfigError(
            f"the SaaS template's tables are not in schema {schema!r} of this database: {'; '.join(problems)} — pass "
            f"--source-schema with the schema holding credit_transaction and user_credit ({DOCS_HINT})"
        )


@dataclass
class ImportTotals:
    seen: int = 0
    imported: int = 0
    credits: int = 0
    used_before: int = 0
    already_imported: int = 0
    period_taken: int = 0
    period_taken_sample: list[dict[str, Any]] = field(default_factory=list)
    unplanned: int = 0
    without_period: int = 0
    periods: dict[str, int] = field(default_factory=dict)
    chunks: int = 0


class _Import(ChunkedWork[str, saas_template_sql.ImportChunk]):
    name = "import"
    start = ""  # before every credit_transaction id

    def __init__(self, ctx: RunContext, scope: ImportScope, plan: ImportPlan, cutoff: datetime, total: int) -> None:
        self.ctx, self.scope, self.plan, self.cutoff, self.total = ctx, scope, plan, cutoff, total
        self.totals = ImportTotals()

    def run_chunk(self, conn: sa.Connection, after: str, limit: int) -> saas_template_sql.ImportChunk:
        ctx = self.ctx
        return saas_template_sql.import_chunk(
            conn,
            schema=self.scope.source_schema,
            plan=self.plan,
            after=after,
            batch=limit,
            cutoff=self.cutoff,
            grant_family=ctx.grant_family,
            now=ctx.now,
            run_id=ctx.run_id,
            dry_run=ctx.dry_run,
        )

    def covered(self, result: saas_template_sql.ImportChunk) -> tuple[str | None, int]:
        return result.last_id, result.seen

    def first_item(self, conn: sa.Connection, after: str) -> tuple[str, dict[str, int | str]] | None:
        found = saas_template_sql.first_grant_after(
            conn, schema=self.scope.source_schema, after=after, cutoff=self.cutoff
        )
        return None if found is None else (found[0], {"transaction_id": found[0], "user_id": found[1]})

    def add(self, chunk: saas_template_sql.ImportChunk) -> None:
        t = self.totals
        t.chunks += 1
        t.seen += chunk.seen
        t.imported += chunk.imported
        t.credits += chunk.credits
        t.used_before += chunk.used_before
        t.already_imported += chunk.already_imported
        t.period_taken += chunk.period_taken
        room = saas_template_sql.SAMPLE - len(t.period_taken_sample)
        t.period_taken_sample += chunk.period_taken_sample[:room]
        t.unplanned += chunk.unplanned
        t.without_period += chunk.without_period
        for key, count in chunk.periods.items():
            t.periods[key] = t.periods.get(key, 0) + count

    def progress(self) -> tuple[int, int | None]:
        return self.totals.seen, self.total

    def stats(self) -> RunStats:
        t = self.totals
        details: dict[str, Any] = {
            "source_schema": self.scope.source_schema,
            "as_of": self.cutoff.isoformat(),
            "source_grants": t.seen,
            "already_imported": t.already_imported,
            # the ledger already held the user's month (distribute-credits ran before the import): not imported
            "period_already_granted": t.period_taken,
            "period_already_granted_sample": list(t.period_taken_sample),
            "carried_without_period": t.without_period,
            "unknown_types": list(self.plan.unknown_types),
            "unreadable_period_keys": list(self.plan.unreadable_period_keys),
            "not_planned": t.unplanned,
            "chunks": t.chunks,
        }
        periods = dict(sorted(t.periods.items()))
        if self.ctx.dry_run:
            return RunStats(
                details={
                    "would_import": t.imported,
                    "would_import_credits": t.credits,
                    "would_hold_periods": periods,
                    **details,
                }
            )
        return RunStats(
            processed=t.imported + t.already_imported,
            skipped=t.period_taken + t.unplanned,
            credits={"imported": t.credits},
            details={
                "imported": t.imported,
                "used_before_import": t.used_before,
                "periods_held": periods,
                **details,
            },
        )


def import_saas_template(engine: sa.Engine, ctx: RunContext, *, scope: ImportScope) -> RunStats:
    # 1. The source must be the template's tables (checked again here: a run may be started without the CLI).
    verify_source(engine, scope.source_schema)
    # 2. What is live at the cut-off, and how each type and period key maps (pure).
    cutoff = scope.as_of or ctx.now
    with engine.connect() as conn:
        profile = saas_template_sql.profile_source(conn, scope.source_schema, cutoff=cutoff)
    plan = plan_import(profile.types, profile.period_keys)
    # 3. The grants, chunk by chunk.
    work = _Import(ctx, scope, plan, cutoff, profile.grants)
    stats = run_chunks(engine, ctx, work)
    # 4. Reconcile against the template's own balances.
    with engine.connect() as conn:
        reconciliation = saas_template_sql.reconcile(conn, schema=scope.source_schema, cutoff=cutoff)
    stats.details.update(reconciliation.as_details())
    _warn(work.totals, plan, reconciliation)
    return stats


def _warn(t: ImportTotals, plan: ImportPlan, rec: saas_template_sql.Reconciliation) -> None:
    if rec.mismatches:
        log.warning(
            "import.balance_mismatches",
            users=rec.mismatches,
            sample=rec.mismatch_sample[:5],
            hint="user_credit.current_credits differs from the user's live grants; the ledger keeps the grants",
        )
    if rec.duplicate_users:
        log.warning("import.duplicate_user_credit", users=rec.duplicate_users, sample=rec.duplicate_sample[:5])
    if t.period_taken:
        log.warning(
            "import.period_already_granted",
            grants=t.period_taken,
            sample=t.period_taken_sample[:5],
            hint="the ledger already granted these users the month (distribute-credits ran before the import)",
        )
    if plan.unknown_types:
        log.warning("import.unknown_types", types=plan.unknown_types, hint="imported as adjustment grants")
    if plan.unreadable_period_keys:
        log.warning(
            "import.unreadable_period_keys",
            keys=plan.unreadable_period_keys,
            hint="not YYYYMM: those grants are imported without a period",
        )


def import_usecase(scope: ImportScope) -> UsecaseSpec:
    """The usecase the lifecycle runs for one `credit-jobs import saas-template` command.

    It runs inside the run lifecycle like any usecase (entrypoints/cli/import_commands.py): a run id, an audit row
    with trigger `import` (job and usecase `import-saas-template`, the month of the cut-off as its period key), a
    guard, logs and the end-of-run counts. The work (`import_saas_template`) reads top to bottom:
    1. check the source: the schema holds the template's `credit_transaction` and `user_credit` (`ConfigError`,
       exit 2, naming what is missing — the CLI runs the same check before starting a run, so bad input writes
       nothing);
    2. profile the template's live grants at the cut-off (`--as-of`, default the run's "now", the database clock) and
       plan their types and period keys with the pure rules of `domain.saas_template`;
    3. walk them in `credit_transaction.id` order through the shared chunk loop (`usecases.chunk_runner`), one chunk
       per transaction (`adapters.saas_template_sql.import_chunk`): each becomes a grant keyed `saas-template:<id>` —
       a second import inserts nothing — and an imported grant of a month holds (user, grant family, month), so
       distribute-credits does not grant that month again;
    4. reconcile: per user, the live credits carried over against the template's `user_credit.current_credits`; every
       mismatch and every user with duplicate `user_credit` rows is counted and sampled in the audit row and logged.
    A dry run does steps 1, 2 and 4 and reports what step 3 would write (`would_import`, `would_import_credits`).
    """
    return UsecaseSpec(
        IMPORT_SAAS_TEMPLATE,
        Period.MONTHLY,
        partial(import_saas_template, scope=scope),
        "Move the SaaS template's live credits into the ledger, once per source row.",
        grant_period_lock="exclusive",  # the cut-over month: never beside a distribution of it (either way round)
    )
