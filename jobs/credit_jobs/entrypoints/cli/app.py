"""The `credit-jobs` Typer app — the composition root: one console script for people, CronJob containers and the
operator image.

Adds each command group to the app (`root.new_app`: the root callback) from its module through `register(app)`
(`cli.runs_commands`: run and runs; `cli.ledger_commands`: check, consume, grant, void, balance, grants;
`cli.schedule_command`; `cli.demo_command`; `cli.db_commands`; `cli.ops_commands`: rollback, backfill;
`cli.import_commands`: import saas-template; `cli.api_command`: api; the operator's `operator` and `trigger` from
`credit_operator.commands` — the one place `credit_jobs` imports `credit_operator`). `main(argv) -> int` runs a line
through `root.invoke`, the one error-to-exit-code mapping. A `run` line does not come here (`cli.run_app`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

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
from credit_jobs.entrypoints.cli.root import invoke, new_app
from credit_operator.commands import register as register_operator_commands

app = new_app()

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
    return invoke(app, sys.argv[1:] if argv is None else argv)
