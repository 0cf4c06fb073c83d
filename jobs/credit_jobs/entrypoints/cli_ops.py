"""The ops commands of `credit-jobs` (issue 11): `rollback distribute-credits` and `backfill`.

`register(app)` adds them to the main Typer app (entrypoints/cli.py calls it once). Each runs through the run
lifecycle (`lifecycle.run_lifecycle.execute_run`: run id, guard, audit row with its trigger, logs, metrics). The
shared CLI plumbing (settings, engine with the embedded default, progress bar, outcome line) is read from
entrypoints/cli.py when a command runs, so importing this module costs `credit-jobs run` nothing.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console

from credit_jobs.adapters.database import SessionTimeouts
from credit_jobs.domain.contract import DISTRIBUTE_CREDITS, EXIT_CONFIG_ERROR, Trigger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.grant_rules import validate_grant_family
from credit_jobs.domain.limits import MAX_JOB_NAME_LENGTH
from credit_jobs.domain.period_ranges import period_of_key
from credit_jobs.domain.requests import parse_user_id
from credit_jobs.domain.run_model import validate_batch_size

MAX_REASON_LENGTH = 500
MAX_USERS = 10_000  # --user values per rollback: a larger set is a whole-period rollback

rollback_app = typer.Typer(
    no_args_is_help=True, help="Roll a period's grants back (void what is left) so the period can be distributed again."
)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="PostgreSQL URL; overrides DATABASE_URL. Default: embedded PostgreSQL."),
]


def register(app: typer.Typer) -> None:
    app.add_typer(rollback_app, name="rollback")


def validate_reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise ConfigError("--reason is empty: say why the period is rolled back (stored on every void entry)")
    if len(text) > MAX_REASON_LENGTH or not text.isprintable():
        raise ConfigError(f"--reason must be one printable line of at most {MAX_REASON_LENGTH} characters")
    return text


def _validate_job(job: str) -> str:
    if not job or len(job) > MAX_JOB_NAME_LENGTH or not job.isprintable() or ":" in job:
        raise ConfigError(f"--job {job[:60]!r} is not a job name: the CreditJob's name (printable, no ':')")
    return job


@rollback_app.command("distribute-credits")
def rollback_distribute(
    period_key: Annotated[str, typer.Option(help="The period to roll back, e.g. 2026-11.", show_default=False)],
    reason: Annotated[str, typer.Option(help="Why: stored on every void entry and in the audit row.")],
    job: Annotated[
        str | None,
        typer.Option(help="The distributing job (CreditJob name); default CREDITJOB_NAME, else the usecase."),
    ] = None,
    user: Annotated[
        list[str] | None, typer.Option("--user", metavar="USER", help="Only this user (repeatable).")
    ] = None,
    grant_family: Annotated[
        str | None, typer.Option(help="The job's grant family; default CREDITJOB_GRANT_FAMILY (plan).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Grants per transaction.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be rolled back; change nothing.")
    ] = False,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Void the unconsumed remainder of every grant of a period (or of some users), mark the grants rolled back and
    lower balances; the period can then be distributed again, less what users already spent. Refused (exit 2)
    while a run of the job and period is live."""
    from credit_jobs.entrypoints import cli  # loaded by now: its settings, engine and output helpers
    from credit_jobs.lifecycle.run_lifecycle import RunRequest, execute_run
    from credit_jobs.usecases.rollback_period import RollbackScope, rollback_usecase

    settings = cli._settings()
    period = period_of_key(period_key)
    scope = RollbackScope(validate_reason(reason), _parse_users(user))
    request = RunRequest(
        usecase=rollback_usecase(scope),
        job=_validate_job(job) if job is not None else settings.creditjob_name or DISTRIBUTE_CREDITS,
        namespace=settings.creditjob_namespace,
        trigger=Trigger.ROLLBACK.value,
        period=period,
        pinned_key=period_key,
        batch_size=validate_batch_size(batch_size if batch_size is not None else settings.creditjobs_batch_size),
        dry_run=dry_run,
        heartbeat_seconds=settings.creditjobs_heartbeat_seconds,
        pushgateway_url=settings.pushgateway_url,
        grant_family=(
            validate_grant_family(grant_family, source="--grant-family")
            if grant_family is not None
            else settings.creditjob_grant_family
        ),
    )

    timeouts = SessionTimeouts(settings.creditjobs_statement_timeout_seconds, settings.creditjobs_lock_timeout_seconds)

    def engine_factory() -> sa.Engine:
        return cli._engine(database_url, settings, verify=False, timeouts=timeouts)

    outcome = cli._with_progress(
        f"rollback {period_key}: grants", lambda progress: execute_run(request, engine_factory, progress=progress)
    )
    if outcome.status == "skipped":  # a live run of this job and period holds its guard: refuse, loudly
        cli.err.print(
            f"credit-jobs: error: rollback of {request.job} period {period_key} refused: {outcome.error}; nothing was "
            "rolled back — wait for that run to finish (`credit-jobs runs list`), then roll back",
            highlight=False,
            markup=False,
        )
        return EXIT_CONFIG_ERROR
    cli._print_outcome(outcome, request.job, request.shard)
    _print_not_voided(cli.out, outcome.stats.details if outcome.stats else {})
    return outcome.exit_code


def _parse_users(values: list[str] | None) -> tuple[object, ...] | None:
    if not values:
        return None
    if len(values) > MAX_USERS:
        raise ConfigError(f"--user given {len(values)} times: at most {MAX_USERS}; roll back the whole period instead")
    return tuple(sorted({parse_user_id(v) for v in values}))


def _print_not_voided(out: Console, details: dict[str, object]) -> None:
    users, credits, sample = (
        details.get("not_voided_users"),
        details.get("not_voided_credits"),
        details.get("not_voided_sample"),
    )
    if not users:
        return
    out.print(
        f"{users} users had already used (or lost to expiry) part of their grant: {credits} credits could not be "
        "voided; a redo of the period subtracts them from the new grant",
        highlight=False,
        markup=False,
    )
    for row in sample if isinstance(sample, list) else []:
        out.print(
            f"    user {row['user_id']}: grant {row['grant_id']}, {row['kept']} credits not voided",
            highlight=False,
            markup=False,
        )
