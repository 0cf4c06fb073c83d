"""Bad input to consume, grant and void: one line naming the problem, exit 2, nothing written.

Table-driven through the in-process CLI (`main(argv)`), and a few cases through the real `credit-jobs` console
script — including bytes that are not UTF-8 in argv, which only a real process can carry (Python hands them to the
program as surrogate escapes). Row counts of every ledger table are compared before and after each case.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.requests import parse_amount, parse_user_id, validate_request_id
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.grant import grant
from tests.support import cli_process
from tests.support.ledger import scalar

LEDGER_TABLES = ("credit_accounts", "credit_grants", "credit_entries", "credit_requests")
TOO_LONG = "x" * 3000  # past PostgreSQL's btree row limit (~2.7 kB) before the length check existed

BAD_INPUT = [
    # consume: request ids
    (["consume", "1", "10", "--request-id", ""], "request id must not be empty or blank"),
    (["consume", "1", "10", "--request-id", " "], "request id must not be empty or blank"),
    (["consume", "1", "10", "--request-id", TOO_LONG], "request id is 3000 characters long, over the limit of 255"),
    (["consume", "1", "10", "--request-id", "a\tb"], "contains control or unprintable characters"),
    (["consume", "1", "10", "--request-id", "R1 "], "has leading or trailing whitespace"),
    # consume: user ids (text, the request-id rules: migration 0007)
    (["consume", "", "10"], "the user id must not be empty or blank"),
    (["consume", " 1 ", "10"], "the user id ' 1 ' has leading or trailing whitespace: remove it"),
    (["consume", "u\tb", "10"], "the user id 'u\\tb' contains control or unprintable characters"),
    (["consume", "x" * 256, "10"], "the user id is 256 characters long, over the limit of 255"),
    (["grant", "x" * 256, "10", "--idempotency-key", "k"], "the user id is 256 characters long, over the limit"),
    # consume: amounts
    (["consume", "1", "-10"], "amount must be a positive number of credits, got -10"),
    (["consume", "1", "0"], "amount must be a positive number of credits, got 0"),
    (["consume", "1", "1_000"], "amount must be a whole number written with the digits 0-9 only, got '1_000'"),
    (["consume", "1", " 1 "], "amount must be a whole number written with the digits 0-9 only"),
    (["consume", "1", str(10**30)], f"amount '{10**30}' is too large: at most 1000000000000"),
    (["consume", "1", "1000000000001"], "amount 1000000000001 is over the limit of 1000000000000 credits"),
    # grant
    (["grant", "1", "10", "--idempotency-key", ""], "idempotency key must not be empty or blank"),
    (["grant", "1", "10", "--idempotency-key", " "], "idempotency key must not be empty or blank"),
    (["grant", "1", "10", "--idempotency-key", TOO_LONG], "idempotency key is 3000 characters long"),
    (["grant", "7", "9223372036854774808", "--idempotency-key", "k"], "amount '9223372036854774808' is too large"),
    (["grant", "1", "-10", "--idempotency-key", "k"], "amount must be a positive number of credits, got -10"),
    (
        ["grant", "1", "10", "--idempotency-key", "k", "--expires-in-days", "3000000"],
        "expires-in-days '3000000' is too",
    ),
    (["grant", "1", "10", "--idempotency-key", "k", "--expires-in-days", "36501"], "between 1 and 36500, got 36501"),
    (["grant", "1", "10", "--idempotency-key", "k", "--expires-in-days", "0"], "between 1 and 36500, got 0"),
    (["grant", "1", "10", "--idempotency-key", "k", "--expires-in-days", "1_0"], "expires-in-days must be a whole"),
    (["grant", "1", "10", "--idempotency-key", "k", "--type", "subscription"], "not a one-off type"),
    # void
    (["void", "0", "--request-id", "v"], "grant id must be between 1 and 9223372036854775807, got 0"),
    (["void", "-1", "--request-id", "v"], "grant id must be between 1 and 9223372036854775807, got -1"),
    (["void", "9223372036854775808", "--request-id", "v"], "grant id must be between 1"),
    (["void", "1_0", "--request-id", "v"], "grant id must be a whole number"),
    (["void", "GRANT_ID", "--request-id", "v"], "grant id must be a whole number"),
    (["void", "1", "--request-id", ""], "request id must not be empty or blank"),
    (["void", "1", "--request-id", TOO_LONG], "request id is 3000 characters long"),
]


def ledger_counts(engine: sa.Engine) -> dict[str, int]:
    return {table: scalar(engine, f"SELECT count(*) FROM {table}") for table in LEDGER_TABLES}


@pytest.fixture
def seeded(engine: sa.Engine) -> sa.Engine:
    """A ledger with something to consume and void, so a refusal can only come from the input."""
    grant(engine, "1", 100, grant_type="gift", allow_unknown_user=True, idempotency_key="seed")
    return engine


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT, ids=[" ".join(a)[:60] for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    cli: Any, seeded: sa.Engine, argv: list[str], message: str
) -> None:
    before = ledger_counts(seeded)
    code, out, err = cli(*argv)
    assert code == 2
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("credit-jobs: error: ")
    assert message in lines[0]
    assert ledger_counts(seeded) == before


NOT_UTF8 = "order-\udcff\udcfe"  # argv bytes b"order-\xff\xfe", as Python decodes them (surrogateescape)

PROCESS_CASES = [
    (["consume", "1", "10", "--request-id", NOT_UTF8], "the request id is not valid UTF-8"),
    (["grant", "1", "10", "--idempotency-key", NOT_UTF8], "the idempotency key is not valid UTF-8"),
    (["void", "1", "--request-id", NOT_UTF8], "the request id is not valid UTF-8"),
    (["consume", "1", "-10"], "amount must be a positive number of credits, got -10"),
    (["consume", "1", str(10**30)], "is too large: at most 1000000000000"),
    (["consume", "1", "10", "--request-id", ""], "request id must not be empty or blank"),
]


@pytest.mark.parametrize(("argv", "message"), PROCESS_CASES, ids=[a[0] + "-" + m[:30] for a, m in PROCESS_CASES])
def test_bad_input_to_the_real_console_script_exits_2_with_one_line(
    database_url: str, seeded: sa.Engine, argv: list[str], message: str
) -> None:
    before = ledger_counts(seeded)
    done = cli_process.run(argv, cli_process.cli_env(database_url))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = cli_process.error_lines(done.stderr)
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert ledger_counts(seeded) == before


def test_the_library_refuses_what_the_cli_refuses(seeded: sa.Engine) -> None:
    before = ledger_counts(seeded)
    for call, message in [
        (lambda: consume(seeded, "1", 10**30), "over the limit of 1000000000000 credits"),
        (lambda: consume(seeded, "x" * 256, 10), "the user id is 256 characters long"),
        (lambda: consume(seeded, 1, 10), "the user id must be text, got int 1"),  # type: ignore[arg-type]
        (lambda: consume(seeded, "1", 10, request_id=NOT_UTF8), "not valid UTF-8"),
        (lambda: consume(seeded, "1", 10, request_id="bad\x00id"), "control or unprintable"),
        (lambda: grant(seeded, "1", 10, grant_type="gift", idempotency_key="k", expires_in_days=3_000_000), "36500"),
        (lambda: grant(seeded, "1", 10, grant_type="gift", idempotency_key=""), "empty or blank"),
    ]:
        with pytest.raises(ConfigError, match=message):
            call()
    assert ledger_counts(seeded) == before


@pytest.mark.parametrize(
    "text", ["1", "0042", "9223372036854775808", "-5", "0", "1_000", "abc", "\uff11", "user_2x9KqZ", "é" * 255]
)
def test_user_ids_are_text_kept_exactly_as_given(text: str) -> None:
    # no number parsing any more: '0042' and '42' are two users, as they are two strings in the application
    assert parse_user_id(text) == text


def test_amounts_up_to_the_limit_and_long_printable_ids_are_accepted() -> None:
    assert parse_amount("1000000000000") == 10**12
    assert validate_request_id("é" * 255) == "é" * 255  # characters, not bytes
    assert validate_request_id("order 42 / retry") == "order 42 / retry"
