"""Integration fixtures: an engine on a fresh migrated database, and helpers to seed and run usecases in-process
through the real run lifecycle (guard, audit row, logs) against the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.lifecycle.run_lifecycle import RunOutcome, RunRequest, execute_run
from credit_jobs.usecases.registry import get_usecase
from tests.integration.ledger_helpers import NOW


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = database.create_engine(database_url)
    yield eng
    eng.dispose()


RunUsecase = Callable[..., RunOutcome]


@pytest.fixture
def run_usecase(database_url: str) -> RunUsecase:
    def run(name: str, *, now: datetime = NOW, **request: Any) -> RunOutcome:
        request.setdefault("job", name)
        return execute_run(
            RunRequest(usecase=get_usecase(name), **request),
            lambda: database.create_engine(database_url),
            clock=lambda: now,
            ledger_clock=lambda: now,  # a fixed "now" in place of the database's clock
        )

    return run
