"""`credit-jobs run` (one usecase inside the run lifecycle: what every CronJob container runs) and the `runs` group
(`runs list`, `runs show`: the audit trail). Registered on the app by `cli.py` through `register(app)`.

`run` is timed (bench/bench_startup.py, docs/performance.md): this module imports only light modules at the top;
the lifecycle, the usecases and Rich are imported by the command bodies that use them, and Rich only for a
terminal's progress bar or a table.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from credit_jobs.domain.contract import TRIGGERS, USECASES, Trigger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.grant_rules import validate_grant_family
from credit_jobs.domain.period_keys import parse_period
from credit_jobs.domain.run_model import validate_batch_size
from credit_jobs.domain.sharding import Shard, parse_shard, shard_from_env
from credit_jobs.entrypoints.cli_support import (
    CliState,
    DatabaseUrlOption,
    JsonOption,
    engine_for,
    jsonable,
    print_tab_separated,
    rich_err,
    rich_out,
    say,
    state,
    warn,
)

if TYPE_CHECKING:
    import sqlalchemy as sa

    from credit_jobs.lifecycle.run_lifecycle import Progress, RunOutcome, RunRequest

runs_app = typer.Typer(no_args_is_help=True, help="The run audit trail.")


def register(app: typer.Typer) -> None:
    """Add `run` and the `runs` group to the jobs CLI."""
    app.command("run")(run)
    app.add_typer(runs_app, name="runs")


# --- run ----------------------------------------------------------------------------------------------------------


def run(
    ctx: typer.Context,
    usecase: Annotated[str, typer.Argument(help=f"One of: {', '.join(USECASES)}.")],
    period_key: Annotated[
        str | None, typer.Option(help="Pin the period (e.g. 2026-11); default: from the scheduled time.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; change nothing.")] = False,
    shard: Annotated[str | None, typer.Option(help="Run one hash partition of the users: INDEX/COUNT.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Users (or grants) per transaction.")] = None,
    grant_family: Annotated[
        str | None,
        typer.Option(
            help="distribute-credits: one grant per user, family and period; overrides CREDITJOB_GRANT_FAMILY."
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Run a usecase once, inside the run lifecycle (guard, audit row, logs, metrics)."""
    from credit_jobs.adapters.database import SessionTimeouts
    from credit_jobs.lifecycle.run_lifecycle import execute_run

    cli = state(ctx)
    request = _run_request(cli, usecase, RunOptions(period_key, dry_run, shard, batch_size, grant_family))
    settings = cli.settings
    timeouts = SessionTimeouts(settings.creditjobs_statement_timeout_seconds, settings.creditjobs_lock_timeout_seconds)

    def engine_factory() -> sa.Engine:
        return engine_for(database_url, cli, verify=False, timeouts=timeouts)

    label = f"{request.usecase.name}: {WALKED.get(request.usecase.name, 'items')}"
    outcome = with_progress(label, lambda progress: execute_run(request, engine_factory, progress=progress))
    print_outcome(outcome, request.job, request.shard)
    return outcome.exit_code


@dataclass(frozen=True)
class RunOptions:
    """The `run` options that override the container's environment (None: not given)."""

    period_key: str | None
    dry_run: bool
    shard: str | None
    batch_size: int | None
    grant_family: str | None


def _run_request(cli: CliState, usecase: str, options: RunOptions) -> RunRequest:
    """The run's request: the options, else the container's environment (docs/contract.md), checked here."""
    from credit_jobs.entrypoints.settings import bind_settings
    from credit_jobs.lifecycle.run_lifecycle import RunRequest
    from credit_jobs.usecases.registry import get_usecase

    settings = cli.settings
    spec = bind_settings(get_usecase(usecase), settings)  # purge-retention: its retention
    request = RunRequest(
        usecase=spec,
        job=settings.creditjob_name or spec.name,
        namespace=settings.creditjob_namespace,
        trigger=settings.creditjob_trigger
        or (Trigger.SCHEDULE.value if settings.creditjob_schedule else Trigger.CLI.value),
        period=parse_period(settings.creditjob_period) if settings.creditjob_period else None,
        schedule=settings.creditjob_schedule,
        time_zone=settings.creditjob_time_zone,
        pinned_key=options.period_key or settings.creditjob_period_key,
        shard=(
            parse_shard(options.shard)
            if options.shard
            else shard_from_env(settings.job_completion_index, settings.creditjob_shards)
        ),
        batch_size=validate_batch_size(
            options.batch_size if options.batch_size is not None else settings.creditjobs_batch_size
        ),
        dry_run=options.dry_run,
        heartbeat_seconds=settings.creditjobs_heartbeat_seconds,
        pushgateway_url=settings.pushgateway_url,
        grant_family=(
            validate_grant_family(options.grant_family, source="--grant-family")
            if options.grant_family is not None
            else settings.creditjob_grant_family
        ),
        requested_by=settings.creditjob_requested_by,
    )
    if request.trigger not in TRIGGERS:
        raise ConfigError(f"CREDITJOB_TRIGGER={request.trigger!r} is not one of {', '.join(TRIGGERS)}")
    return request


# What each usecase's progress counts, for the progress bar's label.
WALKED = {"distribute-credits": "users", "expire-credits": "grants", "cleanup-storage": "files"}


def with_progress(label: str, call: Callable[[Progress | None], RunOutcome]) -> RunOutcome:
    if not sys.stderr.isatty():
        return call(None)  # plain progress lines come from the lifecycle's log
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=rich_err(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return call(advance)


RUN_ALWAYS = ("granted", "already_granted", "skipped")
DRY_RUN_ALWAYS = ("would_grant",)  # a dry run states only what would change (issue 13 §3)


def print_outcome(outcome: RunOutcome, job: str, shard: Shard) -> None:
    if outcome.status in ("succeeded", "skipped"):
        _print_success(outcome, shard)
        return
    failed_items = outcome.stats.details.get("failed_items") if outcome.stats else None
    named = ""
    if failed_items:  # name the first failed item, so the one line says where to look
        ids = ", ".join(f"{k}={v}" for k, v in failed_items[0].items() if k != "reason")
        named = f"; first failed item: {ids} (all in `credit-jobs runs show {outcome.run_id} --json`)"
    # A run id only once its audit row exists: a run that failed before it started (bad period key, database
    # unreachable) has none, and naming its id would send a person to `runs show` for nothing.
    what = f"run {outcome.run_id} failed" if outcome.recorded else f"{job} did not start"
    warn(f"credit-jobs: error: {what}: {outcome.error}{named}")


def _print_success(outcome: RunOutcome, shard: Shard) -> None:
    counts = outcome.stats.as_dict() if outcome.stats else {}
    # distribute-credits (it counts users_seen): what was granted, what already was and what was skipped are
    # always stated, zeros included (a no-op rerun says granted=0); other counts only when not zero.
    always = (DRY_RUN_ALWAYS if outcome.dry_run else RUN_ALWAYS) if "users_seen" in counts else ()
    ordered = {**{k: counts.get(k, 0) for k in always}, **counts}
    summary = ", ".join(
        f"{k}={v}" for k, v in ordered.items() if isinstance(v, int) and not isinstance(v, bool) and (v or k in always)
    )
    notes = [note for note in ("dry run, nothing written" if outcome.dry_run else None, outcome.error) if note]
    reason = f" ({'; '.join(notes)})" if notes else ""
    say(
        f"run {outcome.run_id} {outcome.status}{reason}: period {outcome.period_key}"
        + (f"; {summary}" if summary else "")
    )
    if outcome.status == "succeeded" and counts.get("users_seen") == 0:
        warn(
            "credit-jobs: warning: the eligibility source had no users (credit_eligibility"
            + (f", shard {shard.label}" if shard.count > 1 else "")
            + "): nothing was granted — check that your application feeds it"
        )


# --- runs ---------------------------------------------------------------------------------------------------------

RUN_HEADERS = ("run id", "job", "period", "shard", "trigger", "status", "started", "finished", "error")
WIDE_TERMINAL = 140
NARROW_RUN_COLUMNS = ("run id", "job", "period", "status", "started")


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    json_output: JsonOption = False,
    limit: Annotated[int, typer.Option(help="How many of the latest runs.")] = 20,
    job: Annotated[str | None, typer.Option(help="Only this job (CreditJob name or usecase).")] = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """The latest runs, newest first."""
    from credit_jobs.adapters import run_audit

    rows = run_audit.list_runs(engine_for(database_url, state(ctx)), limit=limit, job=job)
    out = rich_out()
    if json_output:
        out.print_json(json.dumps([jsonable(r) for r in rows]))
        return 0
    lines = [
        (
            str(r["run_id"]),
            r["job"],
            r["period_key"],
            f"{r['shard']}/{r['shards']}",
            r["trigger"],
            r["status"] + (" (dry run)" if r["dry_run"] else ""),
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
            f"{r['finished_at']:%H:%M:%S}" if r["finished_at"] else "",
            r["error"] or "",
        )
        for r in rows
    ]
    if not out.is_terminal:  # piped: one tab-separated line per run, nothing truncated or wrapped
        print_tab_separated([RUN_HEADERS, *lines])
        return 0
    _print_runs_table(lines)
    return 0


def _print_runs_table(lines: Sequence[Sequence[str]]) -> None:
    """A terminal: the table fits the width, but the run id (what a person copies into `runs show`) is never cut.
    Narrower than WIDE_TERMINAL, only the columns that identify a run are shown (all of them: --json or a pipe)."""
    from rich import box
    from rich.table import Table

    out = rich_out()
    headers = RUN_HEADERS
    shown = range(len(headers)) if out.width >= WIDE_TERMINAL else [headers.index(h) for h in NARROW_RUN_COLUMNS]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for index in shown:
        copyable = headers[index] == "run id"
        table.add_column(headers[index], no_wrap=copyable, min_width=36 if copyable else None, overflow="fold")
    for line in lines:
        table.add_row(*(line[index] for index in shown))
    out.print(table)


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="A run id from `runs list`.")],
    json_output: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> int:
    """One run's audit row, with its counts. RUN_ID may be an unambiguous prefix (at least 4 characters), as in git."""
    from credit_jobs.adapters import run_audit

    engine = engine_for(database_url, state(ctx))
    row = run_audit.get_run(engine, _resolve_run_id(engine, run_id))
    if row is None:
        raise ConfigError(f"no run {run_id} in this database: see `credit-jobs runs list`")
    out = rich_out()
    if json_output:
        out.print_json(json.dumps(jsonable(row)))
        return 0
    fields = [
        (key, json.dumps(jsonable(value)) if isinstance(value, dict) else str(value)) for key, value in row.items()
    ]
    if not out.is_terminal:
        print_tab_separated(fields)
        return 0
    from rich import box
    from rich.table import Table

    table = Table("field", "value", show_header=False, box=box.SIMPLE, pad_edge=False)
    for key, value in fields:
        table.add_row(key, value)
    out.print(table)
    return 0


MIN_RUN_ID_PREFIX = 4


def _resolve_run_id(engine: sa.Engine, text: str) -> uuid.UUID:
    """A full run id, or the one run whose id starts with `text` (hyphens optional, any case); exit 2 naming the
    matches when the prefix is ambiguous or matches nothing."""
    from credit_jobs.adapters import run_audit

    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    digits = text.strip().lower().replace("-", "")
    shown = text if len(text) <= 40 else text[:40] + "…"
    if not digits or any(c not in "0123456789abcdef" for c in digits) or len(digits) > 32:
        raise ConfigError(f"{shown!r} is not a run id (a UUID or its first characters, as printed by `runs list`)")
    if len(digits) < MIN_RUN_ID_PREFIX:
        raise ConfigError(f"run id prefix {shown!r} is too short: give at least {MIN_RUN_ID_PREFIX} characters")
    matches = run_audit.run_ids_with_prefix(engine, digits, limit=5)
    if not matches:
        raise ConfigError(f"no run starting with {shown} in this database: see `credit-jobs runs list`")
    if len(matches) > 1:
        named = ", ".join(map(str, matches[:4])) + (", …" if len(matches) > 4 else "")
        raise ConfigError(f"run id prefix {shown} is ambiguous: it matches {named}; give more characters")
    return matches[0]
