"""The jobs settings reader (`entrypoints/settings.py`, a plain reader, not pydantic-settings): defaults,
case-insensitive names, typed values, and one-line refusals naming the variable. The per-variable refusals of a real
`credit-jobs run` are in tests/integration/cli/test_run_bad_settings.py; this file covers what that table does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from credit_jobs.domain.errors import ConfigError
from credit_jobs.entrypoints.settings import VARIABLES, Settings, load_settings


def test_no_environment_gives_the_defaults() -> None:
    assert load_settings({}) == Settings()
    assert Settings().creditjobs_statement_timeout_seconds == 300.0


def test_names_match_in_any_case_and_values_are_typed() -> None:
    settings = load_settings(
        {
            "database_url": "postgresql://u@h/db",
            "CreditJobs_Data_Dir": "/var/lib/credit-jobs",
            "CREDITJOBS_LOCK_TIMEOUT_SECONDS": " 2.5 ",
            "CREDITJOBS_BATCH_SIZE": "250",
            "LOG_FORMAT": " JSON ",
            "UNRELATED": "ignored",
        }
    )
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.creditjobs_data_dir == Path("/var/lib/credit-jobs")
    assert settings.creditjobs_lock_timeout_seconds == 2.5
    assert settings.creditjobs_batch_size == 250
    assert settings.log_format == "json"


@pytest.mark.parametrize("value", ["soon", "1_0", ""])
def test_a_timeout_that_is_not_a_number_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"CREDITJOBS_STATEMENT_TIMEOUT_SECONDS": value})
    assert str(refused.value) == (
        f"CREDITJOBS_STATEMENT_TIMEOUT_SECONDS={value!r} is invalid: Input should be a valid number, unable to parse "
        "string as a number (see docs/env-and-ops.md)"
    )


def test_undecodable_bytes_are_named_before_any_value_is_parsed() -> None:
    with pytest.raises(ConfigError, match=r"^LOG_LEVEL is not valid UTF-8 \(byte 0xff at position 2\)"):
        load_settings({"LOG_LEVEL": "in\udcff", "CREDITJOBS_BATCH_SIZE": "x"})


def test_the_first_bad_variable_in_field_order_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^LOG_FORMAT="):
        load_settings({"CREDITJOBS_BATCH_SIZE": "x", "LOG_FORMAT": "xml"})


def test_every_field_is_a_variable() -> None:
    assert VARIABLES[0] == "DATABASE_URL"
    assert "CREDITJOBS_STATEMENT_TIMEOUT_SECONDS" in VARIABLES


def test_an_unset_log_level_is_none_so_commands_can_choose_their_own() -> None:
    """`demo` logs only errors unless LOG_LEVEL is set; every other command logs at info (cli.py)."""
    assert load_settings({}).log_level is None
    assert load_settings({"LOG_LEVEL": "WARNING"}).log_level == "warning"
    with pytest.raises(ConfigError, match=r"^LOG_LEVEL='' is not one of"):
        load_settings({"LOG_LEVEL": ""})
