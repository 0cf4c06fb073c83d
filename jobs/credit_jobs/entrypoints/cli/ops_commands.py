"""The ops commands of `credit-jobs`: `rollback distribute-credits` and `backfill`.

`register(app)` adds them to the main Typer app. Each runs through the run lifecycle
(`lifecycle.run_lifecycle.execute_run`: run id, guard, audit row with its trigger, logs, metrics), with the shared CLI
plumbing of `cli.support` (settings, engine with the embedded default) and `run_command` (progress bar, outcome line).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from credit_jobs.domain.contract import DISTRIBUTE_CREDITS, EXIT_CONFIG_ERROR, Trigger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.limits import MAX_JOB_NAME_LENGTH
from credit_jobs.domain.period_ranges import MAX_UNCONFIRMED_PERIODS, check_jobs_period, period_of_key, period_range
from credit_jobs.domain.requests import parse_user_id
from credit_jobs.entrypoints.cli.options import DatabaseUrlOption
from credit_jobs.entrypoints.cli.support import (
    CliState,
    engine_for,
    jobs_period,
    print_tab_separated,
    rich_out,
    run_timeouts,
    say,
    state,
    warn,
)
from credit_jobs.entrypoints.json_vocabulary import record
from credit_jobs.entrypoints.settings import Settings, bind_settings

if TYPE_CHECKING:
    import sqlalchemy as sa

    from credit_jobs.domain.run_model import UsecaseSpec
    from credit_jobs.lifecycle.run_lifecycle import RunRequest

MAX_REASON_LENGTH = 500
MAX_USERS = 10_000  # --user values per rollback: a larger set is a whole-period rollback

rollback_app = typer.Typer(
    no_args_is_help=True, help="Roll a period's grants back (void what is left) so the period can be distributed again."
)


def register(app: typer.Typer) -> None:
    app.add_typer(rollback_app, name="rollback")
    app.command("backfill")(backfill)


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
    ctx: typer.Context,
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
    from credit_jobs.entrypoints.cli.run_command import print_outcome, with_progress
    from credit_jobs.lifecycle.run_lifecycle import execute_run
    from credit_jobs.usecases.rollback_period import RollbackScope, rollback_usecase

    cli = state(ctx)
    settings = cli.settings
    period = period_of_key(period_key)
    check_jobs_period(period_key, period, *jobs_period(settings, DISTRIBUTE_CREDITS), option="--period-key")
    scope = RollbackScope(validate_reason(reason), _parse_users(user))
    request = _ops_request(
        settings,
        rollback_usecase(scope),
        OpsOptions(job, batch_size, dry_run, grant_family),
        default_job=DISTRIBUTE_CREDITS,
        period=period,
        trigger=Trigger.ROLLBACK.value,
        pinned_key=period_key,
    )

    engine_factory = _engine_factory(database_url, cli)

    outcome = with_progress(
        f"rollback {period_key}: grants", lambda progress: execute_run(request, engine_factory, progress=progress)
    )
    if outcome.status == "skipped":  # a live run of this job and period holds its guard: refuse, loudly
        warn(
            f"credit-jobs: error: rollback of {request.job} period {period_key} refused: {outcome.error}; nothing was "
            "rolled back — wait for that run to finish (`credit-jobs runs list`), then roll back"
        )
        return EXIT_CONFIG_ERROR
    print_outcome(outcome, request.job, request.shard)
    details = outcome.stats.details if outcome.stats else {}
    _print_not_voided(details)
    if outcome.status == "succeeded" and not details.get("would_roll_back" if dry_run else "rolled_back"):
        warn(
            f"credit-jobs: warning: nothing to roll back: no grant of grant family {request.grant_family} for period "
            f"{period_key}{' among the users given' if user else ''} — a period not distributed yet (a future one) "
            "has none; check --period-key and --grant-family"
        )
    return outcome.exit_code


@dataclass(frozen=True)
class OpsOptions:
    """The options `rollback` and `backfill` share (None: not given)."""

    job: str | None
    batch_size: int | None
    dry_run: bool
    grant_family: str | None


def _ops_request(
    settings: Settings, spec: UsecaseSpec, options: OpsOptions, *, default_job: str, **fields: Any
) -> RunRequest:
    """The run request of an ops command: its options, else the settings (CREDITJOB_NAME, the batch size, the grant
    family), checked here; `fields` are the command's own (period, trigger, pinned key)."""
    from credit_jobs.entrypoints.run_requests import run_request

    return run_request(
        settings,
        spec,
        job=_validate_job(options.job) if options.job is not None else settings.creditjob_name or default_job,
        batch_size=options.batch_size,
        grant_family=options.grant_family,
        dry_run=options.dry_run,
        **fields,
    )


def _engine_factory(database_url: str | None, cli: CliState) -> Callable[[], sa.Engine]:
    """Engines for the runs: the configured database (embedded by default) with the job runs' session timeouts."""
    timeouts = run_timeouts(cli.settings)

    def engine_factory() -> sa.Engine:
        return engine_for(database_url, cli, verify=False, timeouts=timeouts)

    return engine_factory


def _parse_users(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    if len(values) > MAX_USERS:
        raise ConfigError(f"--user given {len(values)} times: at most {MAX_USERS}; roll back the whole period instead")
    return tuple(sorted({parse_user_id(v) for v in values}))


def _print_not_voided(details: dict[str, object]) -> None:
    users, credits, sample = (
        details.get("not_voided_users"),
        details.get("not_voided_credits"),
        details.get("not_voided_sample"),
    )
    if not users:
        return
    say(
        f"{users} users had already used (or lost to expiry) part of their grant: {credits} credits could not be "
        "voided; a redo of the period subtracts them from the new grant"
    )
    for row in sample if isinstance(sample, list) else []:
        say(f"    user {row['user_id']}: grant {row['grant_id']}, {row['kept']} credits not voided")


# --- backfill ---------------------------------------------------------------------------------------------------

BACKFILL_HEADERS = ("period", "status", "granted", "already granted", "skipped", "duration")


def backfill(
    ctx: typer.Context,
    usecase: Annotated[str, typer.Argument(help="The usecase to run for each period, e.g. distribute-credits.")],
    from_key: Annotated[str, typer.Option("--from", help="The first period, e.g. 2026-08.", show_default=False)],
    to_key: Annotated[str, typer.Option("--to", help="The last period (inclusive), e.g. 2026-11.", show_default=False)],
    job: Annotated[
        str | None, typer.Option(help="The job (CreditJob name) to record; default CREDITJOB_NAME, else the usecase.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what each period would change; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help=f"Allow more than {MAX_UNCONFIRMED_PERIODS} periods.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    grant_family: Annotated[
        str | None, typer.Option(help="distribute-credits: the grant family; default CREDITJOB_GRANT_FAMILY (plan).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Users (or grants) per transaction.")] = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Run a usecase for every period from --from to --to, oldest first, each its own audited run (trigger
    backfill). A done period re-runs cheaply; the walk stops at the first period that fails (exit 1, named)."""
    from credit_jobs.entrypoints.cli.run_command import WALKED, with_progress
    from credit_jobs.lifecycle.backfill import run_backfill
    from credit_jobs.lifecycle.run_lifecycle import RunOutcome, execute_run
    from credit_jobs.usecases.registry import get_usecase

    cli = state(ctx)
    settings = cli.settings
    spec = bind_settings(get_usecase(usecase), settings)
    if not spec.works_on_its_period:
        raise ConfigError(
            f"{spec.name} cannot be backfilled: it works on what is due at the database's clock now, whatever the "
            f"period key, so each past period would run the same work again; run it once instead: "
            f"`credit-jobs run {spec.name}`"
        )
    period, keys = period_range(from_key, to_key, now=datetime.now(UTC), yes=yes)
    check_jobs_period(from_key, period, *jobs_period(settings, spec.name), option="--from")
    template = _ops_request(
        settings, spec, OpsOptions(job, batch_size, dry_run, grant_family), default_job=spec.name, period=period
    )
    engine_factory = _engine_factory(database_url, cli)

    def run_period(request: RunRequest, position: int, count: int) -> RunOutcome:
        label = f"{request.pinned_key} ({position}/{count}): {WALKED.get(spec.name, 'items')}"
        return with_progress(label, lambda progress: execute_run(request, engine_factory, progress=progress))

    result = run_backfill(template, keys, engine_factory, run_period=run_period)
    rows = backfill_rows(keys, result.outcomes, dry_run=dry_run)
    if json_output:
        rich_out().print_json(json.dumps([record(row) for row in rows]))
    else:
        _print_backfill_table(rows, dry_run=dry_run)
    stopped = result.stopped_at
    if stopped is not None:
        after = keys[keys.index(stopped.period_key or keys[0]) :]
        warn(
            f"credit-jobs: error: backfill stopped at period {stopped.period_key}: "
            + (f"run {stopped.run_id} " if stopped.recorded else "")
            + f"{stopped.status}: {stopped.error}; "
            f"the periods before it are committed — fix the cause, then rerun `--from {after[0]} --to {keys[-1]}`"
        )
    return result.exit_code


def backfill_rows(keys: list[str], outcomes: list[Any], *, dry_run: bool) -> list[dict[str, Any]]:
    """One summary row per period: the runs made, then the periods the walk did not reach (status `not run`)."""
    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        counts = outcome.stats.as_dict() if outcome.stats else {}
        granted = counts.get("would_grant" if dry_run else "granted", counts.get("processed", 0))
        rows.append(
            {
                "period": outcome.period_key,
                "status": outcome.status,
                "run_id": str(outcome.run_id) if outcome.recorded else None,
                "granted": granted,
                "already_granted": counts.get("already_granted", 0),
                "skipped": counts.get("skipped", 0),
                "failed": counts.get("failed", 0),
                "duration_s": round(outcome.duration_s, 3),
                "error": outcome.error,
            }
        )
    for key in keys[len(outcomes) :]:
        rows.append(
            {
                "period": key,
                "status": "not run",
                "run_id": None,
                "granted": 0,
                "already_granted": 0,
                "skipped": 0,
                "failed": 0,
                "duration_s": 0.0,
                "error": None,
            }
        )
    return rows


def _print_backfill_table(rows: list[dict[str, Any]], *, dry_run: bool) -> None:
    from rich import box
    from rich.table import Table

    headers = tuple("would grant" if h == "granted" and dry_run else h for h in BACKFILL_HEADERS)
    lines = [
        (
            str(r["period"]),
            r["status"] + (" (dry run)" if dry_run and r["status"] != "not run" else ""),
            str(r["granted"]),
            str(r["already_granted"]),
            str(r["skipped"]),
            f"{r['duration_s']:.1f}s" if r["status"] != "not run" else "",
        )
        for r in rows
    ]
    out = rich_out()
    if not out.is_terminal:  # piped: tab-separated, one line per period
        print_tab_separated([headers, *lines])
        return
    table = Table(*headers, box=box.SIMPLE_HEAD, pad_edge=False)
    for line in lines:
        table.add_row(*line)
    out.print(table)
