"""One reconcile pass for one CreditJob: the numbered steps of the operator's control loop (docs/operator.md).

Run for every trigger (create, update, resume, a child Job or the CronJob changing, the periodic resync); every pass
does the whole job, so any trigger converges everything and a missed trigger is repaired by the next one. Decisions
come from the pure planners (`spec_checks`, `cronjob_manifest`, `missed_periods`, `status`); this module only reads
the world through `kube.KubeApi`, applies what they say, and reports each decision through `emit` (which logs it and
posts a Kubernetes Event). `now` is passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from credit_jobs.domain.contract import Trigger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import period_start
from credit_operator import cronjob_manifest as manifests
from credit_operator.creditjob import (
    ANNOTATION_GIVEN_UP,
    ANNOTATION_REQUESTED_BY,
    ANNOTATION_RUN_NOW,
    ANNOTATION_RUN_PERIOD,
    ANNOTATION_RUN_REPORTED,
    CreditJob,
    CreditJobSpec,
    parse_creditjob,
    parse_time,
)
from credit_operator.job_views import child_jobs, runs_to_report
from credit_operator.kube import ApiError, KubeApi
from credit_operator.metrics import CreditJobSample
from credit_operator.missed_periods import (
    RETRY_MAX_ATTEMPTS,
    CatchUpPlan,
    FailedPeriod,
    anchor_time,
    mark_in_progress,
    plan_catch_up,
    plan_retries,
    schedule_adoption,
    track_failed_periods,
)
from credit_operator.spec_checks import check_spec
from credit_operator.status import Observed, build_status, schedule_interval

Emit = Callable[[str, str, str], None]  # (type Normal|Warning, reason, message)


@dataclass
class Outcome:
    """What a pass did: `result` is ok | invalid; the status it wrote; the metric values it observed."""

    result: str
    status: dict[str, Any]
    sample: CreditJobSample | None
    decisions: list[tuple[str, str, str]] = field(default_factory=list)
    missed_keys: list[str] = field(default_factory=list)


def _invalid_placeholder(body: Mapping[str, Any]) -> CreditJob:
    """A CreditJob whose spec could not be parsed, so the status can still say why."""
    meta = body.get("metadata") or {}
    raw = body.get("spec") or {}
    spec = CreditJobSpec(
        usecase=str(raw.get("usecase", "")) if isinstance(raw, Mapping) else "",
        schedule=str(raw.get("schedule", "")) if isinstance(raw, Mapping) else "",
    )
    return CreditJob(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        created_at=None,
        annotations=dict(meta.get("annotations") or {}),
        spec=spec,
        status=dict(body.get("status") or {}),
    )


@dataclass
class _Pass:
    """What one pass has learnt so far, handed from step to step (only `reconcile` creates one)."""

    api: KubeApi
    body: Mapping[str, Any]
    creditjob: CreditJob
    now: datetime
    decide: Emit
    problems: list[str]
    decisions: list[tuple[str, str, str]]
    cronjob: dict[str, Any] | None = None
    foreign: bool = False
    jobs: list[dict[str, Any]] = field(default_factory=list)
    schedule_hash: str | None = None
    schedule_since: datetime | None = None
    failed: tuple[FailedPeriod, ...] = ()  # the owed periods, computed once (step 7), for the plan and the status

    @property
    def previous_conditions(self) -> dict[str, Mapping[str, Any]]:
        return {c.get("type"): c for c in self.creditjob.status.get("conditions") or []}


def reconcile(
    api: KubeApi,
    body: Mapping[str, Any],
    *,
    now: datetime,
    defaults: manifests.ManifestDefaults,
    emit: Emit,
) -> Outcome:
    """One pass; reads come from `api`'s watch cache when it is ready, so a pass in steady state sends nothing."""
    step = _read_creditjob(api, body, now, emit)  # 1 and 2
    if not step.problems:  # 2b: the image and database Secret within the operator's allowlists
        step.problems.extend(manifests.refused_by_policy(step.creditjob.spec, defaults))
    _load_cronjob(step)  # 3
    if not step.problems:
        _converge_cronjob(step, defaults)  # 4
    _report_problems(step)
    # ### 5: Load every child Job (from the watch cache). Status is rebuilt from these and the CronJob.
    step.jobs = [dict(job) for job in api.read_child_jobs(step.creditjob.namespace, step.creditjob.name)]
    manual_token = _handle_run_now(step)  # 6
    plan = _plan_catch_up(step)  # 7
    # ### 8: Under Forbid / Replace, queued catch-up Jobs run one at a time: release the oldest when no run is
    # active (Replace never kills a run to catch up — the periods are all owed).
    spec = step.creditjob.spec
    if not step.problems and not spec.suspend and spec.concurrency_policy != "Allow":
        _release_queued(step)
    status = _write_status(step, plan, manual_token)  # 9
    return _outcome(step, status, plan)  # 10


def _read_creditjob(api: KubeApi, body: Mapping[str, Any], now: datetime, emit: Emit) -> _Pass:
    # ### 1: Read the CreditJob. A spec the schema should have rejected but did not (an old CRD, a body
    # written before the CRD was installed) is treated like any invalid spec below, never as a crash loop.
    problems: list[str] = []
    try:
        creditjob = parse_creditjob(body)
    except ConfigError as exc:
        creditjob = _invalid_placeholder(body)
        problems.extend(getattr(exc, "problems", None) or [str(exc)])  # every problem, each its own Event
    # ### 2: Check what the schema cannot (time zone, a schedule that never fires, deadlines vs. the gap).
    # Invalid → Ready=False and a Warning Event, and the existing CronJob is left exactly as it is: the last
    # good schedule keeps running rather than the billing stopping because of a typo.
    if not problems:
        problems = check_spec(creditjob, now)
    decisions: list[tuple[str, str, str]] = []

    def decide(kind: str, reason: str, message: str) -> None:
        decisions.append((kind, reason, message))
        emit(kind, reason, message)

    return _Pass(api, body, creditjob, now, decide, problems, decisions)


def _load_cronjob(step: _Pass) -> None:
    # ### 3: Load the CronJob (the child Jobs come after it is converged: a new CreditJob gets its CronJob first).
    # Ownership is the owner reference's uid (docs/operator.md, Ownership); someone else's CronJob with our name
    # is never taken over.
    step.cronjob = step.api.read_cronjob(step.creditjob.namespace, step.creditjob.name)
    _check_owner(step)


def _check_owner(step: _Pass) -> None:
    if step.cronjob is not None and manifests.ownership(step.cronjob, step.creditjob) == "foreign":
        step.foreign = True
        step.cronjob = None
        name = step.creditjob.name
        step.problems.append(f"a CronJob named {name} exists and is not managed by this CreditJob; delete or rename it")


def _report_problems(step: _Pass) -> None:
    """One Warning per distinct problem, not one per pass (resyncs would flood the Events)."""
    if not step.problems:
        return
    before = step.previous_conditions.get("Ready") or {}
    message = "; ".join(step.problems)
    if before.get("status") != "False" or before.get("message") != message:
        if step.foreign:
            step.decide("Warning", "CronJobConflict", message)
        else:
            step.decide("Warning", "InvalidSpec", f"spec rejected, CronJob left unchanged: {message}")


def _converge_cronjob(step: _Pass, defaults: manifests.ManifestDefaults) -> None:
    # ### 4: Converge the CronJob: create it when missing, patch it when the spec changed or someone edited it
    # by hand (drift, owner reference and label included). The owner reference (kopf.adopt) makes Kubernetes
    # delete it with the CreditJob, so no finalizer is needed and deletion never waits for the operator.
    creditjob, spec = step.creditjob, step.creditjob.spec
    desired = manifests.build_cronjob(creditjob, defaults)
    kopf.adopt(desired, owner=dict(step.body))  # type: ignore[arg-type]
    fresh = step.cronjob is None and _create_cronjob(step, desired)
    if step.cronjob is None:
        return  # a foreign CronJob has the name: reported as a problem
    if not fresh:
        _patch_drift(step, desired)
    was_suspended = (step.previous_conditions.get("Suspended") or {}).get("status") == "True"
    if spec.suspend and not was_suspended:
        step.decide("Normal", "Suspended", f"suspended: {spec.suspend_reason or 'no reason given'}")
    elif not spec.suspend and was_suspended:
        step.decide("Normal", "Resumed", "schedule resumed")


def _create_cronjob(step: _Pass, desired: dict[str, Any]) -> bool:
    """Create the CronJob without asking first (the cache says it is missing); a 409 means the cache was behind
    or someone else's CronJob has the name: read it once and judge its owner. True when created here."""
    try:
        step.cronjob = step.api.create_cronjob(desired) or desired
    except ApiError as exc:
        if exc.status != 409:
            raise
        step.cronjob = step.api.get_cronjob(step.creditjob.namespace, step.creditjob.name)
        _check_owner(step)
        return False
    spec, name = step.creditjob.spec, step.creditjob.name
    step.decide("Normal", "CronJobCreated", f"created CronJob {name} ({spec.usecase}, {spec.schedule!r})")
    return True


def _patch_drift(step: _Pass, desired: dict[str, Any]) -> None:
    live = step.cronjob or {}
    drifted = manifests.cronjob_drift(desired, live)
    if not drifted:
        return
    name, creditjob = step.creditjob.name, step.creditjob
    patch = manifests.cronjob_patch(desired, live)
    step.cronjob = step.api.patch_cronjob(creditjob.namespace, name, patch) or step.cronjob
    if int(creditjob.status.get("observedGeneration") or 0) != creditjob.generation:
        step.decide("Normal", "CronJobUpdated", f"updated CronJob {name}: {', '.join(drifted[:5])}")
    else:
        step.decide("Normal", "DriftReverted", f"reverted hand edits of CronJob {name}: {', '.join(drifted[:5])}")


def _handle_run_now(step: _Pass) -> str | None:
    # ### 6: Run-now. The annotation's token is recorded in status once handled, so a resync or an operator
    # restart never runs it twice; the Job name derives from the token, so even a crash between creating the
    # Job and recording the token makes the retry conflict instead of running twice.
    creditjob = step.creditjob
    token = creditjob.annotations.get(ANNOTATION_RUN_NOW, "").strip()
    # An overlong token is never copied into a Job or status: it is remembered by a short digest (so the rejection
    # is not repeated every pass) and rejected. `credit-jobs trigger` tokens are 25 characters.
    remembered = (
        token if len(token) <= MAX_RUN_NOW_TOKEN else "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    )
    if not token or remembered == creditjob.status.get("lastManualRunToken"):
        return None
    if remembered != token:
        step.decide(
            "Warning",
            "RunNowRejected",
            f"run-now ignored: the {ANNOTATION_RUN_NOW} token is {len(token)} characters, longer than "
            f"{MAX_RUN_NOW_TOKEN} characters (use `credit-jobs trigger`, or a short unique value)",
        )
        return remembered
    created = _run_now(step, token)
    if created is not None:
        step.jobs.append(created)
    return remembered


def _plan_catch_up(step: _Pass) -> CatchUpPlan | None:
    # ### 7: Catch up missed periods (after downtime, or fire times the CronJob controller skipped): one Job
    # per missed period, oldest first, period key pinned, capped at catchUp.maxPeriods. Nothing is caught up
    # while suspended: those fire times were skipped on purpose, so the bookkeeping moves past them. Only fires of
    # the schedule in force count (`scheduleSince`); periods whose runs all failed stay owed and are retried with
    # a bound and backoff (`missed_periods.plan_retries`).
    creditjob, spec, now = step.creditjob, step.creditjob.spec, step.now
    step.schedule_hash, step.schedule_since = schedule_adoption(creditjob, now, invalid=bool(step.problems))
    views = child_jobs(step.jobs, creditjob)
    # The owed periods, once per pass; an invalid spec keeps the recorded list as it is.
    step.failed = track_failed_periods(creditjob, [] if step.problems else views, now)
    if step.problems:
        return None
    if spec.suspend:
        return CatchUpPlan((), (), now)
    if step.cronjob is None:
        return None
    plan = plan_catch_up(
        schedule=spec.parsed_schedule,
        anchor=anchor_time(creditjob, views, step.cronjob, now, step.schedule_since),
        now=now,
        starting_deadline_seconds=spec.starting_deadline_seconds,
        max_periods=spec.catch_up_max_periods,
        covered_keys={v.period_key for v in views if v.period_key} | {f.key for f in step.failed},
    )
    created = _catch_up(step, step.cronjob, plan)
    step.jobs += created
    step.failed = mark_in_progress(step.failed, child_jobs(created, creditjob))  # retries just created: in progress
    return plan


def _write_status(step: _Pass, plan: CatchUpPlan | None, manual_token: str | None) -> dict[str, Any]:
    # ### 9: Rebuild the status from the world and write it when it changed.
    creditjob = step.creditjob
    observed = Observed(
        problems=step.problems,
        cronjob=step.cronjob,
        plan=plan,
        manual_token=manual_token,
        schedule_hash=step.schedule_hash,
        schedule_since=step.schedule_since,
        failed=step.failed,
    )
    status = build_status(creditjob, step.jobs, observed, step.now)
    if status != {key: creditjob.status.get(key) for key in status}:
        step.api.patch_creditjob_status(creditjob.namespace, creditjob.name, status)
    # One RunSucceeded / RunFailed Event per finished Job, marked on the Job only now that the status recording its
    # outcome (an owed period) is written: a failed write leaves it unmarked, so the next pass counts it again.
    _report_finished_runs(step)
    return status


def _outcome(step: _Pass, status: dict[str, Any], plan: CatchUpPlan | None) -> Outcome:
    # ### 10: Hand the metric values back (handlers.py sets the gauges; missed periods are counted once).
    creditjob, spec, problems = step.creditjob, step.creditjob.spec, step.problems
    sample = CreditJobSample(
        name=creditjob.name,
        namespace=creditjob.namespace,
        usecase=spec.usecase,
        schedule=spec.schedule,
        suspended=spec.suspend,
        last_success=_timestamp(status.get("lastSuccessfulTime")),
        next_schedule=_timestamp(status.get("nextScheduleTime")),
        interval=schedule_interval(spec.parsed_schedule, step.now) if not problems else 0.0,
        active_runs=len(status["active"]),
        created=creditjob.created_at.timestamp() if creditjob.created_at else 0.0,
        failed_periods=len(status["failedPeriods"]),
    )
    missed_keys = [m.key for m in plan.missed] if plan else []
    # Given-up periods the new status has and the previous one lacked: this pass's, or ones read back from catch-up
    # Jobs whose pass died before its status write (counted now, once).
    reported_before = set(creditjob.status.get("missedPeriods") or [])
    missed_keys += [k for k in status["missedPeriods"] if k not in reported_before and k not in missed_keys]
    return Outcome("invalid" if problems else "ok", status, sample, step.decisions, missed_keys)


def _timestamp(value: Any) -> float:
    moment = parse_time(value)
    return moment.timestamp() if moment else 0.0


def _create_job(api: KubeApi, job: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create a Job; (object, True) when created, (existing, False) when the deterministic name was taken."""
    try:
        return (api.create_job(job) or job), True
    except ApiError as exc:
        if exc.status == 409:
            return job, False
        raise


# Longest run-now token accepted: a label value's limit, far above `credit-jobs trigger`'s 25 characters.
MAX_RUN_NOW_TOKEN = 63


def _run_now(step: _Pass, token: str) -> dict[str, Any] | None:
    """Create the run-now Job, or reject the request with a Warning (the token is recorded either way, so a
    bad request is not retried forever; a new token asks again)."""
    api, creditjob, cronjob, decide = step.api, step.creditjob, step.cronjob, step.decide
    if step.problems or cronjob is None:
        decide("Warning", "RunNowRejected", f"run-now {token!r} ignored: the spec is invalid")
        return None
    spec = creditjob.spec
    # Only the canonical spelling (docs/period-keys.md): the key is checked as given, not trimmed, exactly as the
    # Job's `credit-jobs run` would check it — a refused key is reported here instead of failing a Job.
    period_key = creditjob.annotations.get(ANNOTATION_RUN_PERIOD) or None
    if period_key:
        try:
            schedule = spec.parsed_schedule
            period_start(period_key, schedule.period, schedule.tz)
        except ConfigError as exc:
            decide("Warning", "RunNowRejected", f"run-now {token!r} ignored: {exc}")
            return None
    job = manifests.build_job_from_cronjob(
        cronjob,
        name=manifests.manual_job_name(creditjob.name, token),
        trigger=Trigger.MANUAL.value,
        period_key=period_key,
        token=token,
        requested_by=creditjob.annotations.get(ANNOTATION_REQUESTED_BY) or None,
    )
    kopf.adopt(job, owner=dict(cronjob))  # type: ignore[arg-type]
    created, fresh = _create_job(api, job)
    if not fresh and _token_recorded(api, creditjob, token):
        return created  # a pass read a CreditJob older than the status write that finished this request
    # A taken name with the token not in status: a pass that died after the create made this Job, maybe before
    # its Event. The request is finished (and reported) here; an Event twice beats a run nobody was told about.
    what = f"period {period_key}" if period_key else "the current period"
    how = "created" if fresh else "found (created by a pass that did not finish)"
    decide("Normal", "RunNow", f"{how} Job {job['metadata']['name']} for {what} (token {token})")
    return created


def _token_recorded(api: KubeApi, creditjob: CreditJob, token: str) -> bool:
    """Whether the API server's CreditJob (not the watch cache's, which may lag) has handled `token`; one GET,
    only when a run-now Job's name was taken."""
    try:
        current = api.get_creditjob(creditjob.namespace, creditjob.name)
    except ApiError as exc:
        if exc.status == 404:
            return True  # deleted meanwhile: nobody to report to
        raise
    return bool((current.get("status") or {}).get("lastManualRunToken") == token)


def _catch_up(step: _Pass, cronjob: Mapping[str, Any], plan: CatchUpPlan) -> list[dict[str, Any]]:
    """Create the Jobs the plan says (missed periods) and the retries that are due (the pass's owed periods)."""
    creditjob, decide, failed = step.creditjob, step.decide, step.failed
    spec = creditjob.spec
    created_jobs: list[dict[str, Any]] = []
    if plan.given_up:
        decide(
            "Warning",
            "PeriodsMissed",
            f"missed periods {', '.join(m.key for m in plan.given_up)} are beyond catchUp.maxPeriods="
            f"{spec.catch_up_max_periods} and will not be run automatically",
        )
    _report_owed(step)
    state = "queued" if spec.concurrency_policy != "Allow" else "started"
    given_up = ",".join(m.key for m in plan.given_up)
    for missed in plan.to_run:
        name, created = _create_catch_up_job(step, cronjob, missed.key, missed.fire_time, missed.key, given_up=given_up)
        if created is not None:
            created_jobs.append(created)
            decide(
                "Normal",
                "CatchUp",
                f"{state} Job {name} for missed period {missed.key} (fire time {missed.fire_time.isoformat()})",
            )
    for period in plan_retries(failed, step.now, spec.catch_up_retry_failed):
        suffix = period.retry_job_suffix()
        name, created = _create_catch_up_job(step, cronjob, period.key, period.fire_time, suffix)
        if created is not None:
            created_jobs.append(created)
            decide(
                "Normal",
                "PeriodRetry",
                f"{state} Job {name} for failed period {period.key} (run {period.attempts + 1} of at most "
                f"{RETRY_MAX_ATTEMPTS})",
            )
    return created_jobs


def _create_catch_up_job(
    step: _Pass,
    cronjob: Mapping[str, Any],
    period_key: str,
    fire_time: datetime | None,
    name_seed: str,
    *,
    given_up: str = "",
) -> tuple[str, dict[str, Any] | None]:
    """One catch-up Job, pinned to the period (queued under Forbid / Replace); (name, None) if it existed. `given_up`:
    the periods its pass gave up, recorded on it (ANNOTATION_GIVEN_UP) so a crash before the status write loses none."""
    creditjob = step.creditjob
    job = manifests.build_job_from_cronjob(
        cronjob,
        name=manifests.catch_up_job_name(creditjob.name, name_seed),
        trigger=Trigger.CATCH_UP.value,
        period_key=period_key,
        scheduled_time=fire_time,
        suspend=creditjob.spec.concurrency_policy != "Allow",
    )
    if given_up:
        job["metadata"].setdefault("annotations", {})[ANNOTATION_GIVEN_UP] = given_up
    kopf.adopt(job, owner=dict(cronjob))  # type: ignore[arg-type]
    created, fresh = _create_job(step.api, job)
    return job["metadata"]["name"], created if fresh else None


def _report_owed(step: _Pass) -> None:
    """A Warning each time a period becomes owed or fails again (not every pass: the attempts are in status)."""
    creditjob, failed, decide = step.creditjob, step.failed, step.decide
    before = {
        entry.get("period"): entry.get("attempts")
        for entry in creditjob.status.get("failedPeriods") or []
        if isinstance(entry, Mapping)
    }
    for period in failed:
        if before.get(period.key) == period.attempts:
            continue
        retry = period.next_retry(creditjob.spec.catch_up_retry_failed)
        if retry is not None:
            then = f"retry {period.attempts + 1} of at most {RETRY_MAX_ATTEMPTS} at {retry.isoformat()}"
        elif period.permanent:
            then = "exit code 2 (configuration error): not retried automatically"
        else:
            then = "not retried automatically (catchUp.retryFailed is off or the attempts are used up)"
        decide(
            "Warning",
            "PeriodFailed",
            f"period {period.key} is owed: {period.attempts} run(s) failed ({period.reason[:200]}); {then}; "
            f"run it with `credit-jobs trigger {creditjob.name} --period-key {period.key}`",
        )


def _report_finished_runs(step: _Pass) -> None:
    """Post RunSucceeded / RunFailed once per finished Job: the Job is marked first (ANNOTATION_RUN_REPORTED), so
    neither a later pass nor a restarted operator reports it again (a lost Event is logged, never repeated)."""
    api, creditjob, decide = step.api, step.creditjob, step.decide
    for view, kind, reason, message in runs_to_report(child_jobs(step.jobs, creditjob), step.now):
        patch = {"metadata": {"annotations": {ANNOTATION_RUN_REPORTED: view.state}}}
        try:
            api.patch_job(creditjob.namespace, view.name, patch)
        except ApiError as exc:
            if exc.status == 404:
                continue  # deleted meanwhile (history limit, CronJob deleted): nobody will look for it
            raise
        decide(kind, reason, message)


def _sort_time(moment: datetime | None) -> float:
    return moment.timestamp() if moment else float("inf")


def _release_queued(step: _Pass) -> None:
    api, creditjob, jobs, decide = step.api, step.creditjob, step.jobs, step.decide
    views = child_jobs(jobs, creditjob)
    if any(v.state == "active" for v in views):
        return
    queued = [v for v in views if v.state == "queued" and v.trigger == Trigger.CATCH_UP]
    if not queued:
        return
    oldest = min(queued, key=lambda v: (_sort_time(v.scheduled_time or v.created_at), v.name))
    released = api.patch_job(creditjob.namespace, oldest.name, {"spec": {"suspend": False}})
    for index, job in enumerate(jobs):
        if (job.get("metadata") or {}).get("name") == oldest.name:
            jobs[index] = released or {**job, "spec": {**job.get("spec", {}), "suspend": False}}
    decide("Normal", "CatchUpStarted", f"started queued Job {oldest.name} for missed period {oldest.period_key}")
