"""A run's request from the settings and an entry point's overrides — the one place it is assembled.

Every way a run starts (`credit-jobs run`, `rollback`, `backfill`, `import saas-template`, the API's local-mode
runs) hands its own fields and overrides to `run_request`; what they share comes from the settings here, checked
here: the namespace (CREDITJOB_NAMESPACE), the batch size (CREDITJOBS_BATCH_SIZE), the grant family
(CREDITJOB_GRANT_FAMILY), the heartbeat and the Pushgateway. An override of None means "not given: the setting".
"""

from __future__ import annotations

from typing import Any

from credit_jobs.domain.grant_rules import validate_grant_family
from credit_jobs.domain.run_model import UsecaseSpec, validate_batch_size
from credit_jobs.entrypoints.settings import Settings
from credit_jobs.lifecycle.run_lifecycle import RunRequest


def run_request(
    settings: Settings,
    usecase: UsecaseSpec,
    *,
    job: str,
    batch_size: int | None = None,
    grant_family: str | None = None,
    dry_run: bool = False,
    **fields: Any,
) -> RunRequest:
    """`fields` are the entry point's own (trigger, period, pinned key, shard, time zone, requester, …).
    `grant_family` is an option the user typed (`--grant-family`), checked as one; `namespace` (a field) defaults to
    CREDITJOB_NAMESPACE."""
    fields.setdefault("namespace", settings.creditjob_namespace)
    return RunRequest(
        usecase=usecase,
        job=job,
        batch_size=validate_batch_size(batch_size if batch_size is not None else settings.creditjobs_batch_size),
        dry_run=dry_run,
        heartbeat_seconds=settings.creditjobs_heartbeat_seconds,
        pushgateway_url=settings.pushgateway_url,
        grant_family=(
            validate_grant_family(grant_family, source="--grant-family")
            if grant_family is not None
            else settings.creditjob_grant_family
        ),
        **fields,
    )
