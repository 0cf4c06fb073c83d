"""CreditJob → batch/v1 CronJob manifest, and CronJob → one-off Job (run-now, catch-up): pure planners.

No I/O: `reconcile.py` applies what these return. They honour the container contract (docs/contract.md): command
`credit-jobs run <usecase>`, args from `spec.params`, the CREDITJOB_* environment, DATABASE_URL from a Secret,
a podFailurePolicy that fails the Job at once on exit code 2 (configuration error, never retried). Job names
are deterministic so that a repeated create conflicts instead of running twice. `cronjob_drift` tells the reconcile
loop whether a live CronJob still matches what this module would render (every rendered field, the label and the
owner reference), `cronjob_patch` how to put it back, and `ownership` whose CronJob it is.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from credit_jobs.domain.contract import (
    ENV_DATABASE_URL,
    ENV_LOG_FORMAT,
    ENV_NAME,
    ENV_NAMESPACE,
    ENV_PERIOD,
    ENV_PERIOD_KEY,
    ENV_PUSHGATEWAY_URL,
    ENV_REQUESTED_BY,
    ENV_SCHEDULE,
    ENV_SHARDS,
    ENV_TIME_ZONE,
    ENV_TRIGGER,
    EXIT_CONFIG_ERROR,
    Trigger,
)
from credit_operator.creditjob import (
    ANNOTATION_PERIOD_KEY,
    ANNOTATION_REQUESTED_BY,
    ANNOTATION_RUN_NOW_TOKEN,
    ANNOTATION_SCHEDULED_TIME,
    LABEL_CREDITJOB,
    LABEL_TRIGGER,
    MANAGED_BY,
    CreditJob,
    CreditJobSpec,
    format_time,
)

CONTAINER = "credit-jobs"
CONFIG_ERROR_EXIT_CODE = EXIT_CONFIG_ERROR
RUN_AS_USER = 10001
DEFAULT_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "512Mi"},
}


@dataclass(frozen=True)
class ManifestDefaults:
    """Operator-wide values a CreditJob may leave empty (from `settings.OperatorSettings`)."""

    image: str
    db_secret_name: str = "credit-jobs-db"
    db_secret_key: str = "url"
    pushgateway_url: str = ""
    # Who may run what (CREDITJOBS_ALLOWED_IMAGES / CREDITJOBS_ALLOWED_DB_SECRETS): besides the defaults above, the
    # images (a repository: any tag or digest of it; or one exact reference) and database Secrets a CreditJob may
    # name. Editing a CreditJob must not be a way to run any image with any Secret of the namespace.
    allowed_images: tuple[str, ...] = ()
    allowed_db_secrets: tuple[str, ...] = ()


def _repository(reference: str) -> str:
    """`host:5000/team/app:1.2@sha256:…` → `host:5000/team/app` (a registry port is not a tag)."""
    name = reference.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def _image_allowed(image: str, defaults: ManifestDefaults) -> bool:
    if not image or image == defaults.image or _repository(image) == _repository(defaults.image):
        return True
    for entry in defaults.allowed_images:
        exact = "@" in entry or _repository(entry) != entry  # an entry with a tag or digest allows only itself
        if image == entry or (not exact and _repository(image) == entry):
            return True
    return False


def refused_by_policy(spec: CreditJobSpec, defaults: ManifestDefaults) -> list[str]:
    """The spec's image and database Secret, held to the operator's allowlists: problems of the spec (Ready=False,
    InvalidSpec, the CronJob left as it was), so a patch to either cannot run anything the platform did not allow."""
    problems = []
    if not _image_allowed(spec.image, defaults):
        allowed = ", ".join([_repository(defaults.image), *defaults.allowed_images])
        problems.append(
            f"spec.image {spec.image!r} is not an image this operator runs (allowed: {allowed}): use one of them, or "
            "allow it in the chart (operator.allowedImages, CREDITJOBS_ALLOWED_IMAGES)"
        )
    secret = spec.db_secret_name
    if secret and secret != defaults.db_secret_name and secret not in defaults.allowed_db_secrets:
        allowed = ", ".join([defaults.db_secret_name, *defaults.allowed_db_secrets])
        problems.append(
            f"spec.databaseSecretRef.name {secret!r} is not a database Secret this operator hands to runs (allowed: "
            f"{allowed}): use one of them, or allow it in the chart (operator.allowedDatabaseSecrets, "
            "CREDITJOBS_ALLOWED_DB_SECRETS)"
        )
    return problems


def kebab(key: str) -> str:
    """`batchSize` → `batch-size`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", key).lower()


def params_to_args(params: Mapping[str, Any]) -> list[str]:
    """spec.params → CLI args: true → bare flag, false/None → omitted, anything else → `--flag value`.

    Keys are sorted so the rendering is stable (a reordered map in the CreditJob is not a change).
    """
    args: list[str] = []
    for key in sorted(params):
        value = params[key]
        flag = f"--{kebab(key)}"
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        else:
            args += [flag, str(value)]
    return args


def labels(job: CreditJob) -> dict[str, str]:
    """Labels on the CronJob, its Job template and pods: the app.kubernetes.io set plus the CreditJob name."""
    return {
        "app.kubernetes.io/name": "credit-jobs",
        "app.kubernetes.io/instance": job.name,
        "app.kubernetes.io/component": job.spec.usecase,
        "app.kubernetes.io/part-of": "credit-jobs",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_CREDITJOB: job.name,
    }


def _env(job: CreditJob, defaults: ManifestDefaults) -> list[dict[str, Any]]:
    spec = job.spec
    env: list[dict[str, Any]] = [
        {"name": ENV_NAME, "value": job.name},
        {"name": ENV_NAMESPACE, "value": job.namespace},
        {"name": ENV_SCHEDULE, "value": spec.schedule},
        {"name": ENV_TIME_ZONE, "value": spec.time_zone},
        {"name": ENV_PERIOD, "value": spec.period},
        {"name": ENV_SHARDS, "value": str(spec.parallelism)},
        {"name": ENV_TRIGGER, "value": Trigger.SCHEDULE.value},
        {
            "name": ENV_DATABASE_URL,
            "valueFrom": {
                "secretKeyRef": {
                    "name": spec.db_secret_name or defaults.db_secret_name,
                    "key": spec.db_secret_key or defaults.db_secret_key,
                }
            },
        },
    ]
    if defaults.pushgateway_url:
        env.append({"name": ENV_PUSHGATEWAY_URL, "value": defaults.pushgateway_url})
    env.append({"name": ENV_LOG_FORMAT, "value": "json"})
    return env


def _resources(spec_resources: Mapping[str, Any]) -> dict[str, Any]:
    chosen = spec_resources or DEFAULT_RESOURCES
    return {k: dict(v) for k, v in chosen.items() if k in ("requests", "limits") and v}


def build_job_spec(job: CreditJob, defaults: ManifestDefaults) -> dict[str, Any]:
    """The Job spec every run of this CreditJob uses (the CronJob's jobTemplate.spec)."""
    spec = job.spec
    pod_labels = labels(job)
    container = {
        "name": CONTAINER,
        "image": spec.image or defaults.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["credit-jobs", "run", spec.usecase],
        "args": params_to_args(spec.params),
        "env": _env(job, defaults),
        "resources": _resources(spec.resources),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # A read-only root filesystem still needs somewhere for temporary files (e.g. the cleanup job's spool).
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    job_spec: dict[str, Any] = {
        "activeDeadlineSeconds": spec.active_deadline_seconds,
        "backoffLimit": spec.backoff_limit,
        # Exit code 2 is a configuration error: retrying cannot help, so fail the whole Job at once. Pod
        # disruptions (node drain, preemption) do not count against backoffLimit.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [CONFIG_ERROR_EXIT_CODE],
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": {
                # podFailurePolicy requires Never: a restarted container would hide its exit code from the Job.
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS_USER,
                    "runAsGroup": RUN_AS_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }
    if spec.parallelism > 1:
        # One shard per completion index: the jobs CLI reads JOB_COMPLETION_INDEX (set by Kubernetes) and
        # CREDITJOB_SHARDS.
        job_spec["completionMode"] = "Indexed"
        job_spec["completions"] = spec.parallelism
        job_spec["parallelism"] = spec.parallelism
    return job_spec


def build_cronjob(job: CreditJob, defaults: ManifestDefaults) -> dict[str, Any]:
    """The CronJob for a CreditJob (without owner reference: `reconcile.py` adds it with kopf.adopt)."""
    spec = job.spec
    meta_labels = labels(job)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": job.name, "namespace": job.namespace, "labels": meta_labels},
        "spec": {
            "schedule": spec.schedule,
            "timeZone": spec.time_zone,
            "concurrencyPolicy": spec.concurrency_policy,
            "startingDeadlineSeconds": spec.starting_deadline_seconds,
            "suspend": spec.suspend,
            "successfulJobsHistoryLimit": spec.successful_history,
            "failedJobsHistoryLimit": spec.failed_history,
            "jobTemplate": {
                "metadata": {"labels": meta_labels},
                "spec": build_job_spec(job, defaults),
            },
        },
    }


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def manual_job_name(cronjob_name: str, token: str) -> str:
    """`<cronjob>-m-<8 hex of the token>`: 11 characters, like the CronJob controller's own suffix."""
    return f"{cronjob_name}-m-{_short_hash(token)}"


def catch_up_job_name(cronjob_name: str, period_key: str) -> str:
    """`<cronjob>-c-<8 hex of the period key>`: one name per missed period, so a second plan conflicts."""
    return f"{cronjob_name}-c-{_short_hash(period_key)}"


def build_job_from_cronjob(
    cronjob: Mapping[str, Any],
    *,
    name: str,
    trigger: str,
    period_key: str | None,
    scheduled_time: datetime | None = None,
    token: str | None = None,
    suspend: bool = False,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """A one-off Job from the CronJob's template (as `kubectl create job --from=cronjob/…` does), with
    CREDITJOB_TRIGGER set to `trigger` and CREDITJOB_PERIOD_KEY pinned when a key is given. `requested_by` (a run-now
    asked for through the HTTP API) becomes CREDITJOB_REQUESTED_BY, which the run records in its audit row.

    The owner reference (the CronJob, so history limits and garbage collection apply) is added by the caller.
    `suspend=True` queues the Job: `reconcile.py` resumes queued catch-up Jobs one at a time under Forbid/Replace.
    """
    template = cronjob["spec"]["jobTemplate"]
    job_spec = copy.deepcopy(template["spec"])
    meta = template.get("metadata") or {}
    job_labels = {**(meta.get("labels") or {}), LABEL_TRIGGER: trigger}
    annotations: dict[str, str] = dict(meta.get("annotations") or {})
    if period_key:
        annotations[ANNOTATION_PERIOD_KEY] = period_key
    if scheduled_time is not None:
        annotations[ANNOTATION_SCHEDULED_TIME] = format_time(scheduled_time) or ""
    if token is not None:
        annotations[ANNOTATION_RUN_NOW_TOKEN] = token
    if requested_by:
        annotations[ANNOTATION_REQUESTED_BY] = requested_by
    job_spec["template"].setdefault("metadata", {})
    job_spec["template"]["metadata"]["labels"] = {
        **(job_spec["template"]["metadata"].get("labels") or {}),
        LABEL_TRIGGER: trigger,
    }
    for container in job_spec["template"]["spec"]["containers"]:
        if container.get("name") != CONTAINER:
            continue
        env = [e for e in container.get("env", []) if e["name"] not in (ENV_TRIGGER, ENV_PERIOD_KEY, ENV_REQUESTED_BY)]
        env.append({"name": ENV_TRIGGER, "value": trigger})
        if period_key:
            env.append({"name": ENV_PERIOD_KEY, "value": period_key})
        if requested_by:
            env.append({"name": ENV_REQUESTED_BY, "value": requested_by})
        container["env"] = env
    if suspend:
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cronjob["metadata"]["namespace"],
            "labels": job_labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }


# Maps of the CronJob spec whose every key the operator decides: a key the live object has and the rendering lacks
# (a `nodeSelector` added by hand) is drift, unless the API server sets it by default (the keys listed). Paths as
# `drift` reports them, list indexes written `[]`.
CLOSED_MAPS: Mapping[str, frozenset[str]] = {
    "": frozenset(),
    "jobTemplate.spec": frozenset(
        {"completions", "parallelism", "completionMode", "suspend", "podReplacementPolicy", "manualSelector"}
    ),
    "jobTemplate.spec.template.spec": frozenset(
        {"dnsPolicy", "schedulerName", "terminationGracePeriodSeconds", "securityContext", "enableServiceLinks"}
    ),
    "jobTemplate.spec.template.spec.containers[]": frozenset({"terminationMessagePath", "terminationMessagePolicy"}),
}


def drift(desired: Any, live: Any, path: str = "", *, closed: Mapping[str, frozenset[str]] | None = None) -> list[str]:
    """Paths where `live` no longer carries what `desired` says (empty = in sync).

    A subset comparison: fields the API server adds (defaults such as `terminationMessagePath`) are not drift;
    lists must match element by element, so an added or removed container or env var is. Scalars compare
    loosely for quantities the server normalises (`"1"` vs `1`). With `closed` (e.g. CLOSED_MAPS), a key added
    to one of those maps is drift too.
    """
    if live is None and isinstance(desired, Mapping | list) and not desired:
        return []  # the API server drops empty lists and maps (`args: []`): not drift, or every pass would patch
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            found += drift(value, live.get(key), f"{path}.{key}" if path else key, closed=closed)
        return found + [f"{path}.{key}" if path else key for key in _added_keys(desired, live, path, closed)]
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found += drift(want, have, f"{path}[{index}]", closed=closed)
        return found
    if desired == live or (not isinstance(desired, bool) and str(desired) == str(live)):
        return []
    if _quantity(desired) is not None and _quantity(desired) == _quantity(live):
        return []
    return [path]


def _added_keys(
    desired: Mapping[str, Any], live: Mapping[str, Any], path: str, closed: Mapping[str, frozenset[str]] | None
) -> list[str]:
    """Keys of a closed map that live carries and the rendering does not (empty values count as absent)."""
    allowed = (closed or {}).get(re.sub(r"\[\d+\]", "[]", path))
    if allowed is None:
        return []
    return sorted(k for k, v in live.items() if k not in desired and k not in allowed and v not in (None, {}, []))


def _with_removals(desired: Any, live: Any, path: str = "") -> Any:
    """`desired` plus `key: null` for every added key of a closed map, so a merge patch removes them (lists are
    replaced whole by a merge patch, so keys added inside a container go with it)."""
    if not isinstance(desired, Mapping) or not isinstance(live, Mapping):
        return desired
    merged = {k: _with_removals(v, live.get(k), f"{path}.{k}" if path else k) for k, v in desired.items()}
    return merged | dict.fromkeys(_added_keys(desired, live, path, CLOSED_MAPS))


Ownership = Literal["owned", "orphan", "foreign"]


def ownership(cronjob: Mapping[str, Any], creditjob: CreditJob) -> Ownership:
    """Whose CronJob this is: `owned` when an owner reference carries the CreditJob's uid (labels can be edited
    by anyone, the uid cannot be reused); `orphan` when nobody controls it and it carries our label (an owner
    reference removed by hand: adopted again); otherwise `foreign`, never taken over."""
    meta = cronjob.get("metadata") or {}
    refs = [r for r in meta.get("ownerReferences") or [] if isinstance(r, Mapping)]
    if any(r.get("uid") == creditjob.uid for r in refs):
        return "owned"
    if not any(r.get("controller") for r in refs) and (meta.get("labels") or {}).get(LABEL_CREDITJOB) == creditjob.name:
        return "orphan"
    return "foreign"


def cronjob_drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Every way the live CronJob differs from the rendering: spec (added keys included), labels, owner reference."""
    live_meta = live.get("metadata") or {}
    found = drift(desired["spec"], live.get("spec"), closed=CLOSED_MAPS)
    found += [f"metadata.labels.{p}" for p in drift(desired["metadata"]["labels"], live_meta.get("labels"))]
    want = {r.get("uid") for r in desired["metadata"].get("ownerReferences") or []}
    if not want <= {r.get("uid") for r in live_meta.get("ownerReferences") or []}:
        found.append("metadata.ownerReferences")
    return found


def cronjob_patch(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that makes `live` match `desired` again (see cronjob_drift)."""
    ours = list(desired["metadata"].get("ownerReferences") or [])
    uids = {r.get("uid") for r in ours}
    others = [r for r in (live.get("metadata") or {}).get("ownerReferences") or [] if r.get("uid") not in uids]
    return {
        "metadata": {"labels": desired["metadata"]["labels"], "ownerReferences": others + ours},
        "spec": _with_removals(desired["spec"], live.get("spec")),
    }


_SUFFIXES = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def _quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity's value (`0.5` and `500m` are equal; the API server rewrites one as
    the other, which must not read as drift or every pass would patch again)."""
    match = _QUANTITY.match(str(value)) if isinstance(value, str | int | float) else None
    if match is None or isinstance(value, bool):
        return None
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2) or ""]
