"""The `credit-jobs` console script (`entrypoint`, `main(argv) -> int`): a dispatcher kept light, because every
CronJob container starts here and its start-up is measured (bench/bench_startup.py, docs/performance.md).

A plain `credit-jobs run USECASE [options]` line is parsed and run by `run_line` without Typer; every other line
(the other commands, `--help`, `--version`, a usage error, anything `run_line.parse` does not take) goes to the
Typer app in `cli_app` — the composition root, with the error-to-exit-code mapping — imported only then. The exit
codes are the same on both paths: 0 success (or skipped), 1 failed (a retry may help), 2 configuration / usage
error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from credit_jobs.entrypoints import run_line


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    line = run_line.parse(args)
    if line is not None:
        return run_line.run(line)
    from credit_jobs.entrypoints import cli_app

    return cli_app.main(args)


def entrypoint() -> None:
    sys.exit(main())
