"""The `credit-jobs` console script (`entrypoint`, `main(argv) -> int`): a dispatcher kept light, because every
CronJob container starts here and its start-up is measured (bench/bench_startup.py, docs/performance.md).

`credit-jobs --version` is answered here, before any other import. A plain `credit-jobs run USECASE [options]` line
is parsed and run by `run_line` without Typer (imported only for a line that starts with `run`); every other line
(the other commands, `--help`, a usage error, anything `run_line.parse` does not take) goes to the Typer app in
`cli.app` — the composition root, with the error-to-exit-code mapping — imported only then. The exit
codes are the same on both paths: 0 success (or skipped), 1 failed (a retry may help), 2 configuration / usage
error.

The start-up rule, which every module of this package keeps: a plain run line imports neither Typer, Click, Rich nor
pydantic, nor any command module; what it does import (`run_line`, `run_command`, `support`, `settings`, the
lifecycle) is light at the top, and every heavy library (Rich, FastAPI, uvicorn, Kopf, the Kubernetes client,
Alembic) is imported inside the function that uses it. `tests/integration/cli/test_fast_start.py` and
`bench/bench_startup.py` hold it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:  # answered before any import of the app (`cli.app` prints the same line)
        from credit_jobs import __version__

        sys.stdout.write(f"credit-jobs {__version__}\n")
        return 0
    if args[:1] == ["run"]:  # only a run line pays for the run's imports here
        from credit_jobs.entrypoints.cli import run_line

        line = run_line.parse(args)
        if line is not None:
            return run_line.run(line)
    from credit_jobs.entrypoints.cli import app as typer_app

    return typer_app.main(args)


def entrypoint() -> None:
    sys.exit(main())
