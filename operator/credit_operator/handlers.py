"""Kopf wiring: which events start a reconcile pass, plus the operator-wide start-up and periodic resync.

Thin by design: every trigger ends in `run_pass`. No timers or daemons on CreditJobs: Kopf puts a finalizer on objects
with those, and deletion must never wait for the operator (owner references clean up). Loaded as a Kopf module
(`kopf run -m credit_operator.handlers`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from credit_operator import metrics, pushgateway
from credit_operator.creditjob import GROUP, KIND, LABEL_CREDITJOB, PLURAL, VERSION, format_time
from credit_operator.kube import ApiError, KubeApi, connect
from credit_operator.logs import fields
from credit_operator.reconcile import Outcome, reconcile
from credit_operator.settings import OperatorSettings

log = logging.getLogger("credit_operator")


def _now() -> datetime:
    return datetime.now(UTC)


# The operator's only clock: tests replace it to simulate downtime without waiting for it.
clock: Callable[[], datetime] = _now

# How soon a failed pass is retried by Kopf (API unavailable, conflict on a status write…).
RETRY_DELAY = 5.0

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(namespace: str, name: str) -> threading.Lock:
    # One pass at a time per CreditJob: triggers arrive from several watch streams at once.
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


# Kopf's own bookkeeping lives under a prefix of its own. Under `credits.dev/` Kopf marked the object
# (`credits.dev/kopf-managed`) and from then on dropped *every* `credits.dev/` annotation from the state it diffs —
# including `credits.dev/run-now`, so a run-now fired no update handler and waited for the resync.
# A `kopf.` prefix is never marked, and Kopf ignores only its own keys under it.
KOPF_PREFIX = f"kopf.{GROUP}"

# What older versions (storage prefix `credits.dev`) left on CreditJobs. While the marker stays, Kopf would keep
# ignoring run-now on that object, so every pass removes them (`_forget_legacy_kopf_keys`).
LEGACY_KOPF_KEYS = frozenset(
    f"{GROUP}/{name}"
    for name in (
        "kopf-managed",  # the marker that made Kopf ignore the whole prefix
        "last-handled-configuration",  # diff base
        "touch-dummy",  # progress storage's touch key
        "creditjob_changed",  # progress of the one change handler (its id is the function name)
    )
)


def configure(settings: kopf.OperatorSettings, config: OperatorSettings) -> None:
    """Kopf settings that do not depend on the environment of a test or a cluster."""
    # Kopf's own bookkeeping goes to annotations (not into status, which the CRD defines), see KOPF_PREFIX.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX)
    settings.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"  # only used if a handler ever needs one
    # Handlers are sync (blocking HTTP through the kubernetes client): enough threads for bursts of creates.
    settings.execution.max_workers = max(settings.execution.max_workers or 0, 16)
    # Kopf waits this long for the echo of its own diff-base PATCH before it handles an older event of the object
    # as if nothing had been handled: in a burst on a slow API server the 5 s default ran the create handler a
    # second time (and patched the diff base again), a request the cost per CreditJob does not need.
    settings.persistence.consistency_timeout = max(settings.persistence.consistency_timeout, 30.0)
    settings.posting.level = logging.INFO
    # The chart installs the CRD before the operator starts, so Kopf's start-up scan (the API's discovery documents,
    # readable by any account) finds it; watching CRDs and namespaces at runtime would need cluster-wide RBAC that
    # serves nothing else (least privilege: rbac.discovery, off by default, switches it back on).
    settings.scanning.disabled = not config.watch_crds


# HTTP connections beyond Kopf's worker threads: the resync task and its LISTs, a handful of Kopf's own requests.
# (The Lease elector has a client of its own; Kopf runs standalone, with no peering.)
EXTRA_CONNECTIONS = 4


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorSettings = memo.get("config") or OperatorSettings()
    memo["config"] = config
    configure(settings, config)
    memo["api"] = KubeApi(connect(pool_size=(settings.execution.max_workers or 0) + EXTRA_CONNECTIONS))
    if memo.get("identity"):  # which replica made a request, in the API server's audit log (and the tests' count)
        memo["api"].client.user_agent = f"credit-jobs-operator/{memo['identity']}"
    # The periodic task runs in Kopf's loop, so only in the leader (Kopf runs there only).
    memo["resync"] = asyncio.create_task(_resync_forever(memo))


# After Kopf stopped on its own, how long the process may take to end before it is ended (non-daemon threads
# blocked on a dead API must not keep a zombie without a liveness endpoint alive).
EXIT_GRACE_SECONDS = 10.0
EXIT_CODE_KOPF_STOPPED = 1


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for key in ("resync",):
        task: asyncio.Task[None] | None = memo.get(key)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    stop_requested: threading.Event | None = memo.get("stop_requested")  # set by `credit-jobs operator`
    if stop_requested is not None and not stop_requested.is_set():
        # Nobody asked to stop: Kopf gave up (e.g. after a long API outage: "… has failed" →
        # "Multidimensional multitasker has failed"). A process that stays up would do nothing, forever.
        memo["kopf_stopped"] = True
        log.error(
            "Kopf stopped on its own (see the errors above); the operator exits with code %d so that its "
            "supervisor restarts it",
            EXIT_CODE_KOPF_STOPPED,
        )
        timer = threading.Timer(EXIT_GRACE_SECONDS, exit_now, (EXIT_CODE_KOPF_STOPPED,))
        timer.daemon = True
        timer.start()


def exit_now(code: int) -> None:
    logging.shutdown()  # flush the last lines
    os._exit(code)


def run_pass(memo: kopf.Memo, namespace: str, name: str) -> Outcome | None:
    """One reconcile pass for one CreditJob, or None when it no longer exists.

    Every trigger ends here: CreditJob create / update / resume (operator start), a child Job changing (status,
    catch-up queue), the owned CronJob changing or disappearing (drift), and the resync (`_resync_forever`). The pass
    takes a per-CreditJob lock, reads the CreditJob from the watch cache (cache.py, fed by the event handlers below
    and by the operator's own writes), calls `reconcile.reconcile` with `clock()`, posts its decisions as Kubernetes
    Events (through the same API client, so a pass from the resync task reports exactly like one from a Kopf
    handler) and sets the metrics.

    The CreditJob is read *inside* the lock from the watch cache, which also holds the answer to every write the
    operator made (newest resourceVersion wins): a body handed over by Kopf or a resync LIST may predate the
    status the previous pass just wrote (a stale `lastManualRunToken`, `catchUpThrough` or generation would
    make this pass redo or misreport decisions). A cache miss reads from the API server.
    """
    api: KubeApi = memo["api"]
    config: OperatorSettings = memo["config"]
    with _lock_for(namespace, name):
        started = time.perf_counter()
        try:
            cached = api.read_creditjob(namespace, name)
            if cached is None:
                return None
            body = _forget_legacy_kopf_keys(api, cached)

            now = clock()

            def emit(kind: str, reason: str, message: str) -> None:
                log.log(
                    logging.WARNING if kind == "Warning" else logging.INFO,
                    "%s/%s %s: %s",
                    namespace,
                    name,
                    reason,
                    message,
                    extra=fields(namespace, name, reason, message),
                )
                try:
                    api.post_event(body, kind, reason, message, format_time(now) or "")
                except ApiError as exc:  # best effort: an Event lost must not undo the decision it reports
                    log.warning("cannot post Event %s for %s/%s: %s", reason, namespace, name, exc)

            outcome = reconcile(api, body, now=now, defaults=config.manifest_defaults(), emit=emit)
        except Exception:
            metrics.RECONCILE_TOTAL.labels(result="error").inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
    metrics.RECONCILE_TOTAL.labels(result=outcome.result).inc()
    if outcome.sample is not None:
        metrics.observe_creditjob(outcome.sample)
    metrics.count_missed(name, namespace, outcome.missed_keys)
    return outcome


def _forget_legacy_kopf_keys(api: KubeApi, body: dict[str, Any]) -> dict[str, Any]:
    """Remove the Kopf annotations an older operator version left under `credits.dev/` (see LEGACY_KOPF_KEYS).

    A no-op (no request) once they are gone. Kopf sees the patch as a change of annotations and handles it like
    any update, so a run-now already on the object is acted on (at most once: the token is kept in status).
    """
    meta = body.get("metadata") or {}
    stale = sorted(LEGACY_KOPF_KEYS.intersection(meta.get("annotations") or {}))
    if not stale:
        return body
    log.info("%s/%s: removing old Kopf annotations %s", meta.get("namespace"), meta.get("name"), ", ".join(stale))
    return api.patch_creditjob(
        meta.get("namespace", ""), meta.get("name", ""), {"metadata": {"annotations": dict.fromkeys(stale)}}
    )


def _pass_or_retry(memo: kopf.Memo, namespace: str, name: str) -> None:
    try:
        run_pass(memo, namespace, name)
    except ApiError as exc:
        # Kopf retries change handlers after the delay; watch-event handlers rely on the next event/resync.
        raise kopf.TemporaryError(f"API call failed: {exc}", delay=RETRY_DELAY) from exc


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def creditjob_changed(meta: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    """Created, changed (spec, labels, the run-now annotation), or seen again at operator start."""
    _pass_or_retry(memo, meta["namespace"], meta["name"])


@kopf.on.event(GROUP, VERSION, PLURAL)
async def creditjob_deleted(event: Mapping[str, Any], meta: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    """Deleted: owner references remove the CronJob and Jobs; the metric series and pushed groups are ours to drop."""
    if event.get("type") == "DELETED":
        await _forget_creditjob(memo, meta["namespace"], meta["name"])


async def _forget_creditjob(memo: kopf.Memo, namespace: str, name: str) -> None:
    """A deleted CreditJob's metric series and pushed groups (its DELETED event, or the resync's LIST without it)."""
    metrics.forget_creditjob(name, namespace)
    url = memo["config"].pushgateway_url if "config" in memo else ""
    await asyncio.to_thread(pushgateway.forget_creditjob_groups, url, namespace, name)


# Cache feeding (cache.py): every event of the three kinds a pass reads, before any handler below acts on it
# (Kopf runs event handlers before change handlers, in the order they are registered). Async: no thread hop for
# the many Jobs and CronJobs that are not ours.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def creditjob_seen(event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    _feed(memo, "creditjobs", event)


@kopf.on.event("batch", "v1", "cronjobs")
async def cronjob_seen(event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    _feed(memo, "cronjobs", event)  # all of them: a foreign CronJob with a CreditJob's name is a conflict to see


@kopf.on.event("batch", "v1", "jobs")
async def job_seen(event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    _feed(memo, "jobs", event)  # the cache keeps only Jobs labelled with a CreditJob


def _feed(memo: kopf.Memo, kind: str, event: Mapping[str, Any]) -> None:
    api: KubeApi | None = memo.get("api")
    body = event.get("object")
    if api is not None and isinstance(body, Mapping):
        api.cache.observe(kind, event.get("type"), body)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_CREDITJOB: kopf.PRESENT})
def child_job_changed(event: Mapping[str, Any], meta: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    """A child Job started, finished, or was deleted: status, metrics, and the catch-up queue move on."""
    _event_pass(memo, "jobs", event, meta, meta["labels"][LABEL_CREDITJOB])


def _owning_creditjob(meta: Mapping[str, Any]) -> str | None:
    """The CreditJob a CronJob belongs to: its owner reference (ownership is the uid), else our label."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
            return str(ref.get("name"))
    return (meta.get("labels") or {}).get(LABEL_CREDITJOB)


def _is_ours(meta: Mapping[str, Any], **_: Any) -> bool:
    return _owning_creditjob(meta) is not None


@kopf.on.event("batch", "v1", "cronjobs", when=_is_ours)
def cronjob_changed(event: Mapping[str, Any], meta: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    """The owned CronJob changed (maybe by hand: a label or owner reference removed) or was deleted: converge it."""
    _event_pass(memo, "cronjobs", event, meta, _owning_creditjob(meta) or "")


def _event_pass(memo: kopf.Memo, kind: str, event: Mapping[str, Any], meta: Mapping[str, Any], owner: str) -> None:
    if "api" not in memo:
        return  # an event before start-up finished; the resume handler covers it
    api: KubeApi = memo["api"]
    if event.get("type") != "DELETED" and api.is_own_write(
        kind, meta.get("namespace", ""), meta.get("name", ""), meta.get("resourceVersion")
    ):
        return  # the echo of a create/patch the pass that made it has already accounted for
    try:
        run_pass(memo, meta["namespace"], owner)
    except ApiError as exc:
        # Best effort: a watch event is not retried by Kopf, the periodic resync repeats the pass.
        log.warning("pass for %s failed, the resync will retry: %s", meta.get("name"), exc)


async def _resync_forever(memo: kopf.Memo) -> None:
    """Prime the watch cache, then every `resync_seconds` one LIST each of CronJobs, Jobs and CreditJobs per watched
    namespace (one of each in all when clusterwide) and a pass for each CreditJob from the cache: no request per
    CreditJob.

    The resync revisits every CreditJob each `CREDITJOBS_RESYNC_SECONDS` (next run time, missed fire times), and its
    LISTs also notice what was deleted while a watch was down."""
    config: OperatorSettings = memo["config"]
    api: KubeApi = memo["api"]
    scopes: list[str | None] = list(config.namespace_list) or [None]
    await _prime_cache(api, scopes)
    while True:
        await asyncio.sleep(config.resync_seconds)
        for namespace in scopes:
            try:
                # Children first: a pass below must not act on a CronJob or Job a lost DELETED event left behind.
                for kind in ("cronjobs", "jobs"):
                    api.cache.replace(kind, namespace, *await asyncio.to_thread(api.relist, kind, namespace))
                bodies, version = await asyncio.to_thread(api.relist, "creditjobs", namespace)
            except ApiError as exc:
                log.warning("resync: cannot list CreditJobs, CronJobs or Jobs: %s", exc)
                continue
            for gone_namespace, gone_name in api.cache.replace("creditjobs", namespace, bodies, version):
                log.info("resync: CreditJob %s/%s was deleted while a watch was down", gone_namespace, gone_name)
                await _forget_creditjob(memo, gone_namespace, gone_name)
            for body in bodies:
                meta = body.get("metadata") or {}
                try:
                    await asyncio.to_thread(run_pass, memo, meta.get("namespace", ""), meta.get("name", ""))
                except Exception:  # one broken CreditJob must not stop the resync of the others
                    log.exception("resync of %s/%s failed", meta.get("namespace"), meta.get("name"))


async def _prime_cache(api: KubeApi, scopes: list[str | None]) -> None:
    """One LIST per kind and scope, so the cache holds what the watches delivered before they started; until
    then passes read from the API server. Retried until it succeeds (an API server still starting)."""
    while True:
        try:
            for namespace in scopes:
                api.cache.prime("creditjobs", await asyncio.to_thread(api.list_creditjobs, namespace))
                api.cache.prime("cronjobs", await asyncio.to_thread(api.list_cronjobs, namespace))
                api.cache.prime("jobs", await asyncio.to_thread(api.list_child_jobs, namespace))
        except ApiError as exc:
            log.warning("cannot fill the watch cache yet, passes read from the API server: %s", exc)
            await asyncio.sleep(RETRY_DELAY)
            continue
        api.cache.mark_ready()
        return
