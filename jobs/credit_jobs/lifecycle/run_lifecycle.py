"""The run lifecycle every usecase runs inside: one path for CLI, CronJob container and HTTP trigger.

One run: an id and a period key, the single-run guard, the usecase in chunks, the audit row, logs, metrics and an exit
code (0 succeeded / skipped, 1 failed, 2 configuration error). `execute_run` lists the steps.
Dry runs skip the guard (they write nothing to the ledger) but still leave an audit row.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError

from credit_jobs.adapters import database, db_clock, run_audit
from credit_jobs.adapters.run_guard import PeriodLock, RunGuard, grant_period_key, guard_key
from credit_jobs.domain.contract import (
    DEFAULT_BATCH_SIZE,
    DISTRIBUTE_CREDITS,
    EXIT_CONFIG_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    IMPORT_SAAS_TEMPLATE,
    ROLLBACK_DISTRIBUTE,
    Trigger,
)
from credit_jobs.domain.errors import ConfigError, CreditJobsError, RunFailed
from credit_jobs.domain.grant_rules import DEFAULT_GRANT_FAMILY
from credit_jobs.domain.period_keys import Period, ResolvedPeriod
from credit_jobs.domain.run_model import RunContext, RunStats, UsecaseSpec
from credit_jobs.domain.schedule import resolve_period
from credit_jobs.domain.sharding import Shard
from credit_jobs.lifecycle.termination import StopRequest, stop_on_sigterm

log = structlog.get_logger()

CLOCK_SKEW_WARNING = timedelta(minutes=1)


@dataclass(frozen=True)
class RunRequest:
    usecase: UsecaseSpec
    job: str
    trigger: str = Trigger.CLI.value
    period: Period | None = None  # default: the usecase's
    schedule: str | None = None
    time_zone: str = "UTC"
    pinned_key: str | None = None
    shard: Shard = field(default_factory=Shard)
    batch_size: int = DEFAULT_BATCH_SIZE
    dry_run: bool = False
    heartbeat_seconds: float = 10.0
    pushgateway_url: str | None = None
    namespace: str | None = None
    grant_family: str = DEFAULT_GRANT_FAMILY
    requested_by: str | None = None  # who asked (API principal, CREDITJOB_REQUESTED_BY); recorded in the audit row


@dataclass(frozen=True)
class RunOutcome:
    run_id: uuid.UUID
    status: str  # succeeded | failed | skipped
    exit_code: int
    period_key: str | None
    stats: RunStats | None = None
    error: str | None = None
    duration_s: float = 0.0
    dry_run: bool = False
    recorded: bool = False  # the run has an audit row (`runs show` finds run_id); False: it failed before starting


Progress = Callable[[int, int | None], None]


def execute_run(
    request: RunRequest,
    engine_factory: Callable[[], sa.Engine],
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress | None = None,
    ledger_clock: Callable[[], datetime] | None = None,
) -> RunOutcome:
    """Run one usecase inside the lifecycle. `clock` is the pod's clock (period resolution, skew check);
    `ledger_clock` replaces the database's clock as the run's "now" — for tests that need a fixed "now" only.

    1. Give the run an id and resolve its period key (pinned, or from the scheduled time — `domain.period_keys`).
    2. Bind the log fields every line carries (docs/contract.md, shared names).
    3. Connect and check the schema version (a bad URL, credentials or database name: exit 2; an unreachable server:
       1). Read the run's "now" from the database (`_run_now`).
    4. Take the single-run guard for (job, period key, shard); if a live run holds it, record *skipped* and exit 0.
       Rows left *running* by a dead holder are closed as failed ("taken over").
    5. Run the usecase in chunks (`usecases.chunk_runner`), checking the guard — and whether SIGTERM asked the run to
       stop (`lifecycle.termination`) — between chunks; heartbeat in the background. The usecase hands back its
       counts after every chunk, so a run that fails later keeps them.
    6. Record the result in the audit row, log the end-of-run line, push metrics; map to an exit code
       (0 succeeded / skipped, 1 failed, 2 configuration error).
    """
    # 1. Identity and period key: from the scheduled time, never the wall clock (unless pinned).
    run_id = uuid.uuid4()
    started = time.monotonic()
    now = clock()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        creditjob=request.job,  # the name the metrics' labels and the operator's log lines use
        usecase=request.usecase.name,
        job_run_id=str(run_id),
        shard=request.shard.index,
        trigger=request.trigger,
        period_key=None,
        **({"namespace": request.namespace} if request.namespace else {}),
    )
    with stop_on_sigterm() as stop:
        outcome = _resolve_and_run(request, engine_factory, clock, progress, ledger_clock, run_id, now, stop)
    outcome = dataclasses.replace(outcome, duration_s=time.monotonic() - started)
    if not outcome.recorded:  # it never started: no audit row, so no line names a run id `runs show` cannot find
        structlog.contextvars.unbind_contextvars("job_run_id")
    _report(request, outcome)
    return outcome


def _resolve_and_run(
    request: RunRequest,
    engine_factory: Callable[[], sa.Engine],
    clock: Callable[[], datetime],
    progress: Progress | None,
    ledger_clock: Callable[[], datetime] | None,
    run_id: uuid.UUID,
    now: datetime,
    stop: StopRequest,
) -> RunOutcome:
    """Steps 1 to 6 after the run's identity; the outcome (not yet reported)."""
    period_key: str | None = None
    try:
        period = resolve_period(
            period=request.period or request.usecase.default_period,
            time_zone=request.time_zone,
            now=now,
            schedule=request.schedule,
            pinned_key=request.pinned_key,
        )
        period_key = period.key
        # 2. Every line from here on names the period.
        structlog.contextvars.bind_contextvars(period_key=period.key)
        # 3. Connect (configuration errors surface here, before anything is written).
        engine = engine_factory()
        database.verify_connection(engine)
        database.verify_schema(engine)
        run_now = _run_now(engine, clock, ledger_clock)
        return _run_guarded(_Run(request, run_id, period, run_now, stop.check), engine, progress)
    except ConfigError as exc:
        return RunOutcome(run_id, "failed", EXIT_CONFIG_ERROR, period_key, error=str(exc))
    except RunFailed as exc:  # retryable before the work started: server unreachable or down, a hung guard holder
        return RunOutcome(run_id, "failed", EXIT_FAILED, period_key, error=str(exc))
    except DBAPIError as exc:  # lost the database between checking it and taking the guard / writing the audit row
        error = f"database error before the work started: {database.first_line(exc)}"
        return RunOutcome(run_id, "failed", EXIT_FAILED, period_key, error=error)


def _run_now(engine: sa.Engine, clock: Callable[[], datetime], ledger_clock: Callable[[], datetime] | None) -> datetime:
    """The run's "now": the database's clock (or a test's fixed one); warns when the pod's clock disagrees.

    One clock for expiry, grant times, cleanup and the audit row; the warning (`run.clock_skew`) fires when the pod's
    clock differs from it by more than `CLOCK_SKEW_WARNING`. The period key is still resolved from the pod's clock
    (step 1): it only picks the latest schedule fire, bounded by the Job's deadlines, and it must be known before the
    database is reached."""
    run_now = ledger_clock() if ledger_clock is not None else db_clock.database_now(engine)
    pod_now = clock()
    skew = pod_now - run_now
    if abs(skew) > CLOCK_SKEW_WARNING:
        log.warning(
            "run.clock_skew",
            pod_time=pod_now.isoformat(),
            database_time=run_now.isoformat(),
            skew_s=round(skew.total_seconds(), 3),
            hint="the run uses the database's time; fix the node's clock (NTP) — the period key still comes from it",
        )
    return run_now


@dataclass(frozen=True)
class _Run:
    """A run whose period is resolved and whose database answered: what steps 4 to 6 work on."""

    request: RunRequest
    run_id: uuid.UUID
    period: ResolvedPeriod
    now: datetime  # the database's clock (or a test's fixed one)
    stop_requested: Callable[[], None]  # raises RunFailed once SIGTERM asked the run to stop

    def identity(self) -> run_audit.RunIdentity:
        request = self.request
        return run_audit.RunIdentity(
            run_id=self.run_id,
            job=request.job,
            usecase=request.usecase.name,
            period_key=self.period.key,
            shard=request.shard.index,
            shards=request.shard.count,
            trigger=request.trigger,
            dry_run=request.dry_run,
            started_at=self.now,
            requested_by=request.requested_by,
        )


def _run_guarded(run: _Run, engine: sa.Engine, progress: Progress | None) -> RunOutcome:
    """Steps 4 to 6: the guard, the audit row, the work, the result. Always disposes of the engine."""
    request = run.request
    # 4. The guard: a transaction advisory lock on a dedicated connection, which dies with its holder.
    lock = request.usecase.grant_period_lock
    guard = RunGuard(
        engine,
        guard_key(request.job, run.period.key, request.shard.index),
        heartbeat_seconds=request.heartbeat_seconds,
        period_lock=None
        if lock is None
        else PeriodLock(grant_period_key(request.grant_family, run.period.key), exclusive=lock == "exclusive"),
    )
    try:
        skipped = _start(run, engine, guard)
        if skipped is not None:
            return skipped
        log.info(
            "run.started",
            dry_run=request.dry_run,
            batch_size=request.batch_size,
            shards=request.shard.count,
            scheduled_at=str(run.period.scheduled_at or ""),
        )
        return _work(run, engine, guard, progress)
    finally:
        guard.release()
        engine.dispose()


def _start(run: _Run, engine: sa.Engine, guard: RunGuard) -> RunOutcome | None:
    """Take the guard and write the *running* audit row; a skipped outcome (recorded) when a live run holds it."""
    identity = run.identity()
    if run.request.dry_run:  # a dry run writes nothing to the ledger: no guard, but an audit row
        run_audit.start_running(engine, identity)
        return None
    if not guard.try_acquire():
        reason = _period_conflict(run, engine) if guard.conflict == "period" else _running_elsewhere(engine, identity)
        run_audit.record_skipped(engine, identity, reason)
        return RunOutcome(run.run_id, "skipped", EXIT_OK, run.period.key, error=reason, recorded=True)
    for old in run_audit.start_running(engine, identity):
        log.warning("run.lease_taken_over", previous_run_id=str(old))
    guard.start_heartbeat(run.run_id)
    return None


def _running_elsewhere(engine: sa.Engine, identity: run_audit.RunIdentity) -> str:
    holder = run_audit.live_holder(engine, identity)
    return f"running elsewhere (run {holder})" if holder else "running elsewhere"


# Who holds a (grant family, period) the other way: distributions share it; a rollback or an import holds it alone.
_EXCLUSIVE_HOLDERS = {ROLLBACK_DISTRIBUTE: "a rollback", IMPORT_SAAS_TEMPLATE: "an import"}


def _period_conflict(run: _Run, engine: sa.Engine) -> str:
    """Why a run could not take its (grant family, period): a run of the other kind holds it."""
    request = run.request
    where = f"of grant family {request.grant_family}, period {run.period.key}, is running"
    if request.usecase.grant_period_lock == "exclusive":
        holders = run_audit.running_of_period(engine, run.period.key, DISTRIBUTE_CREDITS)
        return f"a distribution {where}{_named(holders)}"
    for usecase, kind in _EXCLUSIVE_HOLDERS.items():
        if holders := run_audit.running_of_period(engine, run.period.key, usecase):
            return f"{kind} {where}{_named(holders)}"
    return f"a rollback or an import {where}"


def _named(runs: list[uuid.UUID]) -> str:
    return f" (run {', '.join(map(str, runs))})" if runs else ""


def _work(run: _Run, engine: sa.Engine, guard: RunGuard, progress: Progress | None) -> RunOutcome:
    """5. The usecase, in chunks; 6. its result in the audit row. The run is recorded (its audit row exists)."""
    request = run.request
    committed = _CountsSoFar(engine, run.run_id)
    ctx = RunContext(
        run_id=run.run_id,
        job=request.job,
        usecase=request.usecase.name,
        period=run.period,
        shard=request.shard,
        trigger=request.trigger,
        now=run.now,
        batch_size=request.batch_size,
        dry_run=request.dry_run,
        checkpoint=_checkpoint(run, guard),
        progress=progress or _log_progress(),
        record_counts=committed.record,
        grant_family=request.grant_family,
    )
    try:
        stats = request.usecase.run(engine, ctx)
    except CreditJobsError as exc:  # RunFailed → 1; a ConfigError met mid-run (e.g. no boto3 for s3://) → 2
        return _finish(engine, run, "failed", committed.stats, str(exc), exit_code=exc.exit_code)
    except DBAPIError as exc:
        return _finish(engine, run, "failed", committed.stats, f"database error: {database.first_line(exc)}")
    except Exception as exc:  # a bug: record it, then let the traceback reach the log
        outcome = _finish(engine, run, "failed", committed.stats, f"{type(exc).__name__}: {exc}")
        log.error("run.crashed", traceback=traceback.format_exc())
        return outcome
    if stats.failed:
        return _finish(engine, run, "failed", stats, f"{stats.failed} items failed")
    try:
        guard.check()  # a run whose guard is gone never calls itself succeeded: a successor may hold the period
    except RunFailed as exc:
        return _finish(engine, run, "failed", stats, str(exc), exit_code=exc.exit_code)
    return _finish(engine, run, "succeeded", stats, None)


def _checkpoint(run: _Run, guard: RunGuard) -> Callable[[], None]:
    """Before every chunk: stop if SIGTERM asked to, then make sure the guard is still held."""

    def check() -> None:
        run.stop_requested()
        guard.check()

    return check


class _CountsSoFar:
    """The latest counts a usecase handed over (`RunContext.record_counts`, after every committed chunk): what a
    failed run records. Also written to the run's audit row at once (one single-row UPDATE per chunk), so a run that
    never reaches its own end — SIGKILL, its database or network gone — leaves what it committed in its row, to at
    most the one chunk committed just before it died; the run that takes the row over keeps those counts."""

    def __init__(self, engine: sa.Engine, run_id: uuid.UUID) -> None:
        self._engine, self._run_id = engine, run_id
        self.stats: RunStats | None = None

    def record(self, stats: RunStats) -> None:
        self.stats = stats
        run_audit.record_counts(self._engine, self._run_id, stats.as_dict())


def _finish(
    engine: sa.Engine,
    run: _Run,
    status: str,
    stats: RunStats | None,
    error: str | None,
    *,
    exit_code: int | None = None,
) -> RunOutcome:
    """Record the result in the audit row; the run's outcome (exit code: 0 succeeded, else 1 unless given)."""
    try:
        run_audit.finish(engine, run.run_id, status=status, stats=stats.as_dict() if stats else {}, error=error)
    except DBAPIError as exc:
        # The database is gone: the row stays "running" until the next run takes over (its lock died with us).
        log.error("run.audit_not_recorded", reason=database.first_line(exc))
    if exit_code is None:
        exit_code = EXIT_OK if status == "succeeded" else EXIT_FAILED
    return RunOutcome(
        run.run_id,
        status,
        exit_code,
        run.period.key,
        stats=stats,
        error=error,
        dry_run=run.request.dry_run,
        recorded=True,
    )


def _report(request: RunRequest, outcome: RunOutcome) -> None:
    stats = outcome.stats or RunStats()
    fields = {
        "status": outcome.status,
        "duration_s": round(outcome.duration_s, 3),
        "exit_code": outcome.exit_code,
        **({"dry_run": True} if outcome.dry_run else {}),
        **stats.as_dict(),
    }
    if outcome.error:
        fields["error"] = outcome.error
    if outcome.status == "succeeded":
        log.info("run.finished", **fields)
    elif outcome.status == "skipped":
        log.info("run.skipped", **fields)
    else:
        log.error("run.finished", **fields)
    # Metrics: a skipped run says nothing about the period (the live holder will push); dry runs change nothing.
    if request.pushgateway_url and outcome.status != "skipped" and not request.dry_run:
        # Imported here: prometheus-client is needed only when metrics are pushed (job start-up).
        from credit_jobs.adapters.pushgateway import push_run_metrics
        from credit_jobs.observability.metrics import PUSH_JOB, RunMetrics, grouping_key

        metrics = RunMetrics()
        metrics.record(
            succeeded=outcome.status == "succeeded",
            finished_at=time.time(),
            duration_s=outcome.duration_s,
            items={"processed": stats.processed, "skipped": stats.skipped, "failed": stats.failed},
            credits=stats.credits,
        )
        push_run_metrics(
            request.pushgateway_url,
            metrics.registry,
            job=PUSH_JOB,
            grouping_key=grouping_key(request.namespace, request.job, request.shard.index),
        )


def _log_progress() -> Progress:
    """Plain progress lines (no TTY): one per 10% step."""
    last_step = -1

    def report(done: int, total: int | None) -> None:
        nonlocal last_step
        if not total:
            return
        step = min(10, done * 10 // total)
        if step > last_step:
            last_step = step
            log.info("run.progress", done=done, total=total, percent=step * 10)

    return report
