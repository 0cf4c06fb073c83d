"""The `credit-jobs` command line: one console script for people, CronJob containers and the operator image.

Entry point `main(argv) -> int` (tested by calling it): parses, calls one usecase or the run lifecycle, maps
errors to exit codes — 0 success (or skipped), 1 failed (a retry may help), 2 configuration / usage error — and
prints every error as one line: `credit-jobs: error: <what, where, how to fix>`.
With no DATABASE_URL (and no --database-url) it starts the embedded PostgreSQL in the per-user data directory
(`entrypoints/data_dir.py`; CREDITJOBS_DATA_DIR overrides it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import click
import sqlalchemy as sa
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.exceptions import TyperException as TyperUsageError

from credit_jobs import __version__
from credit_jobs.adapters import database, ledger_views, run_audit, schema_migrations
from credit_jobs.adapters.embedded_database import EmbeddedPostgres, start_embedded
from credit_jobs.domain.contract import TRIGGERS, Trigger
from credit_jobs.domain.errors import ConfigError, CreditJobsError
from credit_jobs.domain.grant_rules import DEFAULT_GRANT_FAMILY, validate_grant_family
from credit_jobs.domain.limits import MAX_CREDITS, MAX_EXPIRY_DAYS, MAX_REQUEST_ID_LENGTH
from credit_jobs.domain.period_keys import Period, parse_period, period_start
from credit_jobs.domain.requests import (
    parse_amount,
    parse_expires_in_days,
    parse_grant_id,
    parse_user_id,
    validate_request_id,
)
from credit_jobs.domain.run_model import validate_batch_size
from credit_jobs.domain.schedule import Schedule
from credit_jobs.domain.sharding import Shard, parse_shard, shard_from_env
from credit_jobs.entrypoints.cli_api import register as register_api_commands
from credit_jobs.entrypoints.data_dir import LEGACY_DATA_DIR, data_dir
from credit_jobs.entrypoints.settings import Settings, load_settings
from credit_jobs.lifecycle.run_lifecycle import RunOutcome, RunRequest, execute_run
from credit_jobs.observability.logging import configure_logging
from credit_jobs.usecases.check_invariants import CHECKS, check_invariants
from credit_jobs.usecases.consume import consume as consume_credits
from credit_jobs.usecases.demo_data import seed_demo_data
from credit_jobs.usecases.grant import ONE_OFF_TYPES
from credit_jobs.usecases.grant import grant as grant_credits
from credit_jobs.usecases.registry import USECASES, get_usecase
from credit_jobs.usecases.void_grant import void_grant
from credit_operator.commands import register as register_operator_commands

app = typer.Typer(
    name="credit-jobs",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Exactly-once periodic billing jobs over PostgreSQL: distribute and expire credits, audit every run.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
runs_app = typer.Typer(no_args_is_help=True, help="The run audit trail.")
demo_app = typer.Typer(help="Seed sample data and run the whole flow on it.")
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")
app.add_typer(demo_app, name="demo")

# soft_wrap: a line is never hard-wrapped at the console width (80 columns when not a terminal): on a pipe or in a
# pod log one event stays one line; in a terminal, the terminal wraps long lines itself. Tables still fit the width.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _flags_show_no_type() -> None:
    """Typer's rich help prints `<bool>` in the type column of a flag (`--json`, `--dry-run`, `--help`), which takes
    no value: show nothing there for flags; every other option keeps its type."""
    shown = typer.core.TyperOption.display_type_rich

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag and self.metavar is None else shown(self, ctx)

    typer.core.TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="PostgreSQL URL; overrides DATABASE_URL. Default: embedded PostgreSQL."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_embedded: list[EmbeddedPostgres] = []


def _settings() -> Settings:
    return load_settings()


def _database_url(option: str | None, settings: Settings) -> tuple[str, bool]:
    """(URL, embedded?) — the option, else DATABASE_URL, else the embedded server (started once per process)."""
    if option:
        return option, False
    if settings.database_url:
        return settings.database_url, False
    if not _embedded:
        home = data_dir(settings.creditjobs_data_dir, os.environ, uid=os.getuid(), home=Path.home())
        datadir = home / "postgres"
        fresh = not (datadir / "PG_VERSION").exists()
        err.print(
            f"credit-jobs: no DATABASE_URL set: {'creating a new' if fresh else 'using the'} embedded PostgreSQL in "
            f"{datadir}" + (" (CREDITJOBS_DATA_DIR moves it)" if fresh else ""),
            highlight=False,
            markup=False,
        )
        legacy = LEGACY_DATA_DIR / "postgres"
        if settings.creditjobs_data_dir is None and (legacy / "PG_VERSION").exists():
            err.print(
                f"credit-jobs: note: {legacy.resolve()} (the earlier default) is not used: set "
                f"CREDITJOBS_DATA_DIR={LEGACY_DATA_DIR.resolve()} to keep using it",
                highlight=False,
                markup=False,
            )
        _embedded.append(start_embedded(datadir))
    return _embedded[0].url("postgres"), True


def _engine(
    option: str | None,
    settings: Settings,
    *,
    check_schema: bool = True,
    verify: bool = True,
    timeouts: database.SessionTimeouts | None = None,
) -> sa.Engine:
    """An engine on the configured database. The embedded default is always migrated (ready to use); others are
    checked unless `verify=False` (the run lifecycle checks them itself, to record and push the failure)."""
    url, embedded = _database_url(option, settings)
    engine = database.create_engine(url, timeouts=timeouts)
    if embedded:
        schema_migrations.upgrade_schema(engine)
    elif verify:
        database.verify_connection(engine)
        if check_schema:
            database.verify_schema(engine)
    return engine


def _print_version(value: bool) -> None:
    """--version is eager: it prints and exits before Click asks for a command (and before settings are read)."""
    if value:
        typer.echo(f"credit-jobs {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)


# --- db ---------------------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrlOption = None) -> int:
    """Create or upgrade the schema to the latest revision (idempotent; safe to run concurrently)."""
    engine = _engine(database_url, _settings(), check_schema=False)
    revision = schema_migrations.upgrade_schema(engine)
    out.print(f"database schema at revision {revision}")
    return 0


# --- run --------------------------------------------------------------------------------------------------------


@app.command("run")
def run(
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
    settings = _settings()
    spec = get_usecase(usecase)
    request = RunRequest(
        usecase=spec,
        job=settings.creditjob_name or spec.name,
        namespace=settings.creditjob_namespace,
        trigger=settings.creditjob_trigger
        or (Trigger.SCHEDULE.value if settings.creditjob_schedule else Trigger.CLI.value),
        period=parse_period(settings.creditjob_period) if settings.creditjob_period else None,
        schedule=settings.creditjob_schedule,
        time_zone=settings.creditjob_time_zone,
        pinned_key=period_key or settings.creditjob_period_key,
        shard=parse_shard(shard) if shard else shard_from_env(settings.job_completion_index, settings.creditjob_shards),
        batch_size=validate_batch_size(batch_size if batch_size is not None else settings.creditjobs_batch_size),
        dry_run=dry_run,
        heartbeat_seconds=settings.creditjobs_heartbeat_seconds,
        pushgateway_url=settings.pushgateway_url,
        grant_family=(
            validate_grant_family(grant_family, source="--grant-family")
            if grant_family is not None
            else settings.creditjob_grant_family
        ),
        requested_by=settings.creditjob_requested_by,
    )
    if request.trigger not in TRIGGERS:
        raise ConfigError(f"CREDITJOB_TRIGGER={request.trigger!r} is not one of {', '.join(TRIGGERS)}")

    timeouts = database.SessionTimeouts(
        settings.creditjobs_statement_timeout_seconds, settings.creditjobs_lock_timeout_seconds
    )

    def engine_factory() -> sa.Engine:
        return _engine(database_url, settings, verify=False, timeouts=timeouts)

    label = f"{spec.name}: {WALKED.get(spec.name, 'items')}"
    outcome = _with_progress(label, lambda progress: execute_run(request, engine_factory, progress=progress))
    _print_outcome(outcome, request.job, request.shard)
    return outcome.exit_code


# What each usecase's progress counts, for the progress bar's label.
WALKED = {"distribute-credits": "users", "expire-credits": "grants", "cleanup-storage": "files"}


def _with_progress(label: str, call: Callable[[Callable[[int, int | None], None] | None], RunOutcome]) -> RunOutcome:
    if not err.is_terminal:
        return call(None)  # plain progress lines come from the lifecycle's log
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return call(advance)


RUN_ALWAYS = ("granted", "already_granted", "skipped")
DRY_RUN_ALWAYS = ("would_grant",)  # a dry run states only what would change (issue 13 §3)


def _print_outcome(outcome: RunOutcome, job: str, shard: Shard) -> None:
    if outcome.status in ("succeeded", "skipped"):
        counts = outcome.stats.as_dict() if outcome.stats else {}
        # distribute-credits (it counts users_seen): what was granted, what already was and what was skipped are
        # always stated, zeros included (a no-op rerun says granted=0); other counts only when not zero.
        always = (DRY_RUN_ALWAYS if outcome.dry_run else RUN_ALWAYS) if "users_seen" in counts else ()
        ordered = {**{k: counts.get(k, 0) for k in always}, **counts}
        summary = ", ".join(
            f"{k}={v}"
            for k, v in ordered.items()
            if isinstance(v, int) and not isinstance(v, bool) and (v or k in always)
        )
        notes = [note for note in ("dry run, nothing written" if outcome.dry_run else None, outcome.error) if note]
        reason = f" ({'; '.join(notes)})" if notes else ""
        out.print(
            f"run {outcome.run_id} {outcome.status}{reason}: period {outcome.period_key}"
            + (f"; {summary}" if summary else ""),
            highlight=False,
            markup=False,
        )
        if outcome.status == "succeeded" and counts.get("users_seen") == 0:
            err.print(
                "credit-jobs: warning: the eligibility source had no users (credit_eligibility"
                + (f", shard {shard.label}" if shard.count > 1 else "")
                + "): nothing was granted — check that your application feeds it",
                highlight=False,
                markup=False,
            )
    else:
        failed_items = outcome.stats.details.get("failed_items") if outcome.stats else None
        named = ""
        if failed_items:  # name the first failed item, so the one line says where to look
            ids = ", ".join(f"{k}={v}" for k, v in failed_items[0].items() if k != "reason")
            named = f"; first failed item: {ids} (all in `credit-jobs runs show {outcome.run_id} --json`)"
        # A run id only once its audit row exists: a run that failed before it started (bad period key, database
        # unreachable) has none, and naming its id would send a person to `runs show` for nothing.
        what = f"run {outcome.run_id} failed" if outcome.recorded else f"{job} did not start"
        err.print(
            f"credit-jobs: error: {what}: {outcome.error}{named}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


# --- runs -------------------------------------------------------------------------------------------------------


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Database values as JSON-friendly ones: UUIDs and datetimes as strings, numerics as numbers."""

    def convert(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, uuid.UUID) or hasattr(value, "isoformat"):
            return str(value)
        return value

    return {k: convert(v) for k, v in row.items()}


@runs_app.command("list")
def runs_list(
    json_output: JsonOption = False,
    limit: Annotated[int, typer.Option(help="How many of the latest runs.")] = 20,
    job: Annotated[str | None, typer.Option(help="Only this job (CreditJob name or usecase).")] = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """The latest runs, newest first."""
    rows = run_audit.list_runs(_engine(database_url, _settings()), limit=limit, job=job)
    if json_output:
        out.print_json(json.dumps([_jsonable(r) for r in rows]))
        return 0
    headers = ("run id", "job", "period", "shard", "trigger", "status", "started", "finished", "error")
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
        _print_tab_separated([headers, *lines])
        return 0
    # A terminal: the table fits the width, but the run id (what a person copies into `runs show`) is never cut.
    # Narrower than WIDE_TERMINAL, only the columns that identify a run are shown (all of them: --json or a pipe).
    shown = range(len(headers)) if out.width >= WIDE_TERMINAL else [headers.index(h) for h in NARROW_RUN_COLUMNS]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for index in shown:
        copyable = headers[index] == "run id"
        table.add_column(headers[index], no_wrap=copyable, min_width=36 if copyable else None, overflow="fold")
    for line in lines:
        table.add_row(*(line[index] for index in shown))
    out.print(table)
    return 0


WIDE_TERMINAL = 140
NARROW_RUN_COLUMNS = ("run id", "job", "period", "status", "started")


def _print_tab_separated(rows: Sequence[Sequence[str]]) -> None:
    """Piped output: one line per row, tab-separated, nothing truncated, wrapped or padded (tabs and newlines inside
    a value become spaces, so a row stays one line)."""
    for row in rows:
        typer.echo("\t".join(" ".join(value.split()) for value in row))


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id from `runs list`.")],
    json_output: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> int:
    """One run's audit row, with its counts. RUN_ID may be an unambiguous prefix (at least 4 characters), as in git."""
    engine = _engine(database_url, _settings())
    row = run_audit.get_run(engine, _resolve_run_id(engine, run_id))
    if row is None:
        raise ConfigError(f"no run {run_id} in this database: see `credit-jobs runs list`")
    if json_output:
        out.print_json(json.dumps(_jsonable(row)))
        return 0
    fields = [
        (key, json.dumps(_jsonable(value)) if isinstance(value, dict) else str(value)) for key, value in row.items()
    ]
    if not out.is_terminal:
        _print_tab_separated(fields)
        return 0
    table = Table("field", "value", show_header=False, box=box.SIMPLE, pad_edge=False)
    for key, value in fields:
        table.add_row(key, value)
    out.print(table)
    return 0


MIN_RUN_ID_PREFIX = 4


def _resolve_run_id(engine: sa.Engine, text: str) -> uuid.UUID:
    """A full run id, or the one run whose id starts with `text` (hyphens optional, any case); exit 2 naming the
    matches when the prefix is ambiguous or matches nothing."""
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


# --- check, consume, grant --------------------------------------------------------------------------------------


def _validate_period_key(key: str) -> None:
    """A key some period granularity accepts (check does not know which one the key's job uses)."""
    for period in Period:
        try:
            period_start(key, period, ZoneInfo("UTC"))
            return
        except ConfigError:
            continue
    shown = key if len(key) <= 80 else key[:80] + "…"
    raise ConfigError(
        f"--period-key {shown!r} is not a period key: use e.g. 2026-11 (monthly), 2026-W48, 2026-11-28 or an hourly key"
    )


@app.command("check")
def check(
    json_output: JsonOption = False,
    period_key: Annotated[
        str | None,
        typer.Option(help="Also print this period's coverage: eligible users now without the period's grant."),
    ] = None,
    job: Annotated[
        str | None, typer.Option(help="With --period-key: also count this job's runs of the period.")
    ] = None,
    grant_family: Annotated[
        str | None, typer.Option(help=f"With --period-key: the grant family (default: {DEFAULT_GRANT_FAMILY}).")
    ] = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Check the ledger invariants; exit 1 listing violating rows."""
    family = validate_grant_family(grant_family, source="--grant-family") if grant_family else DEFAULT_GRANT_FAMILY
    if period_key is not None:
        _validate_period_key(period_key)
    report = check_invariants(_engine(database_url, _settings()), period_key=period_key, grant_family=family, job=job)
    coverage = report.coverage
    if json_output:
        out.print_json(
            json.dumps(
                {
                    "ok": report.ok,
                    "counts": report.counts,
                    "violations": {k: [_jsonable(r) for r in v] for k, v in report.violations.items()},
                    **({"coverage": dataclasses.asdict(coverage)} if coverage else {}),
                }
            )
        )
    else:
        for name, (description, _) in CHECKS.items():
            rows = report.violations.get(name, [])
            mark = "[green]ok[/]" if not rows else f"[red]{len(rows)} violating rows[/]"
            out.print(f"invariant {description}: {mark}", soft_wrap=True)
            for row in rows:
                out.print(f"    {_jsonable(row)}", highlight=False)
        if coverage:
            runs = ", ".join(f"{status}={n}" for status, n in coverage.runs.items()) or "none"
            out.print(
                f"coverage of period {coverage.period_key} (grant family {coverage.grant_family}): "
                f"{coverage.eligible} users eligible now, {coverage.missing} without the period's grant"
                + (f" (sample: {', '.join(map(str, coverage.missing_sample))})" if coverage.missing else "")
                + (f"; runs of {job}: {runs}" if job else ""),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    return 0 if report.ok else 1


# consume, grant and void take their numbers as text and parse them with the domain's ASCII-only parsers (Typer's
# int accepts `1_000`, `" 1 "` and any Unicode digit); unknown "options" are kept as arguments so that the natural
# spelling of a negative amount (`consume 42 -10`) is refused by the amount check, not as "No such option: -1".
_NUMBERS_AS_TEXT: dict[str, Any] = {"ignore_unknown_options": True}
RequestIdOption = Annotated[
    str | None,
    typer.Option(help=f"Idempotency: a repeated id applies once (printable, at most {MAX_REQUEST_ID_LENGTH} chars)."),
]


@app.command("consume", context_settings=_NUMBERS_AS_TEXT)
def consume(
    user_id: Annotated[str, typer.Argument(help="The user whose credits to spend.", show_default=False)],
    amount: Annotated[str, typer.Argument(help=f"Credits to spend (1..{MAX_CREDITS}).", show_default=False)],
    request_id: RequestIdOption = None,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Spend credits, soonest-expiring first (exit 1 if the user has too few). Without --request-id a fresh id is
    generated and printed: pass your own to make a retry safe."""
    user, credits = parse_user_id(user_id), parse_amount(amount)
    if request_id is not None:
        validate_request_id(request_id)
    result = consume_credits(_engine(database_url, _settings()), user, credits, request_id=request_id)
    verb = "already consumed" if result.replayed else "consumed"
    out.print(f"{verb} {credits} credits of user {user} (request {result.request_id})", highlight=False, markup=False)
    return 0


@app.command("grant", context_settings=_NUMBERS_AS_TEXT)
def grant(
    user_id: Annotated[str, typer.Argument(help="The user to credit.", show_default=False)],
    amount: Annotated[str, typer.Argument(help=f"Credits to grant (1..{MAX_CREDITS}).", show_default=False)],
    idempotency_key: Annotated[str, typer.Option(help="A retried grant with the same key is given once.")],
    grant_type: Annotated[str, typer.Option("--type", help=f"One of: {', '.join(ONE_OFF_TYPES)}.")] = "gift",
    expires_in_days: Annotated[
        str | None, typer.Option(help=f"Expire after this many days (1..{MAX_EXPIRY_DAYS}); default: never.")
    ] = None,
    allow_unknown_user: Annotated[
        bool, typer.Option("--allow-unknown-user", help="Grant even if credit_eligibility does not have the user.")
    ] = False,
    database_url: DatabaseUrlOption = None,
) -> int:
    """A one-off grant: gift, purchase or manual adjustment. Refused (exit 2) for a user the eligibility source does
    not know, unless --allow-unknown-user."""
    user, credits, days = parse_user_id(user_id), parse_amount(amount), parse_expires_in_days(expires_in_days)
    validate_request_id(idempotency_key, "idempotency key")
    if grant_type not in ONE_OFF_TYPES:  # bad input first, before the database is asked about the user
        raise ConfigError(f"grant type {grant_type!r} is not a one-off type: use one of {', '.join(ONE_OFF_TYPES)}")
    engine = _engine(database_url, _settings())
    if not allow_unknown_user and not ledger_views.is_known_user(engine, user):
        raise ConfigError(
            f"user {user} is not in credit_eligibility (the application's users): nothing was granted; check the user "
            "id, or pass --allow-unknown-user to grant anyway"
        )
    result = grant_credits(
        engine,
        user,
        credits,
        grant_type=grant_type,
        idempotency_key=idempotency_key,
        expires_in_days=days,
    )
    verb = "granted" if result.created else "already granted (same idempotency key)"
    out.print(f"{verb}: grant {result.grant_id}, {credits} credits to user {user}", highlight=False, markup=False)
    return 0


@app.command("void", context_settings=_NUMBERS_AS_TEXT)
def void(
    grant_id: Annotated[str, typer.Argument(help="The grant to cancel (what is left of it).", show_default=False)],
    request_id: Annotated[str, typer.Option(help="Why, and idempotency: a repeated id voids once.")],
    database_url: DatabaseUrlOption = None,
) -> int:
    """Cancel the remaining credits of one grant (refund, mistake) with a void entry."""
    grant_number = parse_grant_id(grant_id)
    validate_request_id(request_id)
    result = void_grant(_engine(database_url, _settings()), grant_number, request_id=request_id)
    verb = "already voided" if result.replayed else "voided"
    out.print(f"{verb} {result.voided} credits of grant {grant_number} (user {result.user_id})", highlight=False)
    return 0


# --- balance, grants -------------------------------------------------------------------------------------------

GRANT_HEADERS = ("grant id", "type", "period", "remaining", "of", "expires", "state")


def _ledger_of(user_id: str, database_url: str | None, *, all_grants: bool) -> ledger_views.UserLedger:
    user = parse_user_id(user_id)
    ledger = ledger_views.user_ledger(_engine(database_url, _settings()), user, all_grants=all_grants)
    if not ledger.known and not ledger.has_account:
        raise ConfigError(f"no user {user}: not in credit_eligibility and no credit account; check the user id")
    return ledger


def _grant_rows(ledger: ledger_views.UserLedger) -> list[tuple[str, ...]]:
    return [
        (
            str(g["grant_id"]),
            g["grant_type"],
            g["period_key"] or "-",
            str(g["remaining"]),
            str(g["amount"]),
            g["expires_at"].isoformat() if g["expires_at"] else "never",
            g["state"],
        )
        for g in ledger.grants
    ]


def _print_grants(ledger: ledger_views.UserLedger) -> None:
    rows = _grant_rows(ledger)
    if not rows:
        return
    if not out.is_terminal:
        _print_tab_separated([GRANT_HEADERS, *rows])
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in GRANT_HEADERS:  # the grant id is what `void` takes: never cut
        table.add_column(header, no_wrap=header == "grant id", overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _ledger_json(ledger: ledger_views.UserLedger) -> str:
    return json.dumps(
        {
            "user_id": ledger.user_id,
            "known_user": ledger.known,
            "has_account": ledger.has_account,
            "spendable": ledger.spendable,
            "balance": ledger.balance,
            "as_of": ledger.now.isoformat(),
            "grants": [_jsonable(g) for g in ledger.grants],
        }
    )


@app.command("balance")
def balance(
    user_id: Annotated[str, typer.Argument(help="The user.", show_default=False)],
    json_output: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> int:
    """A user's spendable credits and live grants (type, period, remaining, expiry), soonest-expiring first."""
    ledger = _ledger_of(user_id, database_url, all_grants=False)
    if json_output:
        typer.echo(_ledger_json(ledger))
        return 0
    past_expiry = ledger.balance - ledger.spendable
    out.print(
        f"user {ledger.user_id}: {ledger.spendable} credits spendable in {len(ledger.grants)} live grants"
        + (f" ({past_expiry} more past expiry, removed by the next expire-credits run)" if past_expiry > 0 else "")
        + ("" if ledger.known else "; not in credit_eligibility"),
        highlight=False,
        markup=False,
    )
    _print_grants(ledger)
    return 0


@app.command("grants")
def grants(
    user_id: Annotated[str, typer.Argument(help="The user.", show_default=False)],
    json_output: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Every grant of a user, newest first: live, used up or voided, expired."""
    ledger = _ledger_of(user_id, database_url, all_grants=True)
    if json_output:
        typer.echo(_ledger_json(ledger))
        return 0
    out.print(f"user {ledger.user_id}: {len(ledger.grants)} grants", highlight=False, markup=False)
    _print_grants(ledger)
    return 0


# --- schedule ---------------------------------------------------------------------------------------------------

MAX_SCHEDULE_COUNT = 1000


def _parse_from(value: str | None, schedule: Schedule) -> datetime:
    """--from: ISO 8601; without an offset it is read as wall-clock time in the schedule's zone; default now."""
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--from {value!r} is not an ISO 8601 time: use e.g. 2026-11-01T00:00:00+00:00") from None
    return moment.replace(tzinfo=schedule.tz) if moment.tzinfo is None else moment


def schedule_rows(schedule: Schedule, start: datetime, count: int) -> list[dict[str, Any]]:
    """The next `count` fire times after `start` with their period keys and DST notes (what `schedule` prints)."""
    rows: list[dict[str, Any]] = []
    previous = start
    for fire in islice(schedule.fires_after(start), count):
        local = schedule.local(fire)
        notes = [
            f"no fire at {wall:%Y-%m-%dT%H:%M}: skipped by the DST change"
            for wall in schedule.skipped_walls(previous, fire)
        ]
        if schedule.repeats(fire):
            offset = local.isoformat()[-6:]
            notes.append(f"fires twice: {local:%H:%M} happens twice at the DST change; this is the UTC{offset} one")
        rows.append(
            {
                "fire_time": local.isoformat(),
                "fire_time_utc": fire.isoformat().replace("+00:00", "Z"),
                "period_key": schedule.period_key_of(fire),
                "notes": notes,
            }
        )
        previous = fire
    return rows


@app.command("schedule")
def schedule_command(
    expression: Annotated[str, typer.Argument(metavar="SCHEDULE", help="Five-field cron expression or @macro.")],
    time_zone: Annotated[str, typer.Option("--time-zone", help="IANA time zone of the schedule.")] = "UTC",
    period: Annotated[str, typer.Option(help="monthly, weekly, daily or hourly: the period keys shown.")] = "monthly",
    from_time: Annotated[
        str | None, typer.Option("--from", help="ISO 8601 start (default now; no offset: in --time-zone).")
    ] = None,
    count: Annotated[int, typer.Option(help=f"How many fire times (1..{MAX_SCHEDULE_COUNT}).")] = 10,
    json_output: JsonOption = False,
) -> int:
    """The next fire times of a schedule with the period key each run would get, and DST notes. No database."""
    if not 1 <= count <= MAX_SCHEDULE_COUNT:
        raise ConfigError(f"--count {count} is outside 1..{MAX_SCHEDULE_COUNT}")
    parsed = Schedule.parse(expression, time_zone, period)
    rows = schedule_rows(parsed, _parse_from(from_time, parsed), count)
    if json_output:
        typer.echo(json.dumps(rows))
        return 0
    for row in rows:
        notes = f"  ({'; '.join(row['notes'])})" if row["notes"] else ""
        typer.echo(f"{row['fire_time']}  {row['period_key']}{notes}")
    return 0


# --- demo -------------------------------------------------------------------------------------------------------

UsersOption = Annotated[int, typer.Option(min=1, max=10_000_000, help="How many users.")]
SeedOption = Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")]


@demo_app.command("seed")
def demo_seed(users: UsersOption = 1000, seed: SeedOption = 42, database_url: DatabaseUrlOption = None) -> int:
    """Seed deterministic sample data: plans (one misconfigured), users (some banned), gifts about to expire."""
    result = seed_demo_data(_engine(database_url, _settings()), users, seed=seed)
    out.print(
        f"seeded {result.users} users, {result.policies} plan policies "
        f"(plan {result.misconfigured_plan!r} deliberately has none)"
    )
    return 0


DEMO_DATABASE = "credit_jobs_demo"


def _fresh_database(server_url: str, name: str) -> str:
    """Drop and re-create database `name` on the (embedded) server: the URL of the new, empty database."""
    admin = database.create_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return database.normalize_url(server_url).set(database=name).render_as_string(hide_password=False)


@demo_app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    users: UsersOption = 1000,
    seed: SeedOption = 42,
    database_url: DatabaseUrlOption = None,
) -> int:
    """Seed, distribute, consume some, expire, check — and print a summary table."""
    if ctx.invoked_subcommand is not None:
        return 0
    from credit_jobs.entrypoints.demo_flow import run_demo

    settings = _settings()
    if "LOG_LEVEL" not in os.environ:  # the summary table tells the story, the deliberate warnings included
        configure_logging(settings.log_format, "error")
    url, embedded = _database_url(database_url, settings)
    if embedded:  # its own fresh database, so the numbers are this demo's and not an earlier seed's
        url = _fresh_database(url, DEMO_DATABASE)
        engine = _engine(url, settings, check_schema=False)
        schema_migrations.upgrade_schema(engine)
    else:
        engine = _engine(database_url, settings)
    code = run_demo(engine, url, users=users, seed=seed, console=out)
    raise typer.Exit(code)


# --- composition root: the operator's commands join the jobs CLI ------------------------------------------------
# The one place credit_jobs imports credit_operator (import-linter: "the jobs core does not depend on the operator").
# `operator` and `trigger` import Kopf and the Kubernetes client only when they run, so `credit-jobs run` never does.
register_operator_commands(app)
register_api_commands(app)


# --- entry point ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="credit-jobs", standalone_mode=False)
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0)
    except typer.Abort:
        err.print("credit-jobs: aborted", highlight=False)
        return 130
    except (TyperUsageError, click.ClickException) as exc:  # bad option values, missing arguments
        if type(exc).__name__ == "NoArgsIsHelpError":
            err.print(exc.format_message(), highlight=False, markup=False)
        else:
            err.print(f"credit-jobs: error: {exc.format_message()}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except CreditJobsError as exc:
        err.print(f"credit-jobs: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return exc.exit_code
    return int(result) if isinstance(result, int) else 0


def entrypoint() -> None:
    sys.exit(main())
