"""Deletes a deleted CreditJob's run metrics from the Prometheus Pushgateway (a last push would stay forever).

Every run pushes its metrics to the group `job="credit-jobs", namespace, creditjob, shard` (the grouping key of
docs/contract.md). The Pushgateway keeps a group until someone deletes it, so a deleted CreditJob's last failure
would keep `CreditJobFailed` firing for good. `handlers.creditjob_deleted` calls `forget_creditjob_groups` when a
CreditJob is deleted: it lists the groups the Pushgateway holds and deletes those of that namespace and name — every
shard, including shards a lowered `parallelism` left behind, which the deleted object's spec no longer names.
Groups without a namespace label (pushed before the namespace joined the key) are left alone: they cannot be told
apart from another namespace's CreditJob of the same name. Best effort: a Pushgateway that stays unreachable is
logged with the command that deletes the groups by hand.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request

from prometheus_client import delete_from_gateway

from credit_jobs.domain.contract import PUSHGATEWAY_JOB

log = logging.getLogger("credit_operator")

TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3  # a Pushgateway restarting during the deletion gets a second and a third chance
RETRY_DELAY_SECONDS = 1.0


def creditjob_groups(url: str, namespace: str, name: str) -> list[dict[str, str]]:
    """The grouping labels (besides `job`) of every group the CreditJob's runs pushed, from /api/v1/metrics."""
    # The runs push with prometheus_client, which takes a URL without a scheme as http://: so does this.
    base = url.rstrip("/") if "://" in url else f"http://{url.rstrip('/')}"
    with urllib.request.urlopen(f"{base}/api/v1/metrics", timeout=TIMEOUT_SECONDS) as response:
        payload = json.load(response)
    groups: list[dict[str, str]] = []
    for group in payload.get("data") or []:
        labels = dict(group.get("labels") or {})
        if labels.get("job") == PUSHGATEWAY_JOB and (labels.get("namespace"), labels.get("creditjob")) == (
            namespace,
            name,
        ):
            labels.pop("job")
            groups.append(labels)
    return groups


def _delete_once(url: str, namespace: str, name: str) -> int:
    groups = creditjob_groups(url, namespace, name)
    for grouping_key in groups:
        delete_from_gateway(url, job=PUSHGATEWAY_JOB, grouping_key=grouping_key, timeout=TIMEOUT_SECONDS)
    return len(groups)


def forget_creditjob_groups(url: str, namespace: str, name: str) -> int:
    """Delete every Pushgateway group of the CreditJob; returns how many were deleted (0 without a Pushgateway).

    Blocking (HTTP): the async deletion handler runs it in a worker thread. Never raises.
    """
    if not url:
        return 0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            deleted = _delete_once(url, namespace, name)
        except (OSError, ValueError) as exc:  # URLError, refused, timeout; a body that is not the API's JSON
            if attempt < ATTEMPTS:
                time.sleep(RETRY_DELAY_SECONDS * attempt)
                continue
            log.warning(
                "could not delete the Pushgateway groups of deleted CreditJob %s/%s (%s): delete them by hand with "
                "curl -X DELETE %s/metrics/job/%s/namespace/%s/creditjob/%s/shard/<i>",
                namespace,
                name,
                exc,
                url.rstrip("/"),
                PUSHGATEWAY_JOB,
                namespace,
                name,
            )
            return 0
        if deleted:
            log.info("deleted %d Pushgateway group(s) of deleted CreditJob %s/%s", deleted, namespace, name)
        return deleted
    return 0
