"""Integration fixtures: an engine on a fresh migrated database, and `run_usecase` (tests/integration/run_support.py)
to run usecases in-process through the real run lifecycle against the real PostgreSQL. Tests import helpers from
the support modules, never from here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from tests.integration.run_support import RunUsecase, usecase_runner


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = database.create_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def run_usecase(database_url: str) -> RunUsecase:
    return usecase_runner(database_url)
