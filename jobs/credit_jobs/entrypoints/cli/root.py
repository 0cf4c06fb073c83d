"""The root every Typer app of the console script shares: the root callback (`--version`, `--verbose`; the settings
read once and the logging set up, for every command) and `invoke`, the one mapping of errors to one line and an exit
code: 0 success (or skipped), 1 failed (a retry may help), 2 configuration / usage error.

Two apps are built on it: the whole CLI (`cli.app`) and the one for a `run` line (`cli.run_app`), so a CronJob's
`credit-jobs run` is parsed by the same Typer command and answered by the same code, without importing every other
command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from typer.exceptions import TyperException as TyperUsageError

from credit_jobs import __version__
from credit_jobs.domain.errors import CreditJobsError
from credit_jobs.entrypoints.cli.support import CliState, warn
from credit_jobs.entrypoints.settings import load_settings
from credit_jobs.observability.logging import configure_logging

EXIT_ABORTED = 130  # Ctrl-C


def _print_version(value: bool) -> None:
    """--version is eager: it prints and exits before Click asks for a command (and before settings are read)."""
    if value:
        typer.echo(f"credit-jobs {__version__}")
        raise typer.Exit(0)


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


def new_app() -> typer.Typer:
    """A `credit-jobs` app with the root callback and no commands yet."""
    app = typer.Typer(
        name="credit-jobs",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        help="Exactly-once periodic billing jobs over PostgreSQL: distribute and expire credits, audit every run.",
    )
    app.callback()(_root)
    return app


def invoke(app: typer.Typer, args: Sequence[str]) -> int:
    """Run the command line `args` on `app`; every error becomes one line on stderr and its exit code."""
    try:
        result = app(args=list(args), prog_name="credit-jobs", standalone_mode=False)
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0)
    except typer.Abort:
        warn("credit-jobs: aborted")
        return EXIT_ABORTED
    except TyperUsageError as exc:  # bad option values, missing arguments (Typer's Click raises these)
        if type(exc).__name__ == "NoArgsIsHelpError":
            warn(exc.format_message())
        else:
            warn(f"credit-jobs: error: {exc.format_message()}")
        return 2
    except CreditJobsError as exc:
        warn(f"credit-jobs: error: {exc}")
        return exc.exit_code
    return int(result) if isinstance(result, int) else 0
