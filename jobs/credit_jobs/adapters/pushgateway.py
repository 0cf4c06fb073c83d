"""Pushes a finished run's metrics to the Prometheus Pushgateway (when PUSHGATEWAY_URL is set).

POST (`pushadd`) with the grouping key the caller gives (job="credit-jobs", namespace, creditjob, shard, from
`observability.metrics.grouping_key`): only the metric names carried are replaced,
so a failed run's push leaves the last success timestamp in place. A push that fails is logged, never fatal: the
audit row and the operator's metrics still tell the story.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from prometheus_client import CollectorRegistry, pushadd_to_gateway

log = structlog.get_logger()
PUSH_TIMEOUT_SECONDS = 5.0


def push_run_metrics(url: str, registry: CollectorRegistry, *, job: str, grouping_key: Mapping[str, str]) -> bool:
    try:
        pushadd_to_gateway(
            url,
            job=job,
            registry=registry,
            grouping_key=dict(grouping_key),
            timeout=PUSH_TIMEOUT_SECONDS,
        )
    except OSError as exc:  # URLError, connection refused, timeouts
        log.warning("run.metrics_push_failed", pushgateway=url, reason=str(exc))
        return False
    return True
