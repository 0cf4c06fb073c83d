"""Request input validation (credit_jobs.domain.requests) — pure, no database. The replay-or-refuse decision is the
database's (`credit_reuse_refusal`): tests/integration/ledger/test_request_idempotency.py."""

from __future__ import annotations

import pytest

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.requests import (
    parse_amount,
    parse_expires_in_days,
    parse_user_id,
    validate_request_id,
    validate_user_id,
)


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_amount, "1e3", "digits 0-9 only"),
        (parse_amount, "--5", "digits 0-9 only"),
        (parse_expires_in_days, "-1", "between 1 and 36500, got -1"),
    ],
)
def test_numbers_are_ascii_digits_within_bounds(parse: object, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(text)  # type: ignore[operator]


def test_no_expiry_is_allowed() -> None:
    assert parse_expires_in_days(None) is None
    assert parse_expires_in_days("36500") == 36500


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must not be empty or blank"),
        ("\u00a0", "must not be empty or blank"),
        ("a\nb", "control or unprintable"),
        ("a\u200bb", "control or unprintable"),  # zero-width space: invisible in logs
        ("\udcff", "not valid UTF-8"),
        (" x", "leading or trailing whitespace"),
        ("x" * 256, "256 characters long, over the limit of 255"),
    ],
)
def test_bad_request_ids_are_refused(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_request_id(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "the user id must not be empty or blank"),
        ("\u00a0", "the user id must not be empty or blank"),
        ("u\tb", "user id 'u\\\\tb' contains control or unprintable"),
        ("\udcff", "the user id is not valid UTF-8"),
        ("42 ", "the user id '42 ' has leading or trailing whitespace"),
        ("x" * 256, "the user id is 256 characters long, over the limit of 255"),
    ],
)
def test_bad_user_ids_are_refused_with_the_request_id_rules(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_user_id(value)


@pytest.mark.parametrize(
    "value", ["42", "0", "-7", "1" * 255, "user_2x9KqZ", "0b6e8c1e-5a8f-4d7c-9f0e-3a1b2c3d4e5f", "Zoë 🙂"]
)
def test_user_ids_are_text_kept_as_given(value: str) -> None:
    # `--user 42` is the text '42' (what a BIGINT-era 42 became in migration 0007), never re-spelled as a number
    assert parse_user_id(value) == value


def test_a_library_caller_passing_an_int_user_id_gets_a_one_line_refusal() -> None:
    with pytest.raises(ConfigError, match=r"the user id must be text, got int 42: pass str\(42\)"):
        validate_user_id(42)  # type: ignore[arg-type]
