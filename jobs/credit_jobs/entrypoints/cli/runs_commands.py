"""`credit-jobs run` (one usecase inside the run lifecycle: what every CronJob container runs) and the `runs` group
(`runs list`, `runs show`: the audit trail). Registered on the app by `cli/app.py` through `register(app)`.

`run` is the one Typer command for a run: the whole CLI registers it, and so does `cli.run_app`, where every
`credit-jobs run …` line goes; it calls `run_command.run_usecase`. The `runs` commands import their adapters and Rich
inside their bodies.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated

import typer

from credit_jobs.domain.contract import USECASES
from credit_jobs.domain.errors import ConfigError
from credit_jobs.entrypoints.cli import run_command
from credit_jobs.entrypoints.cli.options import DatabaseUrlOption, JsonOption
from credit_jobs.entrypoints.cli.run_command import RunOptions
from credit_jobs.entrypoints.cli.support import (
    engine_for,
    human_time,
    print_fitted_table,
    print_tab_separated,
    rich_out,
    state,
)
from credit_jobs.entrypoints.json_vocabulary import run_json
from credit_jobs.entrypoints.json_vocabulary import value as json_value
from credit_jobs.observability.logging import configure_logging

if TYPE_CHECKING:
    from datetime import datetime

    import sqlalchemy as sa

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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="In a terminal, show the run's log from level info too.")
    ] = False,
) -> int:
    """Run a usecase once, inside the run lifecycle (guard, audit row, logs, metrics)."""
    cli = state(ctx)
    if verbose:
        configure_logging(cli.settings.log_format, cli.settings.log_level or "info")
    options = RunOptions(period_key, dry_run, shard, batch_size, grant_family)
    return run_command.run_usecase(cli, usecase, options, database_url)


# --- runs ---------------------------------------------------------------------------------------------------------

RUN_HEADERS = ("run id", "job", "period", "shard", "trigger", "status", "started", "finished", "error")
# In a narrow terminal, columns go in this order (the run id, what `runs show` takes, never): README, Output.
RUN_COLUMNS_DROPPED_FIRST = ("error", "finished", "trigger", "shard", "started", "period", "job", "status")


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    json_output: JsonOption = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many of the latest runs (1-10000).")] = 20,
    job: Annotated[str | None, typer.Option(help="Only this job (CreditJob name or usecase).")] = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """The latest runs, newest first."""
    from credit_jobs.adapters import run_audit

    rows = run_audit.list_runs(engine_for(database_url, state(ctx)), limit=limit, job=job)
    out = rich_out()
    if json_output:
        out.print_json(json.dumps([run_json(r) for r in rows]))
        return 0
    lines = [
        (
            str(r["run_id"]),
            r["job"],
            r["period_key"],
            f"{r['shard']}/{r['shards']}",
            r["trigger"],
            r["status"] + (" (dry run)" if r["dry_run"] else ""),
            human_time(r["started_at"]),
            _finished(r["started_at"], r["finished_at"]),
            r["error"] or "",
        )
        for r in rows
    ]
    if not out.is_terminal:  # piped: one tab-separated line per run, nothing truncated or wrapped
        print_tab_separated([RUN_HEADERS, *lines])
        return 0
    print_fitted_table(RUN_HEADERS, lines, RUN_COLUMNS_DROPPED_FIRST, shortenable="error")
    return 0


def _finished(started: datetime, finished: datetime | None) -> str:
    """The finish time; its date only when it is not the start's."""
    same_day = finished is not None and finished.date() == started.date()
    return human_time(finished, time_only=same_day)


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
        out.print_json(json.dumps(run_json(row)))
        return 0
    fields = [(key, json.dumps(json_value(item)) if isinstance(item, dict) else str(item)) for key, item in row.items()]
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
