"""The `credit-jobs` console script (`entrypoint`, `main(argv) -> int`): a dispatcher kept light, because every
CronJob container starts here and its start-up is measured (bench/bench_startup.py, docs/performance.md).

`credit-jobs --version` is answered here, before any other import. A line that starts with `run` goes to `cli.run_app`,
the root callback and the `run` command alone; every other line goes to the whole Typer app, `cli.app`. Both are
Typer apps on one root (`cli.root`): one parser per command, one error-to-exit-code mapping.

The start-up rule, which every module of this package keeps: a `run` line imports neither Rich nor pydantic, nor any
other command's module; what it does import (Typer, `run_app`, `runs_commands`, `run_command`, `support`,
`settings`, the lifecycle) is light at the top, and every heavy library (Rich, FastAPI, uvicorn, Kopf, the Kubernetes
client, Alembic) is imported inside the function that uses it. `tests/integration/cli/test_fast_start.py` and
`bench/bench_startup.py` hold it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:  # answered before any import of the app (`cli.root` prints the same line)
        from credit_jobs import __version__

        sys.stdout.write(f"credit-jobs {__version__}\n")
        return 0
    if args[:1] == ["run"]:  # a CronJob's line: only the run command's imports
        from credit_jobs.entrypoints.cli import run_app

        return run_app.main(args)
    from credit_jobs.entrypoints.cli import app

    return app.main(args)


def entrypoint() -> None:
    sys.exit(main())
