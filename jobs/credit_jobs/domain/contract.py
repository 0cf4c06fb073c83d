"""The vocabulary the jobs core and the operator share (docs/contract.md), defined once: the usecase names with
their default periods, the run triggers, the exit codes, the container's environment-variable names, the
Pushgateway grouping key's fixed parts (job, default namespace) and the default batch size.

Pure constants. The operator renders CronJobs from these (`credit_operator.cronjob_manifest`, `creditjob`,
`reconcile`, `status`); the jobs core reads the same names (`usecases.registry`, `adapters.tables`,
`entrypoints.settings`, `lifecycle.run_lifecycle`, `domain.errors`). `tests/unit/test_contract.py` keeps the CRD's
enums and the settings class equal to what is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class Period(StrEnum):
    """Granularity of a period key (`spec.period`, CREDITJOB_PERIOD); `domain.period_keys` computes the keys."""

    MONTHLY = "monthly"
    WEEKLY = "weekly"
    DAILY = "daily"
    HOURLY = "hourly"


# --- usecases: `credit-jobs run <usecase>`, the CRD's spec.usecase ------------------------------------------------
DISTRIBUTE_CREDITS: Final = "distribute-credits"
# the usecase of the audit rows of `credit-jobs rollback distribute-credits`
ROLLBACK_DISTRIBUTE: Final = f"rollback-{DISTRIBUTE_CREDITS}"
# the job and usecase of the audit rows of `credit-jobs import saas-template`
IMPORT_SAAS_TEMPLATE: Final = "import-saas-template"
EXPIRE_CREDITS: Final = "expire-credits"
CLEANUP_STORAGE: Final = "cleanup-storage"
PURGE_RETENTION: Final = "purge-retention"
# The period a run uses when CREDITJOB_PERIOD (spec.period) does not say.
USECASE_PERIODS: Final[Mapping[str, Period]] = MappingProxyType(
    {
        DISTRIBUTE_CREDITS: Period.MONTHLY,
        EXPIRE_CREDITS: Period.DAILY,
        CLEANUP_STORAGE: Period.DAILY,
        PURGE_RETENTION: Period.DAILY,
    }
)
USECASES: Final[tuple[str, ...]] = tuple(USECASE_PERIODS)
PERIODS: Final[tuple[str, ...]] = tuple(period.value for period in Period)


class Trigger(StrEnum):
    """What started a run: CREDITJOB_TRIGGER, the `credits.dev/trigger` label, the audit row's `trigger`."""

    SCHEDULE = "schedule"  # the CronJob fired
    MANUAL = "manual"  # run-now (`credit-jobs trigger`)
    CATCH_UP = "catch-up"  # the operator's catch-up of a missed fire time
    BACKFILL = "backfill"  # a person re-running old periods (`credit-jobs backfill`)
    CLI = "cli"  # `credit-jobs run` with no schedule
    ROLLBACK = "rollback"  # `credit-jobs rollback`: a period's grants rolled back (its audit row)
    IMPORT = "import"  # `credit-jobs import saas-template`: a template database's live credits moved in (its audit row)


TRIGGERS: Final[tuple[str, ...]] = tuple(trigger.value for trigger in Trigger)

# --- exit codes: what the Job controller acts on ------------------------------------------------------------------
EXIT_OK: Final = 0  # succeeded, or skipped (a live run holds the period)
EXIT_FAILED: Final = 1  # failed; a retry may help (backoffLimit)
EXIT_CONFIG_ERROR: Final = 2  # configuration / usage error: the podFailurePolicy fails the Job at once

# --- the container's environment ----------------------------------------------------------------------------------
ENV_NAME: Final = "CREDITJOB_NAME"
ENV_NAMESPACE: Final = "CREDITJOB_NAMESPACE"
ENV_SCHEDULE: Final = "CREDITJOB_SCHEDULE"
ENV_TIME_ZONE: Final = "CREDITJOB_TIME_ZONE"
ENV_PERIOD: Final = "CREDITJOB_PERIOD"
ENV_SHARDS: Final = "CREDITJOB_SHARDS"
ENV_TRIGGER: Final = "CREDITJOB_TRIGGER"
ENV_PERIOD_KEY: Final = "CREDITJOB_PERIOD_KEY"
ENV_DATABASE_URL: Final = "DATABASE_URL"
ENV_PUSHGATEWAY_URL: Final = "PUSHGATEWAY_URL"
ENV_LOG_FORMAT: Final = "LOG_FORMAT"
ENV_COMPLETION_INDEX: Final = "JOB_COMPLETION_INDEX"  # set by Kubernetes on Indexed Jobs
# Who asked for a run-now (the HTTP API's principal, from `credits.dev/requested-by`): only on run-now Jobs that have
# one, so it is not part of CONTAINER_ENV (the variables every run container gets).
ENV_REQUESTED_BY: Final = "CREDITJOB_REQUESTED_BY"
CONTAINER_ENV: Final[tuple[str, ...]] = (
    ENV_NAME,
    ENV_NAMESPACE,
    ENV_SCHEDULE,
    ENV_TIME_ZONE,
    ENV_PERIOD,
    ENV_SHARDS,
    ENV_TRIGGER,
    ENV_PERIOD_KEY,
    ENV_DATABASE_URL,
    ENV_PUSHGATEWAY_URL,
    ENV_LOG_FORMAT,
    ENV_COMPLETION_INDEX,
)

# --- the Pushgateway grouping key of a run's metrics: job, namespace, creditjob, shard (docs/contract.md) --------
PUSHGATEWAY_JOB: Final = "credit-jobs"  # the `job` label of every pushed group (`observability.metrics.grouping_key`)
# A run's namespace when CREDITJOB_NAMESPACE is unset (a run outside a cluster): kubectl's default namespace.
DEFAULT_NAMESPACE: Final = "default"

# --- run defaults -------------------------------------------------------------------------------------------------
DEFAULT_BATCH_SIZE: Final = 5000  # users (or grants, or files) per transaction
