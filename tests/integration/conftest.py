"""Integration fixtures: an engine on a fresh migrated database, `run_usecase` (tests/support/runs.py)
to run usecases in-process through the real run lifecycle against the real PostgreSQL, and `cli` to call the
`credit-jobs` CLI's `main` in-process on that database. Tests import helpers from the support modules, never from
here."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.entrypoints.cli import main
from tests.support.runs import RunUsecase, usecase_runner


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = database.create_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def run_usecase(database_url: str) -> RunUsecase:
    return usecase_runner(database_url)


CliCall = Callable[..., tuple[int, str, str]]  # cli("run", "distribute-credits", ...) -> (exit code, stdout, stderr)


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliCall:
    """`credit-jobs ARGV...` in-process on the test database, with no CreditJob container variables set."""
    for var in ("CREDITJOB_NAME", "CREDITJOB_SCHEDULE", "CREDITJOB_PERIOD_KEY", "CREDITJOB_TRIGGER", "PUSHGATEWAY_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOG_FORMAT", "json")

    def call(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call
