"""Request input validation and the replay-or-refuse decision (credit_jobs.domain.requests) — pure, no database."""

from __future__ import annotations

import pytest

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.requests import (
    parse_amount,
    parse_expires_in_days,
    parse_user_id,
    reuse_refusal,
    validate_request_id,
)


def test_a_matching_retry_is_a_replay() -> None:
    params = {"user_id": 1, "amount": 10}
    assert (
        reuse_refusal("R1", operation="consume", params=params, first_operation="consume", first_params=params) is None
    )


def test_the_refusal_names_the_first_differing_field_in_a_fixed_order() -> None:
    refusal = reuse_refusal(
        "R1",
        operation="consume",
        params={"user_id": 2, "amount": 11},
        first_operation="consume",
        first_params={"user_id": 1, "amount": 10},
    )
    assert refusal is not None
    assert str(refusal) == (
        "request id 'R1' was first used with user_id=1, this request has user_id=2: "
        "use a new request id for a different request"
    )
    across = reuse_refusal("K", operation="void", params={"grant_id": 3}, first_operation="grant", first_params={})
    assert across is not None
    assert "first used with operation='grant', this request has operation='void'" in str(across)


def test_a_long_id_is_shortened_in_messages() -> None:
    long_id = "r" * 200
    refusal = reuse_refusal(long_id, operation="void", params={"grant_id": 1}, first_operation="void", first_params={})
    assert refusal is not None
    assert "(200 characters)" in str(refusal)
    assert len(str(refusal)) < 200


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_user_id, "1" * 5000, "too large"),  # int() itself refuses > 4300 digits: checked before it
        (parse_user_id, "٣", "digits 0-9 only"),  # Arabic-Indic three
        (parse_user_id, "+1", "digits 0-9 only"),
        (parse_user_id, "-", "digits 0-9 only"),
        (parse_user_id, "", "digits 0-9 only"),
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
