"""`credit-jobs demo` (seed, distribute, consume some, expire, check — one summary table; `demo_flow.py`) and
`credit-jobs demo seed`. Registered on the app by `cli/app.py` through `register(app)`.

With the embedded default the demo gets its own fresh database (`credit_jobs_demo`), so its numbers are its own.
"""

from __future__ import annotations

from typing import Annotated

import typer

from credit_jobs.entrypoints.cli.options import DatabaseUrlOption
from credit_jobs.entrypoints.cli.support import engine_for, resolve_database_url, rich_out, state
from credit_jobs.observability.logging import configure_logging

demo_app = typer.Typer(help="Seed sample data and run the whole flow on it.")

UsersOption = Annotated[int, typer.Option(min=1, max=10_000_000, help="How many users.")]
SeedOption = Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")]
DEMO_DATABASE = "credit_jobs_demo"


def register(app: typer.Typer) -> None:
    """Add the `demo` group to the jobs CLI."""
    app.add_typer(demo_app, name="demo")


@demo_app.command("seed")
def demo_seed(
    ctx: typer.Context, users: UsersOption = 1000, seed: SeedOption = 42, database_url: DatabaseUrlOption = None
) -> int:
    """Seed deterministic sample data: plans (one misconfigured), users (some banned), gifts about to expire."""
    from credit_jobs.usecases.demo_data import seed_demo_data

    result = seed_demo_data(engine_for(database_url, state(ctx)), users, seed=seed)
    rich_out().print(
        f"seeded {result.users} users, {result.policies} plan policies "
        f"(plan {result.misconfigured_plan!r} deliberately has none)"
    )
    return 0


def _fresh_database(server_url: str, name: str) -> str:
    """Drop and re-create database `name` on the (embedded) server: the URL of the new, empty database."""
    from credit_jobs.adapters import database, demo_database

    demo_database.recreate_database(server_url, name)
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
    from credit_jobs.adapters import schema_migrations
    from credit_jobs.entrypoints.cli.demo_flow import run_demo

    cli = state(ctx)
    if cli.settings.log_level is None:  # the summary table tells the story, the deliberate warnings included
        configure_logging(cli.settings.log_format, "error")
    url, embedded = resolve_database_url(database_url, cli)
    if embedded:  # its own fresh database, so the numbers are this demo's and not an earlier seed's
        url = _fresh_database(url, DEMO_DATABASE)
        engine = engine_for(url, cli, check_schema=False)
        schema_migrations.upgrade_schema(engine)
    else:
        engine = engine_for(database_url, cli)
    code = run_demo(engine, url, users=users, seed=seed, console=rich_out())
    if embedded:
        idle = cli.settings.creditjobs_embedded_idle_seconds
        rich_out().print(
            f"The embedded PostgreSQL keeps running for the next command (it stops after {idle / 60:g} min unused, or "
            f"with `credit-jobs db stop`). Look inside: credit-jobs db shell -d {DEMO_DATABASE}"
        )
    raise typer.Exit(code)
