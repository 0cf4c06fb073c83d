"""The fast path of `credit-jobs run`: a plain `run USECASE [options]` line — what every CronJob container runs —
parsed without Typer, so the run reaches its first SQL statement without importing Typer, Click, Rich or pydantic
(docs/performance.md, "Job start-up"). Every command line is offered to it first.

`parse(args)` takes only the lines it can answer exactly as the Typer command (`cli.runs_commands.run`) would: `run`,
one USECASE, and the options of `OPTIONS` / `FLAGS`, each at most once, as `--name value` or `--name=value`; a
`--batch-size` of plain digits. Anything else — `--help`, `--version`, an unknown, repeated or misspelt option, a
missing value, a second argument, `--`, a value that starts with `-`, bytes that are not UTF-8, shell completion —
returns None and the line goes to the Typer app (`cli.app.main`), so help, usage errors and their one-line messages stay
Typer's and there is nothing here to keep in step with them. A line `parse` takes is one the Typer command accepts with
the same values (tests/integration/cli/test_fast_start.py runs both on the same lines).

After parsing, the run is the Typer command's: the same settings reader and logging set-up as the root callback,
the same `run_command.run_usecase`, and the same mapping of errors to one line and an exit code as `cli.app.main`.
`OPTIONS` and `FLAGS` mirror the Typer command's parameters; tests/unit/test_run_line.py checks they are equal.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from credit_jobs.domain.errors import CreditJobsError
from credit_jobs.entrypoints.cli import run_command
from credit_jobs.entrypoints.cli.support import CliState, warn
from credit_jobs.entrypoints.settings import load_settings
from credit_jobs.observability.logging import configure_logging

COMMAND = "run"
# The options that take a value → the parameter of `cli.runs_commands.run` they set.
OPTIONS = {
    "--period-key": "period_key",
    "--shard": "shard",
    "--batch-size": "batch_size",
    "--grant-family": "grant_family",
    "--database-url": "database_url",
}
FLAGS = {"--dry-run": "dry_run", "--verbose": "verbose", "-v": "verbose"}
# Typer answers shell-completion requests when this is set (prog name `credit-jobs`): leave those to it.
COMPLETION_VARIABLE = "_CREDIT_JOBS_COMPLETE"
EXIT_ABORTED = 130  # Ctrl-C, as Typer returns it


@dataclass(frozen=True)
class RunLine:
    """A parsed `run` line: what `cli.runs_commands.run` would have been called with."""

    usecase: str
    options: run_command.RunOptions
    database_url: str | None
    verbose: bool = False


def _utf8(text: str) -> bool:
    """Argument bytes that are not UTF-8 reach Python as lone surrogates: Typer's string check decides those."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse(args: Sequence[str]) -> RunLine | None:
    """The run line, or None when the Typer app should handle `args` (see the module docstring)."""
    if not args or args[0] != COMMAND or COMPLETION_VARIABLE in os.environ:
        return None
    positional: list[str] = []
    values: dict[str, str] = {}
    flags: set[str] = set()
    rest = list(args[1:])
    while rest:
        arg = rest.pop(0)
        if not _utf8(arg):
            return None
        if not arg.startswith("-"):
            positional.append(arg)
            continue
        name, equals, value = arg.partition("=")
        if name in FLAGS and not equals and name not in flags:
            flags.add(name)
            continue
        if name not in OPTIONS or OPTIONS[name] in values:
            return None
        if not equals:
            if not rest:
                return None
            value = rest.pop(0)
        if value.startswith("-") or not _utf8(value):
            return None
        values[OPTIONS[name]] = value
    batch_size = values.get("batch_size")
    if len(positional) != 1 or (batch_size is not None and not (batch_size.isascii() and batch_size.isdigit())):
        return None
    options = run_command.RunOptions(
        period_key=values.get("period_key"),
        dry_run="--dry-run" in flags,
        shard=values.get("shard"),
        batch_size=int(batch_size) if batch_size is not None else None,
        grant_family=values.get("grant_family"),
    )
    return RunLine(positional[0], options, values.get("database_url"), bool(flags & {"--verbose", "-v"}))


def run(line: RunLine) -> int:
    """Run the parsed line as the Typer app would: settings and logging (its root callback), the command, then
    its error mapping (`cli.app.main`) — one line on stderr and the error's exit code."""
    try:
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level or ("info" if line.verbose else None))
        return run_command.run_usecase(CliState(settings), line.usecase, line.options, line.database_url)
    except CreditJobsError as exc:
        warn(f"credit-jobs: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_ABORTED
    except EOFError:
        sys.stderr.write("\n")
        warn("credit-jobs: aborted")
        return EXIT_ABORTED
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        # A closed stdout (`credit-jobs run … | head`): exit 1 without the flush error at exit, as Typer does.
        devnull = open(os.devnull, "w")  # noqa: SIM115 - lives until the process exits
        sys.stdout = sys.stderr = devnull
        return 1
