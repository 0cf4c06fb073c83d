"""`credit-jobs db upgrade`: create or upgrade the schema (Alembic). Registered on the app by `cli_app.py` through
`register(app)`; Alembic is imported only when the command runs.
"""

from __future__ import annotations

import typer

from credit_jobs.entrypoints.cli_options import DatabaseUrlOption
from credit_jobs.entrypoints.cli_support import engine_for, rich_out, state

db_app = typer.Typer(no_args_is_help=True, help="Database schema.")


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
