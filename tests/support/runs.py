"""Running a usecase in-process through the real run lifecycle (guard, audit row, logs) at the tests' fixed
`NOW`, against the real PostgreSQL. `tests/integration/conftest.py` serves `run_usecase` as a fixture; tests import
the `RunUsecase` type from here (never from a conftest)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from credit_jobs.adapters import database
from credit_jobs.lifecycle.run_lifecycle import RunOutcome, RunRequest, execute_run
from credit_jobs.usecases.registry import get_usecase
from tests.support.instants import NOW

RunUsecase = Callable[..., RunOutcome]


def usecase_runner(database_url: str) -> RunUsecase:
    """`run(name, now=NOW, **request)`: one run of usecase `name`, the pod's and the database's clock fixed at `now`."""

    def run(name: str, *, now: datetime = NOW, **request: Any) -> RunOutcome:
        request.setdefault("job", name)
        return execute_run(
            RunRequest(usecase=get_usecase(name), **request),
            lambda: database.create_engine(database_url),
            clock=lambda: now,
            ledger_clock=lambda: now,  # a fixed "now" in place of the database's clock
        )

    return run
