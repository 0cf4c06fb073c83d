"""Request inputs and idempotency rules for consume, grant and void: validation and the replay-or-refuse decision. Pure.

`credit_jobs.usecases.{consume,grant,void_grant}` validate every value with these functions before opening a
transaction, and the CLI parses its text arguments with the `parse_*` functions (Typer's `int` accepts `1_000`,
`" 1 "` and any Unicode digit; these accept ASCII digits only). Every refusal is a `ConfigError` (exit 2) with a
one-line reason; the bounds come from `credit_jobs.domain.limits` ("Limits"). The database's functions (migration
0012) enforce the same rules with the same messages — these run first so a person gets the CLI's or the API's hint —
and decide everything else: replays, unknown users, the credits available (docs/sql-api.md).
"""

from __future__ import annotations

import re

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.limits import (
    MAX_CREDITS,
    MAX_EXPIRY_DAYS,
    MAX_REQUEST_ID_LENGTH,
    MAX_USER_ID_LENGTH,
    UNPRINTABLE_RANGES,
)

# The largest BIGINT: grant ids (identity columns) are positive BIGINTs.
MAX_GRANT_ID = 2**63 - 1
_UNPRINTABLE = re.compile(
    "[" + "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in UNPRINTABLE_RANGES) + "]"
)
# The grant types a one-off grant may have (`credit-jobs grant --type`); periodic grants have their policy's type.
ONE_OFF_TYPES = ("gift", "purchase", "adjustment")


def _shown(value: str, limit: int = 40) -> str:
    """A value quoted for an error line: repr (so blanks and escapes show), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 4]}…{text[-1]} ({len(value)} characters)"


def validate_request_id(value: str, what: str = "request id", limit: int = MAX_REQUEST_ID_LENGTH) -> str:
    """A request id or idempotency key as given: non-blank, valid UTF-8, printable, at most the length limit.

    Surrounding whitespace is refused rather than stripped: `"R1 "` and `"R1"` would otherwise be two ids that a
    person reads as one."""
    if not isinstance(value, str):  # a library caller passing an int user id (the pre-0007 type): say so
        raise ConfigError(f"the {what} must be text, got {type(value).__name__} {value!r}: pass str({value!r})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate: bytes that were not UTF-8 (argv decoded with surrogateescape)
        raise ConfigError(f"the {what} is not valid UTF-8: pass a UTF-8 text id") from None
    if not value.strip():
        raise ConfigError(f"the {what} must not be empty or blank: pass a unique id such as an order number")
    if len(value) > limit:
        raise ConfigError(
            f"the {what} is {len(value)} characters long, over the limit of {limit}: "
            "use a shorter id (e.g. a UUID or a hash of a longer one)"
        )
    if _UNPRINTABLE.search(value):
        raise ConfigError(f"the {what} {_shown(value)} contains control or unprintable characters: use printable text")
    if value != value.strip():
        raise ConfigError(f"the {what} {_shown(value)} has leading or trailing whitespace: remove it")
    return value


def validate_user_id(user_id: str) -> str:
    """A user id as the host application spells it (text; `"42"` is the id a BIGINT-era 42 became): the request-id
    rules, so every id the edge accepts is one the database's CHECK accepts too (migration 0007)."""
    return validate_request_id(user_id, "user id", MAX_USER_ID_LENGTH)


def validate_amount(amount: int) -> int:
    if amount <= 0:
        raise ConfigError(f"amount must be a positive number of credits, got {amount}")
    if amount > MAX_CREDITS:
        raise ConfigError(f"amount {amount} is over the limit of {MAX_CREDITS} credits per request")
    return amount


def validate_expires_in_days(days: int | None) -> int | None:
    if days is not None and not 1 <= days <= MAX_EXPIRY_DAYS:
        raise ConfigError(f"expires-in-days must be between 1 and {MAX_EXPIRY_DAYS}, got {days}")
    return days


def validate_grant_id(grant_id: int) -> int:
    if not 1 <= grant_id <= MAX_GRANT_ID:
        raise ConfigError(f"grant id must be between 1 and {MAX_GRANT_ID}, got {grant_id}")
    return grant_id


def _parse_digits(text: str, what: str, bound: int) -> int:
    """ASCII digits only, with an optional leading '-' so a negative number gets the bound message, not a
    parse error. Length is checked before `int()` (which refuses more than 4300 digits with its own error)."""
    digits = text[1:] if text.startswith("-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ConfigError(f"{what} must be a whole number written with the digits 0-9 only, got {_shown(text)}")
    if len(digits.lstrip("0")) > len(str(bound)):
        raise ConfigError(f"{what} {_shown(text)} is too large: at most {bound}")
    return -int(digits) if text.startswith("-") else int(digits)


def parse_user_id(text: str) -> str:
    """The CLI's `USER` argument: the text as given (`42` is the user id '42'), validated, never parsed as a number."""
    return validate_user_id(text)


def parse_amount(text: str) -> int:
    return validate_amount(_parse_digits(text, "amount", MAX_CREDITS))


def parse_grant_id(text: str) -> int:
    return validate_grant_id(_parse_digits(text, "grant id", MAX_GRANT_ID))


def parse_expires_in_days(text: str | None) -> int | None:
    if text is None:
        return None
    return validate_expires_in_days(_parse_digits(text, "expires-in-days", MAX_EXPIRY_DAYS))
