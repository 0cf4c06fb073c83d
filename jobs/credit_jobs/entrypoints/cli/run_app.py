"""The app for a `credit-jobs run …` line — what every CronJob container runs: the root callback and the `run`
command (`cli.runs_commands.run`), the same Typer command as in the whole CLI, so the line is parsed, helped and
refused exactly as there, without importing the other commands (the start-up rule: `cli/__init__.py`)."""

from __future__ import annotations

from collections.abc import Sequence

from credit_jobs.entrypoints.cli.root import invoke, new_app
from credit_jobs.entrypoints.cli.runs_commands import run

app = new_app()
app.command("run")(run)


def main(args: Sequence[str]) -> int:
    return invoke(app, args)
