"""Starting a run from an HTTP request, never inside it: annotations in a cluster, a background worker locally.

`ClusterTriggers` sets the run-now annotations on the CreditJob (`credit_operator.commands.request_run`, as
`credit-jobs trigger` does) plus `credits.dev/requested-by`; the operator creates the Job. `LocalTriggers` (no
cluster: the embedded default) queues the usecase on one background thread that runs it through the same run
lifecycle as `credit-jobs run`, with trigger `manual` and the requester in the audit row — on an engine of its own
with a run's timeouts (CREDITJOBS_STATEMENT_TIMEOUT_SECONDS / CREDITJOBS_LOCK_TIMEOUT_SECONDS), never the request
engine with its short ones and its pool sized for request threads. Both answer at once with a run-now token;
`result` (and `wait_for`, which polls it) leads from the token to the run: the future of the local run, or in a
cluster the audit rows of the pods of the Job the operator named after the token.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import structlog

from credit_jobs.adapters import run_audit
from credit_jobs.domain.contract import Trigger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import period_start
from credit_jobs.entrypoints.api.errors import ApiError
from credit_jobs.entrypoints.run_requests import run_request
from credit_jobs.entrypoints.settings import Settings, bind_settings
from credit_jobs.lifecycle.run_lifecycle import RunOutcome, RunRequest, execute_run
from credit_jobs.usecases.registry import USECASES, get_usecase
from credit_operator.commands import new_token, request_run
from credit_operator.creditjob import parse_creditjob
from credit_operator.cronjob_manifest import manual_job_name

if TYPE_CHECKING:
    from credit_operator.kube import KubeApi

log = structlog.get_logger()

REMEMBERED_REQUESTS = 1000  # local mode: run requests whose result can still be asked for by token
TOKEN_LOOKBACK = timedelta(days=1)  # cluster mode: a token's runs are looked for among the runs of the last day
POLL_SECONDS = 0.5


def wait_for(triggers: Triggers, accepted: Accepted, engine: sa.Engine, seconds: float) -> RunResult:
    """The request's result once its run has ended, or where it stands after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = triggers.result(accepted.namespace, accepted.name, accepted.token, engine)
        result = result or RunResult("pending", [])
        if result.finished or time.monotonic() >= deadline:
            return result
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class Accepted:
    token: str
    mode: str  # cluster | local
    namespace: str
    name: str
    period_key: str | None


@dataclass(frozen=True)
class RunResult:
    """Where a run request stands: `pending` (no run started yet), `running`, or how its run ended — `succeeded`,
    `skipped` (another run holds the period), `failed` — with each run (one per shard) as its audit row has it."""

    status: str
    runs: list[dict[str, Any]]

    @property
    def finished(self) -> bool:
        return self.status not in ("pending", "running")


def _from_outcome(outcome: RunOutcome) -> RunResult:
    run = {
        "run_id": outcome.run_id,
        "status": outcome.status,
        "period_key": outcome.period_key,
        "error": outcome.error,
        "stats": outcome.stats.as_dict() if outcome.stats is not None else {},
        "recorded": outcome.recorded,
    }
    return RunResult(outcome.status, [run])


def _from_rows(rows: list[dict[str, Any]]) -> RunResult:
    if not rows:
        return RunResult("pending", [])
    statuses = {row["status"] for row in rows}
    if "running" in statuses or len(rows) < int(rows[0].get("shards") or 1):
        return RunResult("running", rows)
    for status in ("failed", "skipped"):
        if status in statuses:
            return RunResult(status, rows)
    return RunResult("succeeded", rows)


class Triggers(Protocol):
    mode: str

    def trigger(self, namespace: str, name: str, period_key: str | None, requested_by: str) -> Accepted: ...

    def result(self, namespace: str, name: str, token: str, engine: sa.Engine) -> RunResult | None: ...

    def creditjob(self, namespace: str, name: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


class ClusterTriggers:
    mode = "cluster"

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    def creditjob(self, namespace: str, name: str) -> dict[str, Any]:
        from credit_operator.kube import ApiError as KubeError

        try:
            return self._api.get_creditjob(namespace, name)
        except KubeError as exc:
            if exc.status == 404:
                raise ApiError(404, "not_found", f"CreditJob {namespace}/{name} does not exist") from None
            raise ApiError(
                502, "cluster_unavailable", f"cannot read CreditJob {namespace}/{name}: {exc}", retryable=True
            ) from None

    def trigger(self, namespace: str, name: str, period_key: str | None, requested_by: str) -> Accepted:
        body = self.creditjob(namespace, name)
        if period_key:  # refuse a key the operator would refuse, with a 422 rather than a RunNowRejected Event
            try:
                schedule = parse_creditjob(body).spec.parsed_schedule
            except ConfigError:
                schedule = None
            if schedule is not None:
                _check_period(period_key, lambda: period_start(period_key, schedule.period, schedule.tz))
        token = new_token()
        try:
            request_run(self._api, namespace, name, period_key, token, requested_by)
        except ConfigError as exc:  # the object went away, or the patch was refused
            raise ApiError(502, "cluster_unavailable", str(exc), retryable=True) from None
        return Accepted(token, self.mode, namespace, name, period_key)

    def result(self, namespace: str, name: str, token: str, engine: sa.Engine) -> RunResult | None:
        """The runs of the Job the operator created for `token` (`<name>-m-<hash of token>`), from their audit rows
        (each records its pod's name); pending until the Job's first pod has started."""
        since = datetime.now(UTC) - TOKEN_LOOKBACK
        rows = run_audit.runs_of_job_pods(engine, job=name, pod_prefix=manual_job_name(name, token), since=since)
        return _from_rows(rows)

    def close(self) -> None:
        return None


def _check_period(period_key: str, check: Callable[[], object]) -> None:
    try:
        check()
    except ConfigError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


class LocalTriggers:
    """One worker thread: runs queue behind each other, as CronJob runs with `concurrencyPolicy: Forbid` would."""

    mode = "local"

    def __init__(self, run_engine: Callable[[], sa.Engine], settings: Settings) -> None:
        """`run_engine` makes each run's engine, as `credit-jobs run` does (the lifecycle disposes of it after)."""
        self._run_engine = run_engine
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="credit-jobs-run")
        self._lock = threading.Lock()
        self.pending: list[Future[RunOutcome]] = []
        self._requests: OrderedDict[str, Future[RunOutcome]] = OrderedDict()  # token → run, the latest ones

    def creditjob(self, namespace: str, name: str) -> dict[str, Any]:
        raise ApiError(
            404, "not_in_cluster_mode", "CreditJobs exist only in cluster mode (CREDITJOBS_API_MODE=cluster)"
        )

    def trigger(self, namespace: str, name: str, period_key: str | None, requested_by: str) -> Accepted:
        request = self._request(namespace, name, period_key, requested_by)
        token = new_token()
        with self._lock:
            self.pending = [f for f in self.pending if not f.done()]
            future = self._pool.submit(self._run, request, token)
            self.pending.append(future)
            self._requests[token] = future
            while len(self._requests) > REMEMBERED_REQUESTS:
                self._requests.popitem(last=False)
        return Accepted(token, self.mode, namespace, name, period_key)

    def result(self, namespace: str, name: str, token: str, engine: sa.Engine) -> RunResult | None:
        """None: no such request in this process (tokens live in memory, the latest REMEMBERED_REQUESTS)."""
        with self._lock:
            future = self._requests.get(token)
        if future is None:
            return None
        if not future.done():
            return RunResult("running" if future.running() else "pending", [])
        return _from_outcome(future.result())

    def _request(self, namespace: str, name: str, period_key: str | None, requested_by: str) -> RunRequest:
        if name not in USECASES:
            raise ApiError(
                404, "unknown_job", f"no job {name!r} in local mode: use a usecase name ({', '.join(USECASES)})"
            )
        settings = self._settings
        spec = bind_settings(get_usecase(name), settings)
        if period_key is not None:
            zone = ZoneInfo(settings.creditjob_time_zone)
            _check_period(period_key, lambda: period_start(period_key, spec.default_period, zone))
        return run_request(
            settings,
            spec,
            job=name,
            namespace=namespace,
            trigger=Trigger.MANUAL.value,
            time_zone=settings.creditjob_time_zone,
            pinned_key=period_key,
            requested_by=requested_by,
        )

    def _run(self, request: RunRequest, token: str) -> RunOutcome:
        outcome = execute_run(request, self._run_engine)
        log.info("api.run_finished", token=token, run_id=str(outcome.run_id), status=outcome.status)
        return outcome

    def close(self) -> None:
        """Queued runs are dropped (never started, no audit row); the running one finishes and records itself."""
        self._pool.shutdown(wait=True, cancel_futures=True)
