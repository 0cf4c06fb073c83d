"""The one builder of test CreditJobs: a manifest as the API server holds it, or that manifest parsed.

Each test module binds its own identity (name, namespace, uid, ...) and spec defaults with `functools.partial`.
"""

from __future__ import annotations

from typing import Any

from credit_operator.creditjob import CreditJob, parse_creditjob


def creditjob_manifest(
    name: str = "cj",
    namespace: str = "default",
    *,
    uid: str | None = None,
    generation: int | None = None,
    created: str | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A CreditJob manifest: metadata holds only the keys given, `spec` is a distribute-credits job on the 1st of
    each month plus `spec`'s fields (camelCase, as in the CRD), and `status` is there only when given."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid is not None:
        meta["uid"] = uid
    if generation is not None:
        meta["generation"] = generation
    if created:
        meta["creationTimestamp"] = created
    manifest: dict[str, Any] = {
        "apiVersion": "credits.dev/v1alpha1",
        "kind": "CreditJob",
        "metadata": meta,
        "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *", **spec},
    }
    if status is not None:
        manifest["status"] = status
    return manifest


def creditjob(
    name: str = "cj",
    namespace: str = "default",
    *,
    uid: str | None = None,
    generation: int | None = None,
    created: str | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> CreditJob:
    """`creditjob_manifest(...)` as the operator's planners see it (`parse_creditjob`)."""
    return parse_creditjob(
        creditjob_manifest(name, namespace, uid=uid, generation=generation, created=created, status=status, **spec)
    )
