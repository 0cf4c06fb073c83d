"""The usecases `credit-jobs run <usecase>` can run, by their container-contract names (docs/contract.md)."""

from __future__ import annotations

from credit_jobs.domain.contract import (
    CLEANUP_STORAGE,
    DISTRIBUTE_CREDITS,
    EXPIRE_CREDITS,
    PURGE_RETENTION,
    USECASE_PERIODS,
)
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.run_model import UsecaseSpec
from credit_jobs.usecases.cleanup_storage import cleanup_storage
from credit_jobs.usecases.distribute_credits import distribute_credits
from credit_jobs.usecases.expire_credits import expire_credits
from credit_jobs.usecases.purge_retention import purge_retention

USECASES: dict[str, UsecaseSpec] = {
    spec.name: spec
    for spec in (
        UsecaseSpec(
            DISTRIBUTE_CREDITS,
            USECASE_PERIODS[DISTRIBUTE_CREDITS],
            distribute_credits,
            "Grant every eligible user their plan's credits for the period, exactly once.",
            grant_period_lock="shared",
            works_on_its_period=True,
        ),
        UsecaseSpec(
            EXPIRE_CREDITS,
            USECASE_PERIODS[EXPIRE_CREDITS],
            expire_credits,
            "Expire every grant past its expiry exactly once and reduce balances.",
        ),
        UsecaseSpec(
            CLEANUP_STORAGE,
            USECASE_PERIODS[CLEANUP_STORAGE],
            cleanup_storage,
            "Delete every stored file whose retention has ended (file:// and s3://) and record it.",
        ),
        UsecaseSpec(
            PURGE_RETENTION,
            USECASE_PERIODS[PURGE_RETENTION],
            purge_retention,
            "Delete old run audit rows, long-deleted stored-file rows and expired request ids; never the ledger.",
        ),
    )
}


def get_usecase(name: str) -> UsecaseSpec:
    try:
        return USECASES[name]
    except KeyError:
        raise ConfigError(f"unknown usecase {name!r}: use one of {', '.join(sorted(USECASES))}") from None
