"""One reconcile pass for one CreditJob: the numbered steps of the operator's control loop (docs/operator.md).

Called by `handlers.py` for every trigger (create, update, resume, a child Job or the CronJob changing, the
periodic resync); every pass does the whole job, so any trigger converges everything and a missed trigger is
repaired by the next one. Decisions come from the pure planners (`spec_checks`, `cronjob_manifest`,
`missed_periods`, `status`); this module only reads the world through `kube.KubeApi`, applies what they say,
and reports each decision through `emit` (Kopf turns it into a Kubernetes Event). `now` is passed in.
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
    ANNOTATION_REQUESTED_BY,
    ANNOTATION_RUN_NOW,
    ANNOTATION_RUN_PERIOD,
    LABEL_CREDITJOB,
    CreditJob,
    CreditJobSpec,
    parse_creditjob,
    parse_time,
)
from credit_operator.kube import ApiError, KubeApi
from credit_operator.metrics import CreditJobSample
from credit_operator.missed_periods import CatchUpPlan, plan_catch_up
from credit_operator.spec_checks import check_spec
from credit_operator.status import Observed, anchor_time, build_status, child_jobs, schedule_interval

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


def reconcile(
    api: KubeApi,
    body: Mapping[str, Any],
    *,
    now: datetime,
    defaults: manifests.ManifestDefaults,
    emit: Emit,
) -> Outcome:
    decisions: list[tuple[str, str, str]] = []

    def decide(kind: str, reason: str, message: str) -> None:
        decisions.append((kind, reason, message))
        emit(kind, reason, message)

    # ### 1: Read the CreditJob. A spec the schema should have rejected but did not (an old CRD, a body
    # written before the CRD was installed) is treated like any invalid spec below, never as a crash loop.
    problems: list[str] = []
    try:
        creditjob = parse_creditjob(body)
    except ConfigError as exc:
        creditjob = _invalid_placeholder(body)
        problems.extend(getattr(exc, "problems", None) or [str(exc)])  # every problem, each its own Event
    spec = creditjob.spec
    ns, name = creditjob.namespace, creditjob.name
    previous_conditions = {c.get("type"): c for c in creditjob.status.get("conditions") or []}

    # ### 2: Check what the schema cannot (time zone, a schedule that never fires, deadlines vs. the gap).
    # Invalid → Ready=False and a Warning Event, and the existing CronJob is left exactly as it is: the last
    # good schedule keeps running rather than the billing stopping because of a typo.
    if not problems:
        problems = check_spec(creditjob, now)

    # ### 3: Load the CronJob (the child Jobs come after it is converged: a new CreditJob gets its CronJob first).
    # Someone else's CronJob with our name is never taken over.
    cronjob = api.get_cronjob(ns, name)
    foreign = cronjob is not None and ((cronjob.get("metadata") or {}).get("labels") or {}).get(LABEL_CREDITJOB) != name
    if foreign:
        problems.append(f"a CronJob named {name} exists and is not managed by this CreditJob; delete or rename it")
        cronjob = None
    if problems:
        # One Warning per distinct problem, not one per pass (resyncs would flood the Events).
        before = previous_conditions.get("Ready") or {}
        message = "; ".join(problems)
        if before.get("status") != "False" or before.get("message") != message:
            if foreign:
                decide("Warning", "CronJobConflict", message)
            else:
                decide("Warning", "InvalidSpec", f"spec rejected, CronJob left unchanged: {message}")

    # ### 4: Converge the CronJob: create it when missing, patch it when the spec changed or someone edited it
    # by hand (drift). The owner reference (kopf.adopt) makes Kubernetes delete it with the CreditJob, so no
    # finalizer is needed and deletion never waits for the operator.
    if not problems:
        desired = manifests.build_cronjob(creditjob, defaults)
        kopf.adopt(desired, owner=dict(body))  # type: ignore[arg-type]
        if cronjob is None:
            cronjob = api.create_cronjob(desired) or desired
            decide("Normal", "CronJobCreated", f"created CronJob {name} ({spec.usecase}, {spec.schedule!r})")
        else:
            drifted = manifests.drift(desired["spec"], cronjob.get("spec")) + [
                f"metadata.labels.{path}"
                for path in manifests.drift(desired["metadata"]["labels"], cronjob["metadata"].get("labels"))
            ]
            if drifted:
                patch = {"metadata": {"labels": desired["metadata"]["labels"]}, "spec": desired["spec"]}
                cronjob = api.patch_cronjob(ns, name, patch) or cronjob
                changed_spec = int(creditjob.status.get("observedGeneration") or 0) != creditjob.generation
                if changed_spec:
                    decide("Normal", "CronJobUpdated", f"updated CronJob {name}: {', '.join(drifted[:5])}")
                else:
                    decide(
                        "Normal", "DriftReverted", f"reverted hand edits of CronJob {name}: {', '.join(drifted[:5])}"
                    )
        was_suspended = (previous_conditions.get("Suspended") or {}).get("status") == "True"
        if spec.suspend and not was_suspended:
            decide("Normal", "Suspended", f"suspended: {spec.suspend_reason or 'no reason given'}")
        elif not spec.suspend and was_suspended:
            decide("Normal", "Resumed", "schedule resumed")

    # ### 5: Load every child Job. Status is rebuilt from these and the CronJob, never from memory.
    jobs = [
        job
        for job in api.list_jobs(ns, f"{LABEL_CREDITJOB}={name}")
        if ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_CREDITJOB) == name
    ]

    # ### 6: Run-now. The annotation's token is recorded in status once handled, so a resync or an operator
    # restart never runs it twice; the Job name derives from the token, so even a crash between creating the
    # Job and recording the token makes the retry conflict instead of running twice.
    manual_token: str | None = None
    token = creditjob.annotations.get(ANNOTATION_RUN_NOW, "").strip()
    # An overlong token is never copied into a Job or status: it is remembered by a short digest (so the rejection
    # is not repeated every pass) and rejected. `credit-jobs trigger` tokens are 25 characters.
    remembered = (
        token if len(token) <= MAX_RUN_NOW_TOKEN else "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    )
    if token and remembered != creditjob.status.get("lastManualRunToken"):
        manual_token = remembered
        if remembered != token:
            decide(
                "Warning",
                "RunNowRejected",
                f"run-now ignored: the {ANNOTATION_RUN_NOW} token is {len(token)} characters, longer than "
                f"{MAX_RUN_NOW_TOKEN} characters (use `credit-jobs trigger`, or a short unique value)",
            )
            created = None
        else:
            created = _run_now(api, creditjob, cronjob, token, problems, decide)
        if created is not None:
            jobs.append(created)

    # ### 7: Catch up missed periods (after downtime, or fire times the CronJob controller skipped): one Job
    # per missed period, oldest first, period key pinned, capped at catchUp.maxPeriods. Nothing is caught up
    # while suspended: those fire times were skipped on purpose, so the bookkeeping moves past them.
    plan: CatchUpPlan | None = None
    if spec.suspend and not problems:
        plan = CatchUpPlan((), (), now)
    elif not problems and cronjob is not None:
        views = child_jobs(jobs, creditjob)
        plan = plan_catch_up(
            schedule=spec.parsed_schedule,
            anchor=anchor_time(creditjob, views, cronjob, now),
            now=now,
            starting_deadline_seconds=spec.starting_deadline_seconds,
            max_periods=spec.catch_up_max_periods,
            covered_keys={v.period_key for v in views if v.period_key},
        )
        jobs += _catch_up(api, creditjob, cronjob, plan, decide)

    # ### 8: Under Forbid / Replace, queued catch-up Jobs run one at a time: release the oldest when no run is
    # active (Replace never kills a run to catch up — the periods are all owed).
    if not problems and not spec.suspend and spec.concurrency_policy != "Allow":
        _release_queued(api, creditjob, jobs, decide)

    # ### 9: Rebuild the status from the world and write it when it changed.
    status = build_status(
        creditjob, jobs, Observed(problems=problems, cronjob=cronjob, plan=plan, manual_token=manual_token), now
    )
    current = {key: creditjob.status.get(key) for key in status}
    if status != current:
        api.patch_creditjob_status(ns, name, status)

    # ### 10: Hand the metric values back (handlers.py sets the gauges; missed periods are counted once).
    sample = CreditJobSample(
        name=name,
        namespace=ns,
        usecase=spec.usecase,
        schedule=spec.schedule,
        suspended=spec.suspend,
        last_success=_timestamp(status.get("lastSuccessfulTime")),
        next_schedule=_timestamp(status.get("nextScheduleTime")),
        interval=schedule_interval(spec.parsed_schedule, now) if not problems else 0.0,
        active_runs=len(status["active"]),
        created=creditjob.created_at.timestamp() if creditjob.created_at else 0.0,
    )
    missed_keys = [m.key for m in plan.missed] if plan else []
    return Outcome("invalid" if problems else "ok", status, sample, decisions, missed_keys)


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


def _run_now(
    api: KubeApi,
    creditjob: CreditJob,
    cronjob: Mapping[str, Any] | None,
    token: str,
    problems: list[str],
    decide: Callable[[str, str, str], None],
) -> dict[str, Any] | None:
    """Create the run-now Job, or reject the request with a Warning (the token is recorded either way, so a
    bad request is not retried forever; a new token asks again)."""
    if problems or cronjob is None:
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
    if fresh:
        what = f"period {period_key}" if period_key else "the current period"
        decide("Normal", "RunNow", f"created Job {job['metadata']['name']} for {what} (token {token})")
    return created


def _catch_up(
    api: KubeApi,
    creditjob: CreditJob,
    cronjob: Mapping[str, Any],
    plan: CatchUpPlan,
    decide: Callable[[str, str, str], None],
) -> list[dict[str, Any]]:
    spec = creditjob.spec
    created_jobs: list[dict[str, Any]] = []
    if plan.given_up:
        decide(
            "Warning",
            "PeriodsMissed",
            f"missed periods {', '.join(m.key for m in plan.given_up)} are beyond catchUp.maxPeriods="
            f"{spec.catch_up_max_periods} and will not be run automatically",
        )
    queue = spec.concurrency_policy != "Allow"
    for missed in plan.to_run:
        job = manifests.build_job_from_cronjob(
            cronjob,
            name=manifests.catch_up_job_name(creditjob.name, missed.key),
            trigger=Trigger.CATCH_UP.value,
            period_key=missed.key,
            scheduled_time=missed.fire_time,
            suspend=queue,
        )
        kopf.adopt(job, owner=dict(cronjob))  # type: ignore[arg-type]
        created, fresh = _create_job(api, job)
        if fresh:
            created_jobs.append(created)
            state = "queued" if queue else "started"
            decide(
                "Normal",
                "CatchUp",
                f"{state} Job {job['metadata']['name']} for missed period {missed.key} "
                f"(fire time {missed.fire_time.isoformat()})",
            )
    return created_jobs


def _sort_time(moment: datetime | None) -> float:
    return moment.timestamp() if moment else float("inf")


def _release_queued(
    api: KubeApi, creditjob: CreditJob, jobs: list[dict[str, Any]], decide: Callable[[str, str, str], None]
) -> None:
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
