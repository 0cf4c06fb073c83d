"""The `credit-jobs` Typer app — the composition root: one console script for people, CronJob containers and the
operator image.

Builds the Typer app, adds each command group from its module through `register(app)` (`cli.runs_commands`: run and
runs; `cli.ledger_commands`: check, consume, grant, void, balance, grants; `cli.schedule_command`; `cli.demo_command`;
`cli.db_commands`; `cli.ops_commands`: rollback, backfill; `cli.import_commands`: import saas-template;
`cli.api_command`: api; the operator's `operator` and `trigger` from `credit_operator.commands` — the one place
`credit_jobs` imports `credit_operator`), reads the settings once (the root callback; `cli.support.CliState`), and maps
errors to exit codes in `main`: 0 success (or skipped), 1 failed (a retry may help), 2 configuration / usage error.
Every error is printed as one line: `credit-jobs: error: <what, where, how to fix>`. `main(argv) -> int` handles every
command line the fast path (`run_line`) does not take (the start-up rule: `cli/__init__.py`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import click
import typer
from typer.exceptions import TyperException as TyperUsageError

from credit_jobs import __version__
from credit_jobs.domain.errors import CreditJobsError
from credit_jobs.entrypoints.cli import (
    api_command,
    db_commands,
    demo_command,
    import_commands,
    ledger_commands,
    ops_commands,
    runs_commands,
    schedule_command,
)
from credit_jobs.entrypoints.cli.support import CliState, warn
from credit_jobs.entrypoints.settings import load_settings
from credit_jobs.observability.logging import configure_logging
from credit_operator.commands import register as register_operator_commands

app = typer.Typer(
    name="credit-jobs",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Exactly-once periodic billing jobs over PostgreSQL: distribute and expire credits, audit every run.",
)


def _print_version(value: bool) -> None:
    """--version is eager: it prints and exits before Click asks for a command (and before settings are read)."""
    if value:
        typer.echo(f"credit-jobs {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="In a terminal, show the structured log from level info (default: warnings)."
        ),
    ] = False,
) -> None:
    """Read the settings once for the whole invocation; every command takes them from `ctx.obj`."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level or ("info" if verbose else None))
    ctx.obj = CliState(settings)


# --- composition root: every command group joins the app here, one line each --------------------------------------
# Registration order is the order `--help` lists the commands (and, after them, the groups db, runs, demo).
db_commands.register(app)
runs_commands.register(app)
ledger_commands.register(app)
schedule_command.register(app)
demo_command.register(app)
ops_commands.register(app)  # rollback, backfill
import_commands.register(app)  # import saas-template
# The one place credit_jobs imports credit_operator (import-linter: "the jobs core does not depend on the operator").
# `operator` and `trigger` import Kopf and the Kubernetes client only when they run, so `credit-jobs run` never does.
register_operator_commands(app)
api_command.register(app)  # `api` imports FastAPI and uvicorn only when it runs


# --- entry point --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="credit-jobs", standalone_mode=False)
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0)
    except typer.Abort:
        warn("credit-jobs: aborted")
        return 130
    except (TyperUsageError, click.ClickException) as exc:  # bad option values, missing arguments
        if type(exc).__name__ == "NoArgsIsHelpError":
            warn(exc.format_message())
        else:
            warn(f"credit-jobs: error: {exc.format_message()}")
        return 2
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except CreditJobsError as exc:
        warn(f"credit-jobs: error: {exc}")
        return exc.exit_code
    return int(result) if isinstance(result, int) else 0
