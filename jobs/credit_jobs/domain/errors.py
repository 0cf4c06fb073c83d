"""Errors every layer raises and every entry point maps to an exit code (docs/contract.md, container contract).

`ConfigError` → exit 2 (usage / configuration: never retried; the operator's podFailurePolicy fails the Job at once).
`RunFailed` → exit 1 (the run failed and a retry may help). `InsufficientCredits` is a domain refusal raised by
`consume`; the CLI maps it to exit 1 with the shortfall in the message.
"""

from __future__ import annotations

from credit_jobs.domain.contract import EXIT_CONFIG_ERROR, EXIT_FAILED


class CreditJobsError(Exception):
    """Base class: `str(error)` is a one-line, user-facing reason (what, where, how to fix)."""

    exit_code = EXIT_FAILED


class ConfigError(CreditJobsError):
    """Bad configuration or usage: a malformed period key, shard spec, database URL, unknown usecase…"""

    exit_code = EXIT_CONFIG_ERROR


class RequestIdReused(ConfigError):
    """A request id or idempotency key sent again with other parameters (SQLSTATE CJ002): the message names the
    first field that differs. The API answers 409."""


class UnknownUser(ConfigError):
    """A one-off grant for a user the eligibility source (credit_eligibility) does not know (SQLSTATE CJ004),
    without the caller's explicit "allow unknown user"."""

    def __init__(self, user_id: str, hint: str = "allow unknown users to grant anyway") -> None:
        super().__init__(
            f"user {user_id} is not in credit_eligibility (the application's users): nothing was granted; check the "
            f"user id, or {hint}"
        )
        self.user_id = user_id


class RunFailed(CreditJobsError):
    """The run could not finish; a retry may help (database went away, items failed, guard lost)."""

    exit_code = EXIT_FAILED


class InsufficientCredits(CreditJobsError):
    """A consumption asked for more credits than the user has available; nothing was taken."""

    exit_code = EXIT_FAILED

    def __init__(self, user_id: str, requested: int, available: int) -> None:
        super().__init__(
            f"user {user_id} has {available} credits available, {requested} requested; nothing was consumed"
        )
        self.user_id = user_id
        self.requested = requested
        self.available = available


class NoCreditAccount(InsufficientCredits):
    """A consumption for a user who has never been granted credits (no account): a usage error, not a retry case.
    Still an InsufficientCredits, so callers that refuse on "too few credits" keep working."""

    exit_code = 2

    def __init__(self, user_id: str, requested: int) -> None:
        super().__init__(user_id, requested, 0)
        self.args = (
            f"user {user_id} has no credit account (never granted credits; check the user id): nothing was consumed",
        )
