"""The CreditJob custom resource as a typed value: names, label keys, and spec parsing with the CRD's defaults.

Pure (no I/O). Every planner (`cronjob_manifest`, `status`, `missed_periods`, `spec_checks`) takes a `CreditJob`
built here from the raw body Kopf hands to `handlers.py`. The defaults (`CreditJobSpec`'s field defaults, the
only place they are written) repeat the CRD's `default:` values
(charts/credit-jobs/crds/creditjobs.yaml): a real API server applies them before we see the object, but a body
from an older CRD version or a test emulator may lack them, and a test checks both lists agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

# Re-exported for the planners and spec checks: the contract's lists, which the CRD's enums equal.
from credit_jobs.domain.contract import PERIODS as PERIODS
from credit_jobs.domain.contract import USECASES as USECASES
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.schedule import Schedule

GROUP = "credits.dev"
VERSION = "v1alpha1"
PLURAL = "creditjobs"
KIND = "CreditJob"
API_VERSION = f"{GROUP}/{VERSION}"

CONCURRENCY_POLICIES = ("Forbid", "Replace", "Allow")

# Labels on every CronJob / Job / Pod the operator makes: the CreditJob label finds the children.
LABEL_CREDITJOB = "credits.dev/creditjob"
LABEL_TRIGGER = "credits.dev/trigger"
MANAGED_BY = "credit-jobs-operator"

# Annotations: run-now requests (set by `credit-jobs trigger` / the HTTP API) and bookkeeping on Jobs.
ANNOTATION_RUN_NOW = "credits.dev/run-now"
ANNOTATION_RUN_PERIOD = "credits.dev/run-period"
ANNOTATION_REQUESTED_BY = "credits.dev/requested-by"  # who asked for the run-now (the HTTP API's principal)
ANNOTATION_PERIOD_KEY = "credits.dev/period-key"
ANNOTATION_SCHEDULED_TIME = "credits.dev/scheduled-time"
ANNOTATION_RUN_NOW_TOKEN = "credits.dev/run-now-token"
# On a finished Job once its RunSucceeded / RunFailed Event was posted (value: the outcome): exactly one Event per run,
# across passes and operator restarts.
ANNOTATION_RUN_REPORTED = "credits.dev/run-reported"
# On every catch-up Job of a pass that gave periods up (beyond catchUp.maxPeriods): those keys, comma-separated. The
# decision travels with the Job it came with, so a crash before the status write loses nothing: the next pass (which
# plans from the newest catch-up Job and so no longer sees those periods) reads them back (status.build_status).
ANNOTATION_GIVEN_UP = "credits.dev/given-up-periods"
# Written by the Kubernetes CronJob controller (1.28+) on every Job it creates: the fire time it ran for.
ANNOTATION_CRONJOB_SCHEDULED = "batch.kubernetes.io/cronjob-scheduled-timestamp"

MAX_NAME_LENGTH = 52  # Kubernetes' limit for CronJob names: 63 minus the 11-character Job suffix


@dataclass(frozen=True)
class CreditJobSpec:
    """`spec` with every default applied (see the CRD for each field's meaning)."""

    usecase: str
    schedule: str
    time_zone: str = "UTC"
    period: str = "monthly"
    suspend: bool = False
    suspend_reason: str = ""
    concurrency_policy: str = "Forbid"
    starting_deadline_seconds: int = 3600
    active_deadline_seconds: int = 1800
    backoff_limit: int = 3
    parallelism: int = 1
    catch_up_max_periods: int = 3
    catch_up_retry_failed: bool = True
    successful_history: int = 3
    failed_history: int = 3
    params: Mapping[str, Any] = field(default_factory=dict)
    image: str = ""
    db_secret_name: str = ""
    db_secret_key: str = ""
    resources: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def parsed_schedule(self) -> Schedule:
        """schedule + timeZone + period as one `Schedule`, parsed once per spec (every planner of a pass shares
        it); ConfigError when one of them is bad — `spec_checks` reports that as an invalid spec, field named."""
        return Schedule.parse(self.schedule, self.time_zone, self.period)


# The one list of spec defaults: the dataclass's field defaults, read by `parse_spec` through this instance.
DEFAULTS = CreditJobSpec(usecase="", schedule="")


@dataclass(frozen=True)
class CreditJob:
    """Identity of one CreditJob plus its parsed spec and the status fields the operator keeps for itself."""

    name: str
    namespace: str
    uid: str
    generation: int
    created_at: datetime | None
    annotations: Mapping[str, str]
    spec: CreditJobSpec
    status: Mapping[str, Any]


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API (`2026-11-01T00:00:00Z`) as an aware datetime; None when absent."""
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(moment: datetime | None) -> str | None:
    """The API's timestamp form, in UTC with a `Z` (what the CronJob controller writes)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SpecProblems(ConfigError):
    """Every reason a spec cannot be read (`problems`, in field order); str() joins them with "; "."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _typed(
    spec: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any, problems: list[str], where: str = ""
) -> Any:
    """spec[key] when it has the right type; otherwise the problem is noted (all are reported) and default used."""
    value = spec.get(key, default)
    if value is None:
        return default
    # bool is an int in Python; an integer field given `true` is a type error, not 1.
    if kind is int and isinstance(value, bool):
        problems.append(f"spec.{where}{key} must be an integer, got {value!r}")
        return default
    if not isinstance(value, kind):
        problems.append(f"spec.{where}{key} has the wrong type: got {value!r}")
        return default
    return value


# a Kubernetes resource quantity: a number, then a binary-SI, decimal-SI or exponent suffix (100m, 256Mi, 1e3, 2)
_QUANTITY = re.compile(r"\A[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?\Z")


def _check_resources(resources: Mapping[str, Any], problems: list[str]) -> None:
    """`requests` and `limits` are maps of quantities, as in a Pod: any other shape is a problem of the spec (the
    CronJob is left as it was), never an error of the manifest builder on every pass."""
    for part in ("requests", "limits"):
        amounts = _typed(resources, part, Mapping, {}, problems, "resources.")
        for name, quantity in amounts.items():
            if isinstance(quantity, bool) or not _QUANTITY.match(str(quantity)):
                problems.append(
                    f"spec.resources.{part}.{name} must be a quantity such as 100m, 256Mi or 2, got {quantity!r}"
                )


def parse_spec(spec: Mapping[str, Any]) -> CreditJobSpec:
    """The spec with defaults; SpecProblems (a ConfigError) listing every field with the wrong type or missing."""
    if not isinstance(spec, Mapping):
        raise SpecProblems(["spec must be an object"])
    problems: list[str] = [
        f"spec.{required} is required" for required in ("usecase", "schedule") if not spec.get(required)
    ]

    def typed(key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        return _typed(spec, key, kind, default, problems)

    d = DEFAULTS
    usecase = typed("usecase", str, d.usecase)
    schedule = typed("schedule", str, d.schedule)
    time_zone = typed("timeZone", str, d.time_zone) or d.time_zone
    period = typed("period", str, d.period)
    suspend = typed("suspend", bool, d.suspend)
    suspend_reason = typed("suspendReason", str, d.suspend_reason)
    concurrency_policy = typed("concurrencyPolicy", str, d.concurrency_policy)
    starting_deadline_seconds = typed("startingDeadlineSeconds", int, d.starting_deadline_seconds)
    active_deadline_seconds = typed("activeDeadlineSeconds", int, d.active_deadline_seconds)
    backoff_limit = typed("backoffLimit", int, d.backoff_limit)
    parallelism = typed("parallelism", int, d.parallelism)
    catch_up = typed("catchUp", Mapping, {})
    history = typed("historyLimits", Mapping, {})
    params = typed("params", Mapping, {})
    image = typed("image", str, d.image)
    secret = typed("databaseSecretRef", Mapping, {})
    resources = typed("resources", Mapping, {})
    _check_resources(resources, problems)
    catch_up_max_periods = _typed(catch_up, "maxPeriods", int, d.catch_up_max_periods, problems, "catchUp.")
    catch_up_retry_failed = _typed(catch_up, "retryFailed", bool, d.catch_up_retry_failed, problems, "catchUp.")
    successful_history = _typed(history, "successful", int, d.successful_history, problems, "historyLimits.")
    failed_history = _typed(history, "failed", int, d.failed_history, problems, "historyLimits.")
    db_secret_name = _typed(secret, "name", str, d.db_secret_name, problems, "databaseSecretRef.")
    db_secret_key = _typed(secret, "key", str, d.db_secret_key, problems, "databaseSecretRef.")
    if problems:
        raise SpecProblems(problems)
    return CreditJobSpec(
        usecase=usecase,
        schedule=schedule,
        time_zone=time_zone,
        period=period,
        suspend=suspend,
        suspend_reason=suspend_reason,
        concurrency_policy=concurrency_policy,
        starting_deadline_seconds=starting_deadline_seconds,
        active_deadline_seconds=active_deadline_seconds,
        backoff_limit=backoff_limit,
        parallelism=parallelism,
        catch_up_max_periods=catch_up_max_periods,
        catch_up_retry_failed=catch_up_retry_failed,
        successful_history=successful_history,
        failed_history=failed_history,
        params=params,
        image=image,
        db_secret_name=db_secret_name,
        db_secret_key=db_secret_key,
        resources=resources,
    )


def parse_creditjob(body: Mapping[str, Any]) -> CreditJob:
    """A CreditJob from its raw body; ConfigError (with the field named) when the spec cannot be read."""
    meta = body.get("metadata") or {}
    return CreditJob(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        created_at=parse_time(meta.get("creationTimestamp")),
        annotations=dict(meta.get("annotations") or {}),
        spec=parse_spec(body.get("spec") or {}),
        status=dict(body.get("status") or {}),
    )
